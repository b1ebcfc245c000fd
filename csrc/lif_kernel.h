// Fused LIF kernels for the CPU: the whole T-step recurrence forward, and its surrogate-gradient
// backward walking T in reverse, for snnTorch's Leaky (api.md section 1).
//
// Layout: x is [T, R, L] contiguous; parameters (beta already clamped, threshold, graded spike
// factor) are either one value each or one value per position along L (the last dimension).
// Work is split into items of up to kChunk contiguous neurons of one row; each item runs all T
// steps with its state in a small local array, so the inner loop over neurons vectorises and
// items run in parallel under OpenMP, scheduled dynamically so that a thread the OS preempts
// (a busy machine) does not hold up the others. Every item's arithmetic is fixed whatever the thread
// count, and parameter gradients are reduced afterwards in a fixed order: results are bitwise
// deterministic.
//
// Exactness: forward values follow snnTorch's operation order with no contraction (the build
// passes -ffp-contract=off), so fp32 spikes and membrane equal PyTorch eager bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastlif {

enum Reset : int { kSubtract = 0, kZero = 1, kNone = 2 };
// Keep in step with fastlif/surrogate.py.
enum Surrogate : int { kAtan = 0, kFastSigmoid = 1, kSigmoid = 2, kTriangular = 3,
                       kStraightThrough = 4, kNoGrad = 5 };

constexpr int64_t kChunk = 256;

template <typename scalar_t>
struct LifArgs {
  int64_t T = 0, R = 0, L = 0;
  const scalar_t* x = nullptr;
  const scalar_t* mem0 = nullptr;  // [R*L] or null (zeros)
  const scalar_t* beta = nullptr;  // [L] when per_neuron, else [1]
  const scalar_t* thr = nullptr;
  const scalar_t* graded = nullptr;
  // forward outputs
  scalar_t* spk = nullptr;
  scalar_t* mem = nullptr;
  scalar_t* u_saved = nullptr;  // pre-reset membrane, only when reset_delay is false
  uint8_t* r_saved = nullptr;   // reset flags, only when reset_delay is false
  // backward inputs and outputs
  const scalar_t* grad_spk = nullptr;
  const scalar_t* grad_mem = nullptr;
  const scalar_t* mem_saved = nullptr;  // forward's mem output (reset_delay true)
  const scalar_t* u_in = nullptr;       // forward's u_saved (reset_delay false)
  const uint8_t* r_in = nullptr;
  scalar_t* grad_x = nullptr;
  scalar_t* grad_mem0 = nullptr;     // [R*L] or null
  scalar_t* partial_beta = nullptr;  // [num_items, chunk] per-item, per-lane partial sums
  scalar_t* partial_thr = nullptr;
  scalar_t* partial_graded = nullptr;
  scalar_t sg_param = 0;
  int num_threads = 1;
};

// Split a [R, L] neuron grid into items of at most kChunk neurons inside one row.
struct Items {
  int64_t per_row, count;
  Items(int64_t R, int64_t L) : per_row((L + kChunk - 1) / kChunk), count(R * per_row) {}
};

// Each item reads a short run of neurons per step, M elements apart from the last step's:
// too short a stream for the hardware prefetcher to get ahead of, so ask for the next step's
// cache lines while this step computes.
constexpr int64_t kLine = 64;
template <typename T>
inline void prefetch_run(const T* p, int64_t n, bool for_write) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * static_cast<int64_t>(sizeof(T)); b += kLine) {
    if (for_write) __builtin_prefetch(c + b, 1);
    else __builtin_prefetch(c + b, 0);
  }
}

// How many threads a call gets: no more than there are items, and one per kGrain
// neuron-steps at most. Every extra thread must reach the region's closing barrier, and on a
// busy machine a preempted one costs a scheduler tick (milliseconds): small calls (an output
// layer of 10 neurons, one step of a per-step loop) run on one thread, as PyTorch's own
// element-wise ops do below their grain size.
constexpr int64_t kGrain = int64_t(1) << 17;
inline int team_size(int threads, int64_t items, int64_t neuron_steps) {
  const int64_t by_work = std::max<int64_t>(1, neuron_steps / kGrain);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({int64_t(threads), items, by_work})));
}

template <typename scalar_t, int SG>
inline scalar_t surrogate_grad(scalar_t z, scalar_t p) {
  if constexpr (SG == kAtan) {
    const scalar_t k = scalar_t(M_PI / 2) * p * z;
    return p / scalar_t(2) / (scalar_t(1) + k * k);
  } else if constexpr (SG == kFastSigmoid) {
    const scalar_t d = p * std::fabs(z) + scalar_t(1);
    return scalar_t(1) / (d * d);
  } else if constexpr (SG == kSigmoid) {
    const scalar_t e = std::exp(-p * z);
    return p * e / ((e + scalar_t(1)) * (e + scalar_t(1)));
  } else if constexpr (SG == kTriangular) {
    return z >= scalar_t(0) ? -p : p;
  } else if constexpr (SG == kStraightThrough) {
    return scalar_t(1);
  } else {
    return scalar_t(0);
  }
}

