// Attention prologue: see include/flexvar/qk_norm_cache.h for the formula.
// One warp per (token row, head); lane i holds channels [i E, i E + E) of q, k and v (E = d / 32),
// so the norms are one in-warp reduction and every load and store is coalesced.
#include "flexvar/qk_norm_cache.h"

#include "convert.cuh"

namespace {

using flexvar_cuda::from_f;
using flexvar_cuda::to_f;

constexpr int kWarps = 4;

template <typename T, int E>
__global__ void __launch_bounds__(32 * kWarps) qk_norm_cache_kernel(
    const T* __restrict__ qkv, int B, int l, int H, const float* __restrict__ scale, T* __restrict__ q_out,
    T* __restrict__ k_cache, T* __restrict__ v_cache, int start) {
  const int64_t pair = (int64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);  // (token row, head)
  if (pair >= (int64_t)B * l * H) return;
  const int lane = threadIdx.x & 31, h = (int)(pair % H);
  const int64_t n = pair / H;  // row b * l + j of the step
  const int b = (int)(n / l), j = (int)(n % l);
  constexpr int d = 32 * E;
  const int64_t C = (int64_t)H * d;
  const T* src = qkv + n * 3 * C + (int64_t)h * d + lane * E;
  float q[E], k[E];
  T v[E];
  float sq = 0.f, sk = 0.f;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    q[e] = to_f(src[e]);
    k[e] = to_f(src[C + e]);
    v[e] = src[2 * C + e];
    sq += q[e] * q[e];
    sk += k[e] * k[e];
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    sq += __shfl_xor_sync(0xffffffffu, sq, o);
    sk += __shfl_xor_sync(0xffffffffu, sk, o);
  }
  const float nq = fmaxf(sqrtf(sq), 1e-12f), nk = fmaxf(sqrtf(sk), 1e-12f), s = scale[h];
  T* qo = q_out + n * C + (int64_t)h * d + lane * E;
  const int64_t at = (((int64_t)(start + j) * B + b) * H + h) * d + lane * E;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    qo[e] = from_f<T>(__fmul_rn(__fdiv_rn(q[e], nq), s));
    k_cache[at + e] = from_f<T>(__fdiv_rn(k[e], nk));
    v_cache[at + e] = v[e];
  }
}

template <typename T, int E>
cudaError_t launch(const void* qkv, int B, int l, int H, const float* scale, void* q_out, void* k_cache,
                   void* v_cache, int start, cudaStream_t stream) {
  const int64_t pairs = (int64_t)B * l * H;
  const int64_t blocks = (pairs + kWarps - 1) / kWarps;
  if (blocks > 0x7FFFFFFF) return cudaErrorInvalidValue;
  qk_norm_cache_kernel<T, E><<<(unsigned)blocks, 32 * kWarps, 0, stream>>>(
      static_cast<const T*>(qkv), B, l, H, scale, static_cast<T*>(q_out), static_cast<T*>(k_cache),
      static_cast<T*>(v_cache), start);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_d(const void* qkv, int B, int l, int H, int d, const float* scale, void* q_out, void* k_cache,
                     void* v_cache, int start, cudaStream_t stream) {
  switch (d) {
    case 32: return launch<T, 1>(qkv, B, l, H, scale, q_out, k_cache, v_cache, start, stream);
    case 64: return launch<T, 2>(qkv, B, l, H, scale, q_out, k_cache, v_cache, start, stream);
    case 96: return launch<T, 3>(qkv, B, l, H, scale, q_out, k_cache, v_cache, start, stream);
    case 128: return launch<T, 4>(qkv, B, l, H, scale, q_out, k_cache, v_cache, start, stream);
    case 160: return launch<T, 5>(qkv, B, l, H, scale, q_out, k_cache, v_cache, start, stream);
    case 192: return launch<T, 6>(qkv, B, l, H, scale, q_out, k_cache, v_cache, start, stream);
    case 224: return launch<T, 7>(qkv, B, l, H, scale, q_out, k_cache, v_cache, start, stream);
    case 256: return launch<T, 8>(qkv, B, l, H, scale, q_out, k_cache, v_cache, start, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

extern "C" cudaError_t flexvar_qk_norm_cache(const void* qkv, int B, int l, int H, int d, const float* scale,
                                             void* q_out, void* k_cache, void* v_cache, int L, int start,
                                             flexvar_dtype_t dtype, cudaStream_t stream) {
  if (B < 0 || l < 0 || H < 1 || start < 0 || (int64_t)start + l > L) return cudaErrorInvalidValue;
  if ((int64_t)B * l == 0) return cudaSuccess;
  switch (dtype) {
    case FLEXVAR_FLOAT32: return launch_d<float>(qkv, B, l, H, d, scale, q_out, k_cache, v_cache, start, stream);
    case FLEXVAR_BFLOAT16:
      return launch_d<__nv_bfloat16>(qkv, B, l, H, d, scale, q_out, k_cache, v_cache, start, stream);
    case FLEXVAR_FLOAT16: return launch_d<__half>(qkv, B, l, H, d, scale, q_out, k_cache, v_cache, start, stream);
  }
  return cudaErrorInvalidValue;
}
