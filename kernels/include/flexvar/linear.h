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
 * blocks: each writes a float32 partial tile to `workspace`, and the last to arrive at the tile
 * (per-tile counter) sums the partials in split order, so the same inputs give the same bits.
 * `counters` must be zero on entry and are zero again on return; launches that may run at the same
 * time (other streams) need their own counters.
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

/* The split count the launcher uses when asked for 0: enough blocks to keep `num_sms`
 * multiprocessors streaming, without partial tiles outweighing the weights they save. */
int flexvar_linear_splits(int M, int N, int K, int num_sms);

/* float32 elements of workspace and unsigned entries of counters that a launch needs. */
size_t flexvar_linear_workspace(int M, int N, int splits);
size_t flexvar_linear_counters(int M, int N);

/* splits: 1.. (K a multiple of 64 * splits). cudaErrorInvalidValue for shapes it does not take. */
cudaError_t flexvar_linear(const void* x, const void* w, const void* b, void* y, int M, int N, int K, int splits,
                           flexvar_act_t act, float* workspace, unsigned* counters, flexvar_dtype_t dtype,
                           cudaStream_t stream);

#ifdef __cplusplus
}
#endif
