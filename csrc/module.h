// The one extension module, fastlif._C: every family file (lif.cpp, ...) registers its
// functions with FASTLIF_REGISTER, so adding a family adds a file and touches no other.
#pragma once

#include <pybind11/pybind11.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"

namespace fastlif {

using Registrar = void (*)(pybind11::module_&);

// Function-local static: filled by the registrars' static initialisers, in any order.
inline std::vector<Registrar>& registrars() {
  static std::vector<Registrar> all;
  return all;
}

struct Register {
  explicit Register(Registrar r) { registrars().push_back(r); }
};

// What the family bindings share: the grid check, and K parameters handed over as one tuple of
// (pointer, count, value) triples (see fastlif.ops.common.cpp_param).
inline void check_grid(const char* family, int64_t T, int64_t R, int64_t L) {
  if (T < 0 || R < 0 || L < 1)
    throw std::invalid_argument(std::string(family) + ": bad grid T=" + std::to_string(T) + " R=" +
                                std::to_string(R) + " L=" + std::to_string(L));
}

template <int K>
std::array<ParamIn, K> param_ins(const char* family, const pybind11::tuple& p) {
  if (p.size() != 3 * K)
    throw std::invalid_argument(std::string(family) + ": expected (pointer, count, value) for " +
                                std::to_string(K) + " parameters");
  std::array<ParamIn, K> out;
  for (int k = 0; k < K; ++k)
    out[k] = ParamIn{p[3 * k].cast<std::uintptr_t>(), p[3 * k + 1].cast<int64_t>(), p[3 * k + 2].cast<double>()};
  return out;
}

template <int K>
std::array<std::uintptr_t, K> pointers(const char* family, const pybind11::tuple& p) {
  if (p.size() != K)
    throw std::invalid_argument(std::string(family) + ": expected " + std::to_string(K) + " pointers");
  std::array<std::uintptr_t, K> out;
  for (int k = 0; k < K; ++k) out[k] = p[k].cast<std::uintptr_t>();
  return out;
}

}  // namespace fastlif

#define FASTLIF_REGISTER(fn) static const ::fastlif::Register fn##_registered(fn)
