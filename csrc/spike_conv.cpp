// The SpikeConv2d family (fastlif.SpikeConv2d, fastlif/ops/spike_conv.py) on the CPU: a 2-D
// convolution that visits only the non-zero inputs, then its bindings.
//
//   forward   every event (b, c, y, x, v) scatters v * W[:, c, ky, kx] into each output pixel
//             (oy, ox) it reaches: oy * sh - ph + ky * dh == y, the same along x
//   backward  gW[o, c, ky, kx] = sum over chunks of images (in order, double) of the sum over
//             the chunk's images and their events (in order) of v * g[b, o, oy, ox]
//             gb[o] = sum over chunks (double) of the sum over images and pixels of g[b, o, :, :]
//
// The input gradient (a dense transposed convolution) and the whole dense path are torch's
// (Python side). Events come from events.h, shared with SpikeLinear: a dense input scanned for
// its non-zeros, or the CSR of fastlif.events.SpikeEvents, one row per image (K = C * H * W,
// index c * H * W + y * W + x); both visit them in the same order, so they give the same bits.
//
// Layouts: the weight arrives as Wt [C, KH, KW, O/groups] (Python transposes it once per call),
// so an event's tap adds one contiguous run of output channels; a thread accumulates an image's
// output channels-last in a scratch that fits in L2, then writes it out NCHW. Backward
// transposes each image's upstream gradient to channels-last in the same way.
//
// Threading and determinism: forward items are images, each written by one thread. Backward
// items are chunks of images of a size set by N alone, each with its own partial gW and gb,
// reduced in chunk order (conv_backward): the result does not depend on the thread count. No
// atomics.
#include <pybind11/pybind11.h>

#include <limits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common.h"
#include "events.h"
#include "module.h"

