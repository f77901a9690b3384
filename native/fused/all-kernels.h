// Everything compiled once per instruction set: fused.cc includes this file inside each of its namespaces (avx512,
// avx2, baseline), under that namespace's `#pragma GCC target`; the vector helpers first, the table of entry points
// last (see simd.h).
#include "simd.h"
#include "attention-kernels.h"
#include "group-norm-kernels.h"
#include "adamw-kernels.h"
#include "silu-kernels.h"
#include "layer-norm-kernels.h"
#include "geglu-kernels.h"
#include "gemm-kernels.h"
#include "kernel-table.h"
