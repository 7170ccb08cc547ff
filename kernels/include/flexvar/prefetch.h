/* Start fetching byte ranges from device memory into the L2 cache ahead of their use: the weights of
 * the next layers while the current ones compute, so that few-row GEMMs read them from L2.
 *
 * One small kernel issues the Hopper bulk L2 prefetch (cp.async.bulk.prefetch.L2) over each range in
 * 64 KB pieces and returns; the fetches proceed on their own. A hint only: nothing is written and no
 * result depends on it. Before sm_90 the kernel does nothing.
 * Framework-free: raw device pointers (16-byte aligned), a stream, a cudaError_t.
 */
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLEXVAR_PREFETCH_MAX_RANGES 8

/* n <= FLEXVAR_PREFETCH_MAX_RANGES ranges [ptrs[i], ptrs[i] + bytes[i]). */
cudaError_t flexvar_prefetch_l2(const void* const* ptrs, const size_t* bytes, int n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
