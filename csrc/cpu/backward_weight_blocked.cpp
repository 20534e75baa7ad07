// Backward-weight on channel blocks: backward_weight_blocked.inc compiled for every ISA copy.
#define FASTDW_KERNEL_FILE "cpu/backward_weight_blocked.inc"
#include "cpu/per_isa.h"
