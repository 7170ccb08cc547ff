// Next-step tokens: see include/flexvar/next_tokens.h for the formula.
// One block per (output token, image); threads stride over the C channels. The 16 taps
// (code index and weight) are staged in shared memory; each proj row is read coalesced.
#include "flexvar/next_tokens.h"

#include "convert.cuh"

namespace {

using flexvar_cuda::from_f;
using flexvar_cuda::to_f;

template <typename T>
__global__ void next_tokens_kernel(const int64_t* __restrict__ prev, int h0, int w0,
                                   const T* __restrict__ proj, int V, int C,
                                   const T* __restrict__ bias, const T* __restrict__ pos,
                                   const int32_t* __restrict__ ry, const float* __restrict__ wy,
                                   const int32_t* __restrict__ rx, const float* __restrict__ wx,
                                   int h, int w, T* __restrict__ out) {
  const int t = blockIdx.x;  // output token, row-major in (h, w)
  const int b = blockIdx.y;
  const int i = t / w, j = t % w;
  __shared__ int64_t code[16];
  __shared__ float weight[16];
  if (threadIdx.x < 16) {
    const int a = threadIdx.x / 4, e = threadIdx.x % 4;
    int64_t c = prev[((int64_t)b * h0 + ry[i * 4 + a]) * w0 + rx[j * 4 + e]];
    c = c < 0 ? 0 : (c >= V ? V - 1 : c);  // never read outside the codebook
    code[threadIdx.x] = c;
    weight[threadIdx.x] = wy[i * 4 + a] * wx[j * 4 + e];
  }
  __syncthreads();
  T* o = out + ((int64_t)b * h * w + t) * C;
  const T* p = pos + (int64_t)t * C;
  for (int ch = threadIdx.x; ch < C; ch += blockDim.x) {
    // sum over columns first, then rows, in the order PyTorch's bicubic uses
    float acc = 0.f;
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      float row = 0.f;
#pragma unroll
      for (int e = 0; e < 4; ++e) row += weight[a * 4 + e] * to_f(proj[code[a * 4 + e] * C + ch]);
      acc += row;
    }
    o[ch] = from_f<T>(acc + to_f(bias[ch]) + to_f(p[ch]));
  }
}

template <typename T>
cudaError_t launch(const int64_t* prev, int B, int h0, int w0, const void* proj, int V, int C, const void* bias,
                   const void* pos, const int32_t* ry, const float* wy, const int32_t* rx, const float* wx,
                   int h, int w, void* out, cudaStream_t stream) {
  if (B <= 0 || h <= 0 || w <= 0 || C <= 0) return cudaSuccess;
  const dim3 grid(h * w, B);
  const int threads = C >= 256 ? 256 : ((C + 31) / 32) * 32;
  next_tokens_kernel<T><<<grid, threads, 0, stream>>>(
      prev, h0, w0, static_cast<const T*>(proj), V, C, static_cast<const T*>(bias), static_cast<const T*>(pos),
      ry, wy, rx, wx, h, w, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t flexvar_next_tokens(const int64_t* prev, int B, int h0, int w0, const void* proj, int V,
                                           int C, const void* bias, const void* pos, const int32_t* ry,
                                           const float* wy, const int32_t* rx, const float* wx, int h, int w,
                                           void* out, flexvar_dtype_t dtype, cudaStream_t stream) {
  switch (dtype) {
    case FLEXVAR_FLOAT32: return launch<float>(prev, B, h0, w0, proj, V, C, bias, pos, ry, wy, rx, wx, h, w, out, stream);
    case FLEXVAR_BFLOAT16: return launch<__nv_bfloat16>(prev, B, h0, w0, proj, V, C, bias, pos, ry, wy, rx, wx, h, w, out, stream);
    case FLEXVAR_FLOAT16: return launch<__half>(prev, B, h0, w0, proj, V, C, bias, pos, ry, wy, rx, wx, h, w, out, stream);
  }
  return cudaErrorInvalidValue;
}
