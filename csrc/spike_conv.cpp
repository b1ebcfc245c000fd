// The SpikeConv2d family (fastlif.SpikeConv2d, fastlif/ops/spike_conv.py) on the CPU: a 2-D
// convolution that visits only the non-zero inputs, then its bindings.
//
//   forward   every event (b, c, y, x, v) scatters v * W[:, c, ky, kx] into each output pixel
//             (oy, ox) it reaches: oy * sh - ph + ky * dh == y, the same along x
//   backward  gW[o, c, ky, kx] = sum over images b ascending, then over the events of channel c
//             in (y, x) order, of v * g[b, o, oy, ox]
//             gb[o] = sum over b, then pixels, ascending, of g[b, o, :, :]  (double accumulation)
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
// Threading and determinism: forward items are images, each written by one thread. Weight
// gradient: each thread owns a contiguous range of input channels (all of gW[:, c, :, :] for
// them) and walks the images in order; every element of gW is summed by one thread in the fixed
// order above whatever the split, so the result does not depend on the thread count. No atomics.
#include <pybind11/pybind11.h>

#include <limits>
#include <vector>

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

template <typename scalar_t, typename Source>
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
            add_scaled<Source::kBinary>(ag + (row + tx.o[j]) * O, wc + (wrow + tx.k[j]) * Og, v, Og);
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

// gW [O, Cg, KH, KW]. The input channels are split into P contiguous ranges, one per thread;
// each thread walks the images in order and, for an image with events in its range, transposes
// the image's upstream gradient g[b] [O, OH, OW] to channels-last once for all its channels.
template <typename scalar_t, typename Source>
void conv_weight_grad(const Source& src, const Geom& G, const scalar_t* g, scalar_t* gw, int threads, int64_t work) {
  const Taps ty(G.H, G.KH, G.OH, G.sh, G.ph, G.dh), tx(G.W, G.KW, G.OW, G.sw, G.pw, G.dw);
  const int64_t HW = G.HW(), OHW = G.OHW(), O = G.O, Og = G.Og(), Cg = G.Cg(), KK = G.KH * G.KW;
  const int P = team_size(threads, G.C, work);
#pragma omp parallel for schedule(static, 1) num_threads(P)
  for (int p = 0; p < P; ++p) {
    const int64_t c0 = G.C * p / P, c1 = G.C * (p + 1) / P;
    // the groups this range touches: only their output channels are transposed
    const int64_t o0 = (c0 / Cg) * Og, o1 = c1 > c0 ? ((c1 - 1) / Cg + 1) * Og : o0;
    const int64_t On = o1 - o0;
    std::vector<scalar_t> acc(static_cast<size_t>((c1 - c0) * KK * Og), scalar_t(0));
    std::vector<scalar_t> gt(static_cast<size_t>(OHW * On));
    struct Event {
      int64_t c, y, x;
      scalar_t v;
    };
    std::vector<Event> events;
    for (int64_t b = 0; b < G.N && c1 > c0; ++b) {
      events.clear();
      src.range(b, c0 * HW, c1 * HW, [&](int64_t k, scalar_t v) {
        const int64_t c = k / HW, r = k - c * HW, y = r / G.W;
        events.push_back(Event{c, y, r - y * G.W, v});
      });
      if (events.empty()) continue;
      const scalar_t* gb = g + b * O * OHW + o0 * OHW;
      for (int64_t o = 0; o < On; ++o)
        for (int64_t q = 0; q < OHW; ++q) gt[q * On + o] = gb[o * OHW + q];
      for (const Event& e : events) {
        scalar_t* ac = acc.data() + (e.c - c0) * KK * Og;
        const scalar_t* gg = gt.data() + ((e.c / Cg) * Og - o0);
        for (int32_t i = ty.ptr[e.y]; i < ty.ptr[e.y + 1]; ++i) {
          const int64_t row = ty.o[i] * G.OW, wrow = ty.k[i] * G.KW;
          for (int32_t j = tx.ptr[e.x]; j < tx.ptr[e.x + 1]; ++j)
            add_scaled<Source::kBinary>(ac + (wrow + tx.k[j]) * Og, gg + (row + tx.o[j]) * On, e.v, Og);
        }
      }
    }
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t grp = c / Cg, cl = c - grp * Cg;
      for (int64_t o = 0; o < Og; ++o)
        for (int64_t t = 0; t < KK; ++t)
          gw[((grp * Og + o) * Cg + cl) * KK + t] = acc[((c - c0) * KK + t) * Og + o];
    }
  }
}

