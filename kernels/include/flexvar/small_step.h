/* Every block of one FlexVAR step in one kernel, for steps of few token rows (batch 1's first steps).
 *
 * For each block i, on the step's M = R * l rows x (R rows of the batch, guidance included, l tokens each):
 *   h   = LN(x) (1 + scale1) + shift1                        (float32, rounded to dtype)
 *   qkv = h wqkv^T + bqkv                                     (float32 accumulation, rounded)
 *   q   = normalize(q) * q_scale[h], k = normalize(k)         (per head, float32, rounded)
 *   k, v written into the token-major cache at [start, start + l)
 *   o   = softmax(q K^T) V over the cache's first start + l tokens (float32)
 *   x  += (o wproj^T + bproj) * gamma1                        (projection rounded, update in float32)
 *   h   = LN(x) (1 + scale2) + shift2
 *   x  += (gelu_tanh(h w1^T + b1) w2^T + b2) * gamma2
 * the computation of `Block.forward_step` (model.py) on the weights as plain arrays.
 *
 * One cooperative launch: one block of threads per SM, grid-wide barriers between the phases, the
 * weights streamed once per step straight from device memory into tensor-core fragments. The
 * kernel count of a step drops from about ten per block to one, which is what batch 1 pays for.
 * Limits (flexvar_small_step returns cudaErrorInvalidValue past them, the caller runs the usual
 * path): M <= 64 rows, start + l <= 256 keys, head dim 64, bf16 or fp16, depth <= 32, and each
 * SM at most 6 column tiles of 8 in the widest projection (e.g. width 1536 on 132 SMs).
 * Framework-free: raw device pointers, a stream, a cudaError_t.
 */
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "flexvar/dtype.h"

#define FLEXVAR_SMALL_STEP_MAX_DEPTH 32
#define FLEXVAR_SMALL_STEP_MAX_ROWS 64
#define FLEXVAR_SMALL_STEP_MAX_KEYS 256

#ifdef __cplusplus
extern "C" {
#endif

/* One block's weights, all in the step's dtype except q_scale (float32). */
typedef struct {
  const void* wqkv;     /* (3C, C) */
  const void* bqkv;     /* (3C): q_bias, zeros, v_bias */
  const float* q_scale; /* (H): exp(min(log scale, log 100)) */
  const void* wproj;    /* (C, C) */
  const void* bproj;    /* (C) */
  const void* w1;       /* (hidden, C) */
  const void* b1;       /* (hidden) */
  const void* w2;       /* (C, hidden) */
  const void* b2;       /* (C) */
} flexvar_block_weights_t;

typedef struct {
  float* x;          /* (R, l, C) float32, contiguous: the step's tokens in, the last block's output out */
  const void* mods;  /* (depth, R, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2 */
  void* kv;          /* (depth, 2, L, R, H, d), contiguous */
  void* scratch;     /* flexvar_small_step_scratch_bytes(R * l, C, hidden, dtype) bytes */
  int R, l, C, H, d, hidden, depth, L, start;
  float eps;
  uint64_t* trace;   /* NULL, or 1 + 7 depth slots: the global timer (ns) at the start and after each barrier */
  flexvar_block_weights_t blocks[FLEXVAR_SMALL_STEP_MAX_DEPTH];
} flexvar_small_step_args_t;

/* Scratch bytes for M rows. */
size_t flexvar_small_step_scratch_bytes(int M, int C, int hidden, flexvar_dtype_t dtype);

/* cudaSuccess when the shapes are within the limits on the current device, else cudaErrorInvalidValue
 * (or the error of the device query). */
cudaError_t flexvar_small_step_supported(int R, int l, int C, int H, int d, int hidden, int depth, int L, int start,
                                         flexvar_dtype_t dtype);

cudaError_t flexvar_small_step(const flexvar_small_step_args_t* args, flexvar_dtype_t dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
