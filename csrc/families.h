// The spec'd families' kernels by name (csrc/families.cpp, csrc/scan.h), for the bindings
// there and for the C++ autograd Function (csrc/autograd.cpp). Pointers and the call's shape,
// as fastlif/family.py passes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "module.h"

namespace fastlif {

void family_forward(const std::string& name, int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x,
                    const Pointers& state0, const ParamTuples& params, std::uintptr_t spk, const Pointers& states,
                    const std::vector<int>& options, int threads);

void family_backward(const std::string& name, int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk,
                     const Pointers& grad_states, std::uintptr_t x, const Pointers& state0, const Pointers& states,
                     const ParamTuples& params, std::uintptr_t grad_x, const Pointers& grad_state0,
                     const Pointers& grad_params, const std::vector<int>& options, int sg, double sg_param,
                     int threads);

}  // namespace fastlif
