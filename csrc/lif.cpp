// The LIF family (snnTorch's Leaky, api.md section 1) on the CPU: the whole T-step recurrence
// forward, and its surrogate-gradient backward walking T in reverse, then their bindings.
//
//   r     = H(m[t-1] - thr)                               reset flag, no gradient
//   u     = b*m + x - r*thr | b*((1-r)*m) + x | b*m + x   subtract | zero | none
//   spk   = H(u - thr) * g                                surrogate gradient backward
//   m[t]  = u, or with an immediate reset: u - d*thr | u - d*u,  d = spk/g - r
//
// The backward rebuilds each step from what forward saved: the membrane m (delayed reset), or
// the pre-reset membrane u and the reset flags (immediate reset).
#include <pybind11/pybind11.h>

#include "common.h"
#include "entry_points.h"
#include "lif_core.h"
#include "module.h"
#include "static_switch.h"

namespace fastlif {
namespace {

constexpr int kBeta = 0, kThr = 1, kGraded = 2;
constexpr const char* kParamNames[3] = {"beta", "threshold", "graded_spikes_factor"};

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON>
void lif_fwd_cpu(const LifArgs<scalar_t>& a, const ParamSet<scalar_t, 3>& params) {
  const int64_t M = a.R * a.L;
  for_each_item(a, 3, [&](const Item& it, int64_t) {  // x, spk, mem
    const auto [beta, thr, graded] = params.at(it.l0);
    scalar_t m[kChunk];
    for (int64_t j = 0; j < it.n; ++j) m[j] = a.mem0 ? a.mem0[it.base + j] : scalar_t(0);
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t off = t * M + it.base;
      if (t + 1 < a.T) prefetch_next_step(a, off + M, it.n);
      const scalar_t* x = a.x + off;
      scalar_t* spk_out = a.spk + off;
      scalar_t* mem_out = a.mem + off;
#pragma omp simd
      for (int64_t j = 0; j < it.n; ++j) {
        const int64_t k = PER_NEURON ? j : 0;
        const scalar_t b = beta[k], th = thr[k];
        const scalar_t m0 = m[j];
        const scalar_t r = heaviside(m0 - th);
        scalar_t u;  // snnTorch's Leaky, in its order
        if constexpr (RESET == kSubtract) u = b * m0 + x[j] - r * th;
        else if constexpr (RESET == kZero) u = b * ((scalar_t(1) - r) * m0) + x[j];
        else u = b * m0 + x[j];
        m[j] = fire<scalar_t, RESET, IMMEDIATE>(u, r, th, graded[k], spk_out[j], IMMEDIATE ? a.u_saved + off + j : nullptr,
                                                IMMEDIATE ? a.r_saved + off + j : nullptr);
        mem_out[j] = m[j];
      }
    }
  });
}

// GRADS: the parameters whose gradient is computed (grads_switch; bit k: parameter k). Compiled:
// none (the tutorial's fixed beta), beta alone (learn_beta) and all three.
using LifGradMasks = GradMaskSet<0, 1 << kBeta, kAllParams>;

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON, int SG, int GRADS>
void lif_bwd_cpu(const LifArgs<scalar_t>& a, const ParamSet<scalar_t, 3>& params,
                 ParamGrads<scalar_t, 3>& pgrads) {
  const int64_t M = a.R * a.L;
  const scalar_t* saved = IMMEDIATE ? a.u_in : a.mem_saved;
  for_each_item(a, 4, [&](const Item& it, int64_t index) {  // grad_spk, grad_mem, saved, grad_x
    const auto [beta, thr, graded] = params.at(it.l0);
    scalar_t carry[kChunk], gb[kChunk], gth[kChunk], gg[kChunk], m_init[kChunk], m_prev[kChunk];
    scalar_t zeros[kChunk];
    for (int64_t j = 0; j < kChunk; ++j) {
      carry[j] = gb[j] = gth[j] = gg[j] = zeros[j] = scalar_t(0);
      m_init[j] = (a.mem0 && j < it.n) ? a.mem0[it.base + j] : scalar_t(0);
    }
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t off = t * M + it.base;
      if (t > 0) prefetch_previous_step(t, off, M, it.n, a.grad_spk, a.grad_mem, a.grad_x, saved);
      // The membrane this step started from, chosen outside the inner loop so that loop has no
      // branches and vectorises.
      const scalar_t* m0_src = m_init;
      if (t > 0) {
        if constexpr (!IMMEDIATE) {
          m0_src = a.mem_saved + off - M;
        } else {  // rebuild the previous step's immediate reset
#pragma omp simd
          for (int64_t j = 0; j < it.n; ++j) {
            const int64_t k = PER_NEURON ? j : 0;
            scalar_t sp0;
            previous_step<scalar_t, RESET, IMMEDIATE>(a, off - M + j, thr[k], graded[k], m_prev[j], sp0);
          }
          m0_src = m_prev;
        }
      }
      const scalar_t* u_src = saved + off;  // the membrane before this step's immediate reset
      const scalar_t* gmem_src = a.grad_mem ? a.grad_mem + off : zeros;
      const scalar_t* gspk_src = a.grad_spk ? a.grad_spk + off : zeros;
      scalar_t* gx_out = a.grad_x + off;
#pragma omp simd
      for (int64_t j = 0; j < it.n; ++j) {
        const int64_t k = PER_NEURON ? j : 0;
        const scalar_t b = beta[k], th = thr[k];
        const scalar_t m0 = m0_src[j];
        const scalar_t r = heaviside(m0 - th);
        scalar_t unused_th = 0, unused_g = 0;  // a gradient not computed: a register whose sum goes nowhere
        const scalar_t gu = membrane_grad_u<scalar_t, RESET, IMMEDIATE, SG>(
            gmem_src[j] + carry[j], gspk_src[j], u_src[j], r, th, graded[k], (GRADS >> kThr) & 1 ? gth[j] : unused_th,
            (GRADS >> kGraded) & 1 ? gg[j] : unused_g, a.sg);
        gx_out[j] = gu;
        if constexpr (RESET == kZero) {  // u = b*((1-r)*m) + x, autograd's order
          carry[j] = gu * b * (scalar_t(1) - r);
          if constexpr ((GRADS >> kBeta) & 1) gb[j] += gu * ((scalar_t(1) - r) * m0);
        } else {
          carry[j] = gu * b;
          if constexpr ((GRADS >> kBeta) & 1) gb[j] += gu * m0;
        }
      }
    }
    if (a.grad_mem0)
      for (int64_t j = 0; j < it.n; ++j) a.grad_mem0[it.base + j] = carry[j];
    const scalar_t* sums[3] = {gb, gth, gg};
    for (int p = 0; p < 3; ++p)
      if ((GRADS >> p) & 1) pgrads.store(p, index, sums[p], it.n);
  });
}

