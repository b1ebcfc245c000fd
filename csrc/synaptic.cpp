// The Synaptic family (snnTorch's Synaptic) on the CPU: a synaptic current that decays with
// alpha feeding a membrane that decays with beta, over T steps forward, and the surrogate
// backward walking T in reverse, then their bindings. Layout and threading: csrc/common.h.
//
//   r     = H(m[t-1] - thr)                                 reset flag, no gradient
//   syn   = a*syn[t-1] + x
//   m1    = b*m[t-1] + syn
//   u     = m1 - r*thr | m1 - m1*r | m1                     subtract | zero | none
//   spk   = H(u - thr) * g                                  surrogate gradient backward
//   m[t]  = u, or with an immediate reset: u - d*thr | u - d*u,  d = spk/g - r
//
// The zero reset acts on the membrane after it integrated the step's current (snnTorch's
// _base_zero), not before as Leaky's does. Backward rebuilds each step from the saved membrane
// (or pre-reset membrane and flags) and, when alpha needs a gradient, the saved current.
#include <pybind11/pybind11.h>

#include "common.h"
#include "module.h"
#include "static_switch.h"

namespace fastlif {
namespace {

constexpr int kAlpha = 0, kBeta = 1, kThr = 2, kGraded = 3;
constexpr const char* kParamNames[4] = {"alpha", "beta", "threshold", "graded_spikes_factor"};

template <typename scalar_t>
struct SynapticArgs {
  int64_t T = 0, R = 0, L = 0;
  const scalar_t* x = nullptr;
  const scalar_t* syn0 = nullptr;  // [R*L] or null (zeros)
  const scalar_t* mem0 = nullptr;
  scalar_t* spk = nullptr;
  scalar_t* syn = nullptr;
  scalar_t* mem = nullptr;
  scalar_t* u_saved = nullptr;  // immediate reset only
  uint8_t* r_saved = nullptr;
  const scalar_t* grad_spk = nullptr;  // null: zeros
  const scalar_t* grad_syn = nullptr;
  const scalar_t* grad_mem = nullptr;
  const scalar_t* syn_saved = nullptr;  // forward's syn; null when alpha needs no gradient
  const scalar_t* mem_saved = nullptr;  // forward's mem (delayed reset)
  const scalar_t* u_in = nullptr;       // immediate reset
  const uint8_t* r_in = nullptr;
  scalar_t* grad_x = nullptr;
  scalar_t* grad_syn0 = nullptr;
  scalar_t* grad_mem0 = nullptr;
  SurrogateConsts<scalar_t> sg;  // the surrogate's constants, rounded as snnTorch rounds them
  int num_threads = 1;
};

template <typename scalar_t, int RESET>
inline scalar_t synaptic_reset(scalar_t m1, scalar_t r, scalar_t th) {
  if constexpr (RESET == kSubtract) return m1 - r * th;
  else if constexpr (RESET == kZero) return m1 - m1 * r;
  else return m1;
}

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON>
void synaptic_fwd_cpu(const SynapticArgs<scalar_t>& a, const ParamSet<scalar_t, 4>& params) {
  const Items items(a.R, a.L);
  const int64_t M = a.R * a.L;
  // bytes moved: 4 arrays of T*M values
  Team team(a.num_threads, items.count, a.T * M * int64_t(4 * sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t index = 0; index < items.count; ++index) {
    const Team::Item mark(team);
    const Item it(items, a.L, index);
    const auto [alpha, beta, thr, graded] = params.at(it.l0);
    scalar_t m[kChunk], sy[kChunk];
    for (int64_t j = 0; j < it.n; ++j) {
      m[j] = a.mem0 ? a.mem0[it.base + j] : scalar_t(0);
      sy[j] = a.syn0 ? a.syn0[it.base + j] : scalar_t(0);
    }
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t off = t * M + it.base;
      if (t + 1 < a.T) {
        prefetch_run(a.x + off + M, it.n, false);
        prefetch_run(a.spk + off + M, it.n, true);
        prefetch_run(a.syn + off + M, it.n, true);
        prefetch_run(a.mem + off + M, it.n, true);
      }
      const scalar_t* x = a.x + off;
#pragma omp simd
      for (int64_t j = 0; j < it.n; ++j) {
        const scalar_t al = alpha[PER_NEURON ? j : 0];
        const scalar_t b = beta[PER_NEURON ? j : 0];
        const scalar_t th = thr[PER_NEURON ? j : 0];
        const scalar_t g = graded[PER_NEURON ? j : 0];
        const scalar_t r = heaviside(m[j] - th);
        const scalar_t s1 = al * sy[j] + x[j];
        const scalar_t u = synaptic_reset<scalar_t, RESET>(b * m[j] + s1, r, th);
        const scalar_t s = heaviside(u - th);
        scalar_t mn = u;
        if constexpr (IMMEDIATE) {
          mn = immediate_reset<scalar_t, RESET>(u, r, s, th, g);
          a.u_saved[off + j] = u;
          a.r_saved[off + j] = static_cast<uint8_t>(r);
        }
        a.spk[off + j] = s * g;
        a.syn[off + j] = s1;
        a.mem[off + j] = mn;
        sy[j] = s1;
        m[j] = mn;
      }
    }
  }
}

template <typename scalar_t, int RESET, bool IMMEDIATE, bool PER_NEURON, bool GRAD_ALPHA, int SG>
void synaptic_bwd_cpu(const SynapticArgs<scalar_t>& a, const ParamSet<scalar_t, 4>& params,
                      ParamGrads<scalar_t, 4>& pgrads) {
  const Items items(a.R, a.L);
  const int64_t M = a.R * a.L;
  const SurrogateConsts<scalar_t>& p = a.sg;
  const scalar_t* saved = IMMEDIATE ? a.u_in : a.mem_saved;
  // bytes moved: 6 arrays of T*M values
  Team team(a.num_threads, items.count, a.T * M * int64_t(6 * sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t index = 0; index < items.count; ++index) {
    const Team::Item mark(team);
    const Item it(items, a.L, index);
    const auto [alpha, beta, thr, graded] = params.at(it.l0);
    scalar_t carry_m[kChunk], carry_s[kChunk], ga[kChunk], gb[kChunk], gth[kChunk], gg[kChunk];
    scalar_t m_init[kChunk], s_init[kChunk], m_prev[kChunk], zeros[kChunk];
    for (int64_t j = 0; j < kChunk; ++j) {
      carry_m[j] = carry_s[j] = ga[j] = gb[j] = gth[j] = gg[j] = zeros[j] = scalar_t(0);
      m_init[j] = (a.mem0 && j < it.n) ? a.mem0[it.base + j] : scalar_t(0);
      s_init[j] = (a.syn0 && j < it.n) ? a.syn0[it.base + j] : scalar_t(0);
    }
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t off = t * M + it.base;
      const int64_t prev = off - M;
      if (t > 0) {
        prefetch_run(a.grad_spk ? a.grad_spk + prev : nullptr, it.n, false);
        prefetch_run(a.grad_syn ? a.grad_syn + prev : nullptr, it.n, false);
        prefetch_run(a.grad_mem ? a.grad_mem + prev : nullptr, it.n, false);
        prefetch_run(a.grad_x + prev, it.n, true);
        if (t > 1) prefetch_run(saved + prev - M, it.n, false);
      }
      const scalar_t* m0_src = m_init;  // the membrane and current this step started from
      const scalar_t* s0_src = s_init;
      if (t > 0) {
        if constexpr (GRAD_ALPHA) s0_src = a.syn_saved + prev;
        if constexpr (!IMMEDIATE) {
          m0_src = a.mem_saved + prev;
        } else {
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
      const scalar_t* gspk_src = a.grad_spk ? a.grad_spk + off : zeros;
      const scalar_t* gsyn_src = a.grad_syn ? a.grad_syn + off : zeros;
      const scalar_t* gmem_src = a.grad_mem ? a.grad_mem + off : zeros;
      scalar_t* gx_out = a.grad_x + off;
#pragma omp simd
      for (int64_t j = 0; j < it.n; ++j) {
        const scalar_t al = alpha[PER_NEURON ? j : 0];
        const scalar_t b = beta[PER_NEURON ? j : 0];
        const scalar_t th = thr[PER_NEURON ? j : 0];
        const scalar_t g = graded[PER_NEURON ? j : 0];
        const scalar_t m0 = m0_src[j];
        const scalar_t u = u_src[j];
        const scalar_t r = heaviside(m0 - th);
        const scalar_t z = u - th;
        const scalar_t s = heaviside(z);
        const scalar_t gm = gmem_src[j] + carry_m[j];
        const scalar_t gspk = gspk_src[j];
        scalar_t gs = gspk * g;  // reaches the Heaviside output
        scalar_t gu = gm;        // reaches the pre-reset membrane u
        if constexpr (IMMEDIATE && RESET == kSubtract) {
          gs -= gm * th;
          gth[j] -= gm * (s - r);
        } else if constexpr (IMMEDIATE && RESET == kZero) {
          gs -= gm * u;
          gu = gm * (scalar_t(1) - (s - r));
        }
        const scalar_t gz = surrogate_backward<scalar_t, SG>(gs, z, p);
        gu += gz;
        gth[j] -= gz;
        gg[j] += gspk * s;
        scalar_t gm1 = gu;  // reaches m1 = b*m[t-1] + syn
        if constexpr (RESET == kSubtract) gth[j] -= r * gu;
        else if constexpr (RESET == kZero) gm1 = gu * (scalar_t(1) - r);
        const scalar_t gs1 = gm1 + gsyn_src[j] + carry_s[j];  // reaches syn[t]
        gx_out[j] = gs1;
        gb[j] += gm1 * m0;
        carry_m[j] = gm1 * b;
        if constexpr (GRAD_ALPHA) ga[j] += gs1 * s0_src[j];
        carry_s[j] = gs1 * al;
      }
    }
    for (int64_t j = 0; j < it.n; ++j) {
      if (a.grad_mem0) a.grad_mem0[it.base + j] = carry_m[j];
      if (a.grad_syn0) a.grad_syn0[it.base + j] = carry_s[j];
    }
    const scalar_t* sums[4] = {ga, gb, gth, gg};
    for (int k = 0; k < 4; ++k) {
      scalar_t* lane = pgrads.lane(k, index);
      for (int64_t j = 0; j < kChunk; ++j) lane[j] = j < it.n ? sums[k][j] : scalar_t(0);
    }
  }
}

// --- bindings (pointers; fastlif/ops/synaptic.py checks and allocates) ------------------------

template <typename scalar_t>
void fwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t syn0, std::uintptr_t mem0,
               const std::array<ParamIn, 4>& pin, std::uintptr_t spk, std::uintptr_t syn, std::uintptr_t mem,
               std::uintptr_t u_saved, std::uintptr_t r_saved, int reset, bool immediate, int threads) {
  if (!x || !spk || !syn || !mem) throw std::invalid_argument("synaptic_fwd: x, spk, syn and mem are required");
  immediate = immediate && reset != kNone;
  if (immediate && (!u_saved || !r_saved))
    throw std::invalid_argument("synaptic_fwd: an immediate reset needs u_saved and r_saved");
  const ParamSet<scalar_t, 4> params(pin, L, kParamNames);
  SynapticArgs<scalar_t> a;
  a.T = T;
  a.R = params.per_neuron ? R : 1;
  a.L = params.per_neuron ? L : R * L;
  a.x = as_ptr<const scalar_t>(x);
  a.syn0 = as_ptr<const scalar_t>(syn0);
  a.mem0 = as_ptr<const scalar_t>(mem0);
  a.spk = as_ptr<scalar_t>(spk);
  a.syn = as_ptr<scalar_t>(syn);
  a.mem = as_ptr<scalar_t>(mem);
  a.u_saved = as_ptr<scalar_t>(u_saved);
  a.r_saved = as_ptr<uint8_t>(r_saved);
  a.num_threads = threads > 0 ? threads : 1;
  advise_outputs(T * R * L * int64_t(sizeof(scalar_t)), a.spk, a.syn, a.mem, a.u_saved);  // fresh: see advise_huge
  pybind11::gil_scoped_release release;
  int_switch<kSubtract, kZero, kNone>(reset, "reset_mode", [&](auto RESET) {
    bool_switch(immediate, [&](auto IMM) {
      bool_switch(params.per_neuron, [&](auto PN) {
        if constexpr (!(IMM() && RESET() == kNone)) synaptic_fwd_cpu<scalar_t, RESET(), IMM(), PN()>(a, params);
      });
    });
  });
}

template <typename scalar_t>
void bwd_typed(int64_t T, int64_t R, int64_t L, const std::array<std::uintptr_t, 3>& grads_in,
               std::uintptr_t syn_saved, std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved,
               std::uintptr_t syn0, std::uintptr_t mem0, const std::array<ParamIn, 4>& pin,
               std::uintptr_t grad_x, std::uintptr_t grad_syn0, std::uintptr_t grad_mem0,
               const std::array<std::uintptr_t, 4>& grad_params, int reset, bool immediate, int sg,
               double sg_param, int threads) {
  if (!grad_x) throw std::invalid_argument("synaptic_bwd: grad_x is required");
  immediate = immediate && reset != kNone;
  if (immediate ? (!u_saved || !r_saved) : !mem_saved)
    throw std::invalid_argument(immediate ? "synaptic_bwd: an immediate reset needs u_saved and r_saved"
                                          : "synaptic_bwd: a delayed reset needs mem_saved");
  const bool grad_alpha = grad_params[kAlpha] != 0;
  if (grad_alpha && !syn_saved) throw std::invalid_argument("synaptic_bwd: alpha's gradient needs syn_saved");
  const ParamSet<scalar_t, 4> params(pin, L, kParamNames);
  SynapticArgs<scalar_t> a;
  a.T = T;
  a.R = params.per_neuron ? R : 1;
  a.L = params.per_neuron ? L : R * L;
  a.grad_spk = as_ptr<const scalar_t>(grads_in[0]);
  a.grad_syn = as_ptr<const scalar_t>(grads_in[1]);
  a.grad_mem = as_ptr<const scalar_t>(grads_in[2]);
  a.syn_saved = as_ptr<const scalar_t>(syn_saved);
  a.mem_saved = as_ptr<const scalar_t>(mem_saved);
  a.u_in = as_ptr<const scalar_t>(u_saved);
  a.r_in = as_ptr<const uint8_t>(r_saved);
  a.syn0 = as_ptr<const scalar_t>(syn0);
  a.mem0 = as_ptr<const scalar_t>(mem0);
  a.grad_x = as_ptr<scalar_t>(grad_x);
  a.grad_syn0 = as_ptr<scalar_t>(grad_syn0);
  a.grad_mem0 = as_ptr<scalar_t>(grad_mem0);
  a.sg = SurrogateConsts<scalar_t>(sg, sg_param);
  a.num_threads = threads > 0 ? threads : 1;
  advise_huge(a.grad_x, T * R * L * int64_t(sizeof(scalar_t)));
  ParamGrads<scalar_t, 4> pgrads(Items(a.R, a.L).count);
  pybind11::gil_scoped_release release;
  int_switch<kSubtract, kZero, kNone>(reset, "reset_mode", [&](auto RESET) {
    bool_switch(immediate, [&](auto IMM) {
      bool_switch(params.per_neuron, [&](auto PN) {
        bool_switch(grad_alpha, [&](auto GA) {
          int_switch<kAtan, kFastSigmoid, kSigmoid, kTriangular, kStraightThrough, kNoGrad>(
              sg, "surrogate_kind", [&](auto SG) {
                if constexpr (!(IMM() && RESET() == kNone))
                  synaptic_bwd_cpu<scalar_t, RESET(), IMM(), PN(), GA(), SG()>(a, params, pgrads);
              });
        });
      });
    });
  });
  for (int k = 0; k < 4; ++k)
    pgrads.reduce(k, a.R, a.L, params.per_neuron, params.given_n[k], as_ptr<scalar_t>(grad_params[k]));
}

void synaptic_fwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t syn0,
                  std::uintptr_t mem0, const pybind11::tuple& params, std::uintptr_t spk, std::uintptr_t syn,
                  std::uintptr_t mem, std::uintptr_t u_saved, std::uintptr_t r_saved, int reset, bool immediate,
                  int threads) {
  check_grid("synaptic", T, R, L);
  const auto pin = param_ins<4>("synaptic", params);
  int_switch<kFloat32, kFloat64>(dtype, "dtype", [&](auto DT) {
    using scalar_t = std::conditional_t<DT() == kFloat64, double, float>;
    fwd_typed<scalar_t>(T, R, L, x, syn0, mem0, pin, spk, syn, mem, u_saved, r_saved, reset, immediate, threads);
  });
}

void synaptic_bwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_syn,
                  std::uintptr_t grad_mem, std::uintptr_t syn_saved, std::uintptr_t mem_saved,
                  std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t syn0, std::uintptr_t mem0,
                  const pybind11::tuple& params, std::uintptr_t grad_x, std::uintptr_t grad_syn0,
                  std::uintptr_t grad_mem0, const pybind11::tuple& grad_params, int reset, bool immediate, int sg,
                  double sg_param, int threads) {
  check_grid("synaptic", T, R, L);
  const auto pin = param_ins<4>("synaptic", params);
  const auto gp = pointers<4>("synaptic_bwd", grad_params);
  int_switch<kFloat32, kFloat64>(dtype, "dtype", [&](auto DT) {
    using scalar_t = std::conditional_t<DT() == kFloat64, double, float>;
    bwd_typed<scalar_t>(T, R, L, {grad_spk, grad_syn, grad_mem}, syn_saved, mem_saved, u_saved, r_saved, syn0,
                        mem0, pin, grad_x, grad_syn0, grad_mem0, gp, reset, immediate, sg, sg_param, threads);
  });
}

void register_synaptic(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("synaptic_fwd", &synaptic_fwd, "Synaptic forward over T steps (pointers; see fastlif/ops/synaptic.py)",
        py::arg("dtype"), py::arg("T"), py::arg("R"), py::arg("L"), py::arg("x"), py::arg("syn0"),
        py::arg("mem0"), py::arg("params"), py::arg("spk"), py::arg("syn"), py::arg("mem"), py::arg("u_saved"),
        py::arg("r_saved"), py::arg("reset_mode"), py::arg("immediate"), py::arg("num_threads"));
  m.def("synaptic_bwd", &synaptic_bwd, "Synaptic surrogate backward (pointers; see fastlif/ops/synaptic.py)",
        py::arg("dtype"), py::arg("T"), py::arg("R"), py::arg("L"), py::arg("grad_spk"), py::arg("grad_syn"),
        py::arg("grad_mem"), py::arg("syn_saved"), py::arg("mem_saved"), py::arg("u_saved"), py::arg("r_saved"),
        py::arg("syn0"), py::arg("mem0"), py::arg("params"), py::arg("grad_x"), py::arg("grad_syn0"),
        py::arg("grad_mem0"), py::arg("grad_params"), py::arg("reset_mode"), py::arg("immediate"),
        py::arg("surrogate_kind"), py::arg("surrogate_param"), py::arg("num_threads"));
}

}  // namespace

FASTLIF_REGISTER(register_synaptic);

}  // namespace fastlif