namespace fastlif {
namespace {

using namespace events;

struct Geom {
  int64_t N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups;
  int64_t Cg() const { return C / groups; }
  int64_t Og() const { return O / groups; }
  int64_t HW() const { return H * W; }
  int64_t OHW() const { return OH * OW; }
};

// Along one axis: for each input position y, the (kernel tap, output position) pairs it reaches,
// taps ascending, so the inner loops do no division or bounds test per tap.
struct Taps {
  std::vector<int32_t> ptr, k, o;  // the pairs of y are [ptr[y], ptr[y + 1])
  Taps(int64_t n, int64_t K, int64_t On, int64_t stride, int64_t pad, int64_t dil) : ptr(static_cast<size_t>(n) + 1) {
    for (int64_t y = 0; y < n; ++y) {
      ptr[y] = static_cast<int32_t>(k.size());
      for (int64_t t = 0; t < K; ++t) {
        const int64_t num = y + pad - t * dil;  // = o * stride
        if (num < 0 || num % stride) continue;
        const int64_t out = num / stride;
        if (out >= On) continue;
        k.push_back(static_cast<int32_t>(t));
        o.push_back(static_cast<int32_t>(out));
      }
    }
    ptr[n] = static_cast<int32_t>(k.size());
  }
  int64_t count() const { return static_cast<int64_t>(k.size()); }
};

// --- forward -------------------------------------------------------------------------------

// Calls f(std::integral_constant<int64_t, OG>) with OG = Og for the common group widths (the
// taps' loops then have a constant length, unrolled into whole vectors) and 0 for the others.
template <typename F>
void og_switch(int64_t Og, F&& f) {
  switch (Og) {
    case 8: return f(std::integral_constant<int64_t, 8>{});
    case 12: return f(std::integral_constant<int64_t, 12>{});
    case 16: return f(std::integral_constant<int64_t, 16>{});
    case 32: return f(std::integral_constant<int64_t, 32>{});
    case 64: return f(std::integral_constant<int64_t, 64>{});
    case 128: return f(std::integral_constant<int64_t, 128>{});
    default: return f(std::integral_constant<int64_t, 0>{});
  }
}

template <int64_t OG, typename scalar_t, typename Source>
void conv_forward(const Source& src, const Geom& G, const scalar_t* wt, const scalar_t* bias, scalar_t* out,
                  int threads, int64_t work) {
  const Taps ty(G.H, G.KH, G.OH, G.sh, G.ph, G.dh), tx(G.W, G.KW, G.OW, G.sw, G.pw, G.dw);
  const int64_t HW = G.HW(), OHW = G.OHW(), O = G.O, Og = G.Og(), Cg = G.Cg(), KK = G.KH * G.KW;
#pragma omp parallel num_threads(team_size(threads, G.N, work))
  {
    std::vector<scalar_t> scratch(static_cast<size_t>(OHW * O));
    scalar_t* acc = scratch.data();
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < G.N; ++b) {
      std::fill(scratch.begin(), scratch.end(), scalar_t(0));
      src.row(b, [&](int64_t k, scalar_t v) {
        const int64_t c = k / HW, r = k - c * HW, y = r / G.W, x = r - y * G.W;
        const scalar_t* wc = wt + c * KK * Og;
        scalar_t* ag = acc + (c / Cg) * Og;
        for (int32_t i = ty.ptr[y]; i < ty.ptr[y + 1]; ++i) {
          const int64_t row = ty.o[i] * G.OW, wrow = ty.k[i] * G.KW;
          for (int32_t j = tx.ptr[x]; j < tx.ptr[x + 1]; ++j)
            add_scaled<Source::kBinary>(ag + (row + tx.o[j]) * O, wc + (wrow + tx.k[j]) * Og, v, OG ? OG : Og);
        }
      });
      scalar_t* y = out + b * O * OHW;
      for (int64_t o = 0; o < O; ++o) {
        scalar_t* yo = y + o * OHW;
        if (bias) {
          const scalar_t bo = bias[o];
          for (int64_t p = 0; p < OHW; ++p) yo[p] = acc[p * O + o] + bo;
        } else {
          for (int64_t p = 0; p < OHW; ++p) yo[p] = acc[p * O + o];
        }
      }
    }
  }
}

// --- backward --------------------------------------------------------------------------------

// Images are taken in chunks of a fixed size that depends only on N (never on the thread
// count); a chunk's thread reads each image's upstream gradient g[b] [O, OH, OW] once: it
// transposes it to channels-last (so an event's tap adds one contiguous run of output
// channels) and sums it for the bias in the same pass, then adds the image's events. Each chunk
// keeps its own partial gW and gb; the partials are reduced afterwards in chunk order, in
// double. So every element has one fixed operation order whatever the thread count, and the
// upstream gradient, the largest tensor here, is read from memory once.
// sum of p[0:n] in double, in 8 interleaved lanes combined in a fixed order: vectorises where
// one running sum would wait on each add's latency.
template <typename scalar_t>
inline double lane_sum(const scalar_t* p, int64_t n) {
  double lane[8] = {};
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
#pragma omp simd
    for (int l = 0; l < 8; ++l) lane[l] += static_cast<double>(p[q + l]);
  for (int l = 0; q < n; ++q, ++l) lane[l] += static_cast<double>(p[q]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

inline int64_t images_per_chunk(int64_t N) {
  constexpr int64_t kMaxChunks = 64, kMinImages = 8;
  return std::max(kMinImages, (N + kMaxChunks - 1) / kMaxChunks);
}

template <int64_t OG, typename scalar_t, typename Source>
void conv_backward(const Source* src, const Geom& G, const scalar_t* g, scalar_t* gw, scalar_t* gb, int threads,
                   int64_t work) {
  const Taps ty(G.H, G.KH, G.OH, G.sh, G.ph, G.dh), tx(G.W, G.KW, G.OW, G.sw, G.pw, G.dw);
  const int64_t HW = G.HW(), OHW = G.OHW(), O = G.O, Og = G.Og(), Cg = G.Cg(), KK = G.KH * G.KW;
  const int64_t per = images_per_chunk(G.N), chunks = (G.N + per - 1) / per;
  const int64_t wsize = src ? G.C * KK * Og : 0;  // a chunk's partial gW, laid out [C, KH, KW, Og]
  std::vector<scalar_t> pw(static_cast<size_t>(chunks * wsize), scalar_t(0));
  std::vector<double> pb(static_cast<size_t>(gb ? chunks * O : 0), 0.0);
#pragma omp parallel num_threads(team_size(threads, chunks, work))
  {
    std::vector<scalar_t> gt(static_cast<size_t>(src ? OHW * O : 0));
#pragma omp for schedule(dynamic)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      scalar_t* acc = pw.data() + ch * wsize;
      for (int64_t b = ch * per; b < std::min(G.N, (ch + 1) * per); ++b) {
        const scalar_t* gimg = g + b * O * OHW;
        for (int64_t o = 0; o < O; ++o) {
          const scalar_t* go = gimg + o * OHW;
          if (gb) pb[ch * O + o] += lane_sum(go, OHW);
          if (src)
            for (int64_t q = 0; q < OHW; ++q) gt[q * O + o] = go[q];
        }
        if (!src) continue;
        src->row(b, [&](int64_t k, scalar_t v) {
          const int64_t c = k / HW, r = k - c * HW, y = r / G.W, x = r - y * G.W;
          scalar_t* ac = acc + c * KK * Og;
          const scalar_t* gg = gt.data() + (c / Cg) * Og;
          for (int32_t i = ty.ptr[y]; i < ty.ptr[y + 1]; ++i) {
            const int64_t row = ty.o[i] * G.OW, wrow = ty.k[i] * G.KW;
            for (int32_t j = tx.ptr[x]; j < tx.ptr[x + 1]; ++j)
              add_scaled<Source::kBinary>(ac + (wrow + tx.k[j]) * Og, gg + (row + tx.o[j]) * O, v, OG ? OG : Og);
          }
        });
      }
    }
  }
  // the reductions, in chunk order
  if (gb)
    for (int64_t o = 0; o < O; ++o) {
      double sum = 0;
      for (int64_t ch = 0; ch < chunks; ++ch) sum += pb[ch * O + o];
      gb[o] = static_cast<scalar_t>(sum);
    }
  if (!src) return;
#pragma omp parallel for schedule(static) num_threads(team_size(threads, G.C, chunks * wsize))
  for (int64_t c = 0; c < G.C; ++c) {
    const int64_t grp = c / Cg, cl = c - grp * Cg;
    std::vector<double> sum(static_cast<size_t>(KK * Og), 0.0);
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const scalar_t* part = pw.data() + ch * wsize + c * KK * Og;
      for (int64_t i = 0; i < KK * Og; ++i) sum[i] += static_cast<double>(part[i]);
    }
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t t = 0; t < KK; ++t) gw[((grp * Og + o) * Cg + cl) * KK + t] = static_cast<scalar_t>(sum[t * Og + o]);
  }
}


