// The portable qmatmul path (Highway int16 multiply-adds, no VNNI), forced on this machine and
// run through the same tests as the VNNI kernels.
#define TINYLLM_QMATMUL_PORTABLE
#define QMATMUL_TEST_PREFIX "cpu::qmatmul (portable path)"
#include "qmatmul_test.cpp"

static_assert(!TINYLLM_QMATMUL_VNNI, "this test must build the portable path");
