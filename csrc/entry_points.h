// The fused kernels' entry points, for their bindings (csrc/lif.cpp, csrc/rleaky.cpp,
// csrc/families.cpp) and for the C++ autograd Function (csrc/autograd.cpp). Pointers and the
// call's shape, as fastlif/ops/lif.py, fastlif/ops/rleaky.py and fastlif/family.py pass them;
// parameters as (pointer, count, value) triples. They leave the GIL as they find it: the
// bindings release it, the autograd Function's backward runs without it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "module.h"

namespace fastlif {

// Leaky (csrc/lif.cpp)
void lif_fwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t mem0,
             const ParamTuples& params, std::uintptr_t spk, std::uintptr_t mem, std::uintptr_t u_saved,
             std::uintptr_t r_saved, int reset, bool immediate, int threads);

void lif_bwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
             std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t mem0,
             const ParamTuples& params, std::uintptr_t grad_x, std::uintptr_t grad_mem0, const Pointers& grad_params,
             int reset, bool immediate, int sg, double sg_param, int threads);

// RLeaky (csrc/rleaky.cpp); wt and w: the dense recurrent layer's weight (0: one-to-one V)
void rleaky_fwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t spk0,
                std::uintptr_t mem0, const ParamTuples& params, std::uintptr_t wt, std::uintptr_t bias,
                std::uintptr_t spk, std::uintptr_t mem, std::uintptr_t u_saved, std::uintptr_t r_saved, int reset,
                bool immediate, int threads);

void rleaky_bwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
                std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t spk0,
                std::uintptr_t mem0, const ParamTuples& params, std::uintptr_t w, std::uintptr_t grad_x,
                std::uintptr_t grad_spk0, std::uintptr_t grad_mem0, const Pointers& grad_params, int reset,
                bool immediate, int sg, double sg_param, int threads);

// the spec'd families, by name (csrc/families.cpp, csrc/scan.h)
void family_forward(const std::string& name, int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x,
                    const Pointers& state0, const ParamTuples& params, std::uintptr_t spk, const Pointers& states,
                    const std::vector<int>& options, int threads);

void family_backward(const std::string& name, int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk,
                     const Pointers& grad_states, std::uintptr_t x, const Pointers& state0, const Pointers& states,
                     const ParamTuples& params, std::uintptr_t grad_x, const Pointers& grad_state0,
                     const Pointers& grad_params, const std::vector<int>& options, int sg, double sg_param,
                     int threads);

}  // namespace fastlif
