// The Leaky kernels' entry points (csrc/lif.cpp), for the bindings there and for the C++
// autograd Function (csrc/lif_autograd.cpp). Pointers and the call's shape, as
// fastlif/ops/lif.py passes them; parameters as (pointer, count, value) triples.
#pragma once

#include <cstdint>

#include "module.h"

namespace fastlif {

void lif_fwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t mem0,
             const ParamTuples& params, std::uintptr_t spk, std::uintptr_t mem, std::uintptr_t u_saved,
             std::uintptr_t r_saved, int reset, bool immediate, int threads);

void lif_bwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
             std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t mem0,
             const ParamTuples& params, std::uintptr_t grad_x, std::uintptr_t grad_mem0, const Pointers& grad_params,
             int reset, bool immediate, int sg, double sg_param, int threads);

}  // namespace fastlif
