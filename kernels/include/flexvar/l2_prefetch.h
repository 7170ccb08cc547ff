/* Prefetch byte ranges of device memory into the L2 cache: a hint with no result and no effect on
 * any value, so that a later kernel finds them there instead of waiting on DRAM.
 *
 * The fast runtime issues it before a block's attention at small batch: the proj, fc1 and fc2
 * weights of the block and the next block's qkv weights (about 24 MB at d16) stream from DRAM
 * while the attention and LayerNorm kernels (which touch little memory) run, and the small-row
 * GEMMs that follow read them from L2.
 *
 * The ranges are prefetched in order, up to `max_bytes` in all (later bytes are dropped: a prefetch
 * past the L2's capacity would evict the first ones). Each range is trimmed inward to 16-byte
 * boundaries. sm_90: `cp.async.bulk.prefetch.L2` of 16 KiB chunks; sm_80: `prefetch.global.L2` of
 * 128-byte lines. Framework-free: raw device pointers, a stream, a cudaError_t.
 */
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLEXVAR_L2_PREFETCH_MAX_RANGES 8

typedef struct {
  const void* ptr[FLEXVAR_L2_PREFETCH_MAX_RANGES];
  int64_t bytes[FLEXVAR_L2_PREFETCH_MAX_RANGES];
  int n; /* ranges used, 0 to FLEXVAR_L2_PREFETCH_MAX_RANGES */
} flexvar_l2_ranges_t;

/* Enqueues the prefetch on `stream` (nothing when no whole 16-byte unit is left). */
cudaError_t flexvar_l2_prefetch(const flexvar_l2_ranges_t* ranges, int64_t max_bytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
