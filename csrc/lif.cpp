// The LIF family (snnTorch's Leaky, api.md section 1) on the CPU: its step on the scan skeleton
// (csrc/scan.h), which runs the whole T-step recurrence forward and its surrogate-gradient
// backward walking T in reverse, then Leaky's bindings.
//
//   r     = H(m[t-1] - thr)                               reset flag, no gradient
//   u     = b*m + x - r*thr | b*((1-r)*m) + x | b*m + x   subtract | zero | none
//   spk   = H(u - thr) * g                                surrogate gradient backward
//   m[t]  = u, or with an immediate reset: u - d*thr | u - d*u,  d = spk/g - r
//
// Forward keeps the membrane m (delayed reset: u is m[t] itself, so x is not kept), or the
// pre-reset membrane u and the reset flags (immediate reset: the scan's kept layout,
// keeps_pre_reset); backward rebuilds each step from them (fastlif/layout.py).
#include <pybind11/pybind11.h>

#include "common.h"
#include "entry_points.h"
#include "module.h"
#include "scan.h"

namespace fastlif {
namespace {

struct LeakyStep : StepDefaults {
  static constexpr const char* kName = "lif";
  static constexpr int kStates = 1, kParams = 3;
  static constexpr bool kNeedsX = false;
  static constexpr int kReadsAfter = 1;  // m[t] (= u, delayed reset)
  using Options = OptionSpace<3, 2>;     // reset_mode, immediate (never with kNone)
  static constexpr const char* kParamNames[kParams] = {"beta", "threshold", "graded_spikes_factor"};
  enum { kBeta, kThr, kG };
  // none (the tutorial's fixed beta), beta alone (learn_beta) and all three
  using GradMasks = GradMaskSet<0, 1 << kBeta, kAllParams>;

  template <class O>
  static constexpr bool keeps_pre_reset() {
    return O::at(1) == 1;
  }

  template <typename S, class O>
  static S forward(S x, S* s, const S* p, S* kept = nullptr) {
    constexpr int RESET = O::at(0);
    const S m0 = s[0], b = p[kBeta], th = p[kThr], g = p[kG];
    const S r = heaviside(m0 - th);
    S u;  // snnTorch's Leaky, in its order
    if constexpr (RESET == kSubtract) u = b * m0 + x - r * th;
    else if constexpr (RESET == kZero) u = b * ((S(1) - r) * m0) + x;
    else u = b * m0 + x;
    const S h = heaviside(u - th);
    if constexpr (keeps_pre_reset<O>()) {
      kept[0] = u;
      kept[1] = r;
      s[0] = immediate_reset<S, RESET>(u, r, h, th, g);
    } else {
      s[0] = u;
    }
    return h * g;
  }

  // The membrane a step with an immediate reset left, from its u and r, bit for bit as forward.
  template <typename S, class O>
  static S restore(S u, S r, const S* p) {
    return immediate_reset<S, O::at(0)>(u, r, heaviside(u - p[kThr]), p[kThr], p[kG]);
  }

