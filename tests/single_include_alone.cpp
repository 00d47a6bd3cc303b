// Compiled with only single_include/ on the include path: the single header stands alone.
#include <tinyllm/tinyllm.hpp>

#include <cstdio>

int main() {
  tinyllm::ThreadPool pool(2);
  tinyllm::AlignedBuffer<float> buf(100);
  pool.parallel_for(buf.size(), [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) buf[i] = tinyllm::f16_to_f32(tinyllm::f32_to_f16(float(i)));
  });
  for (std::size_t i = 0; i < buf.size(); ++i)
    if (buf[i] != float(i)) { std::printf("mismatch at %zu\n", i); return 1; }
  std::printf("single header OK\n");
  return 0;
}
