// snnTorch's Synaptic on the scan skeleton (csrc/scan.h; spec and reference step:
// fastlif/families/synaptic.py). States: the current syn and the membrane m; parameters alpha,
// beta (clamped by Python), the threshold and the graded-spike factor:
//
//   r     = H(m - thr)                                      no gradient
//   syn'  = a*syn + x
//   m1    = b*m + syn'
//   u     = m1 - r*thr | m1 - m1*r | m1                     subtract | zero | none
//   spk   = H(u - thr) * g
//   m'    = u, or with an immediate reset: u - d*thr | u - d*u,  d = spk/g - r
//
// The zero reset acts on the membrane after it integrated the step's current (snnTorch's
// _base_zero), not before as Leaky's does. Backward rebuilds the step from the states before it
// and after it: x is not kept. With a delayed reset u is the membrane after the step (m' = u),
// so the current is read only for alpha's gradient or to rebuild an immediate reset's u (from
// syn', which holds x's contribution); without either forward keeps the membrane alone, as
// snnTorch's own graph does not but the hand-written kernel before this one did (4 bytes per
// neuron-step in fp32, not 8: fastlif/families/synaptic.py, backward_reads).
#include "../scan.h"

namespace fastlif {

struct SynapticStep : StepDefaults {
  static constexpr const char* kName = "synaptic";
  static constexpr int kStates = 2, kParams = 4;
  static constexpr bool kNeedsX = false;
  static constexpr int kReadsAfter = 1 | 2;  // syn' (immediate reset) or m' (= u, delayed reset)
  using Options = OptionSpace<3, 2>;  // reset_mode, immediate
  static constexpr const char* kParamNames[kParams] = {"alpha", "beta", "threshold", "graded_spikes_factor"};
  enum { kSyn, kMem };
  enum { kA, kB, kThr, kG };
  // learn_alpha and learn_beta, alone or together, without the threshold's and g's arithmetic
  using GradMasks = GradMaskSet<0, (1 << kA) | (1 << kB), kAllParams>;

  static constexpr int kOptionalStates = 1 << kSyn;
  // option 1: immediate reset
  static bool may_skip_state(int k, const std::vector<int>& options, int grads_wanted) {
    return k == kSyn && options[1] == 0 && !((grads_wanted >> kA) & 1);
  }

  template <typename S, int RESET>
  static S integrate(S m, S syn1, S b, S r, S th) {
    return base_reset<S, RESET>(b * m + syn1, r, th);
  }

  template <typename S, class O>
  static S forward(S x, S* s, const S* p) {
    constexpr int RESET = O::at(0);
    const S th = p[kThr], g = p[kG];
    const S r = heaviside(s[kMem] - th);
    const S syn1 = p[kA] * s[kSyn] + x;
    const S u = integrate<S, RESET>(s[kMem], syn1, p[kB], r, th);
    const S spike = heaviside(u - th);
    s[kSyn] = syn1;
    s[kMem] = O::at(1) ? immediate_reset<S, RESET>(u, r, spike, th, g) : u;
    return spike * g;
  }

  template <typename S, class O, int SG>
  static S backward(S, const S* s, const S* sn, const S* p, S gspk, S* gs, S* gp, const SurrogateConsts<S>& c) {
    constexpr int RESET = O::at(0);
    constexpr bool IMMEDIATE = O::at(1) == 1;
    const S a = p[kA], b = p[kB], th = p[kThr], g = p[kG];
    const S m0 = s[kMem];
    const S r = heaviside(m0 - th);
    // u as forward computed it: rebuilt from syn', or with a delayed reset the membrane after
    // the step itself
    const S u = IMMEDIATE ? integrate<S, RESET>(m0, sn[kSyn], b, r, th) : sn[kMem];
    const S gm1 = membrane_grad<S, RESET, IMMEDIATE, SG>(gs[kMem], gspk, u, r, th, g, gp[kThr], gp[kG], c);
    const S gsyn1 = gm1 + gs[kSyn];  // reaches syn'
    gp[kB] += gm1 * m0;
    gp[kA] += gsyn1 * s[kSyn];
    gs[kMem] = gm1 * b;
    gs[kSyn] = gsyn1 * a;
    return gsyn1;
  }
};

FASTLIF_FAMILY(SynapticStep);

}  // namespace fastlif
