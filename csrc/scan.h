// The scan skeleton every spec'd neuron family runs on (fastlif/family.py): the T-step forward,
// the reverse-time backward, the thread team, the parameter handling and the fixed-order
// reduction of parameter gradients, written once. A family (csrc/families/<name>.cpp) is a struct
// holding only its arithmetic, registered by FASTLIF_FAMILY(Step) at the end of its file.
// Leaky's step (csrc/lif.cpp) runs on it too, behind its own binding (lif_fwd / lif_bwd: the
// op boundary, saved layout and dtypes that Leaky's tests address):
//
//   struct Step : StepDefaults {                             // kSpikeState, kNeedsX, kReadsAfter,
//                                                            // Surrogates, GradMasks, keeps_pre_reset:
//                                                            // where they differ
//     static constexpr const char* kName = "...";            // the spec's name
//     static constexpr int kStates = ..., kParams = ...;     // the spec's states and parameters
//     using Options = OptionSpace<3, 2>;                     // each option's number of values
//     static constexpr const char* kParamNames[kParams] = {...};
//     // One step forward: s holds the states before the step and gets them after; returns the
//     // spike output. p: this neuron's parameters.
//     template <typename S, class O> static S forward(S x, S* s, const S* p);
//     // Its gradient: s the states before the step, sn those after it (forward's outputs), gs
//     // the gradient reaching the states after it (in) and before it (out), gspk the spike
//     // output's; adds the parameters' into gp and returns x's. Rebuilds what it needs of the
//     // forward step from x, s and sn, bit for bit (x is 0 unless kNeedsX).
//     template <typename S, class O, int SG>
//     static S backward(S x, const S* s, const S* sn, const S* p, S gspk, S* gs, S* gp,
//                       const SurrogateConsts<S>& c);
//   };
//
// O is Opts<v0, v1, ...>, the options' values as compile-time constants (O::at(i)); SG the
// surrogate's kind. A family's forward arithmetic keeps its peer's operation order (the build
// passes -ffp-contract=off), so its fp32 spikes and states equal the peer's bit for bit.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common.h"
#include "module.h"
#include "static_switch.h"

