// L2 prefetch of byte ranges: see include/flexvar/prefetch.h.
#include <stdint.h>

#include "flexvar/prefetch.h"

namespace {

constexpr size_t kPiece = 64 << 10;  // bytes per bulk prefetch
constexpr int kThreads = 128;

struct Ranges {
  const char* ptr[FLEXVAR_PREFETCH_MAX_RANGES];
  unsigned long long bytes[FLEXVAR_PREFETCH_MAX_RANGES];
  int n;
};

__global__ void __launch_bounds__(kThreads) prefetch_kernel(const Ranges r) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  for (int i = 0; i < r.n; ++i) {
    const unsigned long long pieces = (r.bytes[i] + kPiece - 1) / kPiece;
    for (unsigned long long p = (unsigned long long)blockIdx.x * kThreads + threadIdx.x; p < pieces;
         p += (unsigned long long)gridDim.x * kThreads) {
      const unsigned long long off = p * kPiece, left = r.bytes[i] - off;
      const unsigned size = (unsigned)((left < kPiece ? left : kPiece) & ~15ull);
      if (size) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(r.ptr[i] + off), "r"(size) : "memory");
    }
  }
#endif
}

}  // namespace

extern "C" cudaError_t flexvar_prefetch_l2(const void* const* ptrs, const size_t* bytes, int n, cudaStream_t stream) {
  if (n < 0 || n > FLEXVAR_PREFETCH_MAX_RANGES) return cudaErrorInvalidValue;
  Ranges r{};
  unsigned long long pieces = 0;
  for (int i = 0; i < n; ++i) {
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % 16) return cudaErrorInvalidValue;
    r.ptr[i] = static_cast<const char*>(ptrs[i]);
    r.bytes[i] = bytes[i];
    pieces += (bytes[i] + kPiece - 1) / kPiece;
  }
  r.n = n;
  if (pieces == 0) return cudaSuccess;
  const unsigned blocks = (unsigned)((pieces + kThreads - 1) / kThreads);
  prefetch_kernel<<<blocks < 8 ? blocks : 8, kThreads, 0, stream>>>(r);
  return cudaGetLastError();
}
