// snnTorch's Lapicque on the scan skeleton (csrc/scan.h; spec and reference step:
// fastlif/families/lapicque.py). One state, the membrane m; parameters R, k1 = 1/(R*C),
// ts (the time step), k2 = 1 - ts/(R*C) (k1 and k2 computed by torch, as snnTorch does), the
// threshold and the graded-spike factor:
//
//   r    = H(m - thr)                                    no gradient
//   b    = ((x*R)*k1)*ts + k2*m
//   u    = b - r*thr | b - r*b | b                       subtract | zero | none
//   spk  = H(u - thr) * g,  m' = u
#include "../scan.h"

namespace fastlif {

struct LapicqueStep : StepDefaults {
  static constexpr const char* kName = "lapicque";
  static constexpr int kStates = 1, kParams = 6;
  using Options = OptionSpace<3>;  // reset_mode
  static constexpr const char* kParamNames[kParams] = {"R", "inv_RC", "time_step", "decay", "threshold",
                                                       "graded_spikes_factor"};
  enum { kR, kK1, kTs, kK2, kThr, kG };

  template <typename S, class O>
  static S forward(S x, S* s, const S* p) {
    constexpr int RESET = O::at(0);
    const S m = s[0], th = p[kThr];
    const S r = heaviside(m - th);
    const S b = ((x * p[kR]) * p[kK1]) * p[kTs] + p[kK2] * m;
    S u = b;
    if constexpr (RESET == kSubtract) u = b - r * th;
    else if constexpr (RESET == kZero) u = b - r * b;
    s[0] = u;
    return heaviside(u - th) * p[kG];
  }

  template <typename S, class O, int SG>
  static S backward(S x, const S* s, const S*, const S* p, S gspk, S* gs, S* gp, const SurrogateConsts<S>& c) {
    constexpr int RESET = O::at(0);
    const S m = s[0], th = p[kThr];
    const S r = heaviside(m - th);
    const S t1 = x * p[kR], t2 = t1 * p[kK1];
    const S b = t2 * p[kTs] + p[kK2] * m;
    S u = b;
    if constexpr (RESET == kSubtract) u = b - r * th;
    else if constexpr (RESET == kZero) u = b - r * b;
    const S z = u - th;
    const S gz = surrogate_backward<S, SG>(gspk * p[kG], z, c);
    gp[kG] += gspk * heaviside(z);
    const S gu = gs[0] + gz;
    gp[kThr] -= gz;
    S gb = gu;
    if constexpr (RESET == kSubtract) gp[kThr] -= r * gu;
    else if constexpr (RESET == kZero) gb = gu - gu * r;
    gp[kK2] += gb * m;
    gs[0] = gb * p[kK2];
    gp[kTs] += gb * t2;
    const S g2 = gb * p[kTs];
    gp[kK1] += g2 * t1;
    const S g1 = g2 * p[kK1];
    gp[kR] += g1 * x;
    return g1 * p[kR];
  }
};

FASTLIF_FAMILY(LapicqueStep);

}  // namespace fastlif
