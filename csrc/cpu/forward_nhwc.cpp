// Forward, channels_last: forward_nhwc.inc compiled for every ISA copy.
#define FASTDW_KERNEL_FILE "cpu/forward_nhwc.inc"
#include "cpu/per_isa.h"
