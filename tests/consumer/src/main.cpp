// The smallest user of tinyllm: the embedded random model through the serving engine.
#include <tinyllm/tinyllm.hpp>

#include <cstdio>
#include <string>

// The package passes its compile definitions on to its users.
#ifndef HWY_WANT_AVX3_DL
#error "tinyllm::tinyllm did not carry its compile definitions (HWY_WANT_AVX3_DL)"
#endif

int main() {
  tinyllm::LoadedModel model = tinyllm::load_synthetic();
  tinyllm::ThreadPool pool(1);
  tinyllm::Engine engine(model, pool, {.kv_bytes = 4u << 20});
  std::size_t tokens = 0;
  bool finished = false;
  engine.submit({.prompt = "Once upon a time", .max_tokens = 8, .sampling = {.temperature = 0}},
                [&](const tinyllm::TokenEvent& e) {
                  tokens += e.token >= 0;
                  finished = finished || e.finished;
                });
  engine.run_until_idle();
  if (!finished || tokens == 0) {
    std::printf("tinyllm consumer: generation failed\n");
    return 1;
  }
  std::printf("tinyllm consumer OK: %zu tokens, kernels for %s\n", tokens, tinyllm::cpu::kernel_target());
  return 0;
}
