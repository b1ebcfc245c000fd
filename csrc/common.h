// What every fused CPU op family shares: how neurons are split into work items and threads,
// the spike and surrogate functions, the scalar-or-per-neuron parameters, and the fixed-order
// reduction of parameter gradients. A family file (lif.cpp, ...) holds only its recurrence.
//
// Layout: a family's input is [T, R, L] contiguous (time, rows, the last dimension), its
// parameters one value each or one value per position along L. Work is split into items of up
// to kChunk contiguous neurons of one row; each item runs all T steps with its state in a small
// local array, so the inner loop over neurons vectorises, and items run in parallel under
// OpenMP, scheduled dynamically so that a thread the OS preempts (a busy machine) does not hold
// up the others. Every item's arithmetic is fixed whatever the thread count, and parameter
// gradients are reduced afterwards in a fixed order: results are bitwise deterministic.
//
// Exactness: forward values follow snnTorch's operation order with no contraction (the build
// passes -ffp-contract=off), so fp32 spikes and membranes equal PyTorch eager bit for bit.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "codes.h"
#include "static_switch.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif

namespace fastlif {

// 1024 neurons (4 KiB of fp32 per array per step). Each item reads one run per array per step,
// M elements after the last step's, so a run's length is what the hardware prefetcher and the
// TLB see: 256 (1 KiB runs) left Leaky's large backward at 5.6 GB/s a core; 1024 and 2048 ran it
// 2.1x faster on one thread and the tutorial's size 1.6x faster on two (fwd + bwd kernels, 2026-12-05,
// this Xeon VM); 4096 was no faster and leaves fewer items to share. The stack arrays stay
// small enough for a worker thread's stack (the scan's backward: 19 x 1024 doubles).
#ifndef FASTLIF_CHUNK
#define FASTLIF_CHUNK 1024
#endif
constexpr int64_t kChunk = FASTLIF_CHUNK;

// Split a [R, L] neuron grid into items of at most `chunk` (default kChunk) neurons inside one
// row.
struct Items {
  int64_t chunk, per_row, count;
  Items(int64_t R, int64_t L, int64_t chunk_ = kChunk)
      : chunk(chunk_), per_row((L + chunk_ - 1) / chunk_), count(R * per_row) {}
};

// One work item: neurons [base, base + n) of the flattened grid, starting at l0 along L.
struct Item {
  int64_t row, l0, n, base;
  Item(const Items& items, int64_t L, int64_t index)
      : row(index / items.per_row),
        l0((index % items.per_row) * items.chunk),
        n(std::min(items.chunk, L - l0)),
        base(row * L + l0) {}
};

// Each item reads a short run of neurons per step, M elements apart from the last step's:
// too short a stream for the hardware prefetcher to get ahead of, so ask for the next step's
// cache lines while this step computes.
constexpr int64_t kLine = 64;
template <typename T>
inline void prefetch_run(const T* p, int64_t n, bool for_write) {
  if (p == nullptr) return;
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * static_cast<int64_t>(sizeof(T)); b += kLine) {
    if (for_write) __builtin_prefetch(c + b, 1);
    else __builtin_prefetch(c + b, 0);
  }
}

// A reverse-time backward at step t > 0 asks for the previous step's runs: the upstream
// gradients (null: absent) and grad_x at t - 1, and the saved membrane that step's rebuild reads,
// at t - 2. `off` is step t's offset of the item.
template <typename T>
inline void prefetch_previous_step(int64_t t, int64_t off, int64_t M, int64_t n, const T* grad_spk,
                                   const T* grad_mem, const T* grad_x, const T* saved) {
  const int64_t prev = off - M;
  if (grad_spk) prefetch_run(grad_spk + prev, n, false);
  if (grad_mem) prefetch_run(grad_mem + prev, n, false);
  prefetch_run(grad_x + prev, n, true);
  if (t > 1) prefetch_run(saved + prev - M, n, false);
}

