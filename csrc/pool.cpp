// fastlif's output pool: the memory of the fused ops' outputs and saved tensors, kept for
// reuse when torch frees them, so that a training loop's calls do not fault the same pages in
// again on every call.
//
// Why: with glibc's default thresholds a freed block of a few MiB goes back to the OS (an mmap
// of its own, or the top of a trimmed heap), and the next call's fresh output faults it in
// again, 4 KiB at a time: at the tutorial size (T=50, B=64, N=128) ~650 faults, 0.6 ms of a
// 1.2 ms forward+backward. Raising glibc's thresholds (mallopt, MALLOC_MMAP_THRESHOLD_) would
// change the user's whole process; this pool changes nothing outside fastlif's own tensors.
//
// How: a Block owns one anonymous mapping and exposes it through the buffer protocol; Python
// wraps it with torch.frombuffer, so the tensor's storage holds the Block, and the Block comes
// back here when the last view of the storage is freed (whatever thread frees it: the deleter
// takes the GIL). Freed mappings wait in a cache, by size, up to a byte limit; past it the
// least recently freed go back to the OS.
#include <sys/mman.h>

#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include <pybind11/stl.h>

#include "module.h"
#include "pool.h"

namespace fastlif {
namespace {

constexpr std::size_t kPage = 4096;

struct Pool {
  std::mutex lock;
  // size -> mappings of that size (most recently freed last), and the global free order for
  // eviction (oldest first). Sizes are whole pages, so sizes recur exactly across calls.
  std::multimap<std::size_t, void*> free_by_size;
  std::list<std::pair<void*, std::size_t>> free_order;
  std::size_t cached = 0;   // bytes in free mappings
  std::size_t in_use = 0;   // bytes in mappings some tensor holds
  std::size_t limit = std::size_t(1) << 30;  // cached bytes kept at most
  int64_t hits = 0, misses = 0, evictions = 0;

  void* take(std::size_t bytes) {
    {
      std::lock_guard<std::mutex> g(lock);
      auto it = free_by_size.find(bytes);
      if (it != free_by_size.end()) {
        void* p = it->second;
        free_by_size.erase(it);
        for (auto o = free_order.rbegin(); o != free_order.rend(); ++o)
          if (o->first == p) {
            free_order.erase(std::next(o).base());
            break;
          }
        cached -= bytes;
        in_use += bytes;
        ++hits;
        return p;
      }
      ++misses;
      in_use += bytes;
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::lock_guard<std::mutex> g(lock);
      in_use -= bytes;
      throw std::bad_alloc();
    }
    advise_huge(p, static_cast<int64_t>(bytes));  // a fresh mapping: see common.h
    return p;
  }

  void give(void* p, std::size_t bytes) {
    std::list<std::pair<void*, std::size_t>> evicted;
    {
      std::lock_guard<std::mutex> g(lock);
      in_use -= bytes;
      if (bytes > limit) {
        evicted.emplace_back(p, bytes);
      } else {
        free_by_size.emplace(bytes, p);
        free_order.emplace_back(p, bytes);
        cached += bytes;
        while (cached > limit) evict_oldest(evicted);
      }
    }
    for (auto& [q, n] : evicted) munmap(q, n);  // outside the lock: munmap can take a while
  }

  // Caller holds the lock; the mapping is unmapped by the caller after releasing it.
  void evict_oldest(std::list<std::pair<void*, std::size_t>>& out) {
    auto [p, n] = free_order.front();
    free_order.pop_front();
    auto range = free_by_size.equal_range(n);
    for (auto it = range.first; it != range.second; ++it)
      if (it->second == p) {
        free_by_size.erase(it);
        break;
      }
    cached -= n;
    ++evictions;
    out.emplace_back(p, n);
  }

  void set_limit(std::size_t bytes) {
    std::list<std::pair<void*, std::size_t>> evicted;
    {
      std::lock_guard<std::mutex> g(lock);
      limit = bytes;
      while (cached > limit) evict_oldest(evicted);
    }
    for (auto& [q, n] : evicted) munmap(q, n);
  }
};

// Never destroyed: Blocks may be freed during interpreter shutdown, after static destructors.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

PoolBlock::PoolBlock(std::size_t n) : bytes((n + kPage - 1) / kPage * kPage), used(n) { ptr = pool().take(bytes); }
PoolBlock::~PoolBlock() { pool().give(ptr, bytes); }

namespace {

using Block = PoolBlock;

void register_pool(pybind11::module_& m) {
  namespace py = pybind11;
  py::class_<Block>(m, "PoolBlock", py::buffer_protocol(),
                    "One mapping of fastlif's output pool; torch.frombuffer wraps it, and it goes "
                    "back to the pool when the tensor's storage is freed.")
      .def(py::init([](int64_t n) {
             if (n <= 0) throw std::invalid_argument("PoolBlock: size must be positive, got " + std::to_string(n));
             return new Block(static_cast<std::size_t>(n));
           }),
           py::arg("nbytes"))
      .def_buffer([](Block& b) {
        return py::buffer_info(b.ptr, 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.used)}, {1}, /*readonly=*/false);
      });
  m.def("_pool", [](int64_t limit, bool clear) {
    auto& p = pool();
    std::size_t keep = static_cast<std::size_t>(limit);
    if (limit < 0) {
      std::lock_guard<std::mutex> g(p.lock);
      keep = p.limit;
    }
    if (clear) p.set_limit(0);
    p.set_limit(keep);
    std::lock_guard<std::mutex> g(p.lock);
    return std::map<std::string, int64_t>{
        {"cached_bytes", int64_t(p.cached)}, {"in_use_bytes", int64_t(p.in_use)}, {"limit_bytes", int64_t(p.limit)},
        {"hits", p.hits}, {"misses", p.misses}, {"evictions", p.evictions}};
  }, "Read the output pool's counters; limit >= 0 sets the cached-bytes limit (0: keep nothing); "
     "clear returns every cached mapping to the OS.",
        py::arg("limit") = -1, py::arg("clear") = false);
}

}  // namespace

FASTLIF_REGISTER(register_pool);

}  // namespace fastlif
