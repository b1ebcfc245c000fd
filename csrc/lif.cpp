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
#include "module.h"
#include "static_switch.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastlif {
namespace {

constexpr int kBeta = 0, kThr = 1, kGraded = 2;
constexpr const char* kParamNames[3] = {"beta", "threshold", "graded_spikes_factor"};

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
  SurrogateConsts<scalar_t> sg;  // the surrogate's constants, rounded as snnTorch rounds them
  int num_threads = 1;
};

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON>
void lif_fwd_cpu(const LifArgs<scalar_t>& a, const ParamSet<scalar_t, 3>& params) {
  const Items items(a.R, a.L);
  const int64_t M = a.R * a.L;
  // bytes moved: 3 arrays of T*M values
  Team team(a.num_threads, items.count, a.T * M * int64_t(3 * sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t index = 0; index < items.count; ++index) {
    const Team::Item mark(team);
    const Item it(items, a.L, index);
    const auto [beta, thr, graded] = params.at(it.l0);
    scalar_t m[kChunk];
    for (int64_t j = 0; j < it.n; ++j) m[j] = a.mem0 ? a.mem0[it.base + j] : scalar_t(0);
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t off = t * M + it.base;
      if (t + 1 < a.T) {
        prefetch_run(a.x + off + M, it.n, false);
        prefetch_run(a.spk + off + M, it.n, true);
        prefetch_run(a.mem + off + M, it.n, true);
      }
      const scalar_t* x = a.x + off;
      scalar_t* spk_out = a.spk + off;
      scalar_t* mem_out = a.mem + off;
#pragma omp simd
      for (int64_t j = 0; j < it.n; ++j) {
        const scalar_t b = beta[PER_NEURON ? j : 0];
        const scalar_t th = thr[PER_NEURON ? j : 0];
        const scalar_t g = graded[PER_NEURON ? j : 0];
        const scalar_t m0 = m[j];
        const scalar_t r = heaviside(m0 - th);
        scalar_t u;
        if constexpr (RESET == kSubtract) u = b * m0 + x[j] - r * th;
        else if constexpr (RESET == kZero) u = b * ((scalar_t(1) - r) * m0) + x[j];
        else u = b * m0 + x[j];
        const scalar_t s = heaviside(u - th);
        scalar_t mn = u;
        if constexpr (IMMEDIATE) {
          mn = immediate_reset<scalar_t, RESET>(u, r, s, th, g);
          a.u_saved[off + j] = u;
          a.r_saved[off + j] = static_cast<uint8_t>(r);
        }
        spk_out[j] = s * g;
        mem_out[j] = mn;
        m[j] = mn;
      }
    }
  }
}

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON, int SG>
void lif_bwd_cpu(const LifArgs<scalar_t>& a, const ParamSet<scalar_t, 3>& params,
                 ParamGrads<scalar_t, 3>& pgrads) {
  const Items items(a.R, a.L);
  const int64_t M = a.R * a.L;
  const SurrogateConsts<scalar_t>& p = a.sg;
  const scalar_t* saved = IMMEDIATE ? a.u_in : a.mem_saved;
  // bytes moved: 4 arrays of T*M values
  Team team(a.num_threads, items.count, a.T * M * int64_t(4 * sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t index = 0; index < items.count; ++index) {
    const Team::Item mark(team);
    const Item it(items, a.L, index);
    const auto [beta, thr, graded] = params.at(it.l0);
    scalar_t carry[kChunk], gb[kChunk], gth[kChunk], gg[kChunk], m_init[kChunk], m_prev[kChunk];
    scalar_t zeros[kChunk];
    for (int64_t j = 0; j < kChunk; ++j) {
      carry[j] = gb[j] = gth[j] = gg[j] = zeros[j] = scalar_t(0);
      m_init[j] = (a.mem0 && j < it.n) ? a.mem0[it.base + j] : scalar_t(0);
    }
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t off = t * M + it.base;
      const int64_t prev = off - M;
      if (t > 0) prefetch_previous_step(t, off, M, it.n, a.grad_spk, a.grad_mem, a.grad_x, saved);
      // The membrane this step started from, chosen outside the inner loop so that loop has no
      // branches and vectorises.
      const scalar_t* m0_src = m_init;
      if (t > 0) {
        if constexpr (!IMMEDIATE) {
          m0_src = a.mem_saved + prev;
        } else {  // rebuild the previous step's immediate reset, bit for bit as forward did
#pragma omp simd
          for (int64_t j = 0; j < it.n; ++j) {
            const scalar_t th = thr[PER_NEURON ? j : 0];
            const scalar_t up = a.u_in[prev + j];
            m_prev[j] = immediate_reset<scalar_t, RESET>(up, scalar_t(a.r_in[prev + j]), heaviside(up - th),
                                                         th, graded[PER_NEURON ? j : 0]);
          }
          m0_src = m_prev;
        }
      }
      const scalar_t* u_src = saved + off;
      const scalar_t* gmem_src = a.grad_mem ? a.grad_mem + off : zeros;
      const scalar_t* gspk_src = a.grad_spk ? a.grad_spk + off : zeros;
      scalar_t* gx_out = a.grad_x + off;
#pragma omp simd
      for (int64_t j = 0; j < it.n; ++j) {
        const scalar_t b = beta[PER_NEURON ? j : 0];
        const scalar_t th = thr[PER_NEURON ? j : 0];
        const scalar_t g = graded[PER_NEURON ? j : 0];
        const scalar_t m0 = m0_src[j];
        const scalar_t u = u_src[j];  // membrane before this step's immediate reset
        const scalar_t r = heaviside(m0 - th);
        const scalar_t z = u - th;
        const scalar_t s = heaviside(z);
        const scalar_t gm = gmem_src[j] + carry[j];
        const scalar_t gspk = gspk_src[j];
        scalar_t gs = gspk * g;  // gradient reaching the Heaviside output
        scalar_t gu = gm;        // gradient reaching the pre-reset membrane u
        if constexpr (IMMEDIATE && RESET == kSubtract) {  // mem = u - (s - r) * thr
          gs -= gm * th;
          gth[j] -= gm * (s - r);
        } else if constexpr (IMMEDIATE && RESET == kZero) {  // mem = u - (s - r) * u
          gs -= gm * u;
          gu = gm * (scalar_t(1) - (s - r));
        }
        const scalar_t gz = surrogate_backward<scalar_t, SG>(gs, z, p);
        gu += gz;
        gth[j] -= gz;
        if constexpr (RESET == kSubtract) gth[j] -= r * gu;
        gg[j] += gspk * s;
        gx_out[j] = gu;
        if constexpr (RESET == kZero) {
          carry[j] = gu * b * (scalar_t(1) - r);
          gb[j] += gu * ((scalar_t(1) - r) * m0);
        } else {
          carry[j] = gu * b;
          gb[j] += gu * m0;
        }
      }
    }
    if (a.grad_mem0)
      for (int64_t j = 0; j < it.n; ++j) a.grad_mem0[it.base + j] = carry[j];
    pgrads.store(kBeta, index, gb, it.n);
    pgrads.store(kThr, index, gth, it.n);
    pgrads.store(kGraded, index, gg, it.n);
  }
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
  if (!x || !spk || !mem) throw std::invalid_argument("lif_fwd: x, spk and mem are required");
  if (immediate && (!u_saved || !r_saved))
    throw std::invalid_argument("lif_fwd: an immediate reset needs u_saved and r_saved");
  const ParamSet<scalar_t, 3> params(pin, L, kParamNames);
  LifArgs<scalar_t> a;
  a.T = T;
  a.R = params.per_neuron ? R : 1;  // scalar parameters: run the grid as one long row
  a.L = params.per_neuron ? L : R * L;
  a.x = as_ptr<const scalar_t>(x);
  a.mem0 = as_ptr<const scalar_t>(mem0);
  a.spk = as_ptr<scalar_t>(spk);
  a.mem = as_ptr<scalar_t>(mem);
  a.u_saved = as_ptr<scalar_t>(u_saved);
  a.r_saved = as_ptr<uint8_t>(r_saved);
  a.num_threads = threads > 0 ? threads : 1;
  advise_outputs(T * R * L * int64_t(sizeof(scalar_t)), a.spk, a.mem, a.u_saved);  // fresh: see advise_huge
  pybind11::gil_scoped_release release;
  int_switch<kSubtract, kZero, kNone>(reset, "reset_mode", [&](auto RESET) {
    bool_switch(immediate && RESET() != kNone, [&](auto IMM) {
      bool_switch(params.per_neuron, [&](auto PN) { lif_fwd_cpu<scalar_t, RESET(), IMM(), PN()>(a, params); });
    });
  });
}

