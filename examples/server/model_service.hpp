#pragma once
// One served model: its weights, its Engine (with its own KV budget) and the thread that steps it.
// HTTP threads submit and cancel; only the stepping thread calls Engine::step(). The stepping
// thread sleeps on a condition variable while the engine has nothing to do and is woken by
// submit() and cancel(). Models share one compute ThreadPool, so their steps take turns under
// `compute` (on a CPU they would contend for the same cores anyway).
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace server {

// A Prometheus histogram: counts of observations at or below each bound (cumulative when
// written), their sum and count.
struct Histogram {
  std::vector<double> bounds;
  std::vector<std::uint64_t> counts = std::vector<std::uint64_t>(bounds.size() + 1);   // the last: above every bound
  double sum = 0;
  std::uint64_t count = 0;
  void observe(double x) {
    ++counts[std::size_t(std::lower_bound(bounds.begin(), bounds.end(), x) - bounds.begin())];
    sum += x;
    ++count;
  }
};

// A consistent snapshot for GET /health and /metrics, taken by the stepping thread after each step.
struct ModelStats {
  tinyllm::EngineMetrics engine;
  std::size_t submitted = 0, finished = 0, cancelled = 0;
  std::size_t in_flight = 0;
  std::string audit = "ok";       // Engine::audit() while idle: "ok" or what it found
  std::string error;              // the last exception a step threw, if any
  std::uint64_t prompt_tokens = 0, generated_tokens = 0;   // of finished requests
  // Seconds from submission to the first generated token, and between generated tokens.
  Histogram time_to_first_token{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
  Histogram time_per_output_token{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};
};

class ModelService {
 public:
  ModelService(std::string id, tinyllm::LoadedModel model, tinyllm::ThreadPool& pool, std::mutex& compute,
               const tinyllm::EngineOptions& opt, tinyllm::ChatTemplate chat_template,
               std::chrono::milliseconds step_delay = {})
      : id_(std::move(id)), model_(std::move(model)), engine_(model_, pool, opt), compute_(compute),
        chat_template_(std::move(chat_template)), step_delay_(step_delay) {
    // The token that ends an assistant turn (<|eot_id|>, <end_of_turn>, ...) when it is not EOS.
    for (const std::int32_t t : chat_template_.stop_tokens(model_.tokenizer()))
      if (t != model_.tokenizer().eos()) end_of_turn_ = t;
    {
      std::lock_guard<std::mutex> lock(stats_mutex_);
      stats_.engine = engine_.metrics();
    }
    thread_ = std::thread([this] { loop(); });
  }
  ModelService(const ModelService&) = delete;
  ModelService& operator=(const ModelService&) = delete;

  ~ModelService() {
    {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  const std::string& id() const { return id_; }

  // LoRA adapters served as "<id>:<name>" (model/lora.hpp). Thread-safe. Loading throws
  // tinyllm::Error for a bad file or one that does not fit this model; an adapter removed while
  // requests use it stays alive until they end (each request holds it).
  void add_adapter(const std::string& name, const std::string& path, float scale) {
    auto adapter = tinyllm::LoraAdapter::load(path, model_.model().config());
    std::lock_guard<std::mutex> lock(adapters_mutex_);
    if (adapters_.count(name)) throw tinyllm::Error("an adapter named '" + name + "' is already loaded", id_);
    adapters_[name] = {std::move(adapter), scale};
  }
  bool remove_adapter(const std::string& name) {
    std::lock_guard<std::mutex> lock(adapters_mutex_);
    return adapters_.erase(name) > 0;
  }
  std::optional<tinyllm::AdapterRef> adapter(const std::string& name) const {
    std::lock_guard<std::mutex> lock(adapters_mutex_);
    const auto it = adapters_.find(name);
    return it == adapters_.end() ? std::nullopt : std::optional(it->second);
  }
  std::map<std::string, tinyllm::AdapterRef> adapters() const {
    std::lock_guard<std::mutex> lock(adapters_mutex_);
    return adapters_;
  }
  const tinyllm::LoadedModel& model() const { return model_; }
  const tinyllm::ChatTemplate& chat_template() const { return chat_template_; }
  std::optional<std::int32_t> end_of_turn() const { return end_of_turn_; }

  // Thread-safe; throws tinyllm::Error as Engine::submit does. The callback runs on the stepping
  // thread and must not block.
  tinyllm::RequestId submit(tinyllm::Request req, tinyllm::Engine::Callback on_event) {
    auto wrapped = [this, cb = std::move(on_event)](const tinyllm::TokenEvent& e) {
      if (e.finished) {   // a sample (choice); with n > 1 the request ends with its last
        std::lock_guard<std::mutex> lock(stats_mutex_);
        const tinyllm::RequestMetrics& m = e.metrics;
        if (e.request_finished) {
          in_flight_.erase(e.id);
          ++stats_.finished;
          if (e.reason == tinyllm::FinishReason::cancelled) ++stats_.cancelled;
          stats_.prompt_tokens += m.prompt_tokens;   // once per request: its samples share the prompt
        }
        stats_.generated_tokens += m.generated_tokens;
        if (m.generated_tokens > 0) stats_.time_to_first_token.observe(m.first_token_seconds);
        if (m.generated_tokens > 1)
          stats_.time_per_output_token.observe((m.total_seconds - m.first_token_seconds) / double(m.generated_tokens - 1));
      }
      cb(e);
    };
    // Held across submit so the finished event (on the stepping thread) cannot precede the insert.
    std::lock_guard<std::mutex> lock(stats_mutex_);
    const tinyllm::RequestId id = engine_.submit(std::move(req), std::move(wrapped));
    in_flight_.insert(id);
    ++stats_.submitted;
    wake();
    return id;
  }

  void cancel(tinyllm::RequestId id) {
    engine_.cancel(id);
    wake();
  }

  void cancel_all() {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    for (tinyllm::RequestId id : in_flight_) engine_.cancel(id);
    wake();
  }

  // At shutdown, once no request can arrive: waits up to `timeout` for the engine to finish what
  // it holds, then audits it. Returns "ok: ..." when every KV block is free (the prefix cache's
  // count as free) and the audit passes, else what is wrong.
  std::string drain(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(compute_);
        const tinyllm::EngineMetrics m = engine_.metrics();
        const bool idle = m.running == 0 && m.waiting == 0 && stats().in_flight == 0;
        if (idle || std::chrono::steady_clock::now() >= end) {
          std::string audit = "ok";
          try {
            engine_.audit();
          } catch (const std::exception& e) {
            audit = e.what();
          }
          const std::string counts = std::to_string(m.blocks_used) + " of " + std::to_string(m.blocks_total) +
                                     " KV blocks in use, " + std::to_string(m.running + m.waiting) + " requests in the engine";
          if (idle && m.blocks_used == 0 && audit == "ok") return "ok: " + counts + ", audit ok";
          return "LEAK: " + counts + ", audit " + audit;
        }
      }
      wake();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  ModelStats stats() const {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    ModelStats s = stats_;
    s.in_flight = in_flight_.size();
    return s;
  }

 private:
  void wake() {
    {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      work_ = true;
    }
    wake_.notify_one();
  }

  void loop() {
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(wake_mutex_);
        if (stop_) return;
        work_ = false;   // a submit from now on sets it again, so the wait below cannot miss it
      }
      bool busy = false;
      std::string error, audit = "ok";
      {
        std::lock_guard<std::mutex> lock(compute_);
        try {
          busy = engine_.step();
        } catch (const std::exception& e) {
          error = e.what();
          busy = true;   // look again: the failed step may have left work
        }
        if (!busy) {
          try {
            engine_.audit();
          } catch (const std::exception& e) {
            audit = e.what();
          }
        }
      }
      publish(error, audit, busy);
      if (!error.empty()) {
        std::fprintf(stderr, "model %s: step failed: %s\n", id_.c_str(), error.c_str());
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (busy && step_delay_.count() > 0) std::this_thread::sleep_for(step_delay_);
      if (!busy) {
        std::unique_lock<std::mutex> lock(wake_mutex_);
        wake_.wait(lock, [&] { return stop_ || work_; });
      }
    }
  }

  void publish(const std::string& error, const std::string& audit, bool busy) {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats_.engine = engine_.metrics();
    if (!error.empty()) stats_.error = error;
    if (!busy) stats_.audit = audit;
  }

  std::string id_;
  tinyllm::LoadedModel model_;
  tinyllm::Engine engine_;
  std::mutex& compute_;
  tinyllm::ChatTemplate chat_template_;
  std::optional<std::int32_t> end_of_turn_;
  std::chrono::milliseconds step_delay_;   // a pause after each busy step (--step-delay-ms)

  mutable std::mutex adapters_mutex_;
  std::map<std::string, tinyllm::AdapterRef> adapters_;

  mutable std::mutex stats_mutex_;
  ModelStats stats_;
  std::unordered_set<tinyllm::RequestId> in_flight_;

  std::mutex wake_mutex_;
  std::condition_variable wake_;
  bool work_ = false, stop_ = false;
  std::thread thread_;
};

}  // namespace server