// gb [O]: per output channel, the sum over images and pixels in order, in double.
template <typename scalar_t>
void conv_bias_grad(const Geom& G, const scalar_t* g, scalar_t* gb, int threads) {
  const int64_t OHW = G.OHW(), O = G.O;
#pragma omp parallel for schedule(dynamic) num_threads(team_size(threads, O, G.N * O * OHW))
  for (int64_t o = 0; o < O; ++o) {
    double acc = 0;
    for (int64_t b = 0; b < G.N; ++b) {
      const scalar_t* go = g + (b * O + o) * OHW;
      double part = 0;
      for (int64_t q = 0; q < OHW; ++q) part += static_cast<double>(go[q]);
      acc += part;
    }
    gb[o] = static_cast<scalar_t>(acc);
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

// Work estimates for team_size: the scan of a dense input, and a tap's worth of output channels
// per event and tap (nnz unknown before a scan: half the entries).
int64_t work_of(const Events& in, const Geom& G) {
  const int64_t nnz = in.indptr ? in.nnz : in.M * in.K / 2;
  const int64_t taps = std::max<int64_t>(1, (G.KH * G.KW * G.OH * G.OW) / std::max<int64_t>(1, G.H * G.W));
  return (in.indptr ? in.M : in.M * in.K / 16) + nnz * taps * G.Og();
}

void spike_conv2d_fwd(int dtype, const pybind11::tuple& geom, std::uintptr_t x, bool x_bool, std::uintptr_t indptr,
                      std::uintptr_t indices, std::uintptr_t values, int64_t nnz, std::uintptr_t wt,
                      std::uintptr_t bias, std::uintptr_t out, int threads) {
  const Geom G = geom_of(geom);
  const Events in{G.N, G.C * G.HW(), x, x_bool, indptr, indices, values, nnz};
  check_events(in, "spike_conv2d");
  if (!wt || (!out && G.N > 0)) throw std::invalid_argument("spike_conv2d_fwd: bad weight or output");
  pybind11::gil_scoped_release release;
  dtype_switch(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    with_source<scalar_t>(in, [&](const auto& src) {
      conv_forward(src, G, as_ptr<const scalar_t>(wt), as_ptr<const scalar_t>(bias), as_ptr<scalar_t>(out),
                   threads > 0 ? threads : 1, work_of(in, G));
    });
  });
}

void spike_conv2d_bwd(int dtype, const pybind11::tuple& geom, std::uintptr_t x, bool x_bool, std::uintptr_t indptr,
                      std::uintptr_t indices, std::uintptr_t values, int64_t nnz, std::uintptr_t grad,
                      std::uintptr_t grad_weight, std::uintptr_t grad_bias, int threads) {
  const Geom G = geom_of(geom);
  const Events in{G.N, G.C * G.HW(), x, x_bool, indptr, indices, values, nnz};
  check_events(in, "spike_conv2d");
  if (!grad && G.N > 0) throw std::invalid_argument("spike_conv2d_bwd: bad upstream gradient");
  threads = threads > 0 ? threads : 1;
  pybind11::gil_scoped_release release;
  dtype_switch(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    const auto* g = as_ptr<const scalar_t>(grad);
    if (grad_bias) conv_bias_grad(G, g, as_ptr<scalar_t>(grad_bias), threads);
    if (!grad_weight) return;
    with_source<scalar_t>(in, [&](const auto& src) {
      conv_weight_grad(src, G, g, as_ptr<scalar_t>(grad_weight), threads, work_of(in, G));
    });
  });
}

void register_spike_conv(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("spike_conv2d_fwd", &spike_conv2d_fwd,
        "Event-driven conv2d forward (pointers; see fastlif/ops/spike_conv.py)", py::arg("dtype"), py::arg("geom"),
        py::arg("x"), py::arg("x_bool"), py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("nnz"),
        py::arg("wt"), py::arg("bias"), py::arg("out"), py::arg("threads"));
  m.def("spike_conv2d_bwd", &spike_conv2d_bwd,
        "Event-driven conv2d backward: weight and bias gradients (pointers; see fastlif/ops/spike_conv.py)",
        py::arg("dtype"), py::arg("geom"), py::arg("x"), py::arg("x_bool"), py::arg("indptr"), py::arg("indices"),
        py::arg("values"), py::arg("nnz"), py::arg("grad"), py::arg("grad_weight"), py::arg("grad_bias"),
        py::arg("threads"));
}

}  // namespace

FASTLIF_REGISTER(register_spike_conv);

}  // namespace fastlif
