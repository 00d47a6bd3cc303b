#pragma once
// Communicators for tensor parallelism: the collective operations that ranks holding slices of
// one model need (model/tensor_parallel.hpp). A communicator is handed to the loader like the
// ThreadPool to forward(); the single-process one, the default, does nothing. comm/mpi.hpp has
// the one over MPI (Open MPI on CPU clusters), which tinyllm.hpp does not include: it needs
// <mpi.h> and the MPI library (CMake: TINYLLM_MPI, target tinyllm::mpi).
#include <cstddef>
#include <span>
#include <utility>

namespace tinyllm {

// Part `i` of `parts` near-equal contiguous parts of [0, n): {first, count}. How ranks share out
// heads, FFN units and vocabulary rows.
inline std::pair<std::size_t, std::size_t> even_part(std::size_t n, std::size_t parts, std::size_t i) {
  const std::size_t first = n * i / parts;
  return {first, n * (i + 1) / parts - first};
}

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::size_t rank() const = 0;
  virtual std::size_t size() const = 0;
  // data = the element-wise sum of every rank's data, on every rank.
  virtual void all_reduce_sum(std::span<float> data) = 0;
  // Every rank's `mine` concatenated in rank order into `all`, on every rank; counts[r] is the
  // number of elements rank r sends (counts.size() == size(), all.size() == their sum).
  virtual void all_gather(std::span<const float> mine, std::span<float> all, std::span<const std::size_t> counts) = 0;
  // root's bytes to every rank.
  virtual void broadcast(std::span<std::byte> data, std::size_t root) = 0;
};

// One process holding the whole model: every collective is the identity.
class SingleProcess final : public Communicator {
 public:
  std::size_t rank() const override { return 0; }
  std::size_t size() const override { return 1; }
  void all_reduce_sum(std::span<float>) override {}
  void all_gather(std::span<const float> mine, std::span<float> all, std::span<const std::size_t>) override {
    if (all.data() != mine.data())
      for (std::size_t i = 0; i < mine.size(); ++i) all[i] = mine[i];
  }
  void broadcast(std::span<std::byte>, std::size_t) override {}
};

}  // namespace tinyllm