// --- bindings --------------------------------------------------------------------------------
// Python (fastlif/ops/spike_conv.py) checks dtypes, shapes and contiguity, works out the
// geometry and allocates the outputs; this side checks the geometry's consistency and the CSR's
// contents before any kernel reads them.

Geom geom_of(const pybind11::tuple& t) {
  if (t.size() != 16) throw std::invalid_argument("spike_conv2d: geometry must have 16 entries");
  int64_t v[16];
  for (int i = 0; i < 16; ++i) v[i] = t[i].cast<int64_t>();
  const Geom G{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
  const bool ok = G.N >= 0 && G.C > 0 && G.H > 0 && G.W > 0 && G.O > 0 && G.KH > 0 && G.KW > 0 && G.OH > 0 &&
                  G.OW > 0 && G.sh > 0 && G.sw > 0 && G.ph >= 0 && G.pw >= 0 && G.dh > 0 && G.dw > 0 &&
                  G.groups > 0 && G.C % G.groups == 0 && G.O % G.groups == 0 &&
                  G.C * G.H * G.W <= std::numeric_limits<int32_t>::max() &&
                  G.O * G.OH * G.OW <= std::numeric_limits<int32_t>::max();
  if (!ok) throw std::invalid_argument("spike_conv2d: inconsistent geometry");
  return G;
}

// Work estimates for team_size: the scan of a dense input, the output's writes, and a tap's
// worth of output channels per event and tap. A dense input's nnz is Python's estimate from a
// sample of images (nnz_hint; -1: unknown, then half the entries): with half, a call of a few
// images at 2 % took two threads and, on a busy machine, a scheduler tick (10+ ms for 0.1 ms).
int64_t work_of(const Events& in, const Geom& G, int64_t nnz_hint) {
  const int64_t nnz = in.indptr ? in.nnz : nnz_hint >= 0 ? nnz_hint : in.M * in.K / 2;
  const int64_t taps = std::max<int64_t>(1, (G.KH * G.KW * G.OH * G.OW) / std::max<int64_t>(1, G.H * G.W));
  return (in.indptr ? in.M : in.M * in.K / 16) + G.N * G.O * G.OHW() / 16 + nnz * taps * G.Og();
}

void spike_conv2d_fwd(int dtype, const pybind11::tuple& geom, std::uintptr_t x, bool x_bool, std::uintptr_t indptr,
                      std::uintptr_t indices, std::uintptr_t values, int64_t nnz, int64_t nnz_hint,
                      std::uintptr_t wt, std::uintptr_t bias, std::uintptr_t out, int threads) {
  const Geom G = geom_of(geom);
  const Events in{G.N, G.C * G.HW(), x, x_bool, indptr, indices, values, nnz};
  check_events(in, "spike_conv2d", threads);
  if (!wt || (!out && G.N > 0)) throw std::invalid_argument("spike_conv2d_fwd: bad weight or output");
  pybind11::gil_scoped_release release;
  advise_huge(as_ptr<const void>(out), G.N * G.O * G.OHW() * (dtype == kFloat64 ? 8 : 4));  // common.h
  dtype_switch(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    with_source<scalar_t>(in, [&](const auto& src) {
      og_switch(G.Og(), [&](auto OG) {
        conv_forward<OG()>(src, G, as_ptr<const scalar_t>(wt), as_ptr<const scalar_t>(bias), as_ptr<scalar_t>(out),
                           threads > 0 ? threads : 1, work_of(in, G, nnz_hint) * int64_t(sizeof(scalar_t)));
      });
    });
  });
}

