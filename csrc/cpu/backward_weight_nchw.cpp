// Backward-weight, NCHW: backward_weight_nchw.inc compiled for every ISA copy.
#define FASTDW_KERNEL_FILE "cpu/backward_weight_nchw.inc"
#include "cpu/per_isa.h"
