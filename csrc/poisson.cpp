// The Poisson encoder (fastlif.encode.poisson, method="fast") on the CPU: each (t, b, i) of a
// [T, B, N] spike train fires independently with p = clamp(x[b, i] * rate * dt, 0, 1), drawn
// with work proportional to the pixels and the spikes instead of to T * B * N (but for writing
// the dense output, T * B * N bytes at memcpy speed).
//
// Geometric skips: per pixel, the steps before its next spike number G ~ Geometric(p) (failures
// before a success, P(G = g) = (1 - p)^g p). By inverse transform, G = floor(log(U) / log1p(-p))
// for U uniform on (0, 1): P(G >= g) = P(log U <= g log(1 - p)) = P(U <= (1 - p)^g) = (1 - p)^g,
// the law of the gaps between independent Bernoulli(p) trials, so the spikes placed gap after
// gap have exactly the Bernoulli law, up to the rounding of U (52 bits) and of the logs (a few
// ulps). A pixel with p <= 0 never fires and one with p >= 1 fires at every step, with no draw;
// in between, each spike costs one draw and one log, and each pixel one more draw (the gap that
// runs past T) and one log1p. For p near 1, 1 - p is exact in double (Sterbenz), so log1p(-p)
// stays accurate; for tiny p, 1 / log1p(-p) ~ -1/p is huge and the first gap runs past T.
//
// Random numbers: SplitMix64 (Steele, Lea & Flood 2014; java.util.SplittableRandom), used as a
// counter-based generator: draw c of a call seeded s is mix(s + c * gamma), the c-th output of
// the SplitMix64 sequence seeded s. Pixel j (= b * N + i) owns the counters
// [j * (T + 1) + 1, (j + 1) * (T + 1)]: it never takes more than T + 1 draws (each draw but the
// last places a spike and moves at least one step on), so pixels read disjoint stretches of one
// sequence, and its spikes depend on (s, j) only, never on which thread ran it or when:
// results are identical for every OpenMP thread count. Python draws s from a torch.Generator.
//
// Output: the dense [T, B, N] bool tensor, and, on request, the CSR of its non-zeros
// (fastlif.events.SpikeEvents: row t * B + b, columns ascending) by counting sorts of the spikes
// this pass drew, per work item and then over the items: O(nnz + rows + pixels) more work, no
// rescan of the dense tensor.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <functional>
#include <new>
#include <utility>

#include "common.h"
#include "module.h"
#include "static_switch.h"


namespace fastlif {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;  // SplitMix64's increment (odd)

inline uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

template <typename To, typename From>
inline To bits_as(From v) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}

// U uniform on (0, 1), open at both ends (log U is finite and < 0): 52 random bits k, centred
// in their cell, (k + 1/2) 2^-52. Built from the bits of 1 + k 2^-52 (no integer-to-double
// conversion, which would keep the loop from vectorising without AVX-512); every step is exact.
inline double open_uniform(uint64_t z) {
  return (bits_as<double>((z >> 12) | 0x3ff0000000000000ULL) - 1.0) + 0x1p-53;
}

// log(x) for a positive, normal, finite x: fdlibm's e_log.c (as musl has it), error below one
// ulp, without its branches for zero, negative, subnormal, infinite and NaN input, so that a
// loop over it vectorises (glibc's log is a call that the compiler vectorises only under
// -ffast-math, which this build does not use). The same IEEE operations in the same order
// whether a lane of a vector or the scalar remainder computes it: the same bits either way.
inline double log_normal(double x) {
  constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  constexpr double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                   Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                   Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                   Lg7 = 1.479819860511658591e-01;
  // x = 2^k m with m in [sqrt(2)/2, sqrt(2)): offset the high word so k comes out of the
  // exponent field, then put m's mantissa under the exponent of sqrt(2)/2's high word
  const uint64_t ix = bits_as<uint64_t>(x) + (uint64_t(0x3ff00000 - 0x3fe6a09e) << 32);
  const double k = bits_as<double>((ix >> 52) | 0x4330000000000000ULL) - (0x1p52 + 1023.0);
  const double m = bits_as<double>((ix & 0x000fffffffffffffULL) + (uint64_t(0x3fe6a09e) << 32));
  const double f = m - 1.0, hfsq = 0.5 * f * f, s = f / (2.0 + f), z = s * s, w = z * z;
  const double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
  const double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
  const double R = t2 + t1;
  return s * (hfsq + R) + k * ln2_lo - hfsq + f + k * ln2_hi;
}