  // sn[0]: u, the membrane before an immediate reset (the kept layout), or m[t] = u.
  template <typename S, class O, int SG>
  static S backward(S, const S* s, const S* sn, const S* p, S gspk, S* gs, S* gp, const SurrogateConsts<S>& c) {
    constexpr int RESET = O::at(0);
    const S m0 = s[0], b = p[kBeta], th = p[kThr];
    const S r = heaviside(m0 - th);
    const S gu = membrane_grad_u<S, RESET, keeps_pre_reset<O>(), SG>(gs[0], gspk, sn[0], r, th, p[kG], gp[kThr],
                                                                       gp[kG], c);
    if constexpr (RESET == kZero) {  // u = b*((1-r)*m) + x, autograd's order
      gs[0] = gu * b * (S(1) - r);
      gp[kBeta] += gu * ((S(1) - r) * m0);
    } else {
      gs[0] = gu * b;
      gp[kBeta] += gu * m0;
    }
    return gu;
  }
};

// --- bindings ------------------------------------------------------------------------------
// Python (fastlif/ops/lif.py) checks every tensor (dtype, shape, contiguity, device) and
// allocates every output before it calls these, and passes data pointers: handing tensors over
// as NumPy views cost a microsecond and more per tensor, most of a small call. What only this
// side can see is checked here.

template <typename scalar_t>
void fwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t mem0,
               const std::array<ParamIn, 3>& pin, std::uintptr_t spk, std::uintptr_t mem,
               std::uintptr_t u_saved, std::uintptr_t r_saved, int reset, bool immediate, int threads) {
  require_lif_forward("lif_fwd", x, spk, mem, u_saved, r_saved, immediate);
  const ParamSet<scalar_t, 3> params(pin, L, LeakyStep::kParamNames);
  ScanArgs<scalar_t, 1> a;
  set_grid(a, T, R, L, params.per_neuron, threads);
  a.x = as_ptr<const scalar_t>(x);
  a.state0[0] = as_ptr<const scalar_t>(mem0);
  a.spk = as_ptr<scalar_t>(spk);
  a.state[0] = as_ptr<scalar_t>(mem);
  a.pre_reset = immediate ? as_ptr<scalar_t>(u_saved) : nullptr;
  a.reset_flag = immediate ? as_ptr<uint8_t>(r_saved) : nullptr;
  advise_outputs(T * R * L * int64_t(sizeof(scalar_t)), a.spk, a.state[0], a.pre_reset);  // fresh: see advise_huge
  dispatch_options({reset, immediate}, 0, LeakyStep::Options{}, static_cast<Opts<>*>(nullptr), [&](auto O) {
    bool_switch(params.per_neuron, [&](auto PN) { scan_fwd<LeakyStep, decltype(O), PN()>(a, params); });
  });
}

template <typename scalar_t>
void bwd_typed(int64_t T, int64_t R, int64_t L, std::uintptr_t grad_spk, std::uintptr_t grad_mem,
               std::uintptr_t mem_saved, std::uintptr_t u_saved, std::uintptr_t r_saved, std::uintptr_t mem0,
               const std::array<ParamIn, 3>& pin, std::uintptr_t grad_x, std::uintptr_t grad_mem0,
               const Pointers& grad_params, int reset, bool immediate, int sg, double sg_param, int threads) {
  require_lif_backward("lif_bwd", grad_x, mem_saved, u_saved, r_saved, immediate);
  const ParamSet<scalar_t, 3> params(pin, L, LeakyStep::kParamNames);
  ScanArgs<scalar_t, 1> a;
  set_grid(a, T, R, L, params.per_neuron, threads);
  a.grad_spk = as_ptr<const scalar_t>(grad_spk);
  a.grad_state[0] = as_ptr<const scalar_t>(grad_mem);
  a.state0[0] = as_ptr<const scalar_t>(mem0);
  a.state_seq[0] = immediate ? nullptr : as_ptr<const scalar_t>(mem_saved);
  a.pre_reset_seq = immediate ? as_ptr<const scalar_t>(u_saved) : nullptr;
  a.reset_flag_seq = immediate ? as_ptr<const uint8_t>(r_saved) : nullptr;
  a.grad_x = as_ptr<scalar_t>(grad_x);
  a.grad_state0[0] = as_ptr<scalar_t>(grad_mem0);
  a.sg = SurrogateConsts<scalar_t>(sg, sg_param);
  advise_huge(a.grad_x, T * R * L * int64_t(sizeof(scalar_t)));
  const auto gparams = family_pointers<scalar_t, 3>("lif_bwd", "parameter gradients", grad_params, false);
  ParamGrads<scalar_t, 3> pgrads(Items(a.R, a.L).count);
  int wanted = 0;
  for (int p = 0; p < 3; ++p) wanted |= gparams[p] ? 1 << p : 0;
  dispatch_options({reset, immediate}, 0, LeakyStep::Options{}, static_cast<Opts<>*>(nullptr), [&](auto O) {
    surrogate_switch(sg, LeakyStep::Surrogates{}, [&](auto SG) {
      grads_switch(LeakyStep::GradMasks{}, params.per_neuron, wanted, [&](auto PN, auto GRADS) {
        scan_bwd<LeakyStep, decltype(O), SG(), PN(), GRADS()>(a, params, pgrads);
      });
    });
  });
  for (int k = 0; k < 3; ++k) pgrads.reduce(k, a.R, a.L, params.per_neuron, params.given_n[k], gparams[k]);
}

}  // namespace

// The kernels' entry points (csrc/entry_points.h); they leave the GIL as they find it.
void lif_fwd(int dtype, int64_t T, int64_t R, int64_t L, std::uintptr_t x, std::uintptr_t mem0,
             const ParamTuples& params, std::uintptr_t spk, std::uintptr_t mem, std::uintptr_t u_saved,
             std::uintptr_t r_saved, int reset, bool immediate, int threads) {
  check_grid("lif", T, R, L);
  immediate = immediate_reset_of(reset, immediate);
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
  immediate = immediate_reset_of(reset, immediate);
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
