// Backward-input, channels_last: backward_input_nhwc.inc compiled for every ISA copy.
#define FASTDW_KERNEL_FILE "cpu/backward_input_nhwc.inc"
#include "cpu/per_isa.h"
