// The one extension module, fastlif._C: every family file (lif.cpp, ...) registers its
// functions with FASTLIF_REGISTER, so adding a family adds a file and touches no other.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>
#include <string>
#include <tuple>
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

// What every binding shares: the grid check, the parameters handed over as a list of
// (pointer, count, value) triples (fastlif.ops.common.cpp_param), and lists of pointers.
inline void check_grid(const char* family, int64_t T, int64_t R, int64_t L) {
  if (T < 0 || R < 0 || L < 1)
    throw std::invalid_argument(std::string(family) + ": bad grid T=" + std::to_string(T) + " R=" +
                                std::to_string(R) + " L=" + std::to_string(L));
}

using ParamTuples = std::vector<std::tuple<std::uintptr_t, int64_t, double>>;
using Pointers = std::vector<std::uintptr_t>;

template <int K>
std::array<ParamIn, K> family_params(const char* family, const ParamTuples& in) {
  if (in.size() != K)
    throw std::invalid_argument(std::string(family) + ": expected " + std::to_string(K) + " parameters, got " +
                                std::to_string(in.size()));
  std::array<ParamIn, K> out;
  for (int k = 0; k < K; ++k) out[k] = ParamIn{std::get<0>(in[k]), std::get<1>(in[k]), std::get<2>(in[k])};
  return out;
}

template <typename T, int K>
std::array<T*, K> family_pointers(const char* family, const char* what, const Pointers& in, bool required) {
  if (in.size() != K)
    throw std::invalid_argument(std::string(family) + ": expected " + std::to_string(K) + " " + what + ", got " +
                                std::to_string(in.size()));
  std::array<T*, K> out;
  for (int k = 0; k < K; ++k) {
    if (required && !in[k]) throw std::invalid_argument(std::string(family) + ": " + what + " are required");
    out[k] = as_ptr<T>(in[k]);
  }
  return out;
}

}  // namespace fastlif

#define FASTLIF_REGISTER(fn) static const ::fastlif::Register fn##_registered(fn)
