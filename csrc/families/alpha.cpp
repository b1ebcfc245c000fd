// snnTorch's Alpha on the scan skeleton (csrc/scan.h; spec and reference step:
// fastlif/families/alpha.py). Three states, the excitatory and inhibitory currents e, i and the
// membrane m; parameters a, b (alpha, beta, clamped to [0, 1]), tau (tau_alpha, computed by
// torch from them), the threshold and the graded-spike factor:
//
//   r    = H(m - thr)                                    no gradient
//   be   = a*e + x,  bi = b*i - x,  bm = tau*(be + bi)
//   subtract: e' = be - thr*r,  i' = bi - bi*r,  m' = bm - (-i)*r     (i: the previous one)
//   zero:     e' = be - be*r,   i' = bi - bi*r,  m' = bm - bm*r
//   none:     e' = be,          i' = bi,         m' = bm
//   spk  = H(m' - thr) * g
//
// The membrane carries nothing from step to step but the (detached) reset flag, so no gradient
// reaches the previous membrane.
#include "../scan.h"

namespace fastlif {

struct AlphaStep : StepDefaults {
  static constexpr const char* kName = "alpha";
  static constexpr int kStates = 3, kParams = 5;
  using Options = OptionSpace<3>;  // reset_mode
  static constexpr const char* kParamNames[kParams] = {"alpha", "beta", "tau_alpha", "threshold",
                                                       "graded_spikes_factor"};
  enum { kA, kB, kTau, kThr, kG };
  // learn_alpha and learn_beta, alone or together, without the threshold's and g's arithmetic
  using GradMasks = GradMaskSet<0, (1 << kA) | (1 << kB), kAllParams>;
  enum { kE, kI, kM };

  template <typename S, class O>
  static S forward(S x, S* s, const S* p) {
    constexpr int RESET = O::at(0);
    const S e = s[kE], i = s[kI], m = s[kM], th = p[kThr];
    const S r = heaviside(m - th);
    const S be = p[kA] * e + x;
    const S bi = p[kB] * i - x;
    const S bm = p[kTau] * (be + bi);
    S e2 = be, i2 = bi, m2 = bm;
    if constexpr (RESET == kSubtract) {
      e2 = be - th * r;
      i2 = bi - bi * r;
      m2 = bm - (-i) * r;
    } else if constexpr (RESET == kZero) {
      e2 = be - be * r;
      i2 = bi - bi * r;
      m2 = bm - bm * r;
    }
    s[kE] = e2;
    s[kI] = i2;
    s[kM] = m2;
    return heaviside(m2 - th) * p[kG];
  }

  template <typename S, class O, int SG>
  static S backward(S x, const S* s, const S*, const S* p, S gspk, S* gs, S* gp, const SurrogateConsts<S>& c) {
    constexpr int RESET = O::at(0);
    const S e = s[kE], i = s[kI], m = s[kM], th = p[kThr];
    const S r = heaviside(m - th);
    const S be = p[kA] * e + x;
    const S bi = p[kB] * i - x;
    const S sum = be + bi;
    const S bm = p[kTau] * sum;
    S m2 = bm;
    if constexpr (RESET == kSubtract) m2 = bm - (-i) * r;
    else if constexpr (RESET == kZero) m2 = bm - bm * r;
    const S z = m2 - th;
    const S gz = surrogate_backward<S, SG>(gspk * p[kG], z, c);
    gp[kG] += gspk * heaviside(z);
    gp[kThr] -= gz;
    const S ge2 = gs[kE], gi2 = gs[kI], gm2 = gs[kM] + gz;
    S gbe = ge2, gbi = gi2, gbm = gm2, gi = S(0);
    if constexpr (RESET == kSubtract) {
      gp[kThr] -= r * ge2;
      gbi = gi2 - gi2 * r;
      gi = r * gm2;
    } else if constexpr (RESET == kZero) {
      gbe = ge2 - ge2 * r;
      gbi = gi2 - gi2 * r;
      gbm = gm2 - gm2 * r;
    }
    gp[kTau] += gbm * sum;
    const S gsum = gbm * p[kTau];
    gbe += gsum;
    gbi += gsum;
    gp[kA] += gbe * e;
    gp[kB] += gbi * i;
    gs[kE] = gbe * p[kA];
    gs[kI] = gi + gbi * p[kB];
    gs[kM] = S(0);
    return gbe - gbi;
  }
};

FASTLIF_FAMILY(AlphaStep);

}  // namespace fastlif
