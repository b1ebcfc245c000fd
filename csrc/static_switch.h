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
#include <utility>

#include "codes.h"

namespace fastlif {

template <typename F>
decltype(auto) bool_switch(bool value, F&& f) {
  if (value) return f(std::true_type{});
  return f(std::false_type{});
}

// The parameter-gradient masks a backward is compiled for (bit k: parameter k; kAllParams: every
// one). Each is one more instantiation of it.
template <int... Masks>
struct GradMaskSet {};
constexpr int kAllParams = -1;

// f(PN, GRADS) for a backward: per-neuron parameters (PN), and GRADS, the bit mask of the
// parameters whose gradient the kernel computes, as compile-time constants. GRADS is the first
// of Masks (the last: kAllParams) that covers `wanted` (bit k: parameter k's gradient is wanted);
// a parameter outside it has its gradient arithmetic compiled out (the common call: a neuron's
// fixed threshold, and a fixed or alone learnable decay). Per-neuron parameters are learnable
// ones in practice: they get the last mask only, sparing instantiations for a rare call.
template <int... Masks, typename F>
void grads_switch(GradMaskSet<Masks...>, bool per_neuron, int wanted, F&& f) {
  constexpr int all = (Masks | ...);
  if (per_neuron) return f(std::true_type{}, std::integral_constant<int, all>{});
  const bool hit = (((wanted & ~Masks) == 0 ? (f(std::false_type{}, std::integral_constant<int, Masks>{}), true)
                                            : false) ||
                    ...);
  if (!hit) throw std::invalid_argument("parameter gradients: unexpected mask " + std::to_string(wanted));
}

// Calls f(std::integral_constant<int, V>{}) for the V in Values equal to value; a value that is
// none of them is a caller's bug, reported as std::invalid_argument (ValueError in Python).
template <int... Values, typename F>
void int_switch(int value, const char* what, F&& f) {
  const bool hit = ((value == Values ? (f(std::integral_constant<int, Values>{}), true) : false) || ...);
  if (!hit) throw std::invalid_argument(std::string(what) + ": unexpected value " + std::to_string(value));
}

// The surrogates a backward is compiled for (each is one more instantiation of it).
template <int... Kinds>
struct SurrogateKinds {};
using SnnTorchSurrogates = SurrogateKinds<kAtan, kFastSigmoid, kSigmoid, kTriangular, kStraightThrough, kNoGrad>;

template <int... Kinds, typename F>
void surrogate_switch(int sg, SurrogateKinds<Kinds...>, F&& f) {
  int_switch<Kinds...>(sg, "surrogate_kind", std::forward<F>(f));
}

// f(float{}) or f(double{}) for a dtype code (kFloat32, kFloat64).
template <typename F>
void with_dtype(int dtype, F&& f) {
  int_switch<kFloat32, kFloat64>(dtype, "dtype", [&](auto DT) {
    f(std::conditional_t<DT() == kFloat64, double, float>{});
  });
}

}  // namespace fastlif
