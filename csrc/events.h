// Event detection shared by the event-driven layers (spike_linear.cpp, spike_conv.cpp): where
// the non-zero entries of an input are, from one of two sources that visit them in the same
// order, so a dense input and its SpikeEvents give bitwise equal results:
//
//   DenseRows  a dense [M, K] input (bool: 0/1 spikes, or the compute dtype) scanned for its
//              non-zeros, 64 entries per mask;
//   CsrRows    the CSR of fastlif.events.SpikeEvents (int64 indptr, int32 strictly ascending
//              indices, values or none for binary spikes), checked by check_events first.
//
// A layer sees its input as M rows of K entries: SpikeLinear a row per input vector, SpikeConv2d
// a row per image (K = C * H * W, index c * H * W + y * W + x).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common.h"
#include "static_switch.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace fastlif {
namespace events {
// Bit j set: p[j] != 0 (NaN counts as non-zero, -0.0 as zero), for the n <= 64 entries at p.
// A full block is one to eight vector compares where the build has SSE2 or AVX-512.
template <typename in_t>
inline uint64_t nonzero_mask(const in_t* p, int64_t n) {
  static_assert(std::is_same_v<in_t, uint8_t> || std::is_same_v<in_t, float> || std::is_same_v<in_t, double>);
#if defined(__AVX512BW__)
  if (n == 64) {
    if constexpr (std::is_same_v<in_t, uint8_t>) {
      const __m512i v = _mm512_loadu_si512(p);
      return _mm512_test_epi8_mask(v, v);
    } else if constexpr (std::is_same_v<in_t, float>) {
      uint64_t m = 0;
      for (int q = 0; q < 4; ++q)
        m |= uint64_t(_mm512_cmp_ps_mask(_mm512_loadu_ps(p + 16 * q), _mm512_setzero_ps(), _CMP_NEQ_UQ)) << (16 * q);
      return m;
    } else {
      uint64_t m = 0;
      for (int q = 0; q < 8; ++q)
        m |= uint64_t(_mm512_cmp_pd_mask(_mm512_loadu_pd(p + 8 * q), _mm512_setzero_pd(), _CMP_NEQ_UQ)) << (8 * q);
      return m;
    }
  }
#elif defined(__SSE2__)
  if (n == 64) {
    uint64_t m = 0;
    if constexpr (std::is_same_v<in_t, uint8_t>) {
      for (int q = 0; q < 4; ++q) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * q));
        m |= uint64_t(~_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128())) & 0xffff) << (16 * q);
      }
    } else if constexpr (std::is_same_v<in_t, float>) {
      for (int q = 0; q < 16; ++q)
        m |= uint64_t(_mm_movemask_ps(_mm_cmpneq_ps(_mm_loadu_ps(p + 4 * q), _mm_setzero_ps()))) << (4 * q);
    } else {
      for (int q = 0; q < 32; ++q)
        m |= uint64_t(_mm_movemask_pd(_mm_cmpneq_pd(_mm_loadu_pd(p + 2 * q), _mm_setzero_pd()))) << (2 * q);
    }
    return m;
  }
#endif
  uint64_t m = 0;
  for (int64_t j = 0; j < n; ++j) m |= uint64_t(p[j] != in_t(0)) << j;
  return m;
}

// Calls f(k, x[k]) for each non-zero x[k], k ascending: a mask of 64 entries at a time, then
// its set bits, so a sparse row costs a few vector compares per 64 entries and a few
// instructions per non-zero.
template <typename in_t, typename F>
inline void for_each_nonzero(const in_t* x, int64_t K, F&& f) {
  for (int64_t k0 = 0; k0 < K; k0 += 64) {
    for (uint64_t m = nonzero_mask(x + k0, std::min<int64_t>(64, K - k0)); m; m &= m - 1) {
      const int64_t k = k0 + __builtin_ctzll(m);
      f(k, x[k]);
    }
  }
}

// A dense [M, K] input; bool (uint8) input is binary: every non-zero is a 1.
template <typename scalar_t, typename in_t>
struct DenseRows {
  static constexpr bool kBinary = std::is_same_v<in_t, uint8_t>;
  static constexpr bool kDense = true;
  const in_t* x;
  int64_t K;
  template <typename F>
  void row(int64_t r, F&& f) const {
    for_each_nonzero(x + r * K, K, [&](int64_t k, in_t v) { f(k, static_cast<scalar_t>(v)); });
  }
  // The events of row r with lo <= k < hi, in the same order as row() visits them.
  template <typename F>
  void range(int64_t r, int64_t lo, int64_t hi, F&& f) const {
    for_each_nonzero(x + r * K + lo, hi - lo, [&](int64_t k, in_t v) { f(lo + k, static_cast<scalar_t>(v)); });
  }
};