// 1 / log1p(-p) for p in (0, 1), by Kahan's log1p: with w = 1 - p rounded, log1p(-p) =
// log(w) * -p / (w - 1), accurate to a few ulps (and -p itself where w rounds to 1). For
// p >= 1/2, 1 - p is exact (Sterbenz), so p close to 1 loses nothing.
inline double inv_log1p_neg(double p) {
  const double w = 1.0 - p;
  const double lw = log_normal(w);
  return w == 1.0 ? -1.0 / p : (w - 1.0) / (lw * -p);
}

template <typename scalar_t>
struct PoissonArgs {
  int64_t T = 0, B = 0, N = 0;
  const scalar_t* x = nullptr;  // [B, N]
  double rate = 0, dt = 0;
  uint64_t seed = 0;
  uint8_t* spikes = nullptr;    // [T, B, N] bool
  int num_threads = 1;
};

// n rounded up to whole vectors of kLanes (a multiple of any vector width)
constexpr int64_t kLanes = 16;
inline int64_t padded(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// The work items: runs of consecutive pixels of the flattened [B * N] grid (pixel j = b * N + i,
// across rows b). Every round of draws (below) costs a few loops' overhead, and an item takes as
// many rounds as its busiest pixel has spikes, plus one: long items spread that over more draws
// (4096 pixels ran the tutorial's size ~2.5x faster than 256), while a few items per
// thread keep the threads busy. Which item holds a pixel changes neither its draws nor the
// order of the events.
inline Items work_items(int64_t pixels, int threads) {
  const int64_t per_thread = (pixels + 4 * threads - 1) / (4 * threads);
  return Items(1, pixels, std::clamp<int64_t>(padded(per_thread), 256, 4096));
}

// The events of one work item, in the order they take in the CSR: sorted by the item's local
// row key = t * n_b + (b - b0) (b0 its first row b, n_b how many rows b it touches), columns
// ascending within a key. count[key] is how many there are; the counting sort over all items
// (row_offsets) turns it into the position of the key's run in the CSR's indices.
struct ItemEvents {
  int64_t b0 = 0, n_b = 0;
  std::vector<int32_t> cols;       // the events' columns, key by key
  std::vector<int64_t> key_start;  // where each key's run starts in cols, [T * n_b + 1]
  std::vector<int64_t> count;      // [T * n_b], then the runs' positions in indices
};

struct Spike {
  int32_t t, j;  // step t of the item's pixel j
};

// An item's working memory, per thread and kept from call to call (a few hundred KiB, a few MiB
// at most: neither the stack nor a fresh allocation per call, which would fault its pages in
// each time).
struct Scratch {
  std::vector<double> p, inv_log_q;
  std::vector<uint8_t> always, hit;
  std::vector<int32_t> pix;
  std::vector<int64_t> next, at;
  std::vector<uint64_t> counter;
  std::vector<Spike> found, sorted;  // an item's spikes as drawn, and sorted by pixel
  std::vector<int64_t> cursor;       // the counting sorts' positions
  void fit(int64_t n) {
    const size_t m = static_cast<size_t>(padded(n));
    if (p.size() >= m) return;
    for (auto* v : {&p, &inv_log_q}) v->resize(m);
    for (auto* v : {&always, &hit}) v->resize(m);
    pix.resize(m);
    for (auto* v : {&next, &at}) v->resize(m);
    counter.resize(m);
  }
  // The spike buffers grow with the busiest item's spikes: not kept past a few MiB.
  void release_if_large() {
    constexpr size_t kKeep = size_t(1) << 18;
    if (found.capacity() > kKeep) std::vector<Spike>().swap(found);
    if (sorted.capacity() > kKeep) std::vector<Spike>().swap(sorted);
    if (cursor.capacity() > kKeep) std::vector<int64_t>().swap(cursor);
  }
};

Scratch& thread_scratch() {
  static thread_local Scratch scratch;
  return scratch;
}

enum Status : int { kOk = 0, kNonFinite = 1, kNoMemory = 2 };

// One work item: write its slice of the dense tensor (T runs of n bytes) and, with EVENTS, fill
// ev.
//
// The slice starts as copies of one row, 1 where a pixel fires at every step (p >= 1) and 0
// elsewhere; the random spikes are ORed in after. The pixels with 0 < p < 1 ("live") draw in
// rounds, one gap each per round: the draws of a round are independent of one another, so they
// vectorise (splitmix64, log_normal), and nothing branches on the random gaps (a mispredicted
// branch per draw cost more than the draw): a gap that runs past T ORs a 0 into the pixel's
// step 0, and the list of live pixels is compacted in place after every round. The vector loops
// run over whole vectors, up to kLanes slots past the live ones (a scalar remainder loop would
// run the last rounds, with a few live pixels, one draw at a time); the slots past n_live hold
// harmless values (a valid p at first, stale slots later) whose results are never read.
// Returns kOk, or kNonFinite.
template <typename scalar_t, bool EVENTS>
int item_spikes(const PoissonArgs<scalar_t>& a, const Item& it, ItemEvents* ev, Scratch& w) {
  const int64_t T = a.T, M = a.B * a.N, n = it.n;
  const double rate = a.rate, dt = a.dt;
  const uint64_t seed = a.seed;
  const scalar_t* x = a.x + it.base;
  uint8_t* const out = a.spikes + it.base;
  w.fit(n);
  double* const p = w.p.data();
  uint8_t* const always = w.always.data();
  int non_finite = 0;
#pragma omp simd reduction(| : non_finite)
  for (int64_t j = 0; j < n; ++j) {
    const double v = static_cast<double>(x[j]);
    non_finite |= !(v - v == 0.0);  // inf - inf and NaN - NaN are NaN
    p[j] = (v * rate) * dt;         // the tutorial's order, in double (NaN stays NaN: never live)
    always[j] = p[j] >= 1.0;
  }
  for (int64_t t = 0; t < T; ++t) std::memcpy(out + t * M, always, static_cast<size_t>(n));
  // the live pixels, slot k: which pixel, 1 / log(1 - p), the first step its next spike may
  // fall on, and the last counter it drew; then this round's spike position and whether it hit
  int32_t* const pix = w.pix.data();
  double* const inv_log_q = w.inv_log_q.data();
  int64_t* const next = w.next.data();
  uint64_t* const counter = w.counter.data();
  int64_t* const at = w.at.data();
  uint8_t* const hit = w.hit.data();
  int64_t n_live = 0;
  if constexpr (EVENTS) w.found.clear();
  for (int32_t j = 0; j < n; ++j) {
    pix[n_live] = j;
    inv_log_q[n_live] = p[j];
    n_live += (p[j] > 0.0) & (p[j] < 1.0) & (T > 0);  // p <= 0 never fires
    if constexpr (EVENTS) {
      if (always[j])
        for (int32_t t = 0; t < T; ++t) w.found.push_back({t, j});
    }
  }
  for (int64_t k = n_live; k < padded(n_live); ++k) {
    pix[k] = 0;
    inv_log_q[k] = 0.5;
  }
  const uint64_t stride = static_cast<uint64_t>(T + 1), first = static_cast<uint64_t>(it.base) * stride;
#pragma omp simd
  for (int64_t k = 0; k < padded(n_live); ++k) {
    inv_log_q[k] = inv_log1p_neg(inv_log_q[k]);
    next[k] = 0;
    counter[k] = first + static_cast<uint64_t>(pix[k]) * stride;
  }
  while (n_live > 0) {
#pragma omp simd
    for (int64_t k = 0; k < padded(n_live); ++k) {  // the round's draws, independent of one another
      counter[k] += 1;
      const double gap = log_normal(open_uniform(splitmix64(seed + counter[k] * kGolden))) * inv_log_q[k];  // >= 0
      const double room = static_cast<double>(T - next[k]);
      const bool h = gap < room;
      const int64_t t = next[k] + static_cast<int64_t>(std::min(gap, room));  // T when it falls past T
      hit[k] = h;
      at[k] = pix[k] + (h ? t * M : 0);  // a miss ORs a 0 into step 0
      next[k] = t + 1;
    }
    for (int64_t k = 0; k < n_live; ++k) out[at[k]] = static_cast<uint8_t>(out[at[k]] | hit[k]);
    int64_t kept = 0;
    Spike* spike = nullptr;
    if constexpr (EVENTS) {
      w.found.resize(w.found.size() + static_cast<size_t>(n_live));  // room for every slot
      spike = w.found.data() + w.found.size() - n_live;
    }
    for (int64_t k = 0; k < n_live; ++k) {  // keep the slots that hit and have steps left
      if constexpr (EVENTS) {
        *spike = Spike{static_cast<int32_t>(next[k] - 1), pix[k]};
        spike += hit[k];
      }
      pix[kept] = pix[k];
      inv_log_q[kept] = inv_log_q[k];
      next[kept] = next[k];
      counter[kept] = counter[k];
      kept += hit[k] & (next[k] < T);
    }
    if constexpr (EVENTS) w.found.resize(static_cast<size_t>(spike - w.found.data()));
    n_live = kept;
  }
  if constexpr (EVENTS) {  // two stable counting sorts of the found spikes: by pixel, then by key
    const int64_t N = a.N, b0 = it.base / N, n_b = (it.base + n - 1) / N - b0 + 1, keys = T * n_b;
    ev->b0 = b0;
    ev->n_b = n_b;
    int64_t* const row_of = at;  // free now: each pixel's row b - b0
    for (int64_t b = b0; b < b0 + n_b; ++b) {
      const int64_t lo = std::max(it.base, b * N) - it.base, hi = std::min(it.base + n, (b + 1) * N) - it.base;
      for (int64_t j = lo; j < hi; ++j) row_of[j] = b - b0;
    }
    w.cursor.assign(static_cast<size_t>(std::max(n, keys)) + 1, 0);
    int64_t* const cursor = w.cursor.data();
    ev->count.assign(static_cast<size_t>(keys), 0);
    for (const Spike& s : w.found) {
      ++cursor[s.j + 1];
      ++ev->count[static_cast<size_t>(s.t * n_b + row_of[s.j])];
    }
    for (int64_t j = 0; j < n; ++j) cursor[j + 1] += cursor[j];
    w.sorted.resize(w.found.size());
    for (const Spike& s : w.found) w.sorted[static_cast<size_t>(cursor[s.j]++)] = s;  // each pixel's ascend in t
    ev->key_start.resize(static_cast<size_t>(keys) + 1);
    ev->key_start[0] = 0;
    for (int64_t k = 0; k < keys; ++k) {
      cursor[k] = ev->key_start[static_cast<size_t>(k)];
      ev->key_start[static_cast<size_t>(k) + 1] = cursor[k] + ev->count[static_cast<size_t>(k)];
    }
    ev->cols.resize(w.sorted.size());
    int32_t* const cols = ev->cols.data();
    for (const Spike& s : w.sorted) {
      const int64_t r = row_of[s.j];
      cols[cursor[s.t * n_b + r]++] = static_cast<int32_t>(it.base + s.j - (b0 + r) * N);
    }
    w.release_if_large();
  }
  return non_finite ? kNonFinite : kOk;
}

// One pass over the work items. Returns kOk, or why not (the caller raises).
template <typename scalar_t, bool EVENTS>
int generate(const PoissonArgs<scalar_t>& a, const Items& items, Team& team, std::vector<ItemEvents>& events) {
  int status = kOk;
#pragma omp parallel for schedule(dynamic) num_threads(team.n) reduction(| : status)
  for (int64_t index = 0; index < items.count; ++index) {
    const Team::Item mark(team);
    try {
      status |= item_spikes<scalar_t, EVENTS>(a, Item(items, a.B * a.N, index),
                                              EVENTS ? &events[index] : nullptr, thread_scratch());
    } catch (const std::bad_alloc&) {  // an exception must not leave the parallel region
      status |= kNoMemory;
    }
  }
  return status;
}

// The counting sort over the items: row r = t * B + b holds, in item order (ascending columns),
// the runs that the items overlapping row b (a contiguous range of items) have for (t, b). Each
// item's count[key] becomes the position of its run in indices; indptr[r + 1] is the end of
// row r.
void row_offsets(int64_t T, int64_t B, int64_t N, const Items& items, std::vector<ItemEvents>& events,
                 int64_t* indptr) {
  std::vector<int64_t> first_item(static_cast<size_t>(B) + 1);  // items first_item[b]..[b + 1] - 1 overlap row b
  for (int64_t b = 0; b <= B; ++b) first_item[static_cast<size_t>(b)] = N > 0 ? b * N / items.chunk : 0;
  int64_t at = 0;
  indptr[0] = 0;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < B; ++b) {
      if (N > 0) {
        const int64_t last = ((b + 1) * N - 1) / items.chunk;
        for (int64_t k = first_item[static_cast<size_t>(b)]; k <= last; ++k) {
          ItemEvents& ev = events[static_cast<size_t>(k)];
          int64_t& slot = ev.count[static_cast<size_t>(t * ev.n_b + b - ev.b0)];
          const int64_t n = slot;
          slot = at;
          at += n;
        }
      }
      indptr[t * B + b + 1] = at;
    }
  }
}

