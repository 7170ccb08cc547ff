/* A linear layer for few rows: y = act(x w^T + b), the weight-streaming GEMM of a generation step
 * at small batch (a few to a few hundred token rows against megabytes of weights).
 *
 *   x (M, K), w (N, K) as nn.Linear stores it, b (N) or NULL, y (M, N)
 *   fp16 or bf16, row-major, contiguous, 16-byte aligned; K and N multiples of 64
 *   float32 accumulation; bias added and the activation applied in float32; y rounded once
 *   act: FLEXVAR_ACT_NONE, or FLEXVAR_ACT_GELU_TANH (PyTorch's gelu(approximate="tanh"))
 *
 * Blocks of 64 output columns x up to 64 rows stream their weight columns through a shared-memory
 * pipeline into tensor-core MMAs. When that alone leaves the GPU idle, K is split over `splits`
 * blocks that form a thread-block cluster (sm_90): they sum their float32 partial tiles through
 * distributed shared memory in rank order, so the same inputs give the same bits. Before sm_90,
 * splits must be 1.
 * Framework-free: raw device pointers, a stream, a cudaError_t.
 */
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>

#include "flexvar/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FLEXVAR_ACT_NONE = 0, FLEXVAR_ACT_GELU_TANH = 1 } flexvar_act_t;

#define FLEXVAR_LINEAR_MAX_SPLITS 8

/* The split count to use: enough blocks for two per multiprocessor (`num_sms`); 1 before sm_90. */
int flexvar_linear_splits(int M, int N, int K, int num_sms);

/* splits: 1..FLEXVAR_LINEAR_MAX_SPLITS, K a multiple of 64 * splits. cudaErrorInvalidValue for shapes
 * it does not take. */
cudaError_t flexvar_linear(const void* x, const void* w, const void* b, void* y, int M, int N, int K, int splits,
                           flexvar_act_t act, flexvar_dtype_t dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