// --- threads ---------------------------------------------------------------------------------
// How many threads a region gets (api.md, "Threads and memory"): no more than the caller allows
// (fastlif.set_num_threads / torch's setting), than there are items, or than one per
// kGrainBytes of memory moved. Waking a second thread and meeting it at the closing barrier
// costs tens of microseconds on this VM (a cross-CPU wake-up is a VM exit). Measured with
// bench/threads.py once the outputs came from the pool (csrc/pool.cpp; before it, page faults
// serialised the threads and a second one paid only from ~16 MiB): two threads take 0.80-0.88x
// one thread's time from 2-3 MiB moved (Leaky, Synaptic, RLeaky fwd+bwd, the encoder), 0.9-1.0x
// below (2026-12-05, bench/README.md). A second thread joins from 2 grains (2 MiB) moved.
//
// A busy machine: when another process holds the cores, a thread of ours that the OS preempts
// holds the whole call at the barrier for a scheduler slice (milliseconds), and libgomp's
// waiting threads spin on a core the other process needs. Every region checks, at no cost worth
// counting (two clock reads per item), whether a thread of its team started or finished much
// later than the others; if so the following calls run on one thread ("solo") for a while, then
// try the full team again, with the solo period doubling (50 ms to 2 s) while the machine stays
// busy. Results do not depend on the team size, so none of this changes a bit.
constexpr int64_t kGrainBytes = int64_t(1) << 20;
constexpr int64_t kSoloMinNs = 50'000'000, kSoloMaxNs = 2'000'000'000;
constexpr int64_t kStallNs = 250'000;  // a delay that no wake-up or item imbalance explains

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Process-wide (one per loaded extension: an inline function's static is shared by every file).
struct TeamPolicy {
  std::atomic<int64_t> grain{kGrainBytes};  // tests and bench/threads.py move it (fastlif._C)
  std::atomic<int> forced{0};               // > 0: every region gets this team (tests)
  std::atomic<bool> adaptive{true};         // false: never go solo (bench/threads.py)
  std::atomic<int64_t> solo_until{0};
  std::atomic<int64_t> solo_period{kSoloMinNs};
  std::atomic<int64_t> solo_events{0};  // how often a stall was seen (fastlif._C._team_policy)
  std::atomic<int> last_team{0};        // the latest region's team (tests)
  std::atomic<bool> huge{true};         // advise_huge on (bench/alloc.py turns it off to compare)
};
inline TeamPolicy& team_policy() {
  static TeamPolicy policy;
  return policy;
}

// The team the work pays for (or the forced one), whatever the machine's load: also the thread
// count of the torch ops fastlif runs itself (fastlif.ops.common.torch_threads), whose results
// may depend on it and so must not depend on the load.
inline int work_team(int threads, int64_t items, int64_t bytes) {
  TeamPolicy& tp = team_policy();
  const int forced = tp.forced.load(std::memory_order_relaxed);
  if (forced > 0) return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(forced, items)));
  const int64_t by_work = std::max<int64_t>(1, bytes / std::max<int64_t>(1, tp.grain.load(std::memory_order_relaxed)));
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({int64_t(threads), items, by_work})));
}

inline int team_size(int threads, int64_t items, int64_t bytes) {
  TeamPolicy& tp = team_policy();
  const int n = work_team(threads, items, bytes);
  const int team = (n > 1 && tp.forced.load(std::memory_order_relaxed) == 0 && tp.adaptive.load(std::memory_order_relaxed) &&
                    now_ns() < tp.solo_until.load(std::memory_order_relaxed)) ? 1 : n;
  tp.last_team.store(team, std::memory_order_relaxed);
  return team;
}

// A parallel region's team and its stall check. Declare it before the region, pass `n` to
// num_threads, and open a Team::Item at the top of each iteration:
//
//   Team team(threads, items.count, bytes);
//   #pragma omp parallel for schedule(dynamic) num_threads(team.n)
//   for (...) { const Team::Item mark(team); ... }
//
// The destructor, after the region, judges it: a thread that began its first item, or ended its
// last, more than max(kStallNs, an eighth of the region) after the others was held off its core
// (dynamic scheduling keeps a quiet team within one item, microseconds, of each other; a
// spinning master burns its share of a busy core while it waits, so even a large region that
// loses an eighth to a stall ran slower than one thread would have).
class Team {
  struct alignas(64) Slot {  // one cache line per thread: no false sharing
    int64_t first = 0, last = 0;
  };

