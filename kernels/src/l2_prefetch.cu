// L2 prefetch of byte ranges: see include/flexvar/l2_prefetch.h.
// One thread per chunk (grid-stride): a chunk is one bulk prefetch on sm_90, a loop of line prefetches
// before. The kernel returns as soon as the prefetches are issued; the memory system completes them.
#include "flexvar/l2_prefetch.h"

namespace {

constexpr int64_t kChunk = 16 * 1024;
constexpr int kThreads = 128;
constexpr int kMaxBlocks = 16;

struct Trimmed {
  uintptr_t lo[FLEXVAR_L2_PREFETCH_MAX_RANGES];
  int64_t bytes[FLEXVAR_L2_PREFETCH_MAX_RANGES];
  int64_t first_chunk[FLEXVAR_L2_PREFETCH_MAX_RANGES + 1];  // prefix sums of chunks per range
  int n;
};

__global__ void __launch_bounds__(kThreads) l2_prefetch_kernel(const Trimmed r) {
  const int64_t chunks = r.first_chunk[r.n];
  for (int64_t c = blockIdx.x * (int64_t)kThreads + threadIdx.x; c < chunks; c += (int64_t)gridDim.x * kThreads) {
    int i = 0;
    while (c >= r.first_chunk[i + 1]) ++i;
    const int64_t off = (c - r.first_chunk[i]) * kChunk;
    const uintptr_t a = r.lo[i] + off;
    const int64_t n = r.bytes[i] - off < kChunk ? r.bytes[i] - off : kChunk;  // a multiple of 16
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"((uint32_t)n) : "memory");
#else
    for (int64_t b = 0; b < n; b += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(a + b) : "memory");
#endif
  }
}

}  // namespace

extern "C" cudaError_t flexvar_l2_prefetch(const flexvar_l2_ranges_t* ranges, int64_t max_bytes, cudaStream_t stream) {
  if (ranges == nullptr || ranges->n < 0 || ranges->n > FLEXVAR_L2_PREFETCH_MAX_RANGES || max_bytes < 0)
    return cudaErrorInvalidValue;
  Trimmed t{};
  int64_t left = max_bytes;
  t.first_chunk[0] = 0;
  for (int i = 0; i < ranges->n; ++i) {
    if (ranges->bytes[i] < 0) return cudaErrorInvalidValue;
    const uintptr_t p = (uintptr_t)ranges->ptr[i];
    const uintptr_t lo = (p + 15) & ~(uintptr_t)15, hi = (p + (uintptr_t)ranges->bytes[i]) & ~(uintptr_t)15;
    int64_t bytes = hi > lo ? (int64_t)(hi - lo) : 0;
    if (bytes > left) bytes = left & ~(int64_t)15;
    left -= bytes;
    if (bytes == 0) continue;
    t.lo[t.n] = lo;
    t.bytes[t.n] = bytes;
    t.first_chunk[t.n + 1] = t.first_chunk[t.n] + (bytes + kChunk - 1) / kChunk;
    ++t.n;
  }
  const int64_t chunks = t.first_chunk[t.n];
  if (chunks == 0) return cudaSuccess;
  int64_t blocks = (chunks + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  l2_prefetch_kernel<<<(int)blocks, kThreads, 0, stream>>>(t);
  return cudaGetLastError();
}