template <typename scalar_t>
void bwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
               std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t mem0,
               const std::array<ParamIn, 3>& pin, std::uintptr_t grad_x, std::uintptr_t grad_mem0,
               const std::array<std::uintptr_t, 3>& grad_params, int reset, bool immediate, int sg,
               double sg_param, int threads) {
  if (!grad_x) throw std::invalid_argument("lif_bwd: grad_x is required");
  immediate = immediate && reset != kNone;
  if (immediate ? (!u_saved || !r_saved) : !mem_saved)
    throw std::invalid_argument(immediate ? "lif_bwd: an immediate reset needs u_saved and r_saved"
                                          : "lif_bwd: a delayed reset needs mem_saved");
  const ParamSet<scalar_t, 3> params(pin, L, kParamNames);
  LifArgs<scalar_t> a;
  a.T = T;
  a.R = params.per_neuron ? R : 1;
  a.L = params.per_neuron ? L : R * L;
  a.grad_spk = as_ptr<const scalar_t>(grad_spk);
  a.grad_mem = as_ptr<const scalar_t>(grad_mem);
  a.mem_saved = as_ptr<const scalar_t>(mem_saved);
  a.u_in = as_ptr<const scalar_t>(u_saved);
  a.r_in = as_ptr<const uint8_t>(r_saved);
  a.mem0 = as_ptr<const scalar_t>(mem0);
  a.grad_x = as_ptr<scalar_t>(grad_x);
  a.grad_mem0 = as_ptr<scalar_t>(grad_mem0);
  a.sg = SurrogateConsts<scalar_t>(sg, sg_param);
  a.num_threads = threads > 0 ? threads : 1;
  advise_huge(a.grad_x, T * R * L * int64_t(sizeof(scalar_t)));
  ParamGrads<scalar_t, 3> pgrads(Items(a.R, a.L).count);
  pybind11::gil_scoped_release release;
  int_switch<kSubtract, kZero, kNone>(reset, "reset_mode", [&](auto RESET) {
    bool_switch(immediate, [&](auto IMM) {
      bool_switch(params.per_neuron, [&](auto PN) {
        int_switch<kAtan, kFastSigmoid, kSigmoid, kTriangular, kStraightThrough, kNoGrad>(
            sg, "surrogate_kind", [&](auto SG) {
              if constexpr (!(IMM() && RESET() == kNone))
                lif_bwd_cpu<scalar_t, RESET(), IMM(), PN(), SG()>(a, params, pgrads);
            });
      });
    });
  });
  for (int k = 0; k < 3; ++k)
    pgrads.reduce(k, a.R, a.L, params.per_neuron, params.given_n[k], as_ptr<scalar_t>(grad_params[k]));
}

