// Forward on channel blocks: forward_blocked.inc compiled for every ISA copy.
#define FASTDW_KERNEL_FILE "cpu/forward_blocked.inc"
#include "cpu/per_isa.h"
