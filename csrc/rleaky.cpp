// The RLeaky family (snnTorch's recurrent Leaky) on the CPU: each step's spikes feed back into
// the next step's membrane, through one weight per neuron (all_to_all=False: spk * V), or
// through a dense layer (all_to_all=True: W @ spk + bias, event-driven: only the neurons that
// spiked add their weight column). Forward over T steps and surrogate backward in reverse.
//
//   r     = H(m[t-1] - thr)                                 reset flag, no gradient
//   base  = b*m[t-1] + x + rec(spk[t-1])                    rec: spk*V, or W @ spk + bias
//   u     = base - r*thr | base - r*base | base             subtract | zero | none
//   spk   = H(u - thr) * g
//   m[t]  = u, or with an immediate reset: u - d*thr | u - d*u,  d = spk/g - r
//
// Backward rebuilds each step from the saved membrane (or the pre-reset membrane and flags),
// the previous step's spikes from the previous membrane (spk = H(u - thr) * g), and carries the
// gradient reaching spk[t-1] back through rec: V * g_base, or W^T @ g_base.
//
// One-to-one: element-wise, work items as csrc/common.h. All-to-all: the neurons of a row are
// coupled, so a work item is one row (batch entry) and all its T steps; rows run in parallel;
// the weight gradient is left to the caller (it is the event-driven linear layer's, from the
// same spikes: fastlif/ops/rleaky.py).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.h"
#include "entry_points.h"
#include "module.h"
#include "static_switch.h"

