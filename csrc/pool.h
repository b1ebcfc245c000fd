// fastlif's output pool (csrc/pool.cpp), for C++ code that allocates outputs itself (the Leaky
// autograd Function, csrc/lif_autograd.cpp): one mapping, back to the pool when destroyed.
#pragma once

#include <cstddef>

namespace fastlif {

struct PoolBlock {
  void* ptr = nullptr;
  std::size_t bytes = 0;  // the mapping's size (whole pages)
  std::size_t used = 0;   // the bytes asked for, what the buffer exposes
  explicit PoolBlock(std::size_t n);
  PoolBlock(const PoolBlock&) = delete;
  PoolBlock& operator=(const PoolBlock&) = delete;
  ~PoolBlock();
};

}  // namespace fastlif
