// The SpikeLinear family (fastlif.SpikeLinear, fastlif/ops/spike_linear.py) on the CPU: a linear
// layer y = x W^T + b that visits only the non-zero entries of x, then its bindings.
//
//   forward   y[r, :]  = sum over the events (k, v) of row r, k ascending, of  v * Wt[k, :]  (+ b)
//   backward  gW[:, k] = sum over the events (r, v) of column k, r ascending, of v * g[r, :]
//             gb       = sum over r, ascending, of g[r, :]            (double accumulation)
//
// Wt is W transposed, [K, N] contiguous, so that an event adds one contiguous row. The grad
// of the input (g @ W, dense) is torch's GEMM (Python side), as is the whole dense path.
//
// Events come from a row source (events.h, shared with SpikeConv2d): a dense [M, K] input scanned for its non-zeros (bool, 0/1
// spikes, or the compute dtype), or the CSR of fastlif.events.SpikeEvents (int64 indptr,
// int32 ascending indices, values or none for binary spikes). Both sources visit a row's
// events in the same order, so a dense input and its events give bitwise equal results.
//
// Threading and determinism: forward items are tiles of rows, each row written by one thread.
// Backward items are blocks of 64 input columns (and, when the upstream gradient is larger
// than the cache, a slice of outputs): one thread owns the whole of each column of gW (a row
// of gW^T) and sums its events in ascending row order. The column events come from the CSR
// transposed (a counting sort, whose result does not depend on how rows were split), or, for
// a dense input, from scanning the block's 64 columns row by row, which visits them in the same
// order. No atomics, no reduction across threads: every output element has one fixed
// operation order whatever the thread count, and a dense input gives what its events give.
#include <pybind11/pybind11.h>

#include <cstring>
#include <limits>
#include <vector>
#include <type_traits>

#include "common.h"
#include "module.h"
#include "static_switch.h"
#include "events.h"