void lif_fwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t mem0,
             std::uintptr_t beta, int64_t beta_n, double beta_value, std::uintptr_t thr, int64_t thr_n,
             double thr_value, std::uintptr_t graded, int64_t graded_n, double graded_value, std::uintptr_t spk,
             std::uintptr_t mem, std::uintptr_t u_saved, std::uintptr_t r_saved, int reset, bool immediate,
             int threads) {
  check_grid("lif", T, R, L);
  const std::array<ParamIn, 3> pin{ParamIn{beta, beta_n, beta_value}, ParamIn{thr, thr_n, thr_value},
                                   ParamIn{graded, graded_n, graded_value}};
  int_switch<kFloat32, kFloat64>(dtype, "dtype", [&](auto DT) {
    using scalar_t = std::conditional_t<DT() == kFloat64, double, float>;
    fwd_typed<scalar_t>(T, R, L, x, mem0, pin, spk, mem, u_saved, r_saved, reset, immediate, threads);
  });
}

void lif_bwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
             std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t mem0,
             std::uintptr_t beta, int64_t beta_n, double beta_value, std::uintptr_t thr, int64_t thr_n,
             double thr_value, std::uintptr_t graded, int64_t graded_n, double graded_value, std::uintptr_t grad_x,
             std::uintptr_t grad_mem0, std::uintptr_t grad_beta, std::uintptr_t grad_thr, std::uintptr_t grad_graded,
             int reset, bool immediate, int sg, double sg_param, int threads) {
  check_grid("lif", T, R, L);
  const std::array<ParamIn, 3> pin{ParamIn{beta, beta_n, beta_value}, ParamIn{thr, thr_n, thr_value},
                                   ParamIn{graded, graded_n, graded_value}};
  int_switch<kFloat32, kFloat64>(dtype, "dtype", [&](auto DT) {
    using scalar_t = std::conditional_t<DT() == kFloat64, double, float>;
    bwd_typed<scalar_t>(T, R, L, grad_spk, grad_mem, mem_saved, u_saved, r_saved, mem0, pin, grad_x, grad_mem0,
                        {grad_beta, grad_thr, grad_graded}, reset, immediate, sg, sg_param, threads);
  });
}

