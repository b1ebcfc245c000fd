// The one extension module, fastlif._C: every family file (lif.cpp, ...) registers its
// functions with FASTLIF_REGISTER, so adding a family adds a file and touches no other.
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

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

}  // namespace fastlif

#define FASTLIF_REGISTER(fn) static const ::fastlif::Register fn##_registered(fn)
