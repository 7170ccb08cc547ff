/* Next-step tokens of FlexVAR in one kernel: codebook lookup (through the codebook projected by
 * word_embed), bicubic resize to the next step's (h, w), word_embed bias and positions.
 *
 *   out[b, i*w + j, c] = bias[c] + pos[i*w + j, c]
 *                      + sum_{a<4, e<4} wy[i][a] * wx[j][e] * proj[prev[b, ry[i][a], rx[j][e]], c]
 *
 * ry/wy (h x 4) and rx/wx (w x 4) are the taps of PyTorch's bicubic resize (align_corners=False,
 * A = -0.75, clamped borders) from (h0, w0) to (h, w); flexvar.fast.bicubic_taps computes them.
 * Framework-free: raw device pointers, a stream, a cudaError_t. Accumulates in float32.
 */
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "flexvar/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* prev: int64 (B, h0, w0); proj: (V, C); bias: (C); pos: (h*w, C); out: (B, h*w, C);
 * proj, bias, pos and out share `dtype`; all contiguous, on the same device. */
cudaError_t flexvar_next_tokens(const int64_t* prev, int B, int h0, int w0,
                                const void* proj, int V, int C, const void* bias, const void* pos,
                                const int32_t* ry, const float* wy, const int32_t* rx, const float* wx,
                                int h, int w, void* out, flexvar_dtype_t dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
