// tinyllm-server: an OpenAI-compatible HTTP server over the continuous-batching engine.
//   tinyllm-server -m stories260K.bin -m model.gguf --synthetic --port 8080
// Each model (id: its file stem; the embedded random model is "default") has its own Engine, KV
// budget and stepping thread. See examples/server/README.md for the endpoints and fields.
#include "../common/device_flag.hpp"
#include "../common/progress.hpp"
#include "model_service.hpp"
#include "openai_api.hpp"

#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace server {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// One line per request on stderr: method, path, status, model, tokens, milliseconds.
void log_request(const httplib::Request& req, int status, const std::string& model, std::size_t prompt_tokens,
                 std::size_t completion_tokens, Clock::time_point start, const std::string& note = "") {
  std::fprintf(stderr, "%s %s %d model=%s prompt_tokens=%zu completion_tokens=%zu ms=%.1f%s%s\n",
               req.method.empty() ? "-" : req.method.c_str(), req.path.empty() ? "-" : req.path.c_str(), status, model.empty() ? "-" : model.c_str(), prompt_tokens, completion_tokens,
               ms_since(start), note.empty() ? "" : " ", note.c_str());
}

void reply_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

// One choice (sample) of a request, as the engine's callback (stepping thread) hands it to the
// HTTP thread serving the request.
struct ChoiceState {
  std::string text;                      // generated text not yet taken by the HTTP thread
  bool finished = false, finish_sent = false;
  tinyllm::FinishReason reason = tinyllm::FinishReason::none;
  tinyllm::RequestMetrics metrics;
  std::vector<LoggedToken> logged;       // each generated token's log-probabilities (when asked)
  std::size_t logged_sent = 0;           // how many of them a stream has sent
  std::size_t text_offset = 0;           // bytes of text streamed so far (legacy logprobs' text_offset)
};

struct RequestState {
  std::mutex m;
  std::condition_variable cv;
  std::vector<ChoiceState> choices;      // [n]
  bool finished = false;                 // every choice
  bool logprobs = false;                 // the request asked for them
  // Usage over the choices: the prompt once, the tokens of every choice.
  tinyllm::RequestMetrics usage() const {
    tinyllm::RequestMetrics u;
    for (const ChoiceState& c : choices) {
      u.prompt_tokens = c.metrics.prompt_tokens;
      u.generated_tokens += c.metrics.generated_tokens;
    }
    return u;
  }
};

// A request whose reply httplib sends in chunks, as its content provider and releaser see it.
struct Reply {
  std::shared_ptr<RequestState> st;
  ModelService* svc;
  tinyllm::RequestId id;
  Endpoint ep;
  std::string rid, model, method, path;
  std::int64_t created;
  Clock::time_point start;
  bool include_usage = false, started = false, done = false;
};

// The releaser of a chunked reply, called once httplib has sent it all (`success`) or given up on
// the client: a request the engine has not finished is cancelled, which frees its KV blocks; the
// request's log line says how it ended. `kind`: "" or "stream ".
void release_reply(const Reply& r, bool success, const char* kind) {
  tinyllm::RequestMetrics m;
  bool finished;
  std::string reasons;
  {
    std::lock_guard<std::mutex> lock(r.st->m);
    finished = r.st->finished;
    m = r.st->usage();
    for (const ChoiceState& c : r.st->choices) reasons += std::string(reasons.empty() ? "" : ",") + finish_reason(c.reason);
  }
  if (!finished) r.svc->cancel(r.id);
  std::fprintf(stderr, "%s %s 200 model=%s prompt_tokens=%zu completion_tokens=%zu ms=%.1f %s%s\n", r.method.c_str(),
               r.path.c_str(), r.model.c_str(), m.prompt_tokens, m.generated_tokens, ms_since(r.start), kind,
               success && r.done ? reasons.c_str()
               : finished        ? "client disconnected at the end"
                                 : "client disconnected: cancelled");
}

// Adapter names: they appear in "BASE:NAME" model ids and in URLs.
bool valid_adapter_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

bool valid_utf8(std::string_view s) {
  while (!s.empty()) {
    const tinyllm::Utf8Sequence q = tinyllm::next_utf8_sequence(s);
    if (q.kind != tinyllm::Utf8Sequence::Kind::complete) return false;
    s.remove_prefix(q.length);
  }
  return true;
}

// Whether `given` equals `key`, in a time that depends on neither's contents (nor on where they
// first differ), so a client cannot find the key a byte at a time by timing the replies.
bool same_key(const std::string& given, const std::string& key) {
  unsigned diff = given.size() != key.size();
  for (std::size_t i = 0; i < key.size(); ++i)
    diff |= static_cast<unsigned char>(key[i]) ^ static_cast<unsigned char>(i < given.size() ? given[i] : 0);
  return diff == 0;
}

// httplib's server with a longer queue of connections waiting to be accepted: httplib 0.11 listens
// with a backlog of 5, so a burst of clients (or a few slow ones) would leave the next ones
// retrying their SYN for seconds. listen() again on the bound socket sets the backlog (Linux).
class HttpServer : public httplib::Server {
 public:
  bool set_backlog(int backlog) { return ::listen(svr_sock_, backlog) == 0; }
};

// Limits a request must keep (tinyllm-server's flags); a request over one gets a 4xx naming it.
struct Limits {
  std::size_t max_prompt_tokens = 0;   // 0: the model's context
  std::size_t max_tokens = 0;          // the most a request may ask for; 0: the model's context
  std::size_t draft_tokens = 0;        // speculative decoding for requests that do not say (0: off)
};

// httplib's worker pool for connections, as a TaskQueue: a thread per open connection, started
// when none is idle, up to `max_threads` (then connections wait their turn); a thread idle for
// `idle` goes away. httplib reads a request on the thread that serves it, so with a fixed pool a
// few slow or half-open clients (sending a byte a second, "slowloris") could hold every worker;
// here they hold only their own, and the read and write timeouts bound how long a silent peer
// keeps it.
class ConnectionThreads : public httplib::TaskQueue {
 public:
  explicit ConnectionThreads(std::size_t max_threads, std::chrono::seconds idle = std::chrono::seconds(30))
      : max_threads_(std::max<std::size_t>(max_threads, 1)), idle_(idle) {}
  ~ConnectionThreads() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(m_);
    jobs_.push_back(std::move(fn));
    if (idle_threads_ >= jobs_.size() || threads_.size() - finished_.size() >= max_threads_) {
      cv_.notify_one();
      return;
    }
    reap();
    threads_.emplace_back([this] { work(); });
  }

  // Runs what was queued, then joins every thread (httplib calls it once it stops listening).
  void shutdown() override {
    std::list<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(m_);
      stopping_ = true;
      threads.swap(threads_);
      finished_.clear();
    }
    cv_.notify_all();
    for (std::thread& t : threads) t.join();
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      ++idle_threads_;
      const bool woke = cv_.wait_for(lock, idle_, [&] { return stopping_ || !jobs_.empty(); });
      --idle_threads_;
      if (jobs_.empty() && (stopping_ || !woke)) break;
      std::function<void()> fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
    if (!stopping_) finished_.push_back(std::this_thread::get_id());
  }

  // Joins the threads that have left work() (called with m_ held).
  void reap() {
    for (const std::thread::id id : finished_)
      for (auto it = threads_.begin(); it != threads_.end(); ++it)
        if (it->get_id() == id) {
          it->join();   // it has returned from work() or is about to
          threads_.erase(it);
          break;
        }
    finished_.clear();
  }

  const std::size_t max_threads_;
  const std::chrono::seconds idle_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::list<std::thread> threads_;
  std::vector<std::thread::id> finished_;
  std::size_t idle_threads_ = 0;
  bool stopping_ = false;
};

