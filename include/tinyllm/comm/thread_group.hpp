#pragma once
// Ranks as threads of one process: tensor parallelism without MPI, for tests, teaching and
// trying a split on one machine. A ThreadGroup of n ranks hands out n communicators; each must be
// driven by its own thread, and every rank makes the same collective calls in the same order.
// Sums are taken in rank order, so every rank gets the same bits.
#include <barrier>
#include <cstddef>
#include <cstring>
#include <span>
#include <vector>

#include <tinyllm/comm/communicator.hpp>
#include <tinyllm/core/error.hpp>

namespace tinyllm {

class ThreadGroup {
 public:
  explicit ThreadGroup(std::size_t n_ranks) : sync_(std::ptrdiff_t(n_ranks)), posted_(n_ranks) {
    if (n_ranks == 0) throw Error("a thread group of no ranks");
    for (std::size_t r = 0; r < n_ranks; ++r) ranks_.emplace_back(*this, r);
  }
  ThreadGroup(const ThreadGroup&) = delete;
  ThreadGroup& operator=(const ThreadGroup&) = delete;
  std::size_t size() const { return ranks_.size(); }
  Communicator& rank(std::size_t r) { return ranks_.at(r); }

 private:
  class Rank final : public Communicator {
   public:
    Rank(ThreadGroup& g, std::size_t r) : g_(&g), r_(r) {}
    std::size_t rank() const override { return r_; }
    std::size_t size() const override { return g_->ranks_.size(); }
    void all_reduce_sum(std::span<float> data) override {
      const auto all = g_->post(r_, data.data());
      sum_.assign(data.size(), 0.0f);
      for (const void* p : all)
        for (std::size_t i = 0; i < data.size(); ++i) sum_[i] += static_cast<const float*>(p)[i];
      g_->sync_.arrive_and_wait();   // every rank has read every other's data
      std::memcpy(data.data(), sum_.data(), data.size() * sizeof(float));
    }
    void all_gather(std::span<const float> mine, std::span<float> all, std::span<const std::size_t> counts) override {
      const auto posted = g_->post(r_, mine.data());
      std::size_t at = 0;
      for (std::size_t r = 0; r < posted.size(); ++r) {
        if (at + counts[r] > all.size()) throw Error("all_gather: output smaller than the counts", "ThreadGroup");
        std::memcpy(all.data() + at, posted[r], counts[r] * sizeof(float));
        at += counts[r];
      }
      g_->sync_.arrive_and_wait();
    }
    void broadcast(std::span<std::byte> data, std::size_t root) override {
      const auto posted = g_->post(r_, data.data());
      if (r_ != root) std::memcpy(data.data(), posted[root], data.size());
      g_->sync_.arrive_and_wait();
    }

   private:
    ThreadGroup* g_;
    std::size_t r_;
    std::vector<float> sum_;
  };

  // Publishes rank r's buffer and waits until every rank has published its own.
  std::vector<const void*> post(std::size_t r, const void* p) {
    posted_[r] = p;
    sync_.arrive_and_wait();
    return posted_;
  }

  std::barrier<> sync_;
  std::vector<const void*> posted_;
  std::vector<Rank> ranks_;
};

}  // namespace tinyllm
