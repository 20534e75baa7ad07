// Backward-input, NCHW: backward_input_nchw.inc compiled for every ISA copy.
#define FASTDW_KERNEL_FILE "cpu/backward_input_nchw.inc"
#include "cpu/per_isa.h"
