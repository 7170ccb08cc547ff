/* The attention prologue of a FlexVAR block in one kernel: split the qkv projection, L2-normalise
 * q and k per head, scale q per head, and write k and v into the token-major KV cache.
 *
 *   qkv   (B, l, 3, H, d)  the output of mat_qkv (+ bias) for a step's l tokens
 *   q_out (B, l, H, d)     q / max(|q|, 1e-12) * scale[h]
 *   k_cache[start + j, b, h] = k / max(|k|, 1e-12)      k_cache, v_cache: (L, B, H, d)
 *   v_cache[start + j, b, h] = v
 *
 * Norms and products in float32 (PyTorch's F.normalize on the float32 values), results rounded
 * once to `dtype`. q_out (B, l, H, d) transposed to (B, H, l, d) and the cache prefix permuted
 * to (B, H, end, d) are the strided views that cuDNN and flash attention read without copying.
 * Framework-free: raw device pointers, a stream, a cudaError_t. d must be a multiple of 32, <= 256.
 */
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "flexvar/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* qkv, q_out, k_cache and v_cache share `dtype` and are contiguous; scale is float32 (H);
 * the cache holds L >= start + l tokens of B rows. */
cudaError_t flexvar_qk_norm_cache(const void* qkv, int B, int l, int H, int d, const float* scale, void* q_out,
                                  void* k_cache, void* v_cache, int L, int start, flexvar_dtype_t dtype,
                                  cudaStream_t stream);

#ifdef __cplusplus
}
#endif