class Server {
 public:
  // lora_dir: where POST /v1/adapters may load adapter files from (empty: it may not).
  // api_key: what every /v1 request must carry as "Authorization: Bearer KEY" (empty: nothing).
  Server(std::vector<std::unique_ptr<ModelService>>& models, std::string lora_dir = "", std::string api_key = "",
         Limits limits = {})
      : models_(models), lora_dir_(std::move(lora_dir)), api_key_(std::move(api_key)), limits_(limits),
        rng_(std::random_device{}()) {}

  void routes(httplib::Server& http) {
    // With an API key, a request without it gets 401 before any route runs (/health stays open).
    http.set_pre_routing_handler([this](const httplib::Request& q, httplib::Response& r) {
      if (api_key_.empty() || q.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = q.get_header_value("Authorization");
      const std::string bearer = "Bearer ";
      if (auth.rfind(bearer, 0) == 0 && same_key(auth.substr(bearer.size()), api_key_))
        return httplib::Server::HandlerResponse::Unhandled;
      const auto start = Clock::now();
      reply_json(r, 401, ApiError{.status = 401, .message = "missing or wrong API key: send \"Authorization: Bearer KEY\"",
                                  .code = "invalid_api_key"}.to_json());
      log_request(q, 401, "", 0, 0, start);
      return httplib::Server::HandlerResponse::Handled;
    });
    http.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& r) { generate(q, r, Endpoint::completions); });
    http.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& r) { generate(q, r, Endpoint::chat); });
    http.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& r) { list_models(q, r); });
    http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& q, httplib::Response& r) { get_model(q, r); });
    http.Get("/health", [this](const httplib::Request& q, httplib::Response& r) { health(q, r); });
    http.Get("/metrics", [this](const httplib::Request& q, httplib::Response& r) { metrics(q, r); });
    http.Post("/tokenize", [this](const httplib::Request& q, httplib::Response& r) { tokenize(q, r); });
    http.Post("/detokenize", [this](const httplib::Request& q, httplib::Response& r) { detokenize(q, r); });
    // Every answered request, by status, for /metrics (httplib calls this after each reply).
    http.set_logger([this](const httplib::Request&, const httplib::Response& r) {
      std::lock_guard<std::mutex> lock(status_mutex_);
      ++status_counts_[r.status];
    });
    http.Get("/v1/adapters", [this](const httplib::Request& q, httplib::Response& r) { list_adapters(q, r); });
    http.Post("/v1/adapters", [this](const httplib::Request& q, httplib::Response& r) { load_adapter(q, r); });
    http.Delete(R"(/v1/adapters/(.+))", [this](const httplib::Request& q, httplib::Response& r) { unload_adapter(q, r); });
    // Statuses httplib sets itself (no route: 404; a body over the limit: 413; ...) get an
    // OpenAI-style body too. Replies that already have one pass through.
    http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& q, httplib::Response& r) {
      if (!r.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      const auto start = Clock::now();
      ApiError e{.status = r.status, .message = "HTTP status " + std::to_string(r.status) + " for " + q.method + " " + q.path};
      if (r.status == 404) {
        e.message = "no such endpoint: " + q.method + " " + q.path;
        e.code = "not_found";
      } else if (r.status == 413) {
        e.message = "the request body is too large";
      } else if (r.status >= 500) {
        e.type = "server_error";
      }
      reply_json(r, r.status, e.to_json());
      log_request(q, r.status, "", 0, 0, start);
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request& q, httplib::Response& r, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      reply_json(r, 500, ApiError{.status = 500, .message = what, .type = "server_error"}.to_json());
      log_request(q, 500, "", 0, 0, Clock::now(), what);
    });
  }

  // Shutting down: from now on generation requests get 503 `shutting_down`.
  void refuse_new_requests() { shutting_down_ = true; }
  std::size_t in_flight() const {
    std::size_t n = 0;
    for (const auto& m : models_) n += m->stats().in_flight;
    return n;
  }
  void cancel_all() {
    for (auto& m : models_) m->cancel_all();
  }

 private:
  // What a request's "model" names: a base model, "BASE:ADAPTER", or an adapter's name alone
  // where one model has it.
  struct Route {
    ModelService* svc = nullptr;
    std::vector<tinyllm::AdapterRef> adapters;
    std::string id;   // echoed in replies
  };
  Route route(const std::string& model) {
    auto not_found = [&] {
      return ApiError{.status = 404, .message = "the model '" + model + "' does not exist", .param = "model",
                      .code = "model_not_found"};
    };
    if (model.empty()) {
      if (models_.size() == 1) return {models_[0].get(), {}, models_[0]->id()};
      throw ApiError{.status = 400, .message = "'model' is required when several models are served", .param = "model"};
    }
    for (auto& m : models_)
      if (m->id() == model) return {m.get(), {}, m->id()};
    if (const auto colon = model.find(':'); colon != std::string::npos) {
      for (auto& m : models_)
        if (m->id() == model.substr(0, colon))
          if (const auto a = m->adapter(model.substr(colon + 1))) return {m.get(), {*a}, model};
      throw not_found();
    }
    Route found;
    for (auto& m : models_)
      if (const auto a = m->adapter(model)) {
        if (found.svc)
          throw ApiError{.status = 400, .message = "the adapter '" + model + "' is loaded for several models: name one as '" +
                                                       found.svc->id() + ":" + model + "'", .param = "model"};
        found = {m.get(), {*a}, model};
      }
    if (!found.svc) throw not_found();
    return found;
  }

  tinyllm::Request engine_request(const ParsedRequest& p, const ModelService& svc) {
    const tinyllm::Tokenizer& tok = svc.model().tokenizer();
    const tinyllm::Tokenizer::EncodeOptions encode{.add_special = true, .parse_special = true};
    tinyllm::Request r;
    if (p.endpoint == Endpoint::chat) {
      for (std::size_t i = 0; i < p.messages.size(); ++i) {
        const std::string& role = p.messages[i].role;
        if (role != "system" && role != "user" && role != "assistant")
          throw bad_field("messages[" + std::to_string(i) + "].role", "role '" + role + "' is not system, user or assistant");
      }
      r.tokens = tinyllm::chat_prompt_tokens(tok, svc.chat_template().render(p.messages, true));
    } else {
      r.tokens = p.prompt_tokens.empty() ? tok.encode(p.prompt, encode) : p.prompt_tokens;
    }
    const std::size_t context = svc.model().config().context;
    if (limits_.max_prompt_tokens && r.tokens.size() > limits_.max_prompt_tokens)
      throw ApiError{.status = 400,
                     .message = "the prompt has " + std::to_string(r.tokens.size()) + " tokens, more than this server takes (" +
                                std::to_string(limits_.max_prompt_tokens) + ", --max-prompt-tokens)",
                     .param = p.endpoint == Endpoint::chat ? "messages" : "prompt", .code = "context_length_exceeded"};
    const std::size_t max_tokens = limits_.max_tokens ? limits_.max_tokens : context;
    if (p.max_tokens && *p.max_tokens > max_tokens)
      throw ApiError{.status = 400,
                     .message = std::string(p.max_tokens_field) + " is " + std::to_string(*p.max_tokens) + ", more than " +
                                (limits_.max_tokens ? "this server allows (" + std::to_string(max_tokens) + ", --max-tokens)"
                                                    : "the model's context (" + std::to_string(context) + " tokens)"),
                     .param = p.max_tokens_field};
    // OpenAI's defaults: 16 tokens for a completion; a chat reply may run to the end of the context.
    r.max_tokens = p.max_tokens.value_or(p.endpoint == Endpoint::chat ? max_tokens : std::min<std::size_t>(16, max_tokens));
    r.sampling = p.sampling;
    if (!p.seeded) {
      std::lock_guard<std::mutex> lock(rng_mutex_);
      r.sampling.seed = rng_();
    }
    r.stop = p.stop;
    r.logprobs = p.logprobs;
    r.n = p.n;
    r.draft_tokens = p.draft_tokens.value_or(limits_.draft_tokens);
    r.grammar = p.grammar;
    if (const auto eot = svc.end_of_turn()) r.stop_tokens.push_back(*eot);   // the chat template's end of turn
    return r;
  }

  void generate(const httplib::Request& req, httplib::Response& res, Endpoint ep) {
    const auto start = Clock::now();
    std::string model_id;
    try {
      const json body = object_body(req);
      ParsedRequest p = parse_request(body, ep);
      if (body.contains("response_format"))
        p.grammar = response_format_grammar(nlohmann::ordered_json::parse(req.body));
      if (shutting_down_)
        throw ApiError{.status = 503, .message = "the server is shutting down", .type = "server_error", .code = "shutting_down"};
      Route to = route(p.model);
      ModelService& svc = *to.svc;
      model_id = to.id;
      tinyllm::Request r = engine_request(p, svc);
      r.adapters = std::move(to.adapters);

      auto st = std::make_shared<RequestState>();
      st->logprobs = p.logprobs >= 0;
      st->choices.resize(p.n);
      ModelService* svcp = &svc;
      auto on_event = [st, svcp](const tinyllm::TokenEvent& e) {
        LoggedToken logged;
        // An end of turn or EOS ends the reply: no text, no entry (as OpenAI's replies).
        const bool log = e.logprobs && !(e.finished && e.reason == tinyllm::FinishReason::eos);
        if (log) {   // the texts, before taking the lock
          const tinyllm::Tokenizer& tok = svcp->model().tokenizer();
          logged.text = tok.decode(e.token);
          logged.logprob = e.logprobs->chosen.logprob;
          for (const tinyllm::TokenLogprob& t : e.logprobs->top) logged.top.emplace_back(tok.decode(t.token), t.logprob);
        }
        {
          std::lock_guard<std::mutex> lock(st->m);
          ChoiceState& c = st->choices.at(e.index);
          if (log) c.logged.push_back(std::move(logged));
          c.text += e.text;
          if (e.finished) {
            c.finished = true;
            c.reason = e.reason;
            c.metrics = e.metrics;
          }
          if (e.request_finished) st->finished = true;
        }
        st->cv.notify_all();
      };
      tinyllm::RequestId id = 0;
      try {
        id = svc.submit(r, on_event);
      } catch (const tinyllm::Error& e) {
        const std::string what = e.what();
        if (what.find("does not fit") != std::string::npos)
          throw ApiError{.status = 400,
                         .message = "the prompt (" + std::to_string(r.tokens.size()) + " tokens) does not fit the model's context or KV cache: " + what,
                         .param = ep == Endpoint::chat ? "messages" : "prompt", .code = "context_length_exceeded"};
        if (what.find("queue is full") != std::string::npos)
          throw ApiError{.status = 503, .message = "the server is busy (its request queue is full); try again later",
                         .type = "server_error", .code = "queue_full"};
        throw;
      }

      const std::string rid = (ep == Endpoint::chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
      const std::int64_t created = std::int64_t(std::time(nullptr));
      if (p.stream) stream(req, res, ep, st, svc, model_id, id, rid, created, p.include_usage, start);
      else answer_when_finished(req, res, ep, st, svc, model_id, id, rid, created, start);
    } catch (const ApiError& e) {
      reply_json(res, e.status, e.to_json());
      if (e.status == 503) res.set_header("Retry-After", "1");
      log_request(req, e.status, model_id, 0, 0, start, e.message);
    } catch (const tinyllm::Error& e) {
      const ApiError a{.status = 400, .message = e.what()};
      reply_json(res, a.status, a.to_json());
      log_request(req, a.status, model_id, 0, 0, start, e.what());
    }
  }

  // A non-streamed reply, sent as one JSON object when the request finishes. httplib 0.11 cannot
  // tell a handler that its client went away, and a closed peer is only noticed by writing to it.
  // So the reply is a chunked body, and while the request runs the server writes a space (leading
  // whitespace is legal JSON) every half second: once the client has gone, a write fails (the
  // second one after the close at the latest) and the resource releaser cancels the request,
  // which frees its KV blocks. A request that finishes within half a second writes only its JSON.
  void answer_when_finished(const httplib::Request& req, httplib::Response& res, Endpoint ep,
                            std::shared_ptr<RequestState> st, ModelService& svc, const std::string& model_id,
                            tinyllm::RequestId id, const std::string& rid, std::int64_t created, Clock::time_point start) {
    auto ctx = std::make_shared<Reply>(Reply{st, &svc, id, ep, rid, model_id, req.method, req.path, created, start});
    res.status = 200;
    res.set_chunked_content_provider(
        "application/json",
        [ctx](std::size_t, httplib::DataSink& sink) {
          std::string body;
          {
            std::unique_lock<std::mutex> lock(ctx->st->m);
            if (!ctx->st->cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return ctx->st->finished; })) {
              lock.unlock();
              return sink.write(" ", 1);   // false once the client has gone: httplib then stops
            }
            json choices = json::array();
            for (std::size_t i = 0; i < ctx->st->choices.size(); ++i) {
              const ChoiceState& c = ctx->st->choices[i];
              choices.push_back(choice_json(ctx->ep, i, c.text, c.reason,
                                            ctx->st->logprobs ? logprobs_json(ctx->ep, c.logged) : json(nullptr)));
            }
            body = dump(completion_json(ctx->ep, ctx->rid, ctx->created, ctx->model, std::move(choices), ctx->st->usage()));
          }
          if (!sink.write(body.data(), body.size())) return false;
          ctx->done = true;
          sink.done();
          return true;
        },
        [ctx](bool success) { release_reply(*ctx, success, ""); });
  }

  // Server-sent events in OpenAI's chunk format, ending with "data: [DONE]". A failed write (the
  // client went away) ends the stream, and the resource releaser then cancels the request.
  void stream(const httplib::Request& req, httplib::Response& res, Endpoint ep, std::shared_ptr<RequestState> st,
              ModelService& svc, const std::string& model_id, tinyllm::RequestId id, const std::string& rid,
              std::int64_t created, bool include_usage, Clock::time_point start) {
    auto ctx = std::make_shared<Reply>(
        Reply{st, &svc, id, ep, rid, model_id, req.method, req.path, created, start, include_usage});
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [ctx](std::size_t, httplib::DataSink& sink) {
          auto send = [&](const json& j) {
            const std::string s = sse(j);
            return sink.write(s.data(), s.size());
          };
          if (!ctx->started) {
            ctx->started = true;
            if (ctx->ep == Endpoint::chat)
              for (std::size_t i = 0; i < ctx->st->choices.size(); ++i)
                if (!send(chunk_json(ctx->ep, ctx->rid, ctx->created, ctx->model, i, {{"role", "assistant"}, {"content", ""}},
                                     nullptr)))
                  return false;
          }
          // What each choice has for the client: new text, log-probabilities, its end.
          struct Out {
            std::string text;
            std::vector<LoggedToken> logged;
            std::size_t offset = 0;
            const char* finish = nullptr;
          };
          std::vector<Out> out(ctx->st->choices.size());
          bool all_done = false;
          tinyllm::RequestMetrics usage;
          {
            auto pending = [&] {
              for (const ChoiceState& c : ctx->st->choices)
                if (!c.text.empty() || c.logged.size() > c.logged_sent || (c.finished && !c.finish_sent)) return true;
              return ctx->st->finished;
            };
            std::unique_lock<std::mutex> lock(ctx->st->m);
            while (!pending()) {
              if (ctx->st->cv.wait_for(lock, std::chrono::seconds(1)) == std::cv_status::timeout) {
                lock.unlock();
                if (!sink.is_writable()) return false;
                lock.lock();
              }
            }
            for (std::size_t i = 0; i < out.size(); ++i) {
              ChoiceState& c = ctx->st->choices[i];
              out[i].text.swap(c.text);
              out[i].logged.assign(c.logged.begin() + std::ptrdiff_t(c.logged_sent), c.logged.end());
              c.logged_sent = c.logged.size();
              out[i].offset = c.text_offset;
              for (const LoggedToken& t : out[i].logged) c.text_offset += t.text.size();
              if (c.finished && !c.finish_sent) {
                c.finish_sent = true;
                out[i].finish = finish_reason(c.reason);
              }
            }
            all_done = ctx->st->finished;
            usage = ctx->st->usage();
          }
          const json empty = ctx->ep == Endpoint::chat ? json::object() : json("");
          for (std::size_t i = 0; i < out.size(); ++i) {
            const Out& o = out[i];
            if (!o.text.empty() || !o.logged.empty()) {
              const json delta = ctx->ep == Endpoint::chat ? json{{"content", o.text}} : json(o.text);
              json lp = ctx->st->logprobs ? logprobs_json(ctx->ep, o.logged, o.offset) : json(nullptr);
              if (!send(chunk_json(ctx->ep, ctx->rid, ctx->created, ctx->model, i, delta, nullptr, std::move(lp)))) return false;
            }
            if (o.finish && !send(chunk_json(ctx->ep, ctx->rid, ctx->created, ctx->model, i, empty, o.finish))) return false;
          }
          if (all_done) {
            if (ctx->include_usage) {
              json u = chunk_json(ctx->ep, ctx->rid, ctx->created, ctx->model, 0, empty, nullptr);
              u["choices"] = json::array();
              u["usage"] = usage_json(usage);
              if (!send(u)) return false;
            }
            static constexpr char kDone[] = "data: [DONE]\n\n";
            if (!sink.write(kDone, sizeof(kDone) - 1)) return false;
            ctx->done = true;
            sink.done();
          }
          return true;
        },
        [ctx](bool success) { release_reply(*ctx, success, "stream "); });
  }

  json model_json(const ModelService& m) const {
    return {{"id", m.id()}, {"object", "model"}, {"created", started_}, {"owned_by", "tinyllm"}};
  }
  json adapter_json(const ModelService& m, const std::string& name, const tinyllm::AdapterRef& a) const {
    return {{"id", m.id() + ":" + name}, {"object", "model"}, {"created", started_}, {"owned_by", "tinyllm"},
            {"parent", m.id()}, {"adapter", {{"name", name}, {"type", "lora"}, {"scale", a.scale},
                                             {"alpha", a.adapter->alpha()}, {"rank", a.adapter->max_rank()}}}};
  }
  json models_list() const {
    json data = json::array();
    for (const auto& m : models_) {
      data.push_back(model_json(*m));
      for (const auto& [name, a] : m->adapters()) data.push_back(adapter_json(*m, name, a));
    }
    return data;
  }

  void list_models(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    reply_json(res, 200, {{"object", "list"}, {"data", models_list()}});
    log_request(req, 200, "", 0, 0, start);
  }

  void get_model(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    const std::string id = req.matches[1];
    for (const json& m : models_list())
      if (m["id"] == id) {
        reply_json(res, 200, m);
        log_request(req, 200, id, 0, 0, start);
        return;
      }
    const ApiError e{.status = 404, .message = "the model '" + id + "' does not exist", .param = "model", .code = "model_not_found"};
    reply_json(res, 404, e.to_json());
    log_request(req, 404, id, 0, 0, start);
  }

  // LoRA adapters at run time. GET lists them; POST {"name", "path", "model"?, "scale"?} loads
  // path (a file name inside --lora-dir) for the named base model, or for every served model it
  // fits; DELETE /v1/adapters/NAME (or BASE:NAME) unloads it: requests already running keep it.
  void list_adapters(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    json data = json::array();
    for (const auto& m : models_)
      for (const auto& [name, a] : m->adapters()) data.push_back(adapter_json(*m, name, a));
    reply_json(res, 200, {{"object", "list"}, {"data", data}});
    log_request(req, 200, "", 0, 0, start);
  }

  void load_adapter(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    try {
      if (lora_dir_.empty())
        throw ApiError{.status = 403, .message = "loading adapters over HTTP is off (start the server with --lora-dir DIR)"};
      const json body = object_body(req);
      auto text = [&](const char* key, bool required) -> std::string {
        const auto it = body.find(key);
        if (it == body.end() || it->is_null()) {
          if (required) throw ApiError{.status = 400, .message = std::string("'") + key + "' is required", .param = key};
          return "";
        }
        if (!it->is_string()) throw ApiError{.status = 400, .message = std::string("'") + key + "' must be a string", .param = key};
        return it->get<std::string>();
      };
      const std::string name = text("name", true), file = text("path", true), base = text("model", false);
      if (!valid_adapter_name(name))
        throw ApiError{.status = 400, .message = "adapter names are 1 to 64 letters, digits, '.', '_' or '-'", .param = "name"};
      if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos || file[0] == '.')
        throw ApiError{.status = 400, .message = "'path' must be a file name inside the server's --lora-dir", .param = "path"};
      float scale = 1.0f;
      if (const auto it = body.find("scale"); it != body.end() && !it->is_null()) {
        if (!it->is_number() || !std::isfinite(it->get<double>()) || std::fabs(it->get<double>()) > 1e4)
          throw ApiError{.status = 400, .message = "'scale' must be a finite number", .param = "scale"};
        scale = it->get<float>();
      }
      const std::string path = (std::filesystem::path(lora_dir_) / file).string();
      json loaded = json::array();
      std::string why;
      for (auto& m : models_) {
        if (!base.empty() && m->id() != base) continue;
        try {
          m->add_adapter(name, path, scale);
          loaded.push_back(adapter_json(*m, name, *m->adapter(name)));
        } catch (const tinyllm::Error& e) {
          why = e.what();
        }
      }
      if (!base.empty() && why.empty() && loaded.empty())
        throw ApiError{.status = 404, .message = "the model '" + base + "' does not exist", .param = "model", .code = "model_not_found"};
      if (loaded.empty()) throw ApiError{.status = 400, .message = "the adapter was not loaded: " + why, .param = "path"};
      reply_json(res, 200, {{"object", "list"}, {"data", loaded}});
      log_request(req, 200, name, 0, 0, start);
    } catch (const ApiError& e) {
      reply_json(res, e.status, e.to_json());
      log_request(req, e.status, "", 0, 0, start, e.message);
    }
  }

  void unload_adapter(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    const std::string id = req.matches[1];
    const auto colon = id.find(':');
    std::size_t removed = 0;
    for (auto& m : models_)
      if (colon == std::string::npos || m->id() == id.substr(0, colon))
        removed += m->remove_adapter(colon == std::string::npos ? id : id.substr(colon + 1));
    if (removed == 0) {
      const ApiError e{.status = 404, .message = "no adapter '" + id + "' is loaded", .param = "model", .code = "model_not_found"};
      reply_json(res, 404, e.to_json());
      log_request(req, 404, id, 0, 0, start, e.message);
      return;
    }
    reply_json(res, 200, {{"id", id}, {"object", "adapter"}, {"deleted", true}});
    log_request(req, 200, id, 0, 0, start);
  }

  // A JSON object body, or ApiError 400.
  static json object_body(const httplib::Request& req) {
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::exception& e) {
      throw ApiError{.status = 400, .message = std::string("the request body is not valid JSON: ") + e.what()};
    }
    if (!body.is_object()) throw ApiError{.status = 400, .message = "the request body must be a JSON object"};
    return body;
  }
  // The model a /tokenize or /detokenize body names ("model", optional with one model served).
  ModelService& model_of(const json& body) {
    std::string model;
    if (const auto it = body.find("model"); it != body.end() && !it->is_null()) {
      if (!it->is_string()) throw ApiError{.status = 400, .message = "'model' must be a string", .param = "model"};
      model = it->get<std::string>();
    }
    return *route(model).svc;
  }
  static bool flag(const json& body, const char* key) {
    const auto it = body.find(key);
    if (it == body.end() || it->is_null()) return false;
    if (!it->is_boolean()) throw ApiError{.status = 400, .message = std::string("'") + key + "' must be true or false", .param = key};
    return it->get<bool>();
  }

  // llama-server's POST /tokenize: {"content": TEXT, "add_special"?: false, "with_pieces"?: false,
  // "model"?} -> {"tokens": [ids]} (special tokens written in the text are parsed as such), or
  // with_pieces [{"id", "piece"}] where piece is the token's text (a byte array when the token
  // alone is not valid UTF-8, as llama-server does).
  void tokenize(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    try {
      const json body = object_body(req);
      ModelService& svc = model_of(body);
      const auto content = body.find("content");
      if (content == body.end() || !content->is_string())
        throw ApiError{.status = 400, .message = "'content' must be a string", .param = "content"};
      const tinyllm::Tokenizer& tok = svc.model().tokenizer();
      const auto ids = tok.encode(content->get<std::string>(), {.add_special = flag(body, "add_special"), .parse_special = true});
      json tokens = json::array();
      if (flag(body, "with_pieces")) {
        for (const std::int32_t id : ids) {
          const std::string piece = tok.decode(id);
          json p = valid_utf8(piece) ? json(piece) : utf8_bytes(piece);
          tokens.push_back({{"id", id}, {"piece", std::move(p)}});
        }
      } else {
        tokens = ids;
      }
      reply_json(res, 200, {{"tokens", std::move(tokens)}});
      log_request(req, 200, svc.id(), ids.size(), 0, start);
    } catch (const ApiError& e) {
      reply_json(res, e.status, e.to_json());
      log_request(req, e.status, "", 0, 0, start, e.message);
    }
  }

  // llama-server's POST /detokenize: {"tokens": [ids], "model"?} -> {"content": TEXT}.
  void detokenize(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    try {
      const json body = object_body(req);
      ModelService& svc = model_of(body);
      const tinyllm::Tokenizer& tok = svc.model().tokenizer();
      const auto tokens = body.find("tokens");
      if (tokens == body.end() || !tokens->is_array())
        throw ApiError{.status = 400, .message = "'tokens' must be an array of token ids", .param = "tokens"};
      std::vector<std::int32_t> ids;
      for (const json& t : *tokens) {
        if (!t.is_number_integer() || t.get<std::int64_t>() < 0 || t.get<std::int64_t>() >= std::int64_t(tok.size()))
          throw ApiError{.status = 400, .message = "'tokens' holds " + t.dump() + ", not a token id of this model (0 to " +
                                                   std::to_string(tok.size() - 1) + ")", .param = "tokens"};
        ids.push_back(t.get<std::int32_t>());
      }
      reply_json(res, 200, {{"content", tok.decode(ids)}});
      log_request(req, 200, svc.id(), ids.size(), 0, start);
    } catch (const ApiError& e) {
      reply_json(res, e.status, e.to_json());
      log_request(req, e.status, "", 0, 0, start, e.message);
    }
  }

  // GET /metrics in Prometheus' text format (version 0.0.4).
  void metrics(const httplib::Request& req, httplib::Response& res) {
    std::string out;
    auto line = [&](const std::string& s) { out += s + "\n"; };
    auto head = [&](const char* name, const char* type, const char* help) {
      line(std::string("# HELP ") + name + " " + help);
      line(std::string("# TYPE ") + name + " " + type);
    };
    auto num = [](double x) { return json(x).dump(); };
    head("tinyllm_requests_total", "counter", "HTTP requests answered, by status code.");
    {
      std::lock_guard<std::mutex> lock(status_mutex_);
      for (const auto& [status, n] : status_counts_) line("tinyllm_requests_total{status=\"" + std::to_string(status) + "\"} " + std::to_string(n));
    }
    std::vector<std::pair<std::string, ModelStats>> stats;
    for (const auto& m : models_) stats.emplace_back("{model=\"" + m->id() + "\"}", m->stats());
    auto per_model = [&](const char* name, const char* type, const char* help, auto value) {
      head(name, type, help);
      for (const auto& [labels, s] : stats) line(name + labels + " " + std::to_string(value(s)));
    };
    per_model("tinyllm_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", [](const ModelStats& s) { return s.prompt_tokens; });
    per_model("tinyllm_generation_tokens_total", "counter", "Tokens generated by finished requests.", [](const ModelStats& s) { return s.generated_tokens; });
    per_model("tinyllm_requests_finished_total", "counter", "Requests the engine finished (cancelled ones included).", [](const ModelStats& s) { return s.finished; });
    per_model("tinyllm_requests_cancelled_total", "counter", "Requests cancelled (client gone, end of turn, shutdown).", [](const ModelStats& s) { return s.cancelled; });
    per_model("tinyllm_requests_running", "gauge", "Requests being decoded.", [](const ModelStats& s) { return s.engine.running; });
    per_model("tinyllm_requests_waiting", "gauge", "Requests in the queue.", [](const ModelStats& s) { return s.engine.waiting; });
    per_model("tinyllm_kv_blocks_used", "gauge", "KV cache blocks held by requests.", [](const ModelStats& s) { return s.engine.blocks_used; });
    per_model("tinyllm_kv_blocks_free", "gauge", "KV cache blocks free (the prefix cache's included).", [](const ModelStats& s) { return s.engine.blocks_free; });
    per_model("tinyllm_kv_blocks_total", "gauge", "KV cache blocks in the budget.", [](const ModelStats& s) { return s.engine.blocks_total; });
    per_model("tinyllm_kv_blocks_shared", "gauge", "KV cache blocks held by more than one sequence (prefixes, n > 1).", [](const ModelStats& s) { return s.engine.blocks_shared; });
    per_model("tinyllm_kv_block_references", "gauge", "References to KV cache blocks; minus the blocks used: blocks saved by sharing.", [](const ModelStats& s) { return s.engine.block_references; });
    per_model("tinyllm_draft_tokens_total", "counter", "Tokens drafted by speculative decoding (prompt lookup or the draft model).", [](const ModelStats& s) { return s.engine.draft_tokens; });
    per_model("tinyllm_draft_tokens_accepted_total", "counter", "Drafted tokens the model's own sampling agreed with (kept).", [](const ModelStats& s) { return s.engine.accepted_draft_tokens; });
    per_model("tinyllm_preemptions_total", "counter", "Requests preempted for KV space.", [](const ModelStats& s) { return s.engine.preemptions; });
    auto histogram = [&](const char* name, const char* help, Histogram ModelStats::*h) {
      head(name, "histogram", help);
      for (const auto& [labels, s] : stats) {
        const Histogram& x = s.*h;
        const std::string model = labels.substr(1, labels.size() - 2);   // model="..."
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= x.bounds.size(); ++i) {
          cumulative += x.counts[i];
          const std::string le = i < x.bounds.size() ? num(x.bounds[i]) : "+Inf";
          line(std::string(name) + "_bucket{" + model + ",le=\"" + le + "\"} " + std::to_string(cumulative));
        }
        line(std::string(name) + "_sum" + labels + " " + num(x.sum));
        line(std::string(name) + "_count" + labels + " " + std::to_string(x.count));
      }
    };
    histogram("tinyllm_time_to_first_token_seconds", "Seconds from submission to the first generated token.",
              &ModelStats::time_to_first_token);
    histogram("tinyllm_time_per_output_token_seconds", "Mean seconds between generated tokens, per request.",
              &ModelStats::time_per_output_token);
    res.status = 200;
    res.set_content(out, "text/plain; version=0.0.4; charset=utf-8");
    log_request(req, 200, "", 0, 0, Clock::now());
  }

  // Status, and per model the KV blocks (used = held by running requests; blocks released to the
  // prefix cache count as free), the scheduler's queues and the engine's own block audit.
  void health(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    json models = json::array();
    bool ok = true;
    for (const auto& m : models_) {
      const ModelStats s = m->stats();
      ok = ok && s.error.empty() && s.audit == "ok";
      models.push_back({{"id", m->id()},
                        {"kv_blocks", {{"used", s.engine.blocks_used}, {"free", s.engine.blocks_free}, {"total", s.engine.blocks_total},
                                       {"shared", s.engine.blocks_shared}, {"references", s.engine.block_references}}},
                        {"running", s.engine.running},
                        {"waiting", s.engine.waiting},
                        {"in_flight", s.in_flight},
                        {"requests", {{"submitted", s.submitted}, {"finished", s.finished}, {"cancelled", s.cancelled}}},
                        {"preemptions", s.engine.preemptions},
                        {"draft_tokens", {{"drafted", s.engine.draft_tokens}, {"accepted", s.engine.accepted_draft_tokens}}},
                        {"steps", s.engine.steps},
                        {"prefix_hit_rate", s.engine.prefix_hit_rate()},
                        {"kv_audit", s.audit},
                        {"error", s.error.empty() ? json(nullptr) : json(s.error)}});
    }
    reply_json(res, 200, {{"status", ok ? "ok" : "error"}, {"models", models}});
    log_request(req, 200, "", 0, 0, start);
  }

  std::vector<std::unique_ptr<ModelService>>& models_;
  std::string lora_dir_;
  std::string api_key_;
  Limits limits_;
  std::atomic<bool> shutting_down_{false};
  std::mutex status_mutex_;
  std::map<int, std::uint64_t> status_counts_;   // answered requests by HTTP status, for /metrics
  std::mutex rng_mutex_;
  std::mt19937_64 rng_;
  std::atomic<std::uint64_t> next_id_{1};
  std::int64_t started_ = std::int64_t(std::time(nullptr));
};