namespace fastlif {
namespace {

constexpr int64_t kRowTile = 16;  // rows per forward item

using namespace events;

// --- the sums both directions make ---------------------------------------------------------
// A layer's sums add whole rows (forward: rows of Wt, one per event of an input row; backward:
// rows of g, one per event of an input column). They run a block of outputs at a time in
// registers (four 64-byte vectors: 64 fp32 or 32 fp64 outputs): adding each row into the sum
// in memory instead made every term wait for the store of the one before (at the tutorial's
// fc1, 63 % of the forward's samples sat on that store). Each output element still sums 0,
// then the terms in order, then the bias: the same operations in the same order as before
// (-ffp-contract=off: never fused), so the same bits.

template <typename scalar_t>
struct Vec64;  // a 64-byte vector of the GCC/Clang vector extensions (split where narrower)
template <>
struct Vec64<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct Vec64<double> {
  typedef double type __attribute__((vector_size(64)));
};
constexpr int kBlockVecs = 4;

// out[0, n) = 0 + term(0) + ... + term(count - 1) (+ bias[0, n)), term(e) = row(e)[0, n), times
// vals[e] unless BINARY.
template <bool BINARY, typename scalar_t, typename Row>
inline void sum_rows(scalar_t* out, int64_t n, int64_t count, Row&& row, const scalar_t* vals,
                     const scalar_t* bias) {
  using V = typename Vec64<scalar_t>::type;
  constexpr int kLanes = int(sizeof(V) / sizeof(scalar_t));
  constexpr int64_t kBlock = kBlockVecs * kLanes;
  int64_t n0 = 0;
  for (; n0 + kBlock <= n; n0 += kBlock) {
    V acc[kBlockVecs] = {};
    for (int64_t e = 0; e < count; ++e) {
      const scalar_t* w = row(e) + n0;
      for (int q = 0; q < kBlockVecs; ++q) {
        V wv;
        std::memcpy(&wv, w + q * kLanes, sizeof wv);
        if constexpr (BINARY) acc[q] += wv;
        else acc[q] += vals[e] * wv;
      }
    }
    for (int q = 0; q < kBlockVecs && bias; ++q) {
      V bv;
      std::memcpy(&bv, bias + n0 + q * kLanes, sizeof bv);
      acc[q] += bv;
    }
    std::memcpy(out + n0, acc, sizeof acc);
  }
  if (n0 < n) {  // the last, partial block in memory, in the same order
    std::fill(out + n0, out + n, scalar_t(0));
    for (int64_t e = 0; e < count; ++e)
      add_scaled<BINARY>(out + n0, row(e) + n0, BINARY ? scalar_t(1) : vals[e], n - n0);
    if (bias) add_scaled<true>(out + n0, bias + n0, scalar_t(1), n - n0);
  }
}

// --- forward ---------------------------------------------------------------------------------

template <typename scalar_t, typename Source>
void linear_forward(const Source& src, int64_t M, int64_t N, const scalar_t* wt, const scalar_t* bias,
                    scalar_t* out, int threads, int64_t work) {
  const int64_t tiles = (M + kRowTile - 1) / kRowTile;
  Team team(threads, tiles, work);
#pragma omp parallel num_threads(team.n)
  {
    std::vector<int64_t> ks;  // a row's events: columns, and values unless binary
    std::vector<scalar_t> vs;
#pragma omp for schedule(dynamic)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const Team::Item mark(team);
      const int64_t r1 = std::min(M, (tile + 1) * kRowTile);
      for (int64_t r = tile * kRowTile; r < r1; ++r) {
        ks.clear();
        vs.clear();
        src.row(r, [&](int64_t k, scalar_t v) {
          ks.push_back(k);
          if constexpr (!Source::kBinary) vs.push_back(v);
        });
        sum_rows<Source::kBinary>(out + r * N, N, static_cast<int64_t>(ks.size()),
                                  [&](int64_t e) { return wt + ks[e] * N; }, vs.data(), bias);
      }
    }
  }
}

// --- backward: the events by column, then the gradients --------------------------------------

template <typename scalar_t>
struct ColumnEvents {  // CSC: the events of column k are [colptr[k], colptr[k + 1])
  std::vector<int64_t> colptr;
  std::vector<int32_t> rows;
  std::vector<scalar_t> values;  // empty for binary events
};

// A counting sort of CSR events by column, rows ascending within each column. The rows are
// split into P contiguous ranges, counted, then placed, in parallel; the sorted list is the
// same for every P.
template <typename scalar_t, bool BINARY>
ColumnEvents<scalar_t> transpose_events(const CsrRows<scalar_t, BINARY>& src, int64_t M, int64_t K, int threads,
                                        int64_t work) {
  Team team(threads, M, work);
  const int P = team.n;
  const int64_t per = (M + P - 1) / P;
  std::vector<int64_t> slot(static_cast<size_t>(P) * K, 0);  // counts, then the next free place
#pragma omp parallel for schedule(static, 1) num_threads(P)
  for (int p = 0; p < P; ++p) {
    const Team::Item mark(team);
    int64_t* count = slot.data() + p * K;
    for (int64_t r = p * per; r < std::min(M, (p + 1) * per); ++r)
      src.row(r, [&](int64_t k, scalar_t) { ++count[k]; });
  }
  ColumnEvents<scalar_t> ev;
  ev.colptr.resize(static_cast<size_t>(K) + 1);
  int64_t total = 0;
  for (int64_t k = 0; k < K; ++k) {
    ev.colptr[k] = total;
    for (int p = 0; p < P; ++p) {
      const int64_t c = slot[p * K + k];
      slot[p * K + k] = total;
      total += c;
    }
  }
  ev.colptr[K] = total;
  ev.rows.resize(static_cast<size_t>(total));
  if (!BINARY) ev.values.resize(static_cast<size_t>(total));
#pragma omp parallel for schedule(static, 1) num_threads(P)
  for (int p = 0; p < P; ++p) {
    const Team::Item mark(team);
    int64_t* next = slot.data() + p * K;
    for (int64_t r = p * per; r < std::min(M, (p + 1) * per); ++r)
      src.row(r, [&](int64_t k, scalar_t v) {
        const int64_t e = next[k]++;
        ev.rows[e] = static_cast<int32_t>(r);
        if constexpr (!BINARY) ev.values[e] = v;
      });
  }
  return ev;
}

// How many columns of g [M, N] one weight-gradient item reads: all N while g fits in kGradCache
// bytes, else a slice (a multiple of 64 columns) that does, so that the threads, all working on
// one slice at a time, find it in cache.
constexpr int64_t kGradCache = int64_t(4) << 20;
inline int64_t slice_width(int64_t M, int64_t N, int64_t elem) {
  if (M * N * elem <= kGradCache) return N;
  return std::min(N, std::max<int64_t>(64, kGradCache / (M * elem) / 64 * 64));
}

// gW [N, K], an item at a time: a block of 64 input columns and a slice of outputs. One thread
// sums the block's columns (fill(k0, nk, n0, nw, acc, width): column c of the block into
// acc[c * width, + nw), rows ascending) and writes the slice's short rows of gW.
constexpr int64_t kGradCols = 64;
template <typename scalar_t, typename Fill>
void weight_grad(int64_t M, int64_t K, int64_t N, scalar_t* gw, int threads, int64_t work, Fill&& fill) {
  const int64_t blocks = (K + kGradCols - 1) / kGradCols;
  const int64_t width = slice_width(M, N, sizeof(scalar_t)), slices = (N + width - 1) / width;
  Team team(threads, blocks * slices, work);
#pragma omp parallel num_threads(team.n)
  {
    std::vector<scalar_t> acc(static_cast<size_t>(kGradCols * width));
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < blocks * slices; ++item) {  // slice-major
      const Team::Item mark(team);
      const int64_t n0 = (item / blocks) * width, nw = std::min(width, N - n0);
      const int64_t k0 = (item % blocks) * kGradCols, nk = std::min(kGradCols, K - k0);
      std::fill(acc.begin(), acc.end(), scalar_t(0));
      fill(k0, nk, n0, nw, acc.data(), width);
      for (int64_t n = 0; n < nw; ++n)
        for (int64_t c = 0; c < nk; ++c) gw[(n0 + n) * K + k0 + c] = acc[c * width + n];
    }
  }
}

