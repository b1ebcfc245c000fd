// SpikingJelly 2.0's LIFNode and ParametricLIFNode on the scan skeleton (csrc/scan.h; spec and
// reference step: fastlif/families/sj_lif.py). One state, the membrane v; parameters k (tau for
// LIFNode, q = sigmoid(w) for ParametricLIFNode, computed by torch), the threshold and v_reset.
// Forward, in SpikingJelly's order (_ops/lif/reference.py, _ops/plif/reference.py, _ops/reset.py),
// r = v_reset for a hard reset, 0 for a soft one:
//
//   h    = v + (x - (v - r)) / k     decay_input, LEAK_DIVIDE    (* k for LEAK_MULTIPLY)
//        = v - (v - r) / k + x       otherwise
//   s    = H(h - thr)                H(z) = (z >= 0), SpikingJelly's Heaviside
//   v'   = s * r + (1 - s) * h       hard reset
//        = h - s * thr               soft reset
//
// Backward: the gradient of that step as autograd computes it through SpikingJelly's torch
// reference (what SpikingJelly's CPU path differentiates), in its accumulation order:
//   gs' = gspk [- gv'*thr (soft) | (gspk - gv'*h) + gv'*r (hard); not with detach_reset]
//   gh  = gv' | gv'*(1 - s)  +  surrogate(gs', h - thr)
//   gx  = gh / k | gh * k (decay_input) or gh;   gv = gh - gh / k | gh - gh * k
// and adds the gradients of k, thr and v_reset (for PLIF's k the sum over time per neuron, then
// the skeleton's fixed-order sum over neurons: not SpikingJelly's order, so equal to rounding).
#include "../scan.h"

namespace fastlif {

struct SjLifStep : StepDefaults {
  static constexpr const char* kName = "sj_lif";
  static constexpr int kStates = 1, kParams = 3;
  // leak (0 divide by tau, 1 multiply by sigmoid(w)), decay_input, hard_reset, detach_reset
  using Options = OptionSpace<2, 2, 2, 2>;
  using Surrogates = SurrogateKinds<kSjSigmoid, kSjAtan, kNoGrad>;  // SpikingJelly's, and none
  static constexpr const char* kParamNames[kParams] = {"k", "v_threshold", "v_reset"};
  enum { kK, kThr, kReset };
  // ParametricLIFNode's learnable k alone, without the threshold's and v_reset's arithmetic
  using GradMasks = GradMaskSet<0, 1 << kK, kAllParams>;

  template <typename S, class O>
  static S charge(S x, S v, S r, S k) {
    constexpr bool MULTIPLY = O::at(0) == 1, DECAY = O::at(1) == 1;
    const S vm = v - r;
    if constexpr (DECAY) {
      if constexpr (MULTIPLY) return v + (x - vm) * k;
      else return v + (x - vm) / k;
    } else {
      if constexpr (MULTIPLY) return v - vm * k + x;
      else return v - vm / k + x;
    }
  }

  template <typename S, class O>
  static S forward(S x, S* s, const S* p) {
    constexpr bool HARD = O::at(2) == 1;
    const S r = HARD ? p[kReset] : S(0);
    const S h = charge<S, O>(x, s[0], r, p[kK]);
    const S spk = sj_heaviside(h - p[kThr]);
    if constexpr (HARD) s[0] = spk * r + (S(1) - spk) * h;
    else s[0] = h - spk * p[kThr];
    return spk;
  }

  template <typename S, class O, int SG>
  static S backward(S x, const S* s, const S*, const S* p, S gspk, S* gs, S* gp, const SurrogateConsts<S>& c) {
    constexpr bool MULTIPLY = O::at(0) == 1, DECAY = O::at(1) == 1, HARD = O::at(2) == 1,
                   DETACH = O::at(3) == 1;
    const S v = s[0], k = p[kK], thr = p[kThr];
    const S r = HARD ? p[kReset] : S(0);
    const S h = charge<S, O>(x, v, r, k);
    const S z = h - thr;
    const S spk = sj_heaviside(z);
    const S gv = gs[0];
    // The gradient reaching the spike, then h: autograd's order through SpikingJelly's step
    // (what its CPU path runs: the registered op differentiates its torch reference), each sum in
    // the order autograd accumulates it (the spike output's gradient first).
    S gsp = gspk;
    if constexpr (!DETACH) {
      if constexpr (HARD) gsp = (gspk - gv * h) + gv * r;  // s*r + (1 - s)*h
      else gsp = gspk - gv * thr;                          // h - s*thr
    }
    const S gz = surrogate_backward<S, SG>(gsp, z, c);
    const S gh = (HARD ? gv * (S(1) - spk) : gv) + gz;
    gp[kThr] -= gz;
    if constexpr (!HARD) gp[kThr] -= gv * spk;  // the soft reset's direct -s*thr
    // h's slope in k, and in v_reset (through v - r: 1/k or k)
    const S vm = v - r;
    S dk;
    if constexpr (MULTIPLY) dk = DECAY ? x - vm : -vm;
    else dk = DECAY ? -(x - vm) / (k * k) : vm / (k * k);
    gp[kK] += gh * dk;
    S lin;  // gh * (dh/dv_reset) = gh * (1/k | k)
    if constexpr (MULTIPLY) lin = gh * k;
    else lin = gh / k;
    if constexpr (HARD) gp[kReset] += gv * spk + lin;
    if constexpr (MULTIPLY) gs[0] = gh - gh * k;
    else gs[0] = gh - gh / k;
    if constexpr (DECAY) return lin;
    else return gh;
  }
};

FASTLIF_FAMILY(SjLifStep);

}  // namespace fastlif
