// The one file of the program that compiles the kernels, for every x86 target.
#define TINYLLM_DISPATCH_IMPLEMENTATION
#include <tinyllm/dispatch.hpp>