namespace fastlif {
namespace {

// --- what both of RLeaky's kernels share ---------------------------------------------------
// The pointers of a call, the spike and reset of a membrane that integrated to u, the rebuild of
// the step before from what forward saved, the pointer fills and the compile-time switches.
// Forward saves the membrane m (delayed reset), or the pre-reset membrane u and the reset flags r
// (immediate reset): Leaky's saved layout (fastlif/layout.py), which Leaky's kernel keeps on the
// scan skeleton (csrc/scan.h, keeps_pre_reset).

// The pointers of a call (forward's or backward's; the rest stay null).
template <typename scalar_t>
struct RLeakyArgs {
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
  // the recurrent term
  const scalar_t* spk0 = nullptr;  // [R*L] or null (zeros)
  const scalar_t* wt = nullptr;    // all-to-all: W transposed, [L_in, L_out] row-major
  const scalar_t* w = nullptr;     // all-to-all: W, [L_out, L_in] row-major (backward)
  const scalar_t* bias = nullptr;  // all-to-all: [L] or null
  scalar_t* grad_spk0 = nullptr;
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
inline void previous_step(const RLeakyArgs<scalar_t>& a, int64_t prev, scalar_t th, scalar_t g, scalar_t& m0,
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
void for_each_item(const RLeakyArgs<scalar_t>& a, int values_moved, F&& body) {
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
inline void prefetch_next_step(const RLeakyArgs<scalar_t>& a, int64_t next, int64_t n) {
  prefetch_run(a.x + next, n, false);
  prefetch_run(a.spk + next, n, true);
  prefetch_run(a.mem + next, n, true);
}

// Forward's pointers, checked: x, spk and mem always; u and r with an immediate reset.
template <typename scalar_t>
void set_rleaky_forward(RLeakyArgs<scalar_t>& a, std::uintptr_t x, std::uintptr_t mem0, std::uintptr_t spk,
                        std::uintptr_t mem, std::uintptr_t u_saved, std::uintptr_t r_saved, bool immediate) {
  require_lif_forward("rleaky_fwd", x, spk, mem, u_saved, r_saved, immediate);
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
void set_rleaky_backward(RLeakyArgs<scalar_t>& a, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
                         std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t mem0,
                         std::uintptr_t grad_x, std::uintptr_t grad_mem0, bool immediate, int sg, double sg_param) {
  require_lif_backward("rleaky_bwd", grad_x, mem_saved, u_saved, r_saved, immediate);
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

// f(RESET, IMMEDIATE) as compile-time constants (immediate: immediate_reset_of's).
template <typename F>
void reset_switch(int reset, bool immediate, F&& f) {
  int_switch<kSubtract, kZero, kNone>(reset, "reset_mode", [&](auto RESET) {
    bool_switch(immediate, [&](auto IMM) { f(RESET, IMM); });
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
      surrogate_switch(sg, SnnTorchSurrogates{}, [&](auto SG) { f(RESET, IMM, PN, SG, GRADS); });
    });
  });
}


constexpr int kBeta = 0, kV = 1, kThr = 2, kGraded = 3;
constexpr const char* kParamNames[4] = {"beta", "V", "threshold", "graded_spikes_factor"};

template <typename scalar_t, int RESET>
inline scalar_t rleaky_reset(scalar_t base, scalar_t r, scalar_t th) {
  if constexpr (RESET == kSubtract) return base - r * th;
  else if constexpr (RESET == kZero) return base - r * base;
  else return base;
}

// One step of the element-wise part for neuron j, given the recurrent input rec: returns the new
// membrane and writes spk (and u, r for an immediate reset).
template <typename scalar_t, int RESET, bool IMMEDIATE>
inline scalar_t rleaky_update(scalar_t m0, scalar_t x, scalar_t rec, scalar_t b, scalar_t th, scalar_t g,
                              scalar_t& spk, scalar_t* u_out, uint8_t* r_out) {
  const scalar_t r = heaviside(m0 - th);
  return fire<scalar_t, RESET, IMMEDIATE>(rleaky_reset<scalar_t, RESET>(b * m0 + x + rec, r, th), r, th, g, spk,
                                          u_out, r_out);
}

// The gradient of one neuron's step: from what reaches its membrane (gm) and its spike (gsp),
// the gradient reaching base (returned; autograd's order for base - r*base: gu*(1 - r)), and the
// threshold and graded-factor sums.
template <typename scalar_t, int RESET, bool IMMEDIATE, int SG>
inline scalar_t rleaky_grad(scalar_t m0, scalar_t u, scalar_t gm, scalar_t gsp, scalar_t th, scalar_t g,
                            const SurrogateConsts<scalar_t>& p, scalar_t& gth, scalar_t& gg) {
  const scalar_t r = heaviside(m0 - th);
  const scalar_t gu = membrane_grad_u<scalar_t, RESET, IMMEDIATE, SG>(gm, gsp, u, r, th, g, gth, gg, p);
  if constexpr (RESET == kZero) return gu * (scalar_t(1) - r);
  else return gu;
}

// The element-wise part of step `off` for n neurons (the membranes m and spikes sp carried from
// the step before, rec(j, k, sp[j]) neuron j's recurrent input, k its parameters' index): writes the
// spikes and membranes, and with an immediate reset u and r. The streams are local restrict
// pointers: read through `a` inside the loop, they were reloaded after every flag byte stored (a
// char store may alias anything), and GCC did not vectorise an immediate reset's loop (the
// one-to-one forward took 8.2 ms at the tutorial size, 1 thread, against 0.6 ms with a delayed
// reset; now 0.62).
template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON, class Rec>
inline void rleaky_step(const RLeakyArgs<scalar_t>& a, int64_t off, int64_t n, scalar_t* __restrict m,
                        scalar_t* __restrict sp, Rec&& rec, const scalar_t* beta, const scalar_t* thr,
                        const scalar_t* graded) {
  const scalar_t* __restrict x = a.x + off;
  scalar_t* __restrict spk_out = a.spk + off;
  scalar_t* __restrict mem_out = a.mem + off;
  scalar_t* __restrict u_out = IMMEDIATE ? a.u_saved + off : nullptr;
  uint8_t* __restrict r_out = IMMEDIATE ? a.r_saved + off : nullptr;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const int64_t k = PER_NEURON ? j : 0;
    m[j] = rleaky_update<scalar_t, RESET, IMMEDIATE>(m[j], x[j], rec(j, k, sp[j]), beta[k], thr[k], graded[k],
                                                     sp[j], IMMEDIATE ? u_out + j : nullptr,
                                                     IMMEDIATE ? r_out + j : nullptr);
    spk_out[j] = sp[j];
    mem_out[j] = m[j];
  }
}

// --- one-to-one ------------------------------------------------------------------------------

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON>
void rleaky_fwd_cpu(const RLeakyArgs<scalar_t>& a, const ParamSet<scalar_t, 4>& params) {
  const int64_t M = a.R * a.L;
  for_each_item(a, 3, [&](const Item& it, int64_t) {  // x, spk, mem
    const auto [beta, V, thr, graded] = params.at(it.l0);
    scalar_t m[kChunk], sp[kChunk];
    for (int64_t j = 0; j < it.n; ++j) {
      m[j] = a.mem0 ? a.mem0[it.base + j] : scalar_t(0);
      sp[j] = a.spk0 ? a.spk0[it.base + j] : scalar_t(0);
    }
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t off = t * M + it.base;
      if (t + 1 < a.T) prefetch_next_step(a, off + M, it.n);
      const auto recurrent_input = [&](int64_t, int64_t k, scalar_t s) { return s * V[k]; };
      rleaky_step<scalar_t, RESET, IMMEDIATE, PER_NEURON>(a, off, it.n, m, sp, recurrent_input, beta, thr, graded);
    }
  });
}

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON, int SG>
void rleaky_bwd_cpu(const RLeakyArgs<scalar_t>& a, const ParamSet<scalar_t, 4>& params,
                    ParamGrads<scalar_t, 4>& pgrads) {
  const int64_t M = a.R * a.L;
  const SurrogateConsts<scalar_t>& p = a.sg;
  const scalar_t* saved = IMMEDIATE ? a.u_in : a.mem_saved;
  for_each_item(a, 4, [&](const Item& it, int64_t index) {  // grad_spk, grad_mem, saved, grad_x
    const auto [beta, V, thr, graded] = params.at(it.l0);
    scalar_t carry_m[kChunk], carry_s[kChunk], gb[kChunk], gv[kChunk], gth[kChunk], gg[kChunk];
    scalar_t m_init[kChunk], s_init[kChunk], m_prev[kChunk], s_prev[kChunk], zeros[kChunk];
    for (int64_t j = 0; j < kChunk; ++j) {
      carry_m[j] = carry_s[j] = gb[j] = gv[j] = gth[j] = gg[j] = zeros[j] = scalar_t(0);
      m_init[j] = (a.mem0 && j < it.n) ? a.mem0[it.base + j] : scalar_t(0);
      s_init[j] = (a.spk0 && j < it.n) ? a.spk0[it.base + j] : scalar_t(0);
    }
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t off = t * M + it.base;
      if (t > 0) prefetch_previous_step(t, off, M, it.n, a.grad_spk, a.grad_mem, a.grad_x, saved);
      // The state the step started from (membrane and previous spikes), the sources chosen here
      // so that the main loop has no branches and vectorises (as Leaky's backward). An
      // immediate reset rebuilds the previous step in a loop of its own; with a delayed one the
      // membrane is forward's own and the main loop derives the spikes from it (rebuild_spikes),
      // sparing a pass that copied it: the tutorial-size kernel took 293 us, now 231 (medians of
      // five alternated processes each, with Leaky's backward at 190-200 us in both).
      const scalar_t* m0_src = m_init;
      const scalar_t* s0_src = s_init;
      const bool rebuild_spikes = !IMMEDIATE && t > 0;
      if (t > 0) {
        if constexpr (IMMEDIATE) {
#pragma omp simd
          for (int64_t j = 0; j < it.n; ++j) {
            const int64_t k = PER_NEURON ? j : 0;
            previous_step<scalar_t, RESET, IMMEDIATE>(a, off - M + j, thr[k], graded[k], m_prev[j], s_prev[j]);
          }
          m0_src = m_prev;
          s0_src = s_prev;
        } else {
          m0_src = a.mem_saved + off - M;
        }
      }
      const scalar_t* u_src = saved + off;
      const scalar_t* gmem_src = a.grad_mem ? a.grad_mem + off : zeros;
      const scalar_t* gspk_src = a.grad_spk ? a.grad_spk + off : zeros;
      scalar_t* gx_out = a.grad_x + off;
#pragma omp simd
      for (int64_t j = 0; j < it.n; ++j) {
        const int64_t k = PER_NEURON ? j : 0;
        const scalar_t m0 = m0_src[j];
        // previous_step's spikes, bit for bit: H(m0 - thr) * g
        const scalar_t s0 = rebuild_spikes ? heaviside(m0 - thr[k]) * graded[k] : s0_src[j];
        const scalar_t gm = gmem_src[j] + carry_m[j];
        const scalar_t gsp = gspk_src[j] + carry_s[j];
        const scalar_t gbase =
            rleaky_grad<scalar_t, RESET, IMMEDIATE, SG>(m0, u_src[j], gm, gsp, thr[k], graded[k], p, gth[j], gg[j]);
        gx_out[j] = gbase;
        gb[j] += gbase * m0;
        carry_m[j] = gbase * beta[k];
        gv[j] += gbase * s0;
        carry_s[j] = gbase * V[k];
      }
    }
    for (int64_t j = 0; j < it.n; ++j) {
      if (a.grad_mem0) a.grad_mem0[it.base + j] = carry_m[j];
      if (a.grad_spk0) a.grad_spk0[it.base + j] = carry_s[j];
    }
    const scalar_t* sums[4] = {gb, gv, gth, gg};
    for (int k = 0; k < 4; ++k) pgrads.store(k, index, sums[k], it.n);
  });
}

// --- all-to-all (a dense recurrent layer) ------------------------------------------------------
// V is unused (the layer replaces it); the other parameters as above. A row's work per step is
// the element-wise update plus, forward, one weight column per neuron that spiked, backward, the
// dense W^T @ g_base (every neuron's surrogate gradient reaches every spike).

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON>
void rleaky_linear_fwd_cpu(const RLeakyArgs<scalar_t>& a, const ParamSet<scalar_t, 4>& params) {
  const int64_t L = a.L, M = a.R * a.L;
  // dense: L weights per spike and step; counted as 32 values per neuron-step (measured like the rest)
  Team team(a.num_threads, a.R, a.T * M * int64_t(32 * sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t row = 0; row < a.R; ++row) {
    const Team::Item mark(team);
    const auto [beta, V, thr, graded] = params.at(0);
    std::vector<scalar_t> m(L), sp(L), rec(L);
    for (int64_t j = 0; j < L; ++j) {
      m[j] = a.mem0 ? a.mem0[row * L + j] : scalar_t(0);
      sp[j] = a.spk0 ? a.spk0[row * L + j] : scalar_t(0);
    }
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t off = t * M + row * L;
      for (int64_t i = 0; i < L; ++i) rec[i] = a.bias ? a.bias[i] : scalar_t(0);
      for (int64_t j = 0; j < L; ++j) {  // event-driven: the columns of the neurons that spiked
        const scalar_t s = sp[j];
        if (s == scalar_t(0)) continue;
        const scalar_t* col = a.wt + j * L;
#pragma omp simd
        for (int64_t i = 0; i < L; ++i) rec[i] += s * col[i];
      }
      const scalar_t* __restrict rec_in = rec.data();
      const auto recurrent_input = [&](int64_t i, int64_t, scalar_t) { return rec_in[i]; };
      rleaky_step<scalar_t, RESET, IMMEDIATE, PER_NEURON>(a, off, L, m.data(), sp.data(), recurrent_input, beta, thr,
                                                          graded);
    }
  }
}

// Backward's W^T @ g_base is dense (every surrogate gradient reaches every spike): a tile of RT
// batch rows shares each row of W from cache, and a block of CB result columns per row stays in
// registers while o runs. o ascends as in a one-row loop, so results do not depend on the tile
// or block sizes (RT = 8 when there are enough rows to keep the threads busy, else 1).
template <typename scalar_t, int RT, int CB>
int64_t tile_times_w_block(const scalar_t* g, const scalar_t* w, scalar_t* out, int64_t L, int64_t j0) {
  for (; j0 + CB <= L; j0 += CB) {
    scalar_t acc[RT][CB] = {};
    for (int64_t o = 0; o < L; ++o) {
      const scalar_t* w_row = w + o * L + j0;
      for (int r = 0; r < RT; ++r) {
        const scalar_t go = g[r * L + o];
#pragma omp simd
        for (int jj = 0; jj < CB; ++jj) acc[r][jj] += go * w_row[jj];
      }
    }
    for (int r = 0; r < RT; ++r)
      for (int jj = 0; jj < CB; ++jj) out[r * L + j0 + jj] = acc[r][jj];
  }
  return j0;
}

template <typename scalar_t, int RT>
void tile_times_w(const scalar_t* g, const scalar_t* w, scalar_t* out, int64_t L) {
  int64_t j0 = tile_times_w_block<scalar_t, RT, RT == 1 ? 128 : 32>(g, w, out, L, 0);
  j0 = tile_times_w_block<scalar_t, RT, 8>(g, w, out, L, j0);
  j0 = tile_times_w_block<scalar_t, RT, 1>(g, w, out, L, j0);
}

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON, int SG>
void rleaky_linear_bwd_cpu(const RLeakyArgs<scalar_t>& a, const ParamSet<scalar_t, 4>& params,
                           std::vector<scalar_t>& row_partials) {
  const int64_t L = a.L, M = a.R * a.L;
  const int tile_rows = a.R >= 16 ? 8 : 1;
  const int64_t tiles = (a.R + tile_rows - 1) / tile_rows;
  const SurrogateConsts<scalar_t>& p = a.sg;
  const scalar_t* saved = IMMEDIATE ? a.u_in : a.mem_saved;
  Team team(a.num_threads, tiles, a.T * M * int64_t(32 * sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const Team::Item mark(team);
    const auto [beta, V, thr, graded] = params.at(0);
    const int64_t row0 = tile * tile_rows;
    const int rows = static_cast<int>(std::min<int64_t>(tile_rows, a.R - row0));
    // per tile row, per neuron; the rows past the batch stay zero and add nothing
    const size_t n = static_cast<size_t>(tile_rows * L);
    std::vector<scalar_t> carry_m(n, 0), carry_s(n, 0), gbase(n, 0), gb(n, 0), gth(n, 0), gg(n, 0), m_prev(L);
    const std::vector<scalar_t> zeros(L, 0);
    for (int64_t t = a.T - 1; t >= 0; --t) {
      for (int r = 0; r < rows; ++r) {
        const int64_t row = row0 + r, off = t * M + row * L, base = r * L;
        // The loop below reads plain arrays only (no per-element choice of source), so it
        // vectorises without masked loads.
        if (t > 0) {
          for (int64_t i = 0; i < L; ++i) {
            scalar_t sp0;
            const int64_t k = PER_NEURON ? i : 0;
            previous_step<scalar_t, RESET, IMMEDIATE>(a, off - M + i, thr[k], graded[k], m_prev[i], sp0);
          }
        } else {
          std::copy_n(a.mem0 ? a.mem0 + row * L : zeros.data(), L, m_prev.data());
        }
        const scalar_t* gm_in = a.grad_mem ? a.grad_mem + off : zeros.data();
        const scalar_t* gs_in = a.grad_spk ? a.grad_spk + off : zeros.data();
        const scalar_t* u_in = saved + off;
        scalar_t* cm = carry_m.data() + base;
        const scalar_t* cs = carry_s.data() + base;
        scalar_t *gbi = gbase.data() + base, *gbr = gb.data() + base, *gthr = gth.data() + base,
                 *ggr = gg.data() + base, *gx = a.grad_x + off;
#pragma omp simd
        for (int64_t i = 0; i < L; ++i) {
          const int64_t k = PER_NEURON ? i : 0;
          const scalar_t m0 = m_prev[i];
          const scalar_t g = rleaky_grad<scalar_t, RESET, IMMEDIATE, SG>(m0, u_in[i], gm_in[i] + cm[i], gs_in[i] + cs[i],
                                                                         thr[k], graded[k], p, gthr[i], ggr[i]);
          gbi[i] = g;
          gx[i] = g;
          gbr[i] += g * m0;
          cm[i] = g * beta[k];
        }
      }
      if (tile_rows == 8) {  // carry_s = W^T @ gbase, per row
        tile_times_w<scalar_t, 8>(gbase.data(), a.w, carry_s.data(), L);
      } else {
        tile_times_w<scalar_t, 1>(gbase.data(), a.w, carry_s.data(), L);
      }
    }
    for (int r = 0; r < rows; ++r) {
      const int64_t row = row0 + r, base = r * L;
      for (int64_t i = 0; i < L; ++i) {
        if (a.grad_mem0) a.grad_mem0[row * L + i] = carry_m[base + i];
        if (a.grad_spk0) a.grad_spk0[row * L + i] = carry_s[base + i];
      }
      scalar_t* part = row_partials.data() + row * 3 * L;  // beta, threshold, graded: per row, per neuron
      for (int64_t i = 0; i < L; ++i) {
        part[i] = gb[base + i];
        part[L + i] = gth[base + i];
        part[2 * L + i] = gg[base + i];
      }
    }
  }
}

// --- bindings (pointers; fastlif/ops/rleaky.py checks and allocates) --------------------------

template <typename scalar_t>
void fwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t spk0, std::uintptr_t mem0,
               const std::array<ParamIn, 4>& pin, std::uintptr_t wt, std::uintptr_t bias, std::uintptr_t spk,
               std::uintptr_t mem, std::uintptr_t u_saved, std::uintptr_t r_saved, int reset, bool immediate,
               int threads) {
  const ParamSet<scalar_t, 4> params(pin, L, kParamNames);
  const bool all_to_all = wt != 0;
  RLeakyArgs<scalar_t> a;
  set_grid(a, T, R, L, params.per_neuron || all_to_all, threads);  // a coupled row stays a row
  set_rleaky_forward(a, x, mem0, spk, mem, u_saved, r_saved, immediate);
  a.spk0 = as_ptr<const scalar_t>(spk0);
  a.wt = as_ptr<const scalar_t>(wt);
  a.bias = as_ptr<const scalar_t>(bias);
  lif_switch(reset, immediate, params.per_neuron, [&](auto RESET, auto IMM, auto PN) {
    if (all_to_all) rleaky_linear_fwd_cpu<scalar_t, RESET(), IMM(), PN()>(a, params);
    else rleaky_fwd_cpu<scalar_t, RESET(), IMM(), PN()>(a, params);
  });
}

template <typename scalar_t>
void bwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
               std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t spk0,
               std::uintptr_t mem0, const std::array<ParamIn, 4>& pin, std::uintptr_t w, std::uintptr_t grad_x,
               std::uintptr_t grad_spk0, std::uintptr_t grad_mem0, const Pointers& grad_params, int reset,
               bool immediate, int sg, double sg_param, int threads) {
  const ParamSet<scalar_t, 4> params(pin, L, kParamNames);
  const bool all_to_all = w != 0;
  RLeakyArgs<scalar_t> a;
  set_grid(a, T, R, L, params.per_neuron || all_to_all, threads);
  set_rleaky_backward(a, grad_spk, grad_mem, mem_saved, u_saved, r_saved, mem0, grad_x, grad_mem0,
                   immediate, sg, sg_param);
  a.spk0 = as_ptr<const scalar_t>(spk0);
  a.w = as_ptr<const scalar_t>(w);
  a.grad_spk0 = as_ptr<scalar_t>(grad_spk0);
  const auto gparams = family_pointers<scalar_t, 4>("rleaky_bwd", "parameter gradients", grad_params, false);
  ParamGrads<scalar_t, 4> pgrads(all_to_all ? 0 : Items(a.R, a.L).count);
  std::vector<scalar_t> row_partials(all_to_all ? static_cast<size_t>(3 * a.R * a.L) : 0);
  // every parameter's gradient is computed (one mask): RLeaky's V is learnable in practice
  lif_grad_switch(reset, immediate, GradMaskSet<kAllParams>{}, params.per_neuron, kAllParams, sg,
                  [&](auto RESET, auto IMM, auto PN, auto SG, auto) {
    if (all_to_all) rleaky_linear_bwd_cpu<scalar_t, RESET(), IMM(), PN(), SG()>(a, params, row_partials);
    else rleaky_bwd_cpu<scalar_t, RESET(), IMM(), PN(), SG()>(a, params, pgrads);
  });
  if (!all_to_all) {
    for (int k = 0; k < 4; ++k)
      pgrads.reduce(k, a.R, a.L, params.per_neuron, params.given_n[k], gparams[k]);
    return;
  }
  // all-to-all: per-row partials of beta, threshold and graded, summed over rows in a fixed order
  const int which[3] = {kBeta, kThr, kGraded};
  for (int q = 0; q < 3; ++q) {
    scalar_t* out = gparams[which[q]];
    if (!out) continue;
    std::vector<double> per(static_cast<size_t>(a.L), 0.0);
    for (int64_t row = 0; row < a.R; ++row)
      for (int64_t i = 0; i < a.L; ++i) per[i] += row_partials[(row * 3 + q) * a.L + i];
    if (params.given_n[which[q]] == 1) {
      double acc = 0;
      for (int64_t i = 0; i < a.L; ++i) acc += per[i];
      out[0] = static_cast<scalar_t>(acc);
    } else {
      for (int64_t i = 0; i < a.L; ++i) out[i] = static_cast<scalar_t>(per[i]);
    }
  }
}

}  // namespace

