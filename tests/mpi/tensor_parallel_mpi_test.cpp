// Tensor parallelism over MPI: run by CTest as `mpirun -np 2` and `-np 3` (tests/CMakeLists.txt).
// Every rank loads its share of each model and checks the gathered logits against the whole
// model loaded in its own process. With TINYLLM_TEST_RANK_DIES=r, rank r aborts at the start
// while the others go on to wait on it in the first forward pass: mpirun must end the job (a CTest
// case checks its report).
#include <tinyllm/comm/mpi.hpp>
#include <tinyllm/tinyllm.hpp>

#include <cstdlib>
#include <string>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

MpiCommunicator& world() {
  static MpiCommunicator comm;   // MPI is initialised once per process and finalised at exit
  return comm;
}

void die_if_asked() {
  const char* r = std::getenv("TINYLLM_TEST_RANK_DIES");
  if (r && std::stoul(r) == world().rank()) std::abort();
}

}  // namespace

TEST_CASE("MPI ranks give the single-process logits (1e-4; quantized files: llama.cpp's within 0.05)") {
  die_if_asked();
  TINYLLM_REQUIRE_TESTDATA("arch/llama.gguf");
  MESSAGE("rank " << world().rank() << " of " << world().size());
  struct File { const char* model; const char* ref; bool quantized; };
  // A few files (tests/model/tensor_parallel_test.cpp splits every one over thread ranks).
  for (const File& f : {File{"llama", "llama", false}, File{"gemma2", "gemma2", false},
                        File{"llama-Q4_K_M", "llama-Q4_K_M.norepack", true}}) {
    const std::string model = f.model;
    CAPTURE(model);
    const std::string path = test::testdata(std::string("arch/") + f.model + ".gguf").string();
    ThreadPool pool(1);
    LoadOptions opt;
    opt.comm = &world();
    LoadedModel part = load(path, opt);
    const auto got = test::run_reference_inputs(part.model(), f.ref, pool);
    LoadedModel whole = load(path);
    const auto want = test::run_reference_inputs(whole.model(), f.ref, pool);
    const float d = std::max(test::max_abs_diff(got.prompt, want.prompt), test::max_abs_diff(got.decode, want.decode));
    MESSAGE("max abs difference to one process: " << d);
    if (f.quantized) {
      CHECK(test::max_abs_diff(got.prompt, test::read_f32(test::testdata("arch") / (std::string(f.ref) + ".logits.f32"))) <= 0.05f);
      CHECK(test::max_abs_diff(got.decode, test::read_f32(test::testdata("arch") / (std::string(f.ref) + ".decode.f32"))) <= 0.05f);
    } else {
      CHECK(d <= 1e-4f);
    }
  }
}

TEST_CASE("stories260K over MPI ranks writes llama2.c's greedy text") {
  TINYLLM_REQUIRE_TESTDATA("arch/stories260K.gguf");
  const std::string path = test::testdata("arch/stories260K.gguf").string();
  ThreadPool pool(1);
  LoadOptions opt;
  opt.comm = &world();
  LoadedModel part = load(path, opt);
  LoadedModel whole = load(path);
  CHECK(test::stories_greedy_text(part, pool) == test::stories_greedy_text(whole, pool));
}