// --- bindings ------------------------------------------------------------------------------
// Python (fastlif/ops/lif.py) checks every tensor (dtype, shape, contiguity, device) and
// allocates every output before it calls these, and passes data pointers: handing tensors over
// as NumPy views cost a microsecond and more per tensor, most of a small call. What only this
// side can see is checked here.

template <typename scalar_t>
void fwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t mem0,
               const std::array<ParamIn, 3>& pin, std::uintptr_t spk, std::uintptr_t mem,
               std::uintptr_t u_saved, std::uintptr_t r_saved, int reset, bool immediate, int threads) {
  immediate = immediate && reset != kNone;
  const ParamSet<scalar_t, 3> params(pin, L, kParamNames);
  LifArgs<scalar_t> a;
  set_grid(a, T, R, L, params.per_neuron, threads);
  set_lif_forward(a, "lif_fwd", x, mem0, spk, mem, u_saved, r_saved, immediate);
  lif_switch(reset, immediate, params.per_neuron, [&](auto RESET, auto IMM, auto PN) {
    lif_fwd_cpu<scalar_t, RESET(), IMM(), PN()>(a, params);
  });
}

template <typename scalar_t>
void bwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
               std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t mem0,
               const std::array<ParamIn, 3>& pin, std::uintptr_t grad_x, std::uintptr_t grad_mem0,
               const Pointers& grad_params, int reset, bool immediate, int sg, double sg_param, int threads) {
  immediate = immediate && reset != kNone;
  const ParamSet<scalar_t, 3> params(pin, L, kParamNames);
  LifArgs<scalar_t> a;
  set_grid(a, T, R, L, params.per_neuron, threads);
  set_lif_backward(a, "lif_bwd", grad_spk, grad_mem, mem_saved, u_saved, r_saved, mem0, grad_x, grad_mem0,
                   immediate, sg, sg_param);
  const auto gparams = family_pointers<scalar_t, 3>("lif_bwd", "parameter gradients", grad_params, false);
  ParamGrads<scalar_t, 3> pgrads(Items(a.R, a.L).count);
  int wanted = 0;
  for (int p = 0; p < 3; ++p) wanted |= gparams[p] ? 1 << p : 0;
  lif_grad_switch(reset, immediate, LifGradMasks{}, params.per_neuron, wanted, sg,
                  [&](auto RESET, auto IMM, auto PN, auto SG, auto GRADS) {
                    lif_bwd_cpu<scalar_t, RESET(), IMM(), PN(), SG(), GRADS()>(a, params, pgrads);
                  });
  for (int k = 0; k < 3; ++k) pgrads.reduce(k, a.R, a.L, params.per_neuron, params.given_n[k], gparams[k]);
}

}  // namespace

