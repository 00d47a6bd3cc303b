#pragma once
// A progress bar on stderr for the example programs and benchmarks. It is drawn only when stderr
// is a terminal, so logs, pipes and tests that capture stderr never see it, and it is transient:
// the line is cleared when the work is done, leaving the terminal as it would be without it.
// The library itself knows nothing of terminals; it only reports progress through callbacks
// (tinyllm::LoadOptions::progress).
#include <tinyllm/tinyllm.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

namespace programs {

class ProgressBar {
 public:
  // `bytes`: show the counts as MiB rather than as plain numbers.
  explicit ProgressBar(std::string label, bool bytes = false)
      : label_(std::move(label)), bytes_(bytes), enabled_(isatty(STDERR_FILENO) == 1) {}
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar() { clear(); }

  // Redraws at most every 100 ms, and always when done reaches total.
  void update(std::size_t done, std::size_t total) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    constexpr std::size_t width = 30;
    const double fraction = total == 0 ? 1.0 : double(std::min(done, total)) / double(total);
    const auto filled = std::size_t(fraction * width);
    char counts[64];
    if (bytes_) std::snprintf(counts, sizeof counts, "%.1f/%.1f MiB", done / 1048576.0, total / 1048576.0);
    else std::snprintf(counts, sizeof counts, "%zu/%zu", done, total);
    std::fprintf(stderr, "\r\x1b[K%s [%s%s] %3d%% %s", label_.c_str(), std::string(filled, '#').c_str(),
                 std::string(width - filled, ' ').c_str(), int(fraction * 100), counts);
    std::fflush(stderr);
  }

  // Erases the bar's line (a no-op when nothing was drawn).
  void clear() {
    if (!drawn_) return;
    std::fputs("\r\x1b[K", stderr);
    std::fflush(stderr);
    drawn_ = false;
  }

 private:
  std::string label_;
  bool bytes_, enabled_, drawn_ = false;
  std::chrono::steady_clock::time_point last_;
};

// Makes `opt` draw a bar while the model loads (nothing when stderr is not a terminal).
inline void show_load_progress(tinyllm::LoadOptions& opt, const std::string& what) {
  if (isatty(STDERR_FILENO) != 1) return;
  auto bar = std::make_shared<ProgressBar>("loading " + what, true);
  opt.progress = [bar](std::size_t done, std::size_t total) {
    bar->update(done, total);
    if (done >= total) bar->clear();
  };
}

}  // namespace programs