void spike_conv2d_bwd(int dtype, const pybind11::tuple& geom, std::uintptr_t x, bool x_bool, std::uintptr_t indptr,
                      std::uintptr_t indices, std::uintptr_t values, int64_t nnz, int64_t nnz_hint,
                      std::uintptr_t grad, std::uintptr_t grad_weight, std::uintptr_t grad_bias, int threads) {
  const Geom G = geom_of(geom);
  const Events in{G.N, G.C * G.HW(), x, x_bool, indptr, indices, values, nnz};
  check_events(in, "spike_conv2d", threads);
  if (!grad && G.N > 0) throw std::invalid_argument("spike_conv2d_bwd: bad upstream gradient");
  threads = threads > 0 ? threads : 1;
  pybind11::gil_scoped_release release;
  dtype_switch(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    const auto* g = as_ptr<const scalar_t>(grad);
    scalar_t* gw = as_ptr<scalar_t>(grad_weight);
    scalar_t* gb = as_ptr<scalar_t>(grad_bias);
    const int64_t work = work_of(in, G, nnz_hint) * int64_t(sizeof(scalar_t));  // bytes: the read of g, as the output's writes
    with_source<scalar_t>(in, [&](const auto& src) {
      using Source = std::decay_t<decltype(src)>;
      if (gw)
        og_switch(G.Og(), [&](auto OG) { conv_backward<OG(), scalar_t, Source>(&src, G, g, gw, gb, threads, work); });
      else if (gb)
        conv_backward<0, scalar_t, Source>(nullptr, G, g, gw, gb, threads, work);
    });
  });
}

void register_spike_conv(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("spike_conv2d_fwd", &spike_conv2d_fwd,
        "Event-driven conv2d forward (pointers; see fastlif/ops/spike_conv.py)", py::arg("dtype"), py::arg("geom"),
        py::arg("x"), py::arg("x_bool"), py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("nnz"),
        py::arg("nnz_hint"), py::arg("wt"), py::arg("bias"), py::arg("out"), py::arg("threads"));
  m.def("spike_conv2d_bwd", &spike_conv2d_bwd,
        "Event-driven conv2d backward: weight and bias gradients (pointers; see fastlif/ops/spike_conv.py)",
        py::arg("dtype"), py::arg("geom"), py::arg("x"), py::arg("x_bool"), py::arg("indptr"), py::arg("indices"),
        py::arg("values"), py::arg("nnz"), py::arg("nnz_hint"), py::arg("grad"), py::arg("grad_weight"), py::arg("grad_bias"),
        py::arg("threads"));
}

}  // namespace

FASTLIF_REGISTER(register_spike_conv);

}  // namespace fastlif