// H(z) = (z > 0), strict, as snnTorch fires: the spike from mem - threshold, and the reset
// flag from the previous membrane.
template <typename scalar_t>
inline scalar_t heaviside(scalar_t z) {
  return z > scalar_t(0) ? scalar_t(1) : scalar_t(0);
}

// Membrane after a step's immediate reset (reset_delay false), from the pre-reset membrane u,
// the reset flag r and the spike s, in snnTorch's order: d = spk/g - r.
template <typename scalar_t, int RESET>
inline scalar_t immediate_reset(scalar_t u, scalar_t r, scalar_t s, scalar_t th, scalar_t g) {
  const scalar_t d = (s * g) / g - r;
  if constexpr (RESET == kSubtract) return u - d * th;
  else if constexpr (RESET == kZero) return u - d * u;
  else return u;
}

template <typename scalar_t, int RESET, bool DELAY, bool PER_NEURON>
void lif_fwd_cpu(const LifArgs<scalar_t>& a) {
  const Items items(a.R, a.L);
  const int64_t M = a.R * a.L;
#pragma omp parallel for schedule(dynamic) num_threads(team_size(a.num_threads, items.count, a.T * M))
  for (int64_t item = 0; item < items.count; ++item) {
    const int64_t row = item / items.per_row;
    const int64_t l0 = (item % items.per_row) * kChunk;
    const int64_t n = std::min(kChunk, a.L - l0);
    const int64_t base = row * a.L + l0;
    const scalar_t* beta = PER_NEURON ? a.beta + l0 : a.beta;
    const scalar_t* thr = PER_NEURON ? a.thr + l0 : a.thr;
    const scalar_t* graded = PER_NEURON ? a.graded + l0 : a.graded;
    scalar_t m[kChunk];
    for (int64_t j = 0; j < n; ++j) m[j] = a.mem0 ? a.mem0[base + j] : scalar_t(0);
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t off = t * M + base;
      if (t + 1 < a.T) {
        prefetch_run(a.x + off + M, n, false);
        prefetch_run(a.spk + off + M, n, true);
        prefetch_run(a.mem + off + M, n, true);
      }
      const scalar_t* x = a.x + off;
      scalar_t* spk_out = a.spk + off;
      scalar_t* mem_out = a.mem + off;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const scalar_t b = beta[PER_NEURON ? j : 0];
        const scalar_t th = thr[PER_NEURON ? j : 0];
        const scalar_t g = graded[PER_NEURON ? j : 0];
        const scalar_t m0 = m[j];
        const scalar_t r = heaviside(m0 - th);
        scalar_t u;
        if constexpr (RESET == kSubtract) u = b * m0 + x[j] - r * th;
        else if constexpr (RESET == kZero) u = b * ((scalar_t(1) - r) * m0) + x[j];
        else u = b * m0 + x[j];
        const scalar_t s = heaviside(u - th);
        scalar_t mn = u;
        if constexpr (!DELAY) {
          mn = immediate_reset<scalar_t, RESET>(u, r, s, th, g);
          a.u_saved[off + j] = u;
          a.r_saved[off + j] = static_cast<uint8_t>(r);
        }
        spk_out[j] = s * g;
        mem_out[j] = mn;
        m[j] = mn;
      }
    }
  }
}