// The kernels' entry points (csrc/entry_points.h); they leave the GIL as they find it.
void rleaky_fwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t spk0,
                std::uintptr_t mem0, const ParamTuples& params, std::uintptr_t wt, std::uintptr_t bias,
                std::uintptr_t spk, std::uintptr_t mem, std::uintptr_t u_saved, std::uintptr_t r_saved, int reset,
                bool immediate, int threads) {
  check_grid("rleaky", T, R, L);
  immediate = immediate_reset_of(reset, immediate);
  const auto pin = family_params<4>("rleaky", params);
  with_dtype(dtype, [&](auto v) {
    using scalar_t = decltype(v);
    fwd_typed<scalar_t>(T, R, L, x, spk0, mem0, pin, wt, bias, spk, mem, u_saved, r_saved, reset, immediate,
                        threads);
  });
}

void rleaky_bwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
                std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t spk0,
                std::uintptr_t mem0, const ParamTuples& params, std::uintptr_t w, std::uintptr_t grad_x,
                std::uintptr_t grad_spk0, std::uintptr_t grad_mem0, const Pointers& grad_params, int reset,
                bool immediate, int sg, double sg_param, int threads) {
  check_grid("rleaky", T, R, L);
  immediate = immediate_reset_of(reset, immediate);
  const auto pin = family_params<4>("rleaky", params);
  with_dtype(dtype, [&](auto v) {
    using scalar_t = decltype(v);
    bwd_typed<scalar_t>(T, R, L, grad_spk, grad_mem, mem_saved, u_saved, r_saved, spk0, mem0, pin, w, grad_x,
                        grad_spk0, grad_mem0, grad_params, reset, immediate, sg, sg_param, threads);
  });
}