// From the column events: column by column.
template <typename scalar_t, bool BINARY>
void weight_grad_events(const CsrRows<scalar_t, BINARY>& src, int64_t M, int64_t K, int64_t N, const scalar_t* g,
                        scalar_t* gw, int threads, int64_t work) {
  const ColumnEvents<scalar_t> ev = transpose_events(src, M, K, threads, work);
  weight_grad(M, K, N, gw, threads, work, [&](int64_t k0, int64_t nk, int64_t n0, int64_t nw, scalar_t* acc,
                                               int64_t width) {
    for (int64_t c = 0; c < nk; ++c) {
      const int64_t e0 = ev.colptr[k0 + c];
      const int32_t* rows = ev.rows.data() + e0;
      sum_rows<BINARY>(acc + c * width, nw, ev.colptr[k0 + c + 1] - e0,
                       [&](int64_t e) { return g + static_cast<int64_t>(rows[e]) * N + n0; },
                       BINARY ? nullptr : ev.values.data() + e0, static_cast<const scalar_t*>(nullptr));
    }
  });
}

// From a dense input: no transposition, each item scans its 64 columns of x row by row (a
// mask per row), which visits every column's events in ascending rows, as the column events do.
template <typename scalar_t, typename in_t>
void weight_grad_dense(const DenseRows<scalar_t, in_t>& src, int64_t M, int64_t K, int64_t N, const scalar_t* g,
                       scalar_t* gw, int threads, int64_t work) {
  constexpr bool kBinary = DenseRows<scalar_t, in_t>::kBinary;
  weight_grad(M, K, N, gw, threads, work, [&](int64_t k0, int64_t nk, int64_t n0, int64_t nw, scalar_t* acc,
                                               int64_t width) {
    for (int64_t r = 0; r < M; ++r) {
      const in_t* x = src.x + r * K + k0;
      for (uint64_t m = nonzero_mask(x, nk); m; m &= m - 1) {
        const int64_t c = __builtin_ctzll(m);
        add_scaled<kBinary>(acc + c * width, g + r * N + n0, static_cast<scalar_t>(x[c]), nw);
      }
    }
  });
}

// gb [N]: column sums of g [M, N], rows in order, in double; an item is a block of outputs.
template <typename scalar_t>
void bias_grad(int64_t M, int64_t N, const scalar_t* g, scalar_t* gb, int threads) {
  constexpr int64_t kOut = 64;
  const int64_t blocks = (N + kOut - 1) / kOut;
  Team team(threads, blocks, M * N * int64_t(sizeof(scalar_t)));
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t b = 0; b < blocks; ++b) {
    const Team::Item mark(team);
    const int64_t o0 = b * kOut, n = std::min(kOut, N - o0);
    double acc[kOut] = {};
    for (int64_t r = 0; r < M; ++r) {
      const scalar_t* row = g + r * N + o0;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) acc[j] += static_cast<double>(row[j]);
    }
    for (int64_t j = 0; j < n; ++j) gb[o0 + j] = static_cast<scalar_t>(acc[j]);
  }
}