template <typename scalar_t, int RESET, bool DELAY, bool PER_NEURON, int SG>
void lif_bwd_cpu(const LifArgs<scalar_t>& a) {
  const Items items(a.R, a.L);
  const int64_t M = a.R * a.L;
  const scalar_t p = a.sg_param;
#pragma omp parallel for schedule(dynamic) num_threads(team_size(a.num_threads, items.count, a.T * M))
  for (int64_t item = 0; item < items.count; ++item) {
    const int64_t row = item / items.per_row;
    const int64_t l0 = (item % items.per_row) * kChunk;
    const int64_t n = std::min(kChunk, a.L - l0);
    const int64_t base = row * a.L + l0;
    const scalar_t* beta = PER_NEURON ? a.beta + l0 : a.beta;
    const scalar_t* thr = PER_NEURON ? a.thr + l0 : a.thr;
    const scalar_t* graded = PER_NEURON ? a.graded + l0 : a.graded;
    scalar_t carry[kChunk], gb[kChunk], gth[kChunk], gg[kChunk], m_init[kChunk], m_prev[kChunk];
    for (int64_t j = 0; j < n; ++j) {
      carry[j] = gb[j] = gth[j] = gg[j] = scalar_t(0);
      m_init[j] = a.mem0 ? a.mem0[base + j] : scalar_t(0);
    }
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t off = t * M + base;
      const int64_t prev = off - M;
      if (t > 0) {
        prefetch_run(a.grad_spk + prev, n, false);
        prefetch_run(a.grad_mem + prev, n, false);
        prefetch_run(a.grad_x + prev, n, true);
        if (t > 1) prefetch_run((DELAY ? a.mem_saved : a.u_in) + prev - M, n, false);
      }
      // The membrane this step started from. Chosen outside the inner loop, so that loop has
      // no branches and vectorises.
      const scalar_t* m0_src = m_init;
      if (t > 0) {
        if constexpr (DELAY) {
          m0_src = a.mem_saved + prev;
        } else {  // rebuild the previous step's immediate reset, bit for bit as forward did
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const scalar_t th = thr[PER_NEURON ? j : 0];
            const scalar_t up = a.u_in[prev + j];
            const scalar_t sp = heaviside(up - th);
            m_prev[j] = immediate_reset<scalar_t, RESET>(up, scalar_t(a.r_in[prev + j]), sp, th,
                                                         graded[PER_NEURON ? j : 0]);
          }
          m0_src = m_prev;
        }
      }
      const scalar_t* u_src = (DELAY ? a.mem_saved : a.u_in) + off;
      const scalar_t* gmem_src = a.grad_mem + off;
      const scalar_t* gspk_src = a.grad_spk + off;
      scalar_t* gx_out = a.grad_x + off;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const scalar_t b = beta[PER_NEURON ? j : 0];
        const scalar_t th = thr[PER_NEURON ? j : 0];
        const scalar_t g = graded[PER_NEURON ? j : 0];
        const scalar_t m0 = m0_src[j];
        const scalar_t u = u_src[j];  // membrane before this step's immediate reset
        const scalar_t r = heaviside(m0 - th);
        const scalar_t z = u - th;
        const scalar_t s = heaviside(z);
        const scalar_t gm = gmem_src[j] + carry[j];
        const scalar_t gspk = gspk_src[j];
        scalar_t gs = gspk * g;  // gradient reaching the Heaviside output
        scalar_t gu = gm;        // gradient reaching the pre-reset membrane u
        if constexpr (!DELAY && RESET == kSubtract) {  // mem = u - (s - r) * thr
          gs -= gm * th;
          gth[j] -= gm * (s - r);
        } else if constexpr (!DELAY && RESET == kZero) {  // mem = u - (s - r) * u
          gs -= gm * u;
          gu = gm * (scalar_t(1) - (s - r));
        }
        const scalar_t gz = gs * surrogate_grad<scalar_t, SG>(z, p);
        gu += gz;
        gth[j] -= gz;
        if constexpr (RESET == kSubtract) gth[j] -= r * gu;
        gg[j] += gspk * s;
        gx_out[j] = gu;
        if constexpr (RESET == kZero) {
          carry[j] = gu * b * (scalar_t(1) - r);
          gb[j] += gu * ((scalar_t(1) - r) * m0);
        } else {
          carry[j] = gu * b;
          gb[j] += gu * m0;
        }
      }
    }
    if (a.grad_mem0)
      for (int64_t j = 0; j < n; ++j) a.grad_mem0[base + j] = carry[j];
    scalar_t* pb = a.partial_beta + item * kChunk;
    scalar_t* pt = a.partial_thr + item * kChunk;
    scalar_t* pg = a.partial_graded + item * kChunk;
    for (int64_t j = 0; j < kChunk; ++j) {
      pb[j] = j < n ? gb[j] : scalar_t(0);
      pt[j] = j < n ? gth[j] : scalar_t(0);
      pg[j] = j < n ? gg[j] : scalar_t(0);
    }
  }
}

// Sum the per-item partials into one gradient per position along L (per_neuron) or one value,
// in a fixed order (double accumulation), so the result does not depend on thread count.
template <typename scalar_t>
void reduce_partials(const scalar_t* partial, int64_t R, int64_t L, bool per_neuron, scalar_t* out) {
  const Items items(R, L);
  if (per_neuron) {
    for (int64_t l = 0; l < L; ++l) {
      double acc = 0;
      const int64_t c = l / kChunk, j = l % kChunk;
      for (int64_t row = 0; row < R; ++row) acc += partial[(row * items.per_row + c) * kChunk + j];
      out[l] = static_cast<scalar_t>(acc);
    }
  } else {
    double acc = 0;
    for (int64_t i = 0; i < items.count * kChunk; ++i) acc += partial[i];
    out[0] = static_cast<scalar_t>(acc);
  }
}

}  // namespace fastlif
