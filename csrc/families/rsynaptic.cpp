// snnTorch's RSynaptic (one-to-one feedback) on the scan skeleton (csrc/scan.h; spec and
// reference step: fastlif/families/rsynaptic.py). States: the previous spikes sp (the spike
// state, kSpikeState), the synaptic current y and the membrane m; parameters alpha a and beta b
// (clamped by the caller), the feedback weight V, the threshold and the graded-spike factor g:
//
//   r    = H(m - thr)                                    no gradient
//   y'   = (a*y + x) + sp*V
//   w    = b*m + y'
//   u    = w - r*thr | w - w*r | w                       subtract | zero | none
//   h    = H(u - thr),  spk = h*g
//   m'   = u, or with an immediate reset: u - d*thr | u - d*u,  d = (h*g)/g - r
//
// Backward: the spike's gradient (upstream plus the next step's, through its sp*V) meets the
// immediate reset's d as RLeaky's does (csrc/rleaky.cpp: d/dh of (h*g)/g taken as 1, the
// graded factor's gradient from spk only, as the two terms of autograd's cancel).
#include "../scan.h"

namespace fastlif {

struct RSynapticStep : StepDefaults {
  static constexpr const char* kName = "rsynaptic";
  static constexpr int kStates = 3, kParams = 5;
  static constexpr bool kSpikeState = true;
  using Options = OptionSpace<3, 2>;  // reset_mode, immediate
  static constexpr const char* kParamNames[kParams] = {"alpha", "beta", "V", "threshold", "graded_spikes_factor"};
  enum { kA, kB, kV, kThr, kG };
  // the decays and the recurrent weight, alone or together, without the threshold's and g's arithmetic
  using GradMasks = GradMaskSet<0, (1 << kA) | (1 << kB) | (1 << kV), kAllParams>;
  enum { kSp, kSyn, kMem };

  template <typename S, int RESET>
  static S membrane(S x, const S* s, const S* p, S& y, S& r) {
    const S th = p[kThr];
    r = heaviside(s[kMem] - th);
    y = (p[kA] * s[kSyn] + x) + s[kSp] * p[kV];
    return base_reset<S, RESET>(p[kB] * s[kMem] + y, r, th);
  }

  template <typename S, class O>
  static S forward(S x, S* s, const S* p) {
    constexpr int RESET = O::at(0);
    constexpr bool IMMEDIATE = O::at(1) == 1 && RESET != kNone;
    S y, r;
    const S u = membrane<S, RESET>(x, s, p, y, r);
    const S h = heaviside(u - p[kThr]);
    const S spk = h * p[kG];
    S m = u;
    if constexpr (IMMEDIATE) m = immediate_reset<S, RESET>(u, r, h, p[kThr], p[kG]);
    s[kSp] = spk;
    s[kSyn] = y;
    s[kMem] = m;
    return spk;
  }

  template <typename S, class O, int SG>
  static S backward(S x, const S* s, const S*, const S* p, S gspk, S* gs, S* gp, const SurrogateConsts<S>& c) {
    constexpr int RESET = O::at(0);
    constexpr bool IMMEDIATE = O::at(1) == 1 && RESET != kNone;
    const S th = p[kThr], g = p[kG];
    S y, r;
    const S u = membrane<S, RESET>(x, s, p, y, r);
    const S gw = membrane_grad<S, RESET, IMMEDIATE, SG>(gs[kMem], gspk, u, r, th, g, gp[kThr], gp[kG], c);
    gp[kB] += gw * s[kMem];
    const S gy = gw + gs[kSyn];
    gp[kA] += gy * s[kSyn];
    gp[kV] += gy * s[kSp];
    gs[kSp] = gy * p[kV];
    gs[kSyn] = gy * p[kA];
    gs[kMem] = gw * p[kB];
    return gy;
  }
};

FASTLIF_FAMILY(RSynapticStep);

}  // namespace fastlif