// --- bindings ------------------------------------------------------------------------------
// Python (fastlif/ops/spike_linear.py) checks dtypes, shapes and contiguity and allocates the
// outputs; what only this side can cheaply see, the CSR's contents, is checked here before any
// kernel reads it.

// Work estimates for team_size: the scan of a dense input (a cache line at a time), and an
// output row's worth of arithmetic per event (nnz unknown before a scan: half the entries).
int64_t work_of(const Events& in, int64_t N) {
  const int64_t nnz = in.indptr ? in.nnz : in.M * in.K / 2;
  return (in.indptr ? in.M : in.M * in.K / 16) + nnz * N;  // times the value size: bytes (callers)
}

void spike_linear_fwd(int dtype, int64_t M, int64_t K, int64_t N, std::uintptr_t x, bool x_bool,
                      std::uintptr_t indptr, std::uintptr_t indices, std::uintptr_t values, int64_t nnz,
                      std::uintptr_t wt, std::uintptr_t bias, std::uintptr_t out, int threads) {
  const Events in{M, K, x, x_bool, indptr, indices, values, nnz};
  check_events(in, "spike_linear", threads);
  if (N < 1 || !wt || (!out && M > 0)) throw std::invalid_argument("spike_linear_fwd: bad weight or output");
  pybind11::gil_scoped_release release;
  dtype_switch(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    with_source<scalar_t>(in, [&](const auto& src) {
      linear_forward(src, M, N, as_ptr<const scalar_t>(wt), as_ptr<const scalar_t>(bias), as_ptr<scalar_t>(out),
                     threads > 0 ? threads : 1, work_of(in, N) * int64_t(sizeof(scalar_t)));
    });
  });
}

void spike_linear_bwd(int dtype, int64_t M, int64_t K, int64_t N, std::uintptr_t x, bool x_bool,
                      std::uintptr_t indptr, std::uintptr_t indices, std::uintptr_t values, int64_t nnz,
                      std::uintptr_t grad, std::uintptr_t grad_weight, std::uintptr_t grad_bias, int threads) {
  const Events in{M, K, x, x_bool, indptr, indices, values, nnz};
  check_events(in, "spike_linear", threads);
  if (N < 1 || (!grad && M > 0)) throw std::invalid_argument("spike_linear_bwd: bad upstream gradient");
  threads = threads > 0 ? threads : 1;
  pybind11::gil_scoped_release release;
  dtype_switch(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    const auto* g = as_ptr<const scalar_t>(grad);
    if (grad_bias) bias_grad(M, N, g, as_ptr<scalar_t>(grad_bias), threads);
    if (!grad_weight) return;
    with_source<scalar_t>(in, [&](const auto& src) {
      using Source = std::decay_t<decltype(src)>;
      scalar_t* gw = as_ptr<scalar_t>(grad_weight);
      if constexpr (Source::kDense) weight_grad_dense(src, M, K, N, g, gw, threads, work_of(in, N) * int64_t(sizeof(scalar_t)));
      else weight_grad_events(src, M, K, N, g, gw, threads, work_of(in, N) * int64_t(sizeof(scalar_t)));
    });
  });
}

void register_spike_linear(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("spike_linear_fwd", &spike_linear_fwd,
        "Event-driven linear forward (pointers; see fastlif/ops/spike_linear.py)", py::arg("dtype"), py::arg("M"),
        py::arg("K"), py::arg("N"), py::arg("x"), py::arg("x_bool"), py::arg("indptr"), py::arg("indices"),
        py::arg("values"), py::arg("nnz"), py::arg("wt"), py::arg("bias"), py::arg("out"), py::arg("threads"));
  m.def("spike_linear_bwd", &spike_linear_bwd,
        "Event-driven linear backward: weight and bias gradients (pointers; see fastlif/ops/spike_linear.py)",
        py::arg("dtype"), py::arg("M"), py::arg("K"), py::arg("N"), py::arg("x"), py::arg("x_bool"),
        py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("nnz"), py::arg("grad"),
        py::arg("grad_weight"), py::arg("grad_bias"), py::arg("threads"));
}

}  // namespace

FASTLIF_REGISTER(register_spike_linear);

}  // namespace fastlif