namespace {

// The bindings release the GIL for the kernels' whole run.
void register_rleaky(pybind11::module_& m) {
  namespace py = pybind11;
  using release = py::call_guard<py::gil_scoped_release>;
  m.def("rleaky_fwd", &rleaky_fwd, release(), "RLeaky forward over T steps (pointers; see fastlif/ops/rleaky.py)",
        py::arg("dtype"), py::arg("T"), py::arg("R"), py::arg("L"), py::arg("x"), py::arg("spk0"), py::arg("mem0"),
        py::arg("params"), py::arg("wt"), py::arg("bias"), py::arg("spk"), py::arg("mem"), py::arg("u_saved"),
        py::arg("r_saved"), py::arg("reset_mode"), py::arg("immediate"), py::arg("num_threads"));
  m.def("rleaky_bwd", &rleaky_bwd, release(), "RLeaky surrogate backward (pointers; see fastlif/ops/rleaky.py)",
        py::arg("dtype"), py::arg("T"), py::arg("R"), py::arg("L"), py::arg("grad_spk"), py::arg("grad_mem"),
        py::arg("mem_saved"), py::arg("u_saved"), py::arg("r_saved"), py::arg("spk0"), py::arg("mem0"),
        py::arg("params"), py::arg("w"), py::arg("grad_x"), py::arg("grad_spk0"), py::arg("grad_mem0"),
        py::arg("grad_params"), py::arg("reset_mode"), py::arg("immediate"), py::arg("surrogate_kind"),
        py::arg("surrogate_param"), py::arg("num_threads"));
}

}  // namespace

FASTLIF_REGISTER(register_rleaky);

}  // namespace fastlif
