/* Start fetching byte ranges from device memory into the L2 cache ahead of their use: the weights of
 * the next layers while the current ones compute, so that few-row GEMMs read them from L2.
 *
 * One kernel issues prefetches and returns; the fetches proceed on their own. A hint only: nothing is
 * written and no result depends on it.
 *   method FLEXVAR_PREFETCH_BULK: the Hopper bulk L2 prefetch (cp.async.bulk.prefetch.L2) over pieces of
 *          `piece` bytes (sm_90; nothing before)
 *   method FLEXVAR_PREFETCH_LINES: prefetch.global.L2::evict_last per 128-byte line (sm_80+)
 * blocks: grid size (0: one per 128 pieces / 32 K lines, at most the number of multiprocessors x 4).
 * Framework-free: raw device pointers (16-byte aligned), a stream, a cudaError_t.
 */
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLEXVAR_PREFETCH_MAX_RANGES 8

typedef enum { FLEXVAR_PREFETCH_BULK = 0, FLEXVAR_PREFETCH_LINES = 1 } flexvar_prefetch_t;

/* n <= FLEXVAR_PREFETCH_MAX_RANGES ranges [ptrs[i], ptrs[i] + bytes[i]); piece: a multiple of 16. */
cudaError_t flexvar_prefetch_l2(const void* const* ptrs, const size_t* bytes, int n, flexvar_prefetch_t method,
                                size_t piece, int blocks, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