// CSR events; BINARY: no values, every event is a 1.
template <typename scalar_t, bool BINARY>
struct CsrRows {
  static constexpr bool kBinary = BINARY;
  static constexpr bool kDense = false;
  const int64_t* indptr;
  const int32_t* indices;
  const scalar_t* values;
  template <typename F>
  void row(int64_t r, F&& f) const {
    for (int64_t e = indptr[r]; e < indptr[r + 1]; ++e)
      f(static_cast<int64_t>(indices[e]), BINARY ? scalar_t(1) : values[e]);
  }
  template <typename F>
  void range(int64_t r, int64_t lo, int64_t hi, F&& f) const {
    const int32_t* first = std::lower_bound(indices + indptr[r], indices + indptr[r + 1], lo);
    for (int64_t e = first - indices; e < indptr[r + 1] && indices[e] < hi; ++e)
      f(static_cast<int64_t>(indices[e]), BINARY ? scalar_t(1) : values[e]);
  }
};

// acc[0:n] += v * src[0:n] (just src for binary events: v is 1, and 1 * s == s exactly).
template <bool BINARY, typename scalar_t>
inline void add_scaled(scalar_t* __restrict acc, const scalar_t* __restrict src, scalar_t v, int64_t n) {
  if constexpr (BINARY) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) acc[j] += src[j];
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) acc[j] += v * src[j];
  }
}

struct Events {  // what Python hands over: a dense [M, K] input, or CSR events (indptr != 0)
  int64_t M, K;
  std::uintptr_t x;
  bool x_bool;
  std::uintptr_t indptr, indices, values;
  int64_t nnz;
};

// family: the op that checks (its name starts the messages about shapes).
inline void check_events(const Events& in, const char* family, int threads) {
  if (in.M < 0 || in.K < 1 || in.M > std::numeric_limits<int32_t>::max() ||
      in.K > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument(std::string(family) + ": bad shape M=" + std::to_string(in.M) + " K=" + std::to_string(in.K));
  if (!in.indptr) {
    if (!in.x && in.M > 0) throw std::invalid_argument(std::string(family) + ": neither a dense input nor events");
    return;
  }
  const auto* indptr = as_ptr<const int64_t>(in.indptr);
  const auto* indices = as_ptr<const int32_t>(in.indices);
  if (indptr[0] != 0 || indptr[in.M] != in.nnz)
    throw std::invalid_argument("SpikeEvents: indptr must start at 0 and end at nnz = " + std::to_string(in.nnz) +
                                " (the number of indices); got " + std::to_string(indptr[0]) + " ... " +
                                std::to_string(indptr[in.M]));
  int64_t bad = in.M;  // the first row whose events are not in order and in range
  // reads indptr and indices once: a team sized by those bytes, like every other region's
#pragma omp parallel for reduction(min : bad) schedule(static) \
    num_threads(team_size(threads > 0 ? threads : 1, in.M, in.M * int64_t(sizeof(int64_t)) + in.nnz * int64_t(sizeof(int32_t))))
  for (int64_t r = 0; r < in.M; ++r) {
    const int64_t e0 = indptr[r], e1 = indptr[r + 1];
    bool ok = 0 <= e0 && e0 <= e1 && e1 <= in.nnz;
    for (int64_t e = e0; ok && e < e1; ++e)
      ok = indices[e] >= 0 && indices[e] < in.K && (e == e0 || indices[e] > indices[e - 1]);
    if (!ok) bad = std::min(bad, r);
  }
  if (bad < in.M)
    throw std::invalid_argument("SpikeEvents: row " + std::to_string(bad) + " has indptr " +
                                std::to_string(indptr[bad]) + ".." + std::to_string(indptr[bad + 1]) +
                                " out of order, or column indices outside [0, " + std::to_string(in.K) +
                                ") or not strictly ascending");
}

// Calls f(source) with the row source the arguments describe.
template <typename scalar_t, typename F>
inline void with_source(const Events& in, F&& f) {
  if (!in.indptr) {
    if (in.x_bool) f(DenseRows<scalar_t, uint8_t>{as_ptr<const uint8_t>(in.x), in.K});
    else f(DenseRows<scalar_t, scalar_t>{as_ptr<const scalar_t>(in.x), in.K});
    return;
  }
  bool_switch(in.values == 0, [&](auto BINARY) {
    f(CsrRows<scalar_t, BINARY()>{as_ptr<const int64_t>(in.indptr), as_ptr<const int32_t>(in.indices),
                                  as_ptr<const scalar_t>(in.values)});
  });
}

template <typename F>
inline void dtype_switch(int dtype, F&& f) {
  int_switch<kFloat32, kFloat64>(dtype, "dtype", [&](auto DT) {
    f(std::conditional_t<DT() == kFloat64, double, float>(0));
  });
}

}  // namespace events
}  // namespace fastlif
