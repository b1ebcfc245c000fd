// fastlif._C: the fused CPU kernels. The functions come from the family files (FASTLIF_REGISTER);
// this file adds what is common: the integer codes (checked against fastlif/codes.py) and
// whether the build has OpenMP.
#include <pybind11/stl.h>

#include <map>
#include <string>

#include "codes.h"
#include "common.h"
#include "module.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastlif's fused CPU kernels (csrc/)";
  m.def("codes", [] {
    return std::map<std::string, int>{
        {"RESET_SUBTRACT", fastlif::kSubtract}, {"RESET_ZERO", fastlif::kZero},
        {"RESET_NONE", fastlif::kNone},         {"ATAN", fastlif::kAtan},
        {"FAST_SIGMOID", fastlif::kFastSigmoid}, {"SIGMOID", fastlif::kSigmoid},
        {"TRIANGULAR", fastlif::kTriangular},   {"STRAIGHT_THROUGH", fastlif::kStraightThrough},
        {"NO_GRAD", fastlif::kNoGrad},          {"SJ_SIGMOID", fastlif::kSjSigmoid},
        {"SJ_ATAN", fastlif::kSjAtan},          {"FLOAT32", fastlif::kFloat32},
        {"FLOAT64", fastlif::kFloat64}};
  }, "The integer codes this build was compiled with (mirror of fastlif/codes.py).");
  // The step loops' element functions on n floats at x into out (pointers), for
  // tests/test_cpp.py: exp_lanes against the correctly rounded exp and its limits (inf, 0, NaN);
  // sj_sigmoid (on exp_sleef) against torch.sigmoid, bit for bit with FMA.
  const auto def_elementwise = [&m](const char* name, float (*f)(float), const char* doc) {
    m.def(name, [f](std::uintptr_t x, std::uintptr_t out, int64_t n) {
      const float* in = fastlif::as_ptr<const float>(x);
      float* res = fastlif::as_ptr<float>(out);
      for (int64_t i = 0; i < n; ++i) res[i] = f(in[i]);
    }, doc, pybind11::arg("x"), pybind11::arg("out"), pybind11::arg("n"));
  };
  def_elementwise("_exp_lanes", [](float v) { return fastlif::exp_lanes(v); },
                  "exp of n float32 values at x into out (pointers), as the kernels' step loops compute it");
  def_elementwise("_sj_sigmoid", [](float v) { return fastlif::sj_sigmoid(v); },
                  "sigmoid of n float32 values at x into out (pointers), as SpikingJelly's surrogates in the "
                  "step loops compute it");
  // Whether this build fuses multiply-adds (-march=native on an FMA machine): exp_sleef's bits
  // equal torch's only then.
#ifdef __FMA__
  m.attr("fma") = true;
#else
  m.attr("fma") = false;
#endif
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
#ifdef __SANITIZE_ADDRESS__
  // Sanitizer builds only (.ci/sanitize): a leak of fastlif's own, so that the check that
  // looks for them can be shown to find one.
  m.def("_sanitizer_canary_leak", [] {
    char* volatile lost = new char[64];  // volatile: the allocation cannot be optimised away
    lost = nullptr;
  });
#endif
  // How the regions size their teams (common.h, team_size): for tests and bench/threads.py.
  m.def("_team_policy", [](int64_t grain, int forced, int adaptive, int huge) {
    auto& tp = fastlif::team_policy();
    if (huge >= 0) tp.huge = huge != 0;
    if (grain > 0) tp.grain = grain;
    if (forced >= 0) tp.forced = forced;
    if (adaptive >= 0) tp.adaptive = adaptive != 0;
    if (adaptive == 1) tp.solo_until = 0;  // re-enabling starts from the full team
    return std::map<std::string, int64_t>{{"grain", tp.grain.load()}, {"forced", tp.forced.load()},
                                          {"adaptive", tp.adaptive.load()}, {"huge", tp.huge.load()}, {"last_team", tp.last_team.load()}, {"solo_events", tp.solo_events.load()},
                                          {"solo_ms_left", std::max<int64_t>(0, tp.solo_until.load() - fastlif::now_ns()) / 1000000},
                                          {"default_grain", fastlif::kGrainBytes}};
  }, "Read (all -1) or set the team policy: grain bytes per thread, a forced team size (0: none), "
     "adaptive (1/0): whether a stalled region makes the next calls run on one thread for a while; "
     "huge (1/0): whether large outputs are advised MADV_HUGEPAGE before they are written.",
        pybind11::arg("grain") = -1, pybind11::arg("forced") = -1, pybind11::arg("adaptive") = -1, pybind11::arg("huge") = -1);
  m.def("_work_team", [](int threads, int64_t bytes) { return fastlif::work_team(threads, bytes, bytes); },
        "The team a call moving `bytes` gets from its work alone, at most `threads` (the grain rule, or "
        "the forced team): the thread count of the torch ops fastlif runs itself.",
        pybind11::arg("threads"), pybind11::arg("bytes"));
  for (auto reg : fastlif::registrars()) reg(m);
}
