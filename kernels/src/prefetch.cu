// L2 prefetch of byte ranges: see include/flexvar/prefetch.h.
#include <stdint.h>

#include "flexvar/prefetch.h"

namespace {

constexpr int kThreads = 256;
constexpr unsigned long long kLine = 128;

struct Ranges {
  const char* ptr[FLEXVAR_PREFETCH_MAX_RANGES];
  unsigned long long bytes[FLEXVAR_PREFETCH_MAX_RANGES];
  int n;
};

__global__ void __launch_bounds__(kThreads) prefetch_bulk(const Ranges r, unsigned long long piece) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned long long stride = (unsigned long long)gridDim.x * kThreads;
  for (int i = 0; i < r.n; ++i) {
    const unsigned long long pieces = (r.bytes[i] + piece - 1) / piece;
    for (unsigned long long p = (unsigned long long)blockIdx.x * kThreads + threadIdx.x; p < pieces; p += stride) {
      const unsigned long long off = p * piece, left = r.bytes[i] - off;
      const unsigned size = (unsigned)((left < piece ? left : piece) & ~15ull);
      if (size) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(r.ptr[i] + off), "r"(size) : "memory");
    }
  }
#endif
}

__global__ void __launch_bounds__(kThreads) prefetch_lines(const Ranges r) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned long long stride = (unsigned long long)gridDim.x * kThreads;
  for (int i = 0; i < r.n; ++i) {
    const unsigned long long lines = (r.bytes[i] + kLine - 1) / kLine;
    for (unsigned long long p = (unsigned long long)blockIdx.x * kThreads + threadIdx.x; p < lines; p += stride)
      asm volatile("prefetch.global.L2::evict_last [%0];\n" ::"l"(r.ptr[i] + p * kLine) : "memory");
  }
#endif
}

}  // namespace

extern "C" cudaError_t flexvar_prefetch_l2(const void* const* ptrs, const size_t* bytes, int n,
                                           flexvar_prefetch_t method, size_t piece, int blocks, cudaStream_t stream) {
  if (n < 0 || n > FLEXVAR_PREFETCH_MAX_RANGES || blocks < 0) return cudaErrorInvalidValue;
  if (method == FLEXVAR_PREFETCH_BULK && (piece < 16 || piece % 16 || piece > (1ull << 31))) return cudaErrorInvalidValue;
  if (method != FLEXVAR_PREFETCH_BULK && method != FLEXVAR_PREFETCH_LINES) return cudaErrorInvalidValue;
  Ranges r{};
  unsigned long long units = 0;  // pieces or lines
  const unsigned long long unit = method == FLEXVAR_PREFETCH_BULK ? piece : kLine;
  for (int i = 0; i < n; ++i) {
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % 16) return cudaErrorInvalidValue;
    r.ptr[i] = static_cast<const char*>(ptrs[i]);
    r.bytes[i] = bytes[i];
    units += (bytes[i] + unit - 1) / unit;
  }
  r.n = n;
  if (units == 0) return cudaSuccess;
  if (blocks == 0) {
    int device = 0, sms = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (e != cudaSuccess) return e;
    const unsigned long long per = method == FLEXVAR_PREFETCH_BULK ? 128 : 32 * 1024;
    const unsigned long long want = (units + per - 1) / per;
    blocks = (int)(want < (unsigned long long)sms * 4 ? want : (unsigned long long)sms * 4);
  }
  if (method == FLEXVAR_PREFETCH_BULK) {
    prefetch_bulk<<<blocks, kThreads, 0, stream>>>(r, piece);
  } else {
    prefetch_lines<<<blocks, kThreads, 0, stream>>>(r);
  }
  return cudaGetLastError();
}