// Each item copies its keys' runs of columns to their positions in indices.
void scatter_events(const Items& items, const std::vector<ItemEvents>& events, int32_t* indices, int threads,
                    int64_t nnz) {
  Team team(threads, items.count, nnz * int64_t(2 * sizeof(int32_t)));  // read and write each event
#pragma omp parallel for schedule(dynamic) num_threads(team.n)
  for (int64_t index = 0; index < items.count; ++index) {
    const Team::Item mark(team);
    const ItemEvents& ev = events[static_cast<size_t>(index)];
    for (size_t k = 0; k < ev.count.size(); ++k) {
      const int64_t from = ev.key_start[k], len = ev.key_start[k + 1] - from;
      if (len) std::memcpy(indices + ev.count[k], ev.cols.data() + from, static_cast<size_t>(len) * sizeof(int32_t));
    }
  }
}

// --- binding ---------------------------------------------------------------------------------
// fastlif/ops/poisson.py checks the arguments and allocates the dense output; with events it
// passes `alloc`, called (with the GIL) once the spike count is known: alloc(nnz) returns the
// data pointers of indptr [T * B + 1] int64 and indices [nnz] int32.

using Alloc = std::function<std::pair<std::uintptr_t, std::uintptr_t>(int64_t)>;

template <typename scalar_t>
void poisson_typed(const PoissonArgs<scalar_t>& a, const Alloc* alloc) {
  namespace py = pybind11;
  const int64_t pixels = a.B * a.N;
  const Items items = work_items(pixels, a.num_threads);
  std::vector<ItemEvents> events(alloc ? static_cast<size_t>(items.count) : 0);
  int status;
  {
    // work, in the grain's units (bytes a memory-bound kernel moves in the same time): the dense
    // output (T bytes per pixel), and the draws: ~30 ns a pixel on one thread at the tutorial's
    // rates, what LIF's kernels take to stream ~1 KiB. A second thread paid at the tutorial's
    // size (64 x 784 pixels: 0.325 -> 0.215 ms, README) and this puts it over 2 grains.
    Team team(a.num_threads, items.count, pixels * (a.T + 1024));
    py::gil_scoped_release release;
    status = alloc ? generate<scalar_t, true>(a, items, team, events) : generate<scalar_t, false>(a, items, team, events);
  }
  if (status & kNonFinite) throw std::invalid_argument("poisson: images hold a non-finite value (NaN or inf)");
  if (status & kNoMemory) throw std::bad_alloc();
  if (!alloc) return;
  int64_t nnz = 0;
  for (const auto& ev : events) nnz += static_cast<int64_t>(ev.cols.size());
  const auto [indptr, indices] = (*alloc)(nnz);
  if (!indptr || (nnz && !indices)) throw std::invalid_argument("poisson: alloc returned a null pointer");
  py::gil_scoped_release release;
  row_offsets(a.T, a.B, a.N, items, events, as_ptr<int64_t>(indptr));
  scatter_events(items, events, as_ptr<int32_t>(indices), a.num_threads, nnz);
}