void register_lif(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("lif_fwd", &lif_fwd, "LIF forward over T steps (pointers; see fastlif/ops/lif.py)", py::arg("dtype"),
        py::arg("T"), py::arg("R"), py::arg("L"), py::arg("x"), py::arg("mem0"), py::arg("beta"),
        py::arg("beta_n"), py::arg("beta_value"), py::arg("threshold"), py::arg("threshold_n"),
        py::arg("threshold_value"), py::arg("graded"), py::arg("graded_n"), py::arg("graded_value"),
        py::arg("spk"), py::arg("mem"), py::arg("u_saved"), py::arg("r_saved"), py::arg("reset_mode"),
        py::arg("immediate"), py::arg("num_threads"));
  m.def("lif_bwd", &lif_bwd, "LIF surrogate backward over T steps (pointers; see fastlif/ops/lif.py)",
        py::arg("dtype"), py::arg("T"), py::arg("R"), py::arg("L"), py::arg("grad_spk"), py::arg("grad_mem"),
        py::arg("mem_saved"), py::arg("u_saved"), py::arg("r_saved"), py::arg("mem0"), py::arg("beta"),
        py::arg("beta_n"), py::arg("beta_value"), py::arg("threshold"), py::arg("threshold_n"),
        py::arg("threshold_value"), py::arg("graded"), py::arg("graded_n"), py::arg("graded_value"),
        py::arg("grad_x"), py::arg("grad_mem0"), py::arg("grad_beta"), py::arg("grad_threshold"),
        py::arg("grad_graded"), py::arg("reset_mode"), py::arg("immediate"), py::arg("surrogate_kind"),
        py::arg("surrogate_param"), py::arg("num_threads"));
}

}  // namespace

FASTLIF_REGISTER(register_lif);

}  // namespace fastlif