namespace fastlif {

// The step loops are left to GCC's own vectoriser (it vectorises them: -fopt-info-vec); under
// `#pragma omp simd` it gave up on them, a 3-10x slower scalar loop. `ivdep` tells it what the
// restrict pointers already say (a step's streams never overlap), so it drops the run-time
// overlap test it otherwise puts before each step's loop: with it Leaky's forward on the scan
// matches its own kernel's time (1.00-1.02x, 1 thread, 6 alternated processes each).
#define FASTLIF_SCAN_SIMD _Pragma("GCC ivdep")

// --- compile-time options ------------------------------------------------------------------------

template <int... V>
struct Opts {
  static constexpr int at(int i) {
    constexpr int values[] = {V..., 0};
    return values[i];
  }
};

template <int... Sizes>
struct OptionSpace {
  static constexpr int count = sizeof...(Sizes);
};

template <int N, typename F, int... I>
void index_switch_impl(int value, F&& f, std::integer_sequence<int, I...>) {
  ((value == I ? (f(std::integral_constant<int, I>{}), true) : false) || ...);
}

// f(std::integral_constant<int, value>) for value in [0, N); the caller checked the range.
template <int N, typename F>
void index_switch(int value, F&& f) {
  index_switch_impl<N>(value, std::forward<F>(f), std::make_integer_sequence<int, N>{});
}

template <typename F, int... Chosen>
void dispatch_options(const std::vector<int>&, size_t, OptionSpace<>, Opts<Chosen...>*, F&& f) {
  f(Opts<Chosen...>{});
}

template <typename F, int First, int... Rest, int... Chosen>
void dispatch_options(const std::vector<int>& values, size_t i, OptionSpace<First, Rest...>, Opts<Chosen...>*,
                      F&& f) {
  index_switch<First>(values[i], [&](auto v) {
    dispatch_options(values, i + 1, OptionSpace<Rest...>{}, static_cast<Opts<Chosen..., decltype(v)::value>*>(nullptr),
                     f);
  });
}

template <int... Sizes>
void check_options(const char* family, const std::vector<int>& values, OptionSpace<Sizes...>) {
  constexpr int sizes[] = {Sizes..., 0};
  if (values.size() != sizeof...(Sizes))
    throw std::invalid_argument(std::string(family) + ": expected " + std::to_string(sizeof...(Sizes)) +
                                " options, got " + std::to_string(values.size()));
  for (size_t i = 0; i < values.size(); ++i)
    if (values[i] < 0 || values[i] >= sizes[i])
      throw std::invalid_argument(std::string(family) + ": option " + std::to_string(i) + " out of range: " +
                                  std::to_string(values[i]));
}

// f(std::integral_constant<int, k>) for k = 0 .. N-1, expanded at compile time: the per-state and
// per-parameter moves inside a vectorised loop must not be loops themselves (GCC does not unroll
// them before it vectorises, and gives up on the nest).
template <typename F, int... I>
inline void unroll_impl(F& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F>
inline void unroll(F&& f) {
  unroll_impl(f, std::make_integer_sequence<int, N>{});
}

// What a family's step struct may leave out (it derives from this and declares what differs).
struct StepDefaults {
  static constexpr bool kSpikeState = false;  // state 0 is the previous spike output
  static constexpr bool kNeedsX = true;       // backward reads x (else x is not kept)
  static constexpr int kReadsAfter = 0;       // bit k: backward reads state k after the step
  using Surrogates = SnnTorchSurrogates;      // the surrogate kinds it runs
  using GradMasks = GradMaskSet<0, kAllParams>;  // grads_switch: no parameter gradient, or all
  // Whether backward can go without state k's saved sequence (forward did not keep it: its
  // spec's backward_reads), given the call's options and the parameters whose gradient it
  // computes. An absent state reads as zeros, so a family allows it only where its backward
  // does not use it; the binding raises otherwise. kOptionalStates (bit k: state k may be
  // absent) compiles the check for absence into the backward loop of those families only: a
  // branch per state and step costs the others a few per cent at 128 neurons a row.
  static constexpr int kOptionalStates = 0;
  static bool may_skip_state(int, const std::vector<int>&, int) { return false; }
  // Whether, under options O, forward keeps for backward the membrane each step integrated to
  // before its immediate reset (u) and the reset flag the step started from (r, one byte) in
  // place of its one state's sequence: 5 bytes per neuron-step where the state and x would be 8
  // (Leaky's saved layout, fastlif/layout.py). Such a family's forward takes a third argument,
  // kept[2], which it fills with u and r; backward hands it u as the state after the step (sn)
  // and rebuilds the state before it from the step before's u and r with restore(u, r, p).
  template <class O>
  static constexpr bool keeps_pre_reset() {
    return false;
  }
};

template <class F, class O>
constexpr bool keeps_pre_reset_v = F::template keeps_pre_reset<O>();

// --- the arguments of a call -----------------------------------------------------------------------

template <typename scalar_t, int NS>
struct ScanArgs {
  int64_t T = 0, R = 0, L = 0;
  const scalar_t* x = nullptr;
  std::array<const scalar_t*, NS> state0{};  // [R*L] each, or null (zeros)
  scalar_t* spk = nullptr;                   // forward outputs, [T*R*L]
  std::array<scalar_t*, NS> state{};
  scalar_t* pre_reset = nullptr;       // forward's kept layout (keeps_pre_reset), [T*R*L] each
  uint8_t* reset_flag = nullptr;
  const scalar_t* grad_spk = nullptr;  // backward inputs (null: zeros)
  std::array<const scalar_t*, NS> grad_state{};
  std::array<const scalar_t*, NS> state_seq{};  // forward's state outputs
  const scalar_t* pre_reset_seq = nullptr;      // or its kept layout (keeps_pre_reset)
  const uint8_t* reset_flag_seq = nullptr;
  scalar_t* grad_x = nullptr;                   // backward outputs
  std::array<scalar_t*, NS> grad_state0{};
  SurrogateConsts<scalar_t> sg;
  int num_threads = 1;
};

// An item's parameters: with per-neuron parameters (PN) one value per neuron in pv[k][j];
// without, each one value in pv[k][0], read in the step loop as a loop-invariant scalar (one
// register), which spares the loop NP loads per neuron.
template <bool PN, typename scalar_t, int NP>
void item_params(const ParamSet<scalar_t, NP>& params, const Item& it, scalar_t (&pv)[NP][kChunk]) {
  const auto at = params.at(it.l0);
  for (int k = 0; k < NP; ++k) {
    if constexpr (PN) {
      for (int64_t j = 0; j < it.n; ++j) pv[k][j] = at[k][j];
    } else {
      pv[k][0] = at[k][0];
    }
  }
}

template <class F, class O, bool PN, typename scalar_t>
void scan_fwd(const ScanArgs<scalar_t, F::kStates>& a, const ParamSet<scalar_t, F::kParams>& params) {
  constexpr int NS = F::kStates, NP = F::kParams;
  constexpr bool KEEP = keeps_pre_reset_v<F, O>;
  static_assert(NS >= 1 && NS <= 3, "the scan carries one to three states");
  static_assert(!KEEP || NS == 1, "the kept pre-reset layout stands for a family's one state");
  const Items items(a.R, a.L);
  const int64_t M = a.R * a.L;
  Team team(a.num_threads, items.count, a.T * M * int64_t((2 + NS) * sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t index = 0; index < items.count; ++index) {
    const Team::Item mark(team);
    const Item it(items, a.L, index);
    scalar_t pv[NP][kChunk], st[NS][kChunk];
    item_params<PN>(params, it, pv);
    for (int k = 0; k < NS; ++k)
      for (int64_t j = 0; j < it.n; ++j) st[k][j] = a.state0[k] ? a.state0[k][it.base + j] : scalar_t(0);
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t off = t * M + it.base;
      if (t + 1 < a.T) {  // the next step's streams (see prefetch_run)
        prefetch_run(a.x + off + M, it.n, false);
        prefetch_run(a.spk + off + M, it.n, true);
        for (int k = 0; k < NS; ++k) prefetch_run(a.state[k] + off + M, it.n, true);
      }
      // The step reads and writes only local arrays and two hoisted pointers, so that it
      // vectorises; the states go out to memory in plain copy loops after it.
      const scalar_t* __restrict x = a.x + off;
      scalar_t* __restrict spk_out = a.spk + off;
      scalar_t* __restrict out0 = a.state[0] + off;  // up to three states, each its own pointer
      scalar_t* __restrict out1 = NS > 1 ? a.state[NS > 1 ? 1 : 0] + off : nullptr;
      scalar_t* __restrict out2 = NS > 2 ? a.state[NS > 2 ? 2 : 0] + off : nullptr;
      scalar_t* __restrict u_out = KEEP ? a.pre_reset + off : nullptr;
      uint8_t* __restrict r_out = KEEP ? a.reset_flag + off : nullptr;
FASTLIF_SCAN_SIMD
      for (int64_t j = 0; j < it.n; ++j) {
        scalar_t s[NS], p[NP];
        unroll<NS>([&](auto k) { s[k] = st[k][j]; });
        unroll<NP>([&](auto k) { p[k] = pv[k][PN ? j : 0]; });
        if constexpr (KEEP) {
          scalar_t kept[2];
          spk_out[j] = F::template forward<scalar_t, O>(x[j], s, p, kept);
          u_out[j] = kept[0];
          r_out[j] = static_cast<uint8_t>(kept[1]);
        } else {
          spk_out[j] = F::template forward<scalar_t, O>(x[j], s, p);
        }
        unroll<NS>([&](auto k) { st[k][j] = s[k]; });
        out0[j] = s[0];
        if constexpr (NS > 1) out1[j] = s[NS > 1 ? 1 : 0];
        if constexpr (NS > 2) out2[j] = s[NS > 2 ? 2 : 0];
      }
    }
  }
}

// GRADS: the parameters whose gradient is computed (grads_switch; bit k: parameter k), the
// family's GradMasks. A fixed parameter's gradient arithmetic is compiled out (SpikingJelly's
// LIFNode sheds a division per neuron-step, the tutorial-size Synaptic backward a third of its
// time).
template <class F, class O, int SG, bool PN, int GRADS, typename scalar_t>
void scan_bwd(const ScanArgs<scalar_t, F::kStates>& a, const ParamSet<scalar_t, F::kParams>& params,
              ParamGrads<scalar_t, F::kParams>& pgrads) {
  constexpr int NS = F::kStates, NP = F::kParams;
  constexpr bool KEEP = keeps_pre_reset_v<F, O>;
  static_assert(NS >= 1 && NS <= 3, "the scan carries one to three states");
  const Items items(a.R, a.L);
  const int64_t M = a.R * a.L;
  // moved: grad_spk, grad_x, x if read, and each state's gradient and saved sequence
  Team team(a.num_threads, items.count, a.T * M * int64_t((2 + F::kNeedsX + 2 * NS) * sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t index = 0; index < items.count; ++index) {
    const Team::Item mark(team);
    const Item it(items, a.L, index);
    scalar_t pv[NP][kChunk], carry[NS][kChunk], acc[NP][kChunk], init[NS][kChunk];
    scalar_t zeros[kChunk], rebuilt[kChunk];  // rebuilt: the state before the step (KEEP)
    item_params<PN>(params, it, pv);
    for (int64_t j = 0; j < kChunk; ++j) {
      zeros[j] = scalar_t(0);
      for (int k = 0; k < NS; ++k) {
        carry[k][j] = scalar_t(0);
        init[k][j] = (a.state0[k] && j < it.n) ? a.state0[k][it.base + j] : scalar_t(0);
      }
      for (int k = 0; k < NP; ++k) acc[k][j] = scalar_t(0);
    }
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t off = t * M + it.base;
      if (t > 0) {  // the previous step's streams (see prefetch_run)
        const int64_t prev = off - M;
        if (a.grad_spk) prefetch_run(a.grad_spk + prev, it.n, false);
        if (F::kNeedsX) prefetch_run(a.x + prev, it.n, false);
        prefetch_run(a.grad_x + prev, it.n, true);
        for (int k = 0; k < NS; ++k) {
          if (a.grad_state[k]) prefetch_run(a.grad_state[k] + prev, it.n, false);
          if (t > 1 && (!((F::kOptionalStates >> k) & 1) || a.state_seq[k]))
            prefetch_run((KEEP ? a.pre_reset_seq : a.state_seq[k]) + prev - M, it.n, false);
        }
      }
      if constexpr (KEEP) {  // the state before the step, from the step before's u and r
        if (t > 0) {
          const scalar_t* __restrict u_prev = a.pre_reset_seq + off - M;
          const uint8_t* __restrict r_prev = a.reset_flag_seq + off - M;
FASTLIF_SCAN_SIMD
          for (int64_t j = 0; j < it.n; ++j) {
            scalar_t p[NP];
            unroll<NP>([&](auto k) { p[k] = pv[k][PN ? j : 0]; });
            rebuilt[j] = F::template restore<scalar_t, O>(u_prev[j], scalar_t(r_prev[j]), p);
          }
        }
      }
      // What the step reads, each stream its own restrict pointer (a local array of pointers
      // indexed in the loop keeps GCC from vectorising it): the states before the step, those
      // after it that the family reads (kReadsAfter), the upstream state gradients (zeros).
      // A state forward did not keep (null: may_skip_state) reads as zeros.
      const auto absent = [&](int k) { return ((F::kOptionalStates >> k) & 1) && !a.state_seq[k]; };
      const auto before = [&](int k) -> const scalar_t* {
        if (KEEP) return t > 0 ? rebuilt : init[k];
        return absent(k) ? zeros : t > 0 ? a.state_seq[k] + off - M : init[k];
      };
      const auto after = [&](int k) -> const scalar_t* {
        if (KEEP) return a.pre_reset_seq + off;
        return ((F::kReadsAfter >> k) & 1) && !absent(k) ? a.state_seq[k] + off : zeros;
      };
      const scalar_t* __restrict b0 = before(0);
      const scalar_t* __restrict b1 = NS > 1 ? before(NS > 1) : zeros;
      const scalar_t* __restrict b2 = NS > 2 ? before(2 * (NS > 2)) : zeros;
      const scalar_t* __restrict n0 = after(0);
      const scalar_t* __restrict n1 = NS > 1 ? after(NS > 1) : zeros;
      const scalar_t* __restrict n2 = NS > 2 ? after(2 * (NS > 2)) : zeros;
      const scalar_t* __restrict g0 = a.grad_state[0] ? a.grad_state[0] + off : zeros;
      const scalar_t* __restrict g1 = (NS > 1 && a.grad_state[NS > 1]) ? a.grad_state[NS > 1] + off : zeros;
      const scalar_t* __restrict g2 = (NS > 2 && a.grad_state[2 * (NS > 2)]) ? a.grad_state[2 * (NS > 2)] + off
                                                                               : zeros;
      const scalar_t* __restrict x = F::kNeedsX ? a.x + off : zeros;
      const scalar_t* __restrict gspk_in = a.grad_spk ? a.grad_spk + off : zeros;
      scalar_t* __restrict gx_out = a.grad_x + off;
FASTLIF_SCAN_SIMD
      for (int64_t j = 0; j < it.n; ++j) {
        scalar_t s[NS], sn[NS], p[NP], gs[NS], gp[NP];
        s[0] = b0[j];
        sn[0] = n0[j];
        gs[0] = g0[j] + carry[0][j];
        if constexpr (NS > 1) {
          s[NS > 1] = b1[j];
          sn[NS > 1] = n1[j];
          gs[NS > 1] = g1[j] + carry[NS > 1][j];
        }
        if constexpr (NS > 2) {
          s[2 * (NS > 2)] = b2[j];
          sn[2 * (NS > 2)] = n2[j];
          gs[2 * (NS > 2)] = g2[j] + carry[2 * (NS > 2)][j];
        }
        unroll<NP>([&](auto k) {
          p[k] = pv[k][PN ? j : 0];
          gp[k] = scalar_t(0);
        });
        scalar_t gspk = gspk_in[j];
        if constexpr (F::kSpikeState) {  // the spike output is state 0: one gradient reaches it
          gspk += gs[0];
          gs[0] = scalar_t(0);
        }
        gx_out[j] = F::template backward<scalar_t, O, SG>(x[j], s, sn, p, gspk, gs, gp, a.sg);
        unroll<NS>([&](auto k) { carry[k][j] = gs[k]; });
        unroll<NP>([&](auto k) {
          if constexpr ((GRADS >> k) & 1) acc[k][j] += gp[k];
        });
      }
    }
    for (int k = 0; k < NS; ++k)
      if (a.grad_state0[k])
        for (int64_t j = 0; j < it.n; ++j) a.grad_state0[k][it.base + j] = carry[k][j];
    for (int k = 0; k < NP; ++k)
      if ((GRADS >> k) & 1) pgrads.store(k, index, acc[k], it.n);
  }
}

// --- bindings: one form for every family ------------------------------------------------------------

template <class F, typename scalar_t>
void family_fwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t x, const Pointers& state0,
                      const ParamTuples& pin, std::uintptr_t spk, const Pointers& states, const std::vector<int>& options,
                      int threads) {
  constexpr int NS = F::kStates, NP = F::kParams;
  if (!x || !spk) throw std::invalid_argument(std::string(F::kName) + "_fwd: x and spk are required");
  const ParamSet<scalar_t, NP> params(family_params<NP>(F::kName, pin), L, F::kParamNames);
  ScanArgs<scalar_t, NS> a;
  set_grid(a, T, R, L, params.per_neuron, threads);
  a.x = as_ptr<const scalar_t>(x);
  a.state0 = family_pointers<const scalar_t, NS>(F::kName, "initial states", state0, false);
  a.spk = as_ptr<scalar_t>(spk);
  a.state = family_pointers<scalar_t, NS>(F::kName, "state outputs", states, true);
  const int64_t bytes = T * R * L * int64_t(sizeof(scalar_t));
  advise_huge(a.spk, bytes);
  for (int k = 0; k < NS; ++k) advise_huge(a.state[k], bytes);
  dispatch_options(options, 0, typename F::Options{}, static_cast<Opts<>*>(nullptr),
                   [&](auto O) {
                     bool_switch(params.per_neuron, [&](auto PN) { scan_fwd<F, decltype(O), PN()>(a, params); });
                   });
}

template <class F, typename scalar_t>
void family_bwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, const Pointers& grad_states,
                      std::uintptr_t x, const Pointers& state0, const Pointers& states, const ParamTuples& pin,
                      std::uintptr_t grad_x, const Pointers& grad_state0, const Pointers& grad_params,
                      const std::vector<int>& options, int sg, double sg_param, int threads) {
  constexpr int NS = F::kStates, NP = F::kParams;
  if ((F::kNeedsX && !x) || !grad_x)
    throw std::invalid_argument(std::string(F::kName) + "_bwd: x and grad_x are required");
  const ParamSet<scalar_t, NP> params(family_params<NP>(F::kName, pin), L, F::kParamNames);
  ScanArgs<scalar_t, NS> a;
  set_grid(a, T, R, L, params.per_neuron, threads);
  a.x = as_ptr<const scalar_t>(x);
  a.grad_spk = as_ptr<const scalar_t>(grad_spk);
  a.grad_state = family_pointers<const scalar_t, NS>(F::kName, "state gradients", grad_states, false);
  a.state0 = family_pointers<const scalar_t, NS>(F::kName, "initial states", state0, false);
  a.state_seq = family_pointers<const scalar_t, NS>(F::kName, "states", states, false);
  a.grad_x = as_ptr<scalar_t>(grad_x);
  a.grad_state0 = family_pointers<scalar_t, NS>(F::kName, "initial-state gradients", grad_state0, false);
  const auto gparams = family_pointers<scalar_t, NP>(F::kName, "parameter gradients", grad_params, false);
  int wanted = 0;  // bit k: parameter k's gradient
  for (int k = 0; k < NP; ++k) wanted |= gparams[k] ? 1 << k : 0;
  for (int k = 0; k < NS; ++k)
    if (!a.state_seq[k] && !(((F::kOptionalStates >> k) & 1) && F::may_skip_state(k, options, wanted)))
      throw std::invalid_argument(std::string(F::kName) + "_bwd: the saved sequence of state " + std::to_string(k) +
                                  " is required by this call's backward (its options or parameter gradients)");
  a.sg = SurrogateConsts<scalar_t>(sg, sg_param);
  advise_huge(a.grad_x, T * R * L * int64_t(sizeof(scalar_t)));
  ParamGrads<scalar_t, NP> pgrads(Items(a.R, a.L).count);
  dispatch_options(options, 0, typename F::Options{}, static_cast<Opts<>*>(nullptr), [&](auto O) {
    surrogate_switch(sg, typename F::Surrogates{}, [&](auto SG) {
      grads_switch(typename F::GradMasks{}, params.per_neuron, wanted, [&](auto PN, auto GRADS) {
        scan_bwd<F, decltype(O), SG(), PN(), GRADS()>(a, params, pgrads);
      });
    });
  });
  for (int k = 0; k < NP; ++k) pgrads.reduce(k, a.R, a.L, params.per_neuron, params.given_n[k], gparams[k]);
}

