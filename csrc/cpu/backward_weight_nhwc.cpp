// Backward-weight, channels_last: backward_weight_nhwc.inc compiled for every ISA copy.
#define FASTDW_KERNEL_FILE "cpu/backward_weight_nhwc.inc"
#include "cpu/per_isa.h"
