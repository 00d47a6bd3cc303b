// tinyllm-comm-bench: what tensor parallelism's collectives cost on this machine, for the
// scaling model of a split model (README, "Tensor parallelism"): an all-reduce of `n` floats
// (a block's output: n_embd per token, twice per layer) and the gather of the logits.
//   mpirun -np 2 tinyllm-comm-bench [--floats 2048,32768,1048576] [--reps 200]
#include <tinyllm/comm/mpi.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-comm-bench: all-reduce and all-gather times between MPI ranks"};
  std::vector<std::size_t> sizes = {2048, 32768, 1048576};
  int reps = 200;
  app.add_option("--floats", sizes, "message sizes in floats (comma separated)")->delimiter(',')->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions per size")->capture_default_str()->check(CLI::Range(1, 100000));
  CLI11_PARSE(app, argc, argv);
  try {
    tinyllm::MpiCommunicator world;
    const std::size_t ranks = world.size();
    if (world.rank() == 0) {
      std::printf("| ranks | op | floats | bytes | us per call | GB/s (bytes / time) |\n| ---: | --- | ---: | ---: | ---: | ---: |\n");
    }
    for (const std::size_t n : sizes) {
      std::vector<float> data(n, 1.0f), all(n * ranks);
      const std::vector<std::size_t> counts(ranks, n);
      for (const bool gather : {false, true}) {
        const auto once = [&] {
          if (gather) world.all_gather(data, all, counts);
          else world.all_reduce_sum(data);
        };
        for (int i = 0; i < 5; ++i) once();   // warm up
        std::vector<std::byte> sync(1);
        world.broadcast(sync, 0);
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < reps; ++i) once();
        const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
        const double bytes = double(n) * sizeof(float) * (gather ? double(ranks) : 1.0);
        if (world.rank() == 0)
          std::printf("| %zu | %s | %zu | %.0f | %.1f | %.2f |\n", ranks, gather ? "all_gather" : "all_reduce_sum", n, bytes,
                      us, bytes / us / 1e3);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tinyllm-comm-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