// --- the families of one build: each registers itself --------------------------------------------

// A family's two entry points, found by its name (csrc/families.cpp).
struct FamilyKernels {
  void (*forward)(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, const Pointers& state0,
                  const ParamTuples& params, std::uintptr_t spk, const Pointers& states,
                  const std::vector<int>& options, int threads);
  void (*backward)(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, const Pointers& grad_states,
                   std::uintptr_t x, const Pointers& state0, const Pointers& states, const ParamTuples& params,
                   std::uintptr_t grad_x, const Pointers& grad_state0, const Pointers& grad_params,
                   const std::vector<int>& options, int sg, double sg_param, int threads);
};

// Function-local static: filled by the families' static initialisers (FASTLIF_FAMILY), in any order.
inline std::map<std::string, FamilyKernels>& family_registry() {
  static std::map<std::string, FamilyKernels> all;
  return all;
}

// body(scalar_t{}) for a call's dtype, after the checks both directions share: the grid and the
// family's options.
template <class F, typename Body>
void with_checked_call(int dtype, int64_t T, int64_t R, int64_t L, const std::vector<int>& options, Body&& body) {
  check_grid(F::kName, T, R, L);
  check_options(F::kName, options, typename F::Options{});
  with_dtype(dtype, std::forward<Body>(body));
}

