// fastlif._C: the fused CPU kernels. The functions come from the family files (FASTLIF_REGISTER);
// this file adds what is common: the integer codes (checked against fastlif/codes.py) and
// whether the build has OpenMP.
#include <pybind11/stl.h>

#include <map>
#include <string>

#include "codes.h"
#include "module.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastlif's fused CPU kernels (csrc/)";
  m.def("codes", [] {
    return std::map<std::string, int>{
        {"RESET_SUBTRACT", fastlif::kSubtract}, {"RESET_ZERO", fastlif::kZero},
        {"RESET_NONE", fastlif::kNone},         {"ATAN", fastlif::kAtan},
        {"FAST_SIGMOID", fastlif::kFastSigmoid}, {"SIGMOID", fastlif::kSigmoid},
        {"TRIANGULAR", fastlif::kTriangular},   {"STRAIGHT_THROUGH", fastlif::kStraightThrough},
        {"NO_GRAD", fastlif::kNoGrad},          {"FLOAT32", fastlif::kFloat32},
        {"FLOAT64", fastlif::kFloat64}};
  }, "The integer codes this build was compiled with (mirror of fastlif/codes.py).");
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
  for (auto reg : fastlif::registrars()) reg(m);
}