void poisson_fwd(int dtype, int64_t T, int64_t B, int64_t N, std::uintptr_t x, double rate, double dt,
                 uint64_t seed, std::uintptr_t spikes, const pybind11::object& alloc, int threads) {
  if (T < 0 || B < 0 || N < 0 || T >= (int64_t(1) << 31) || N >= (int64_t(1) << 31))
    throw std::invalid_argument("poisson: bad grid T=" + std::to_string(T) + " B=" + std::to_string(B) +
                                " N=" + std::to_string(N));
  if (B > 0 && N > 0 && (!x || (T > 0 && !spikes))) throw std::invalid_argument("poisson: x and spikes are required");
  Alloc fn;
  if (!alloc.is_none()) fn = alloc.cast<Alloc>();
  int_switch<kFloat32, kFloat64>(dtype, "dtype", [&](auto DT) {
    using scalar_t = std::conditional_t<DT() == kFloat64, double, float>;
    PoissonArgs<scalar_t> a;
    a.T = T;
    a.B = B;
    a.N = N;
    a.x = as_ptr<const scalar_t>(x);
    a.rate = rate;
    a.dt = dt;
    a.seed = seed;
    a.spikes = as_ptr<uint8_t>(spikes);
    advise_huge(a.spikes, T * B * N);  // a fresh [T, B, N] bool output: see advise_huge
    a.num_threads = threads > 0 ? threads : 1;
    poisson_typed(a, alloc.is_none() ? nullptr : &fn);
  });
}

void register_poisson(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("poisson_fwd", &poisson_fwd,
        "Poisson spike trains by geometric skips (pointers; see fastlif/ops/poisson.py)", py::arg("dtype"),
        py::arg("T"), py::arg("B"), py::arg("N"), py::arg("x"), py::arg("rate"), py::arg("dt"),
        py::arg("seed"), py::arg("spikes"), py::arg("alloc"), py::arg("num_threads"));
}

}  // namespace

FASTLIF_REGISTER(register_poisson);

}  // namespace fastlif