// Family F's entry points (they leave the GIL as they find it), and its registration.
template <class F>
struct FamilyEntry {
  static void forward(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, const Pointers& state0,
                      const ParamTuples& params, std::uintptr_t spk, const Pointers& states,
                      const std::vector<int>& options, int threads) {
    with_checked_call<F>(dtype, T, R, L, options, [&](auto v) {
      family_fwd_typed<F, decltype(v)>(T, R, L, x, state0, params, spk, states, options, threads);
    });
  }

  static void backward(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk,
                       const Pointers& grad_states, std::uintptr_t x, const Pointers& state0, const Pointers& states,
                       const ParamTuples& params, std::uintptr_t grad_x, const Pointers& grad_state0,
                       const Pointers& grad_params, const std::vector<int>& options, int sg, double sg_param,
                       int threads) {
    with_checked_call<F>(dtype, T, R, L, options, [&](auto v) {
      family_bwd_typed<F, decltype(v)>(T, R, L, grad_spk, grad_states, x, state0, states, params, grad_x,
                                       grad_state0, grad_params, options, sg, sg_param, threads);
    });
  }

  FamilyEntry() { family_registry().emplace(F::kName, FamilyKernels{&forward, &backward}); }
};

// At the end of csrc/families/<name>.cpp: the family's kernels join the build's registry by its
// name, so a new family is its own file and no list elsewhere names it.
#define FASTLIF_FAMILY(Step) static const ::fastlif::FamilyEntry<Step> fastlif_family_entry_##Step

}  // namespace fastlif
