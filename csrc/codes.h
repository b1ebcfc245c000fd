// Integer codes shared with Python and Triton. The one table is fastlif/codes.py; this file
// mirrors it, and tests/test_codes.py checks the two against each other through
// fastlif._C.codes().
#pragma once

namespace fastlif {

enum Reset : int { kSubtract = 0, kZero = 1, kNone = 2 };

enum Surrogate : int {
  kAtan = 0,
  kFastSigmoid = 1,
  kSigmoid = 2,
  kTriangular = 3,
  kStraightThrough = 4,
  kNoGrad = 5,
  kSjSigmoid = 6,  // SpikingJelly's Sigmoid and ATan (fastlif/spikingjelly.py): Heaviside z >= 0
  kSjAtan = 7,
};

enum Dtype : int { kFloat32 = 0, kFloat64 = 1 };

}  // namespace fastlif
