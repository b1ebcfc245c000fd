// Runtime flags to template parameters, in one line per flag instead of a hand-written
// ladder (the idea of mamba's and flash-attention's static_switch.h, written with
// std::integral_constant so the lambda sees a constexpr value):
//
//   bool_switch(per_neuron, [&](auto PN) {
//     int_switch<kSubtract, kZero, kNone>(reset, "reset_mode", [&](auto RESET) {
//       kernel<float, RESET(), PN()>(args);
//     });
//   });
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>

#include "codes.h"

namespace fastlif {

template <typename F>
decltype(auto) bool_switch(bool value, F&& f) {
  if (value) return f(std::true_type{});
  return f(std::false_type{});
}

// f(PN, PG) for a backward: per-neuron parameters (PN) and whether some parameter's gradient is
// wanted (PG). Without PG the step's parameter-gradient arithmetic is dead code, which the
// compiler drops (the common call: a neuron's fixed decay and threshold). Per-neuron parameters
// are learnable ones in practice, so their no-gradient variant is not compiled: it would cost a
// third more instantiations for a rare call.
template <typename F>
void param_switch(bool per_neuron, bool any_grad, F&& f) {
  if (per_neuron) return f(std::true_type{}, std::true_type{});
  bool_switch(any_grad, [&](auto PG) { f(std::false_type{}, PG); });
}

// Calls f(std::integral_constant<int, V>{}) for the V in Values equal to value; a value that is
// none of them is a caller's bug, reported as std::invalid_argument (ValueError in Python).
template <int... Values, typename F>
void int_switch(int value, const char* what, F&& f) {
  const bool hit = ((value == Values ? (f(std::integral_constant<int, Values>{}), true) : false) || ...);
  if (!hit) throw std::invalid_argument(std::string(what) + ": unexpected value " + std::to_string(value));
}

// f(float{}) or f(double{}) for a dtype code (kFloat32, kFloat64).
template <typename F>
void with_dtype(int dtype, F&& f) {
  int_switch<kFloat32, kFloat64>(dtype, "dtype", [&](auto DT) {
    f(std::conditional_t<DT() == kFloat64, double, float>{});
  });
}

}  // namespace fastlif
