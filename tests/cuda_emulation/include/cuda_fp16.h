// Test-only stand-in for the CUDA header of this name: the CPU emulation (see ../cuda_cpu_shim.h).
#pragma once
#include "../cuda_cpu_shim.h"