// The chat template: --chat-template when given, else the model's own Jinja template, else the
// plain "role: content" rendering.
tinyllm::ChatTemplate chat_template_for(const tinyllm::LoadedModel& lm, const std::string& forced) {
  return tinyllm::ChatTemplate::for_model(lm.chat_template(), &lm.tokenizer(), forced, lm.path());
}

}  // namespace
}  // namespace server

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-server: an OpenAI-compatible server (completions, chat completions, streaming)"};
  std::vector<std::string> model_paths, tokenizer_paths;
  std::string host = "127.0.0.1", chat_template;
  int port = 8080;
  unsigned threads = 0;
  std::size_t kv_mib = 256, parallel = 8, max_queue = 64, batch_tokens = 256, http_threads = 1024, max_body_mib = 16;
  unsigned read_timeout = 10, write_timeout = 10, shutdown_grace = 0;
  server::Limits limits;
  bool synthetic = false;
  unsigned step_delay_ms = 0;
  std::string kv_type = "f16";  // as llama.cpp's default cache type
  app.add_option("-m,--model", model_paths, "model file (.gguf or llama2.c .bin); repeat to serve several; id = file stem");
  app.add_option("-z,--tokenizer", tokenizer_paths, "llama2.c tokenizer .bin for the -m at the same position (or for all, given once)");
  app.add_flag("--synthetic", synthetic, "also serve the embedded random model as \"default\" (the default with no -m)");
  app.add_option("--host", host, "address to listen on")->capture_default_str();
  app.add_option("--port", port, "port; 0 = any free port (printed on stdout)")->capture_default_str();
  app.add_option("-t,--threads", threads, "compute threads, shared by all models; 0 = all cores");
  app.add_option("--kv-mib", kv_mib, "KV cache budget per model in MiB")->capture_default_str();
  app.add_option("--kv-type", kv_type, "K/V storage: f16 (twice the blocks of f32 in the budget), q8_0 (1.88x f16's) or f32")
      ->check(CLI::IsMember({"f32", "f16", "q8_0"}))->capture_default_str();
  app.add_option("--parallel", parallel, "sequences decoded together per model at most")->capture_default_str();
  app.add_option("--max-queue", max_queue, "waiting requests per model at most (then 503); 0 = unbounded")->capture_default_str();
  app.add_option("--batch-tokens", batch_tokens, "tokens per engine step")->capture_default_str();
  app.add_option("--http-threads", http_threads, "open connections served at once, one thread each, started as needed "
                                                 "(more wait their turn)")->capture_default_str();
  app.add_option("--max-body-mib", max_body_mib, "request bodies larger than this get 413")->capture_default_str();
  app.add_option("--max-prompt-tokens", limits.max_prompt_tokens, "longer prompts get 400; 0 = the model's context")
      ->capture_default_str();
  app.add_option("--draft", limits.draft_tokens, "speculative decoding: tokens drafted per step for requests without "
                                                "\"draft_tokens\"; 0 = off")->capture_default_str();
  std::string draft_model_path;
  float draft_p_min = 0;
  app.add_option("--draft-model", draft_model_path, "speculative decoding's drafts come from this smaller model (the same "
                                                    "vocabulary as every -m) instead of prompt lookup");
  app.add_option("--draft-p-min", draft_p_min, "with --draft-model: a draft stops at a token the draft model gives less "
                                               "than this probability")->capture_default_str();
  app.add_option("--max-tokens", limits.max_tokens, "a larger max_tokens gets 400; 0 = the model's context")->capture_default_str();
  app.add_option("--read-timeout", read_timeout, "seconds a connection may stay silent while the server reads from it")
      ->check(CLI::Range(1u, 3600u))->capture_default_str();
  app.add_option("--write-timeout", write_timeout, "seconds a write to a client that does not read may block")
      ->check(CLI::Range(1u, 3600u))->capture_default_str();
  app.add_option("--shutdown-grace", shutdown_grace, "on SIGTERM/SIGINT, seconds running requests may take to finish "
                                                     "before they are cancelled")->capture_default_str();
  app.add_option("--chat-template", chat_template, "chat template for every model: llama3, llama2, mistral, gemma, chatml or plain; "
                                                    "default: each model's own Jinja template");
  std::vector<std::string> loras;
  std::string lora_dir;
  app.add_option("--lora", loras, "NAME=PATH[:SCALE]: a LoRA adapter served as MODEL:NAME for every model it fits; repeatable");
  programs::DeviceFlag device;
  device.add(app);
  std::string api_key;
  app.add_option("--api-key", api_key, "require \"Authorization: Bearer KEY\" on every /v1 request (401 without it); "
                                      "default: the TINYLLM_API_KEY environment variable, if set");
  app.add_option("--lora-dir", lora_dir, "directory POST /v1/adapters may load adapter files from (default: loading over HTTP is off)");
  app.add_option("--step-delay-ms", step_delay_ms, "pause after each engine step, in ms: slows generation down "
                                                   "for tests and demos of streaming and cancellation")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const std::chrono::milliseconds step_delay(step_delay_ms);
  if (!tokenizer_paths.empty() && tokenizer_paths.size() != 1 && tokenizer_paths.size() != model_paths.size()) {
    std::fprintf(stderr, "give -z once, or once per -m\n");
    return 2;
  }

  // SIGPIPE would kill the server when a client goes away mid-stream; a failed write is handled.
  std::signal(SIGPIPE, SIG_IGN);
  // SIGINT/SIGTERM are taken by one thread (below), so every other thread is started with them blocked.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::optional<tinyllm::LoadedModel> draft_model;   // before the models: their engines use it
  std::vector<std::unique_ptr<server::ModelService>> models;
  tinyllm::ThreadPool pool(threads);
  std::mutex compute;
  try {
    const tinyllm::EngineOptions opt{.max_batch_tokens = batch_tokens, .max_sequences = parallel,
                                     .kv_bytes = kv_mib << 20,
                                     .kv_type = tinyllm::kv_type_from_name(kv_type),
                                     .max_waiting = max_queue};
    tinyllm::EngineOptions file_opt = opt;   // the -m models draft with --draft-model
    for (std::size_t i = 0; i < model_paths.size(); ++i) {
      const std::string& path = model_paths[i];
      const std::string id = std::filesystem::path(path).stem().string();
      for (const auto& m : models)
        if (m->id() == id) throw tinyllm::Error("two models have the id '" + id + "'", path, "distinct file stems");
      tinyllm::LoadOptions lo;
      if (!tokenizer_paths.empty()) lo.tokenizer_path = tokenizer_paths[tokenizer_paths.size() == 1 ? 0 : i];
      programs::show_load_progress(lo, path);
      tinyllm::LoadedModel lm = device.load(path, lo);
      if (!draft_model_path.empty() && !draft_model) {   // after the first model: ranks that follow it never get here
        draft_model.emplace(tinyllm::load(draft_model_path));
        file_opt.draft_model = &*draft_model;
        file_opt.draft_p_min = draft_p_min;
      }
      if (!lm.has_tokenizer()) throw tinyllm::Error("the model has no tokenizer", path, "a tokenizer file (-z)");
      auto chat = server::chat_template_for(lm, chat_template);
      models.push_back(std::make_unique<server::ModelService>(id, std::move(lm), pool, compute, file_opt, std::move(chat), step_delay));
    }
    if (synthetic || model_paths.empty()) {
      for (const auto& m : models)
        if (m->id() == "default") throw tinyllm::Error("a model file is named 'default', the synthetic model's id", m->model().path());
      tinyllm::LoadedModel lm = device.load_synthetic();
      auto chat = server::chat_template_for(lm, chat_template);
      models.push_back(std::make_unique<server::ModelService>("default", std::move(lm), pool, compute, opt, std::move(chat),
                                                              step_delay));
    }
    for (const std::string& spec : loras) {
      // NAME=PATH[:SCALE]
      const auto eq = spec.find('=');
      if (eq == std::string::npos || !server::valid_adapter_name(spec.substr(0, eq)))
        throw tinyllm::Error("--lora " + spec, "tinyllm-server", "NAME=PATH[:SCALE], NAME of letters, digits, '.', '_' or '-'");
      const std::string name = spec.substr(0, eq);
      std::string path = spec.substr(eq + 1);
      float scale = 1.0f;
      if (const auto colon = path.rfind(':'); colon != std::string::npos) {
        try {
          std::size_t used = 0;
          const std::string tail = path.substr(colon + 1);
          scale = std::stof(tail, &used);
          if (used != tail.size() || !std::isfinite(scale)) throw std::invalid_argument(tail);
          path.resize(colon);
        } catch (const std::exception&) {
          throw tinyllm::Error("--lora " + spec + ": the text after the last ':' is not a scale", "tinyllm-server",
                               "NAME=PATH[:SCALE]");
        }
      }
      std::string why;
      bool loaded = false;
      for (const auto& m : models) {
        try {
          m->add_adapter(name, path, scale);
          loaded = true;
          std::fprintf(stderr, "model %s:%s: LoRA adapter %s at scale %g\n", m->id().c_str(), name.c_str(), path.c_str(), scale);
        } catch (const tinyllm::Error& e) {
          why = e.what();
        }
      }
      if (!loaded) throw tinyllm::Error("--lora " + spec + " fits no served model: " + why);
    }
    for (const auto& m : models) {
      const auto s = m->stats();
      std::fprintf(stderr, "model %s: %zu KV blocks, chat template: %s\n", m->id().c_str(), s.engine.blocks_total,
                   m->chat_template().describe().c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }

  if (api_key.empty())
    if (const char* env = std::getenv("TINYLLM_API_KEY")) api_key = env;
  server::Server api(models, lora_dir, api_key, limits);
  server::HttpServer http;
  http.new_task_queue = [http_threads] { return new server::ConnectionThreads(http_threads); };
  http.set_payload_max_length(max_body_mib << 20);
  http.set_keep_alive_timeout(2);
  http.set_read_timeout(std::chrono::seconds(read_timeout));
  http.set_write_timeout(std::chrono::seconds(write_timeout));
  api.routes(http);

  const int bound = port == 0 ? http.bind_to_any_port(host) : (http.bind_to_port(host, port) ? port : -1);
  if (bound < 0 || !http.set_backlog(1024)) {
    std::fprintf(stderr, "cannot listen on %s:%d\n", host.c_str(), port);
    return 1;
  }
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) return;   // the server stopped on its own
    // New requests get 503; running ones have the grace period to finish, then are cancelled
    // (each still gets its reply: a stream ends with its finish chunk and [DONE]).
    api.refuse_new_requests();
    std::fprintf(stderr, "signal %d: stopping (%zu requests running)\n", sig, api.in_flight());
    const auto grace_end = server::Clock::now() + std::chrono::seconds(shutdown_grace);
    while (api.in_flight() > 0 && server::Clock::now() < grace_end)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    api.cancel_all();
    // Cancelled requests end within a step or two; meanwhile connections the kernel has already
    // accepted for us are served (503) rather than reset by closing the listening socket.
    const auto drain_end = server::Clock::now() + std::chrono::seconds(5);
    while (api.in_flight() > 0 && server::Clock::now() < drain_end) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    http.stop();   // returns at once; listen_after_bind returns once every connection is served
  });
  std::printf("tinyllm-server listening on http://%s:%d\n", host.c_str(), bound);
  std::fflush(stdout);
  const bool ok = http.listen_after_bind();
  pthread_kill(signal_thread.native_handle(), SIGUSR1);
  signal_thread.join();
  // Every request has had its reply: each model must hold no KV block and pass its audit.
  bool clean = true;
  for (const auto& m : models) {
    const std::string report = m->drain(std::chrono::seconds(10));
    std::fprintf(stderr, "model %s at exit: %s\n", m->id().c_str(), report.c_str());
    clean = clean && report.rfind("ok", 0) == 0;
  }
  return ok && clean ? 0 : 1;
}
