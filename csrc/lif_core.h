// What snnTorch's Leaky (csrc/lif.cpp) and RLeaky (csrc/rleaky.cpp) share on the CPU, written
// once: the arguments of a call, the spike and reset of a membrane that integrated to u, the
// rebuild of the step before from what forward saved, the fill of the pointers both bindings
// take, and the dispatch over the compile-time switches. Each file keeps only what differs: how
// u is integrated (Leaky's zero reset is b*((1-r)*m) + x, RLeaky's base - r*base, each in
// snnTorch's own order) and RLeaky's recurrent term.
//
// Forward saves the membrane m (delayed reset), or the pre-reset membrane u and the reset flags
// r (immediate reset); backward rebuilds each step from them (fastlif/layout.py).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.h"
#include "static_switch.h"

namespace fastlif {

// The pointers of a Leaky-like call (forward's or backward's; the rest stay null).
template <typename scalar_t>
struct LifArgs {
  int64_t T = 0, R = 0, L = 0;
  const scalar_t* x = nullptr;
  const scalar_t* mem0 = nullptr;  // [R*L] or null (zeros)
  // forward outputs
  scalar_t* spk = nullptr;
  scalar_t* mem = nullptr;
  scalar_t* u_saved = nullptr;  // pre-reset membrane, immediate reset only
  uint8_t* r_saved = nullptr;   // reset flags, immediate reset only
  // backward inputs (null grad_spk / grad_mem: zeros) and outputs
  const scalar_t* grad_spk = nullptr;
  const scalar_t* grad_mem = nullptr;
  const scalar_t* mem_saved = nullptr;  // forward's mem (delayed reset)
  const scalar_t* u_in = nullptr;       // forward's u_saved (immediate reset)
  const uint8_t* r_in = nullptr;
  scalar_t* grad_x = nullptr;
  scalar_t* grad_mem0 = nullptr;  // [R*L] or null
  SurrogateConsts<scalar_t> sg;   // the surrogate's constants, rounded as snnTorch rounds them
  int num_threads = 1;
};

// A membrane that integrated to u this step (r: the reset flag from the step before): writes its
// spike H(u - thr) * g, and with an immediate reset u and r for backward; returns the membrane
// after the step.
template <typename scalar_t, int RESET, bool IMMEDIATE>
inline scalar_t fire(scalar_t u, scalar_t r, scalar_t th, scalar_t g, scalar_t& spk, scalar_t* u_out,
                     uint8_t* r_out) {
  const scalar_t s = heaviside(u - th);
  spk = s * g;
  if constexpr (IMMEDIATE) {
    *u_out = u;
    *r_out = static_cast<uint8_t>(r);
    return immediate_reset<scalar_t, RESET>(u, r, s, th, g);
  }
  return u;
}

// The membrane and the spikes step t-1 left (t > 0; prev is its element), rebuilt from what
// forward saved, bit for bit as forward computed them.
template <typename scalar_t, int RESET, bool IMMEDIATE>
inline void previous_step(const LifArgs<scalar_t>& a, int64_t prev, scalar_t th, scalar_t g, scalar_t& m0,
                          scalar_t& sp0) {
  if constexpr (IMMEDIATE) {
    const scalar_t up = a.u_in[prev];
    const scalar_t s = heaviside(up - th);
    m0 = immediate_reset<scalar_t, RESET>(up, scalar_t(a.r_in[prev]), s, th, g);
    sp0 = s * g;
  } else {
    m0 = a.mem_saved[prev];
    sp0 = heaviside(m0 - th) * g;
  }
}

// body(it, index) for every work item (csrc/common.h) of an element-wise kernel over a's grid,
// on a team sized by the memory it moves: values_moved arrays of T*R*L values (team_size).
template <typename scalar_t, class F>
void for_each_item(const LifArgs<scalar_t>& a, int values_moved, F&& body) {
  const Items items(a.R, a.L);
  Team team(a.num_threads, items.count, a.T * a.R * a.L * int64_t(values_moved * sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t index = 0; index < items.count; ++index) {
    const Team::Item mark(team);
    body(Item(items, a.L, index), index);
  }
}

// A forward's streams of the step at `next` (see prefetch_run): x read, spk and mem written.
template <typename scalar_t>
inline void prefetch_next_step(const LifArgs<scalar_t>& a, int64_t next, int64_t n) {
  prefetch_run(a.x + next, n, false);
  prefetch_run(a.spk + next, n, true);
  prefetch_run(a.mem + next, n, true);
}

// Forward's pointers, checked: x, spk and mem always; u and r with an immediate reset.
template <typename scalar_t>
void set_lif_forward(LifArgs<scalar_t>& a, const char* name, std::uintptr_t x, std::uintptr_t mem0,
                     std::uintptr_t spk, std::uintptr_t mem, std::uintptr_t u_saved, std::uintptr_t r_saved,
                     bool immediate) {
  if (!x || !spk || !mem) throw std::invalid_argument(std::string(name) + ": x, spk and mem are required");
  if (immediate && (!u_saved || !r_saved))
    throw std::invalid_argument(std::string(name) + ": an immediate reset needs u_saved and r_saved");
  a.x = as_ptr<const scalar_t>(x);
  a.mem0 = as_ptr<const scalar_t>(mem0);
  a.spk = as_ptr<scalar_t>(spk);
  a.mem = as_ptr<scalar_t>(mem);
  a.u_saved = as_ptr<scalar_t>(u_saved);
  a.r_saved = as_ptr<uint8_t>(r_saved);
  advise_outputs(a.T * a.R * a.L * int64_t(sizeof(scalar_t)), a.spk, a.mem, a.u_saved);  // fresh: see advise_huge
}

// Backward's pointers, checked: grad_x always; what forward saved for the reset it ran.
template <typename scalar_t>
void set_lif_backward(LifArgs<scalar_t>& a, const char* name, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
                      std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t mem0,
                      std::uintptr_t grad_x, std::uintptr_t grad_mem0, bool immediate, int sg, double sg_param) {
  if (!grad_x) throw std::invalid_argument(std::string(name) + ": grad_x is required");
  if (immediate ? (!u_saved || !r_saved) : !mem_saved)
    throw std::invalid_argument(std::string(name) + (immediate ? ": an immediate reset needs u_saved and r_saved"
                                                               : ": a delayed reset needs mem_saved"));
  a.grad_spk = as_ptr<const scalar_t>(grad_spk);
  a.grad_mem = as_ptr<const scalar_t>(grad_mem);
  a.mem_saved = as_ptr<const scalar_t>(mem_saved);
  a.u_in = as_ptr<const scalar_t>(u_saved);
  a.r_in = as_ptr<const uint8_t>(r_saved);
  a.mem0 = as_ptr<const scalar_t>(mem0);
  a.grad_x = as_ptr<scalar_t>(grad_x);
  a.grad_mem0 = as_ptr<scalar_t>(grad_mem0);
  a.sg = SurrogateConsts<scalar_t>(sg, sg_param);
  advise_huge(a.grad_x, a.T * a.R * a.L * int64_t(sizeof(scalar_t)));
}

// f(RESET, IMMEDIATE) as compile-time constants; an immediate reset of a neuron that never
// resets is a delayed one.
template <typename F>
void reset_switch(int reset, bool immediate, F&& f) {
  int_switch<kSubtract, kZero, kNone>(reset, "reset_mode", [&](auto RESET) {
    bool_switch(immediate && RESET() != kNone, [&](auto IMM) { f(RESET, IMM); });
  });
}

// reset_switch and per-neuron parameters: f(RESET, IMMEDIATE, PER_NEURON).
template <typename F>
void lif_switch(int reset, bool immediate, bool per_neuron, F&& f) {
  reset_switch(reset, immediate, [&](auto RESET, auto IMM) {
    bool_switch(per_neuron, [&](auto PN) { f(RESET, IMM, PN); });
  });
}

// reset_switch, the parameter gradients computed (grads_switch over `masks`; `wanted`, bit k:
// parameter k's) and the surrogate's kind: f(RESET, IMMEDIATE, PER_NEURON, SG, GRADS).
template <class Masks, typename F>
void lif_grad_switch(int reset, bool immediate, Masks masks, bool per_neuron, int wanted, int sg, F&& f) {
  reset_switch(reset, immediate, [&](auto RESET, auto IMM) {
    grads_switch(masks, per_neuron, wanted, [&](auto PN, auto GRADS) {
      int_switch<kAtan, kFastSigmoid, kSigmoid, kTriangular, kStraightThrough, kNoGrad>(
          sg, "surrogate_kind", [&](auto SG) { f(RESET, IMM, PN, SG, GRADS); });
    });
  });
}

}  // namespace fastlif
