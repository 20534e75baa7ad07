// Forward, NCHW: forward_nchw.inc compiled for every ISA copy.
#define FASTDW_KERNEL_FILE "cpu/forward_nchw.inc"
#include "cpu/per_isa.h"