 public:
  Team(int threads, int64_t items, int64_t bytes) : n(team_size(threads, items, bytes)) {
    if (n > 1) {
      slots_.reset(new Slot[static_cast<size_t>(n)]);
      start_ = now_ns();
    }
  }
  ~Team() {
    if (n > 1) judge();
  }
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  const int n;

  class Item {
   public:
    explicit Item(Team& team) : team_(team) {
      if (team_.n > 1) {
        slot_ = &team_.slots_[static_cast<size_t>(thread_index())];
        if (slot_->first == 0) slot_->first = now_ns();
      }
    }
    ~Item() {
      if (slot_) slot_->last = now_ns();
    }
    Item(const Item&) = delete;
    Item& operator=(const Item&) = delete;

   private:
    Team& team_;
    Slot* slot_ = nullptr;
  };

 private:
  static int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
  }
  void judge() {
    TeamPolicy& tp = team_policy();
    if (!tp.adaptive.load(std::memory_order_relaxed) || tp.forced.load(std::memory_order_relaxed) > 0) return;
    const int64_t end = now_ns(), wall = end - start_;
    int64_t late = 0, first_done = end, last_done = start_;
    for (int i = 0; i < n; ++i) {
      const Slot& s = slots_[static_cast<size_t>(i)];
      if (s.first == 0) {  // never got an item: it started after the others had done them all
        late = wall;
        continue;
      }
      late = std::max(late, s.first - start_);
      first_done = std::min(first_done, s.last);
      last_done = std::max(last_done, s.last);
    }
    const int64_t stall = std::max(late, last_done - std::min(first_done, last_done));
    if (stall > std::max(kStallNs, wall / 8)) {
      const int64_t period = tp.solo_period.load(std::memory_order_relaxed);
      tp.solo_until.store(end + period, std::memory_order_relaxed);
      tp.solo_period.store(std::min(kSoloMaxNs, 2 * period), std::memory_order_relaxed);
      tp.solo_events.fetch_add(1, std::memory_order_relaxed);
    } else {
      tp.solo_period.store(kSoloMinNs, std::memory_order_relaxed);
    }
  }
  std::unique_ptr<Slot[]> slots_;
  int64_t start_ = 0;
};

// --- memory ------------------------------------------------------------------------------------
// A fused op's outputs are fresh tensors. With glibc's default thresholds a large one is often
// an mmap of its own, or the top of a heap that was trimmed, so a call can fault its pages in
// again (4 KiB at a time: a trap, a page allocation and a clear each; ~6,300 a call for a large
// Leaky forward+backward when it happens, which depends on the order of earlier frees). Before a kernel first writes an
// output of at least kHugeMin bytes, its 2 MiB-aligned interior is marked MADV_HUGEPAGE: 512x
// fewer faults, and fewer TLB misses while the kernel streams it (what torch's
// THP_MEM_ALLOC_ENABLE does for every allocation, but only for these ranges and without any
// process-wide setting). Where THP is "never" (or not Linux) this is a no-op; where it is
// "always" the pages were huge already. Measured (bench/alloc.py): README, "Threads, memory and
// a busy machine".
constexpr int64_t kHugePage = int64_t(2) << 20;
constexpr int64_t kHugeMin = int64_t(4) << 20;
inline void advise_huge(const void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < kHugeMin || !team_policy().huge.load(std::memory_order_relaxed)) return;
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t lo = (a + kHugePage - 1) & ~std::uintptr_t(kHugePage - 1);
  const std::uintptr_t hi = (a + static_cast<std::uintptr_t>(bytes)) & ~std::uintptr_t(kHugePage - 1);
  if (hi <= lo) return;
  // Only memory about to be faulted in: a block the allocator reuses (its pages resident, as
  // with raised glibc thresholds, jemalloc or tcmalloc) is left alone, so that the advice costs
  // it no VMA split and gives khugepaged nothing to collapse. One page's residency tells.
  unsigned char resident = 0;
  if (mincore(reinterpret_cast<void*>(lo), 4096, &resident) == 0 && (resident & 1)) return;
  madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice: failure is harmless
