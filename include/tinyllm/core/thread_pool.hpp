#pragma once
// A fixed set of worker threads, passed explicitly to every parallel kernel. The calling thread
// takes part. Dispatch does not allocate: the task is a function pointer and a context pointer,
// and workers spin briefly before sleeping, so back-to-back kernel calls within one token are
// cheap.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TINYLLM_CPU_RELAX() _mm_pause()
#else
#define TINYLLM_CPU_RELAX() std::this_thread::yield()
#endif

namespace tinyllm {

// A job is split into size() chunks, chunk i being "thread i"'s share. Every thread, the caller
// included, claims chunks until none are left, so a worker the OS has not scheduled yet (a busy
// machine, more threads than cores) delays nothing: the others take its chunk. A chunk runs on
// one thread at a time, so per-thread scratch indexed by the chunk number stays private.
class ThreadPool {
 public:
  // n_threads = 0 means one per hardware thread.
  explicit ThreadPool(unsigned n_threads = 0) {
    if (n_threads == 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
    n_threads_ = n_threads;
    threads_.reserve(n_threads - 1);
    for (unsigned t = 1; t < n_threads; ++t) threads_.emplace_back([this] { worker(); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  unsigned size() const noexcept { return n_threads_; }

  // Calls f(i, size()) once for every chunk i < size() and returns when all are done.
  template <class F>
  void run(F&& f) {
    using Fn = std::remove_reference_t<F>;
    if (n_threads_ == 1) { f(0u, 1u); return; }
    task_ = [](void* ctx, unsigned i, unsigned n) { (*static_cast<Fn*>(ctx))(i, n); };
    ctx_ = const_cast<void*>(static_cast<const void*>(&f));
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    const std::uint32_t job = ++job_;
    claim_.store(std::uint64_t(job) << 32, std::memory_order_release);   // chunk 0 is next
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.store(job, std::memory_order_release);
    }
    wake_.notify_all();
    work_on(job);
    while (done_.load(std::memory_order_acquire) != n_threads_) TINYLLM_CPU_RELAX();
    if (error_) std::rethrow_exception(error_);
  }

  // Splits [0, n) into one contiguous range per chunk, each a multiple of `grain` (but the last),
  // and calls f(begin, end) for every non-empty range.
  template <class F>
  void parallel_for(std::size_t n, F&& f, std::size_t grain = 1) {
    if (n == 0) return;
    grain = std::max<std::size_t>(grain, 1);
    const std::size_t units = (n + grain - 1) / grain;
    run([&](unsigned t, unsigned nt) {
      const std::size_t u0 = units * t / nt, u1 = units * (t + 1) / nt;
      const std::size_t b = std::min(n, u0 * grain), e = std::min(n, u1 * grain);
      if (b < e) f(b, e);
    });
  }

 private:
  void record(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!error_) error_ = e;
  }

  // Claims and runs chunks of `job` until none are left. A successful claim proves the job is
  // still running (it cannot finish before this chunk does), so its task is still valid.
  void work_on(std::uint32_t job) {
    std::uint64_t cur = claim_.load(std::memory_order_acquire);
    for (;;) {
      if ((cur >> 32) != job || (cur & 0xffffffffu) >= n_threads_) return;
      if (!claim_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      try {
        task_(ctx_, unsigned(cur & 0xffffffffu), n_threads_);
      } catch (...) {
        record(std::current_exception());
      }
      done_.fetch_add(1, std::memory_order_acq_rel);
      cur = claim_.load(std::memory_order_acquire);
    }
  }

  void worker() {
    std::uint32_t seen = 0;
    for (;;) {
      std::uint32_t g = generation_.load(std::memory_order_acquire);
      for (int spin = 0; g == seen && spin < 20000; ++spin) {
        TINYLLM_CPU_RELAX();
        g = generation_.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      if (stop_) return;
      work_on(g);
    }
  }

  unsigned n_threads_ = 1;
  std::vector<std::thread> threads_;
  void (*task_)(void*, unsigned, unsigned) = nullptr;
  void* ctx_ = nullptr;
  std::uint32_t job_ = 0;                      // the caller's count of jobs
  std::atomic<std::uint64_t> claim_{0};        // (job << 32) | next chunk to claim
  std::atomic<unsigned> done_{0};              // chunks of the current job finished
  std::atomic<std::uint32_t> generation_{0};   // the latest job, for waking workers
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace tinyllm