// The kernels' entry points (csrc/entry_points.h); they leave the GIL as they find it.
void lif_fwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t mem0,
             const ParamTuples& params, std::uintptr_t spk, std::uintptr_t mem, std::uintptr_t u_saved,
             std::uintptr_t r_saved, int reset, bool immediate, int threads) {
  check_grid("lif", T, R, L);
  const auto pin = family_params<3>("lif", params);
  with_dtype(dtype, [&](auto v) {
    fwd_typed<decltype(v)>(T, R, L, x, mem0, pin, spk, mem, u_saved, r_saved, reset, immediate, threads);
  });
}

void lif_bwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
             std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t mem0,
             const ParamTuples& params, std::uintptr_t grad_x, std::uintptr_t grad_mem0, const Pointers& grad_params,
             int reset, bool immediate, int sg, double sg_param, int threads) {
  check_grid("lif", T, R, L);
  const auto pin = family_params<3>("lif", params);
  with_dtype(dtype, [&](auto v) {
    bwd_typed<decltype(v)>(T, R, L, grad_spk, grad_mem, mem_saved, u_saved, r_saved, mem0, pin, grad_x, grad_mem0,
                           grad_params, reset, immediate, sg, sg_param, threads);
  });
}

namespace {

// The bindings release the GIL for the kernels' whole run.
void register_lif(pybind11::module_& m) {
  namespace py = pybind11;
  using release = py::call_guard<py::gil_scoped_release>;
  m.def("lif_fwd", &lif_fwd, release(), "LIF forward over T steps (pointers; see fastlif/ops/lif.py)", py::arg("dtype"),
        py::arg("T"), py::arg("R"), py::arg("L"), py::arg("x"), py::arg("mem0"), py::arg("params"), py::arg("spk"),
        py::arg("mem"), py::arg("u_saved"), py::arg("r_saved"), py::arg("reset_mode"), py::arg("immediate"),
        py::arg("num_threads"));
  m.def("lif_bwd", &lif_bwd, release(), "LIF surrogate backward over T steps (pointers; see fastlif/ops/lif.py)",
        py::arg("dtype"), py::arg("T"), py::arg("R"), py::arg("L"), py::arg("grad_spk"), py::arg("grad_mem"),
        py::arg("mem_saved"), py::arg("u_saved"), py::arg("r_saved"), py::arg("mem0"), py::arg("params"),
        py::arg("grad_x"), py::arg("grad_mem0"), py::arg("grad_params"), py::arg("reset_mode"), py::arg("immediate"),
        py::arg("surrogate_kind"), py::arg("surrogate_param"), py::arg("num_threads"));
}

}  // namespace

FASTLIF_REGISTER(register_lif);

}  // namespace fastlif