#else
  (void)p;
  (void)bytes;
#endif
}

// advise_huge for several outputs of `bytes` each (null ones skipped).
template <typename... P>
inline void advise_outputs(int64_t bytes, P... outputs) {
  (advise_huge(static_cast<const void*>(outputs), bytes), ...);
}

// H(z) = (z > 0), strict, as snnTorch fires: the spike from mem - threshold, and the reset
// flag from the previous membrane.
template <typename scalar_t>
inline scalar_t heaviside(scalar_t z) {
  return z > scalar_t(0) ? scalar_t(1) : scalar_t(0);
}

// SpikingJelly's Heaviside, (z >= 0): it fires at the threshold, where snnTorch does not.
template <typename scalar_t>
inline scalar_t sj_heaviside(scalar_t z) {
  return z >= scalar_t(0) ? scalar_t(1) : scalar_t(0);
}

// `first ? a : b` by bit masks. The vectoriser drops a loop when GCC turns a select into a branch
// and sinks the arithmetic of one arm into it (under -ftrapping-math an operation that could
// trap, a float-to-double conversion, cannot be if-converted back); a blend of bits keeps both
// arms unconditional.
template <typename S>
inline S pick(bool first, S a, S b) {
  using U = std::conditional_t<sizeof(S) == 4, uint32_t, uint64_t>;
  U ua, ub;
  std::memcpy(&ua, &a, sizeof ua);
  std::memcpy(&ub, &b, sizeof ub);
  const U mask = U(0) - U(first);
  const U bits = (ua & mask) | (ub & ~mask);
  S out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// a * b + c, fused where the target has FMA (one rounding, one instruction); otherwise two.
// For the exps' own arithmetic only: a peer's operation order is never fused (-ffp-contract=off).
template <typename S>
inline S mul_add(S a, S b, S c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// exp for the step loops where the peer calls torch.exp (snnTorch's sigmoid surrogate: MKL's VML
// on x86, whose bits no open code reproduces, so the nearest to the true value instead). Not
// libm's expf: a call is opaque to GCC's vectoriser and kept the loop scalar, 4-5x slower. For
// float this is exp evaluated in double and rounded once: n = round(x / ln2) by the 1.5 * 2^52
// shift (no float-to-int conversion), r = x - n ln2, a degree-8 polynomial (Chebyshev
// interpolation of exp on [-ln2/2, ln2/2], relative error 1.1e-12; a degree-11 Taylor one took
// 2.5x the time), times 2^n built in the exponent bits. Its result is the correctly rounded exp(x)
// except where exp(x) lies within ~1e-12 of a halfway point between two floats, where it is one
// ulp off: over 2^22 floats spread across [-120, 100], 4 of them. Beyond 89 (exp rounds to
// inf) and below -110 (to 0) the polynomial's 2^n would leave the exponent's range, so those
// inputs take inf and 0 by bit masks; NaN stays NaN. fp64 keeps std::exp.
inline float exp_lanes(float x) {
  const double d = x;
  constexpr double kShift = 0x1.8p52, kLog2e = 0x1.71547652b82fep0, kLn2 = 0x1.62e42fefa39efp-1;
  const double t = mul_add(d, kLog2e, kShift);  // round(d / ln2) in the low bits of t's mantissa
  const double n = t - kShift;
  const double r = mul_add(n, -kLn2, d);
  double p = 2.487569432882793e-05;  // Horner, highest power first
  p = mul_add(p, r, 1.9915864668440438e-04);
  p = mul_add(p, r, 1.3888822738760763e-03);
  p = mul_add(p, r, 8.333266102190715e-03);
  p = mul_add(p, r, 4.1666666883557954e-02);
  p = mul_add(p, r, 1.666666689102446e-01);
  p = mul_add(p, r, 4.9999999999814065e-01);
  p = mul_add(p, r, 9.999999999797875e-01);
  p = mul_add(p, r, 9.999999999999997e-01);
  uint64_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits + 1023) << 52;  // 2^n's exponent field (n + 1023, in range for |x| in bounds)
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float e = static_cast<float>(p * scale);
  return pick(x < -110.f, 0.f, pick(x > 89.f, std::numeric_limits<float>::infinity(), e));
}
inline double exp_lanes(double x) { return std::exp(x); }

// 2^n for a float's exponent range (n in [-126, 127]), built in the exponent bits.
inline float pow2_bits(uint32_t n) {
  const uint32_t bits = (n + 127u) << 23;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// The exp torch's vectorised CPU kernels run (ATen's Vectorized<float>::exp on AVX2 and AVX-512:
// Sleef's expf_u10), step for step: q = rint(d / ln2), s = d - q ln2 in two fused parts, a
// degree-6 polynomial, 2^q in two factors (so that subnormal results round once), 0 below -104
// and inf above 100. Within one ulp of the correctly rounded exp (not within the 1e-3 share of
// exp_lanes). What it is for: torch.sigmoid's vectorised path is 1 / (exp(0 - a) + 1) with it,
// so sj_sigmoid equals torch.sigmoid bit for bit (over every float tried; tests/test_cpp.py) and
// SpikingJelly's Sigmoid surrogate, which calls torch.sigmoid, gets its gradient bits. In float
// lanes it also takes half the time of exp_lanes' double ones. Needs FMA for those bits (without,
// within a few ulp). rint is the 1.5 * 2^23 shift, q read from t's bits: no float-to-int
// conversion, which is undefined for NaN (a NaN input gives NaN through s).
inline float exp_sleef(float d) {
  constexpr float kShift = 0x1.8p23f;
  const float t = d * 1.442695040888963407359924681001892137426645954152985934135449406931f + kShift;
  const float qf = t - kShift;
  uint32_t tbits;
  std::memcpy(&tbits, &t, sizeof tbits);
  const uint32_t q = tbits - 0x4B400000u;  // qf as a two's-complement integer
  float s = mul_add(qf, -0.693145751953125f, d);
  s = mul_add(qf, -1.428606765330187045e-06f, s);
  float u = 0.000198527617612853646278381f;
  u = mul_add(u, s, 0.00139304355252534151077271f);
  u = mul_add(u, s, 0.00833336077630519866943359f);
  u = mul_add(u, s, 0.0416664853692054748535156f);
  u = mul_add(u, s, 0.166666671633720397949219f);
  u = mul_add(u, s, 0.5f);
  u = 1.0f + mul_add(s * s, u, s);
  const uint32_t half = static_cast<uint32_t>(static_cast<int32_t>(q) >> 1);
  u = u * pow2_bits(half) * pow2_bits(q - half);
  return pick(d < -104.f, 0.f, pick(100.f < d, std::numeric_limits<float>::infinity(), u));
}
inline double exp_sleef(double d) { return std::exp(d); }

// torch.sigmoid as its vectorised CPU path computes it: a = 0 - a, exp, + 1, reciprocal.
template <typename scalar_t>
inline scalar_t sj_sigmoid(scalar_t a) {
  return scalar_t(1) / (exp_sleef(scalar_t(0) - a) + scalar_t(1));
}

// A surrogate's constants as snnTorch's backward rounds them: its Python-float parameter enters
// double arithmetic first (alpha/2, pi/2*alpha, -slope) and the result is rounded to the tensor's
// dtype when it meets a tensor. Built once per call from the double the binding receives.
template <typename scalar_t>
struct SurrogateConsts {
  scalar_t a = 0, b = 0;
  SurrogateConsts() = default;
  SurrogateConsts(int kind, double p) {
    if (kind == kAtan || kind == kSjAtan) {
      a = static_cast<scalar_t>(p / 2);
      b = static_cast<scalar_t>(M_PI / 2 * p);
    } else if (kind == kSigmoid) {
      a = static_cast<scalar_t>(p);
      b = static_cast<scalar_t>(-p);
    } else {
      a = static_cast<scalar_t>(p);
    }
  }
};

// The gradient reaching z = mem - threshold from gs, the gradient reaching the Heaviside output,
// in exactly snnTorch's operation order (snntorch/surrogate.py, each backward), so per-step
// gradients are bit-identical to snnTorch's:
//   atan:         alpha/2 / (1 + (pi/2*alpha*z)^2) * gs   (tensor / Python float is reciprocal * it)
//   fast_sigmoid: gs / (slope*|z| + 1)^2
//   sigmoid:      gs * slope * exp(-slope*z) / (exp(-slope*z) + 1)^2
//   triangular:   gs * threshold, negated where z >= 0
// One deliberate difference (api.md): where sigmoid's exp(-slope*z) overflows (slope*z < -88 in
// fp32), snnTorch divides inf by inf and returns NaN; here the same function in its stable form
// exp(slope*z) runs instead, which is finite (the true value, tiny). Elsewhere, snnTorch's bits.
template <typename scalar_t, int SG>
inline scalar_t surrogate_backward(scalar_t gs, scalar_t z, const SurrogateConsts<scalar_t>& c) {
  if constexpr (SG == kAtan) {
    const scalar_t k = c.b * z;
    return ((scalar_t(1) / (k * k + scalar_t(1))) * c.a) * gs;
  } else if constexpr (SG == kFastSigmoid) {
    const scalar_t d = c.a * std::fabs(z) + scalar_t(1);
    return gs / (d * d);
  } else if constexpr (SG == kSigmoid) {
    const scalar_t e = exp_lanes(c.b * z);
    const scalar_t grad = ((gs * c.a) * e) / ((e + scalar_t(1)) * (e + scalar_t(1)));
    // snnTorch's inf/inf: the stable form instead. Both are computed and one is selected, so
    // the loop has no branch to keep it from vectorising.
    const scalar_t f = exp_lanes(-(c.b * z));
    const scalar_t stable = ((gs * c.a) * f) / ((f + scalar_t(1)) * (f + scalar_t(1)));
    return pick(!std::isnan(grad) | std::isnan(z) | std::isnan(gs), grad, stable);
  } else if constexpr (SG == kTriangular) {
    const scalar_t g = gs * c.a;
    return z >= scalar_t(0) ? -g : g;
  } else if constexpr (SG == kStraightThrough) {
    return gs;
  } else if constexpr (SG == kSjSigmoid) {  // SpikingJelly (_ops/surrogate.py, _surrogate_gradient):
    const scalar_t s = sj_sigmoid(c.a * z);  // s = sigmoid(alpha*x); gs * ((1 - s) * s * alpha)
    return gs * (((scalar_t(1) - s) * s) * c.a);
  } else if constexpr (SG == kSjAtan) {  // z' = x*(pi/2*alpha); gs * ((alpha/2) / (1 + z'*z')), where
    const scalar_t k = z * c.b;          // Python float / tensor is reciprocal(tensor) * float
    return gs * ((scalar_t(1) / (scalar_t(1) + k * k)) * c.a);
  } else {
    return scalar_t(0);
  }
}

// The membrane after a step's immediate reset (reset_delay false), from the pre-reset membrane
// u, the reset flag r and the spike s, in snnTorch's order: d = spk/g - r.
template <typename scalar_t, int RESET>
inline scalar_t immediate_reset(scalar_t u, scalar_t r, scalar_t s, scalar_t th, scalar_t g) {
  const scalar_t d = (s * g) / g - r;
  if constexpr (RESET == kSubtract) return u - d * th;
  else if constexpr (RESET == kZero) return u - d * u;
  else return u;
}

// The gradient core of a membrane that integrated to u this step (the reset flag r from the
// step before): its spike spk = H(u - thr) * g and its immediate reset (reset_delay false). From
// gm, the gradient reaching the membrane after the step, and gspk, the spike output's, returns
// the gradient reaching u, and adds the threshold's and the graded factor's into gth and gg (with
// a subtracting base reset u = w - r*thr, its threshold term too). Leaky's, RLeaky's, Synaptic's
// and RSynaptic's steps share it; each applies its own base reset's zero form after it.
template <typename S, int RESET, bool IMMEDIATE, int SG>
inline S membrane_grad_u(S gm, S gspk, S u, S r, S th, S g, S& gth, S& gg, const SurrogateConsts<S>& c) {
  const S z = u - th;
  const S h = heaviside(z);
  S gh = gspk * g;  // reaching the Heaviside output
  S gu = gm;        // reaching u directly
  if constexpr (IMMEDIATE && RESET == kSubtract) {  // m' = u - (h - r) * thr
    gh -= gm * th;
    gth -= gm * (h - r);
  } else if constexpr (IMMEDIATE && RESET == kZero) {  // m' = u - (h - r) * u
    gh -= gm * u;
    gu = gm * (S(1) - (h - r));
  }
  gg += gspk * h;
  const S gz = surrogate_backward<S, SG>(gh, z, c);
  gu += gz;
  gth -= gz;
  if constexpr (RESET == kSubtract) gth -= r * gu;
  return gu;
}

// The base reset of a membrane that integrated this step to w (Synaptic's and RSynaptic's,
// snnTorch's _base_sub / _base_zero; kernels/common.py's base_reset): w - r*thr | w - w*r | w.
template <typename S, int RESET>
inline S base_reset(S w, S r, S th) {
  if constexpr (RESET == kSubtract) return w - r * th;
  else if constexpr (RESET == kZero) return w - w * r;
  else return w;
}

// membrane_grad_u through the base reset u = w - r*thr | w - w*r | w: the gradient reaching w
// (autograd's order for the zero form: gu - gu*r). Synaptic's and RSynaptic's step.
template <typename S, int RESET, bool IMMEDIATE, int SG>
inline S membrane_grad(S gm, S gspk, S u, S r, S th, S g, S& gth, S& gg, const SurrogateConsts<S>& c) {
  const S gu = membrane_grad_u<S, RESET, IMMEDIATE, SG>(gm, gspk, u, r, th, g, gth, gg, c);
  if constexpr (RESET == kZero) return gu - gu * r;
  else return gu;
}

// The grid as a kernel sees it: rows kept apart (per-neuron parameters, or a row whose neurons
// are coupled) or, with scalar parameters, the whole grid as one long row. Args: any kernel's
// argument struct (T, R, L, num_threads).
template <class Args>
void set_grid(Args& a, int64_t T, int64_t R, int64_t L, bool rows_apart, int threads) {
  a.T = T;
  a.R = rows_apart ? R : 1;
  a.L = rows_apart ? L : R * L;
  a.num_threads = threads > 0 ? threads : 1;
}

// A parameter as Python hands it over: a pointer to n values (n = 1 or L), or, with a null
// pointer, one value given by itself (a Python float).
struct ParamIn {
  std::uintptr_t ptr = 0;
  int64_t n = 1;
  double value = 0;
};

// K parameters as the kernels read them: p[k][j] for the j-th neuron of an item when
// per_neuron, else p[k][0]. If any parameter is per neuron, all are expanded to L values, so a
// kernel has one code path per case; the expanded copies live here.
template <typename scalar_t, int K>
struct ParamSet {
  std::array<const scalar_t*, K> p{};
  std::array<int64_t, K> given_n{};
  bool per_neuron = false;

  ParamSet(const std::array<ParamIn, K>& in, int64_t L, const char* const (&names)[K]) {
    for (int k = 0; k < K; ++k) {
      if (in[k].n != 1 && in[k].n != L)
        throw std::invalid_argument(std::string(names[k]) + ": expected 1 or " + std::to_string(L) +
                                    " values, got " + std::to_string(in[k].n));
      given_n[k] = in[k].n;
      per_neuron = per_neuron || (in[k].n > 1);
    }
    for (int k = 0; k < K; ++k) {
      const auto* src = reinterpret_cast<const scalar_t*>(in[k].ptr);
      scalars_[k] = src ? src[0] : static_cast<scalar_t>(in[k].value);
      if (per_neuron && in[k].n == 1) {
        expanded_[k].assign(static_cast<size_t>(L), scalars_[k]);
        p[k] = expanded_[k].data();
      } else {
        p[k] = (src && in[k].n > 1) ? src : &scalars_[k];
      }
    }
  }
  // Every parameter of an item starting at l0 along L: read at p[j] per neuron, else p[0].
  std::array<const scalar_t*, K> at(int64_t l0) const {
    std::array<const scalar_t*, K> out;
    for (int k = 0; k < K; ++k) out[k] = per_neuron ? p[k] + l0 : p[k];
    return out;
  }

 private:
  std::array<std::vector<scalar_t>, K> expanded_;
  std::array<scalar_t, K> scalars_{};
};

// Per-item, per-lane partial sums of K parameter gradients, reduced afterwards in a fixed order
// (double accumulation), so that the result does not depend on the thread count.
template <typename scalar_t, int K>
struct ParamGrads {
  int64_t items;
  std::vector<scalar_t> partial;
  explicit ParamGrads(int64_t items_) : items(items_), partial(static_cast<size_t>(K * items_ * kChunk)) {}
  scalar_t* lane(int k, int64_t item) { return partial.data() + (k * items + item) * kChunk; }

  // An item's per-neuron sums of parameter k's gradient, for n neurons; the lanes past them
  // hold zeros, so that reduce adds nothing for them.
  void store(int k, int64_t item, const scalar_t* sums, int64_t n) {
    scalar_t* out = lane(k, item);
    for (int64_t j = 0; j < kChunk; ++j) out[j] = j < n ? sums[j] : scalar_t(0);
  }

  // Write the gradient of parameter k into out: one value per position along L (given L
  // values) or one value (given one, also when it was expanded because another was per neuron).
  void reduce(int k, int64_t R, int64_t L, bool per_neuron, int64_t given_n, scalar_t* out) const {
    if (out == nullptr) return;
    const Items grid(R, L);
    const scalar_t* part = partial.data() + k * items * kChunk;
    if (!per_neuron) {
      double acc = 0;
      for (int64_t i = 0; i < grid.count * kChunk; ++i) acc += part[i];
      out[0] = static_cast<scalar_t>(acc);
      return;
    }
    std::vector<double> per(static_cast<size_t>(L), 0.0);
    for (int64_t l = 0; l < L; ++l) {
      const int64_t c = l / kChunk, j = l % kChunk;
      double acc = 0;
      for (int64_t row = 0; row < R; ++row) acc += part[(row * grid.per_row + c) * kChunk + j];
      per[l] = acc;
    }
    if (given_n == 1) {  // an expanded scalar: its gradient sums over L
      double acc = 0;
      for (int64_t l = 0; l < L; ++l) acc += static_cast<double>(static_cast<scalar_t>(per[l]));
      out[0] = static_cast<scalar_t>(acc);
    } else {
      for (int64_t l = 0; l < L; ++l) out[l] = static_cast<scalar_t>(per[l]);
    }
  }
};

template <typename T>
inline T* as_ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// --- Leaky's saved layout (fastlif/layout.py), which Leaky's and RLeaky's kernels keep -------
// Forward keeps the membrane m (delayed reset), or the pre-reset membrane u and the reset flags r
// (immediate reset).

// reset_mode checked; returns whether the call's reset is immediate: a neuron that never resets
// has no immediate reset, its options are a delayed reset's.
inline bool immediate_reset_of(int reset, bool immediate) {
  int_switch<kSubtract, kZero, kNone>(reset, "reset_mode", [](auto) {});
  return immediate && reset != kNone;
}

// The pointers a call needs for the reset it runs, checked; `name` is the entry point's, for the
// message.
inline void require_lif_forward(const char* name, std::uintptr_t x, std::uintptr_t spk, std::uintptr_t mem,
                                std::uintptr_t u_saved, std::uintptr_t r_saved, bool immediate) {
  if (!x || !spk || !mem) throw std::invalid_argument(std::string(name) + ": x, spk and mem are required");
  if (immediate && (!u_saved || !r_saved))
    throw std::invalid_argument(std::string(name) + ": an immediate reset needs u_saved and r_saved");
}

inline void require_lif_backward(const char* name, std::uintptr_t grad_x, std::uintptr_t mem_saved,
                                 std::uintptr_t u_saved, std::uintptr_t r_saved, bool immediate) {
  if (!grad_x) throw std::invalid_argument(std::string(name) + ": grad_x is required");
  if (immediate ? (!u_saved || !r_saved) : !mem_saved)
    throw std::invalid_argument(std::string(name) + (immediate ? ": an immediate reset needs u_saved and r_saved"
                                                               : ": a delayed reset needs mem_saved"));
}

}  // namespace fastlif
