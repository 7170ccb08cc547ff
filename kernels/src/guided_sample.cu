// Guidance + top-k + top-p + draw: see include/flexvar/guided_sample.h for the rule.
// One block of 256 threads per row; thread t holds g[t + 256 j] in registers (PER values), so the
// bisections (32 steps for the k-th largest, 31 for the top-p cut) read no memory. The kept masses
// go through shared memory once, for the draw, which scans them in vocabulary order.
#include "flexvar/guided_sample.h"

#include <climits>
#include <cmath>

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxVocab = 64 * kThreads;

// order-preserving map of a float onto uint32 (larger float, larger key)
__device__ __forceinline__ uint32_t key_of(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ uint32_t mix32(uint32_t x) {
  x = (x ^ (x >> 16)) * 0x7FEB352Du;
  x = (x ^ (x >> 15)) * 0x5BD1E995u;
  return x ^ (x >> 16);
}

// Sums in a fixed order; every thread returns the same value. `red` holds kWarps slots.
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);  // symmetric: all lanes equal
  __syncthreads();  // the previous call's readers are done with red
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) s += red[w];
  return s;
}

__device__ __forceinline__ int block_count(int v, int* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  int s = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) s += red[w];
  return s;
}

template <int PER>
__global__ void __launch_bounds__(kThreads) guided_sample_kernel(
    const float* __restrict__ logits, int B, int l, int V, float a, float b, int rule, int top_k, float top_p,
    const int64_t* __restrict__ seed, int step, int64_t* __restrict__ out) {
  extern __shared__ float kept[];  // V kept masses, for the draw
  __shared__ float redf[kWarps];
  __shared__ int redi[kWarps];
  __shared__ float best_v[kWarps];
  __shared__ int best_i[kWarps];
  const int row = blockIdx.x, img = row / l, tok = row % l;
  const float* cond = logits + ((int64_t)img * l + tok) * V;
  const float* unc = logits + ((int64_t)(img + B) * l + tok) * V;

  float g[PER];
  float m = -INFINITY;
  int am = INT_MAX;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * kThreads;
    if (i < V) {
      const float c = cond[i], u = unc[i];
      // explicit roundings: no FMA contraction, the same float32 arithmetic as PyTorch's
      g[j] = rule == FLEXVAR_GUIDANCE_RAMP ? __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, u))
                                           : __fadd_rn(u, __fmul_rn(b, __fsub_rn(c, u)));
      if (g[j] > m) m = g[j], am = i;  // i grows with j: the first index wins ties
    } else {
      g[j] = -INFINITY;
    }
  }
  // argmax, first index on ties
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float mv = __shfl_xor_sync(0xffffffffu, m, o);
    const int mi = __shfl_xor_sync(0xffffffffu, am, o);
    if (mv > m || (mv == m && mi < am)) m = mv, am = mi;
  }
  if ((threadIdx.x & 31) == 0) best_v[threadIdx.x >> 5] = m, best_i[threadIdx.x >> 5] = am;
  __syncthreads();
  m = best_v[0], am = best_i[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w)
    if (best_v[w] > m || (best_v[w] == m && best_i[w] < am)) m = best_v[w], am = best_i[w];
  if (top_k == 1 || V == 1 || am == INT_MAX) {
    if (threadIdx.x == 0) out[row] = am == INT_MAX ? 0 : am;
    return;
  }

  // top-k: the largest key K with #(key >= K) >= top_k is the k-th largest value's key
  uint32_t kth = 0;
  if (top_k > 0 && top_k < V) {
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = kth | (1u << bit);
      int n = 0;
#pragma unroll
      for (int j = 0; j < PER; ++j) n += key_of(g[j]) >= cand;
      if (block_count(n, redi) >= top_k) kth = cand;
    }
  }
  // masses of the survivors (0 elsewhere); from here g holds e
  float z = 0.f;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const bool live = threadIdx.x + j * kThreads < V && key_of(g[j]) >= kth;
    g[j] = live ? expf(g[j] - m) : 0.f;
    z += g[j];
  }
  // top-p: the largest G with (mass of e whose bits > G) >= top_p * Z; keep e with bits > G.
  // Masses are >= 0, so their bits order them; G = 0 always qualifies (the whole mass).
  if (top_p > 0.f && top_p < 1.f) {
    const float need = top_p * block_sum(z, redf);
    uint32_t G = 0;
    for (int bit = 30; bit >= 0; --bit) {
      const uint32_t cand = G | (1u << bit);
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < PER; ++j) s += __float_as_uint(g[j]) > cand ? g[j] : 0.f;
      if (block_sum(s, redf) >= need) G = cand;
    }
#pragma unroll
    for (int j = 0; j < PER; ++j)
      if (__float_as_uint(g[j]) <= G) g[j] = 0.f;
  }

  // the draw: kept masses in vocabulary order, each thread owning a contiguous chunk
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * kThreads;
    if (i < V) kept[i] = g[j];
  }
  __syncthreads();
  const int per = (V + kThreads - 1) / kThreads;
  const int lo = min(V, threadIdx.x * per), hi = min(V, lo + per);
  float s = 0.f;
  for (int i = lo; i < hi; ++i) s += kept[i];
  // inclusive scan over threads: in-warp by shuffles, then the warps' totals in order
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float incl = s;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float up = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += up;
  }
  float excl = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) excl = 0.f;
  if (lane == 31) redf[warp] = incl;  // redf is free: block_sum's readers synced above
  __syncthreads();
  float off = 0.f, total = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    if (w == warp) off = total;
    total += redf[w];
  }
  excl += off, incl += off;  // excl of thread t + 1 is bitwise the incl of thread t
  const uint32_t h = mix32(mix32((uint32_t)(uint64_t)seed[0]) ^ (uint32_t)((uint64_t)row + (uint64_t)step * 0x9E3779Bu));
  const float u = (float)(h >> 8) * (1.0f / 16777216.0f);
  const float r = fminf(u * total, nextafterf(total, 0.f));  // r < total: exactly one owner below
  if (excl <= r && r < incl) {
    float run = excl;
    int pick = -1;
    for (int i = lo; i < hi; ++i) {
      if (kept[i] > 0.f) {
        pick = i;
        run += kept[i];
        if (run > r) break;
      }
    }
    out[row] = pick;
  }
}

template <int PER>
cudaError_t launch(const float* logits, int B, int l, int V, float a, float b, int rule, int top_k, float top_p,
                   const int64_t* seed, int step, int64_t* out, cudaStream_t stream) {
  const size_t smem = (size_t)V * sizeof(float);
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(guided_sample_kernel<PER>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  guided_sample_kernel<PER><<<B * l, kThreads, smem, stream>>>(logits, B, l, V, a, b, rule, top_k, top_p, seed,
                                                               step, out);
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t flexvar_guided_sample(const float* logits, int B, int l, int V, double t,
                                             flexvar_guidance_t rule, int top_k, float top_p, const int64_t* seed,
                                             int step, int64_t* out, cudaStream_t stream) {
  if (B < 0 || l < 0 || V < 1 || V > kMaxVocab || top_k < 0) return cudaErrorInvalidValue;
  if (rule != FLEXVAR_GUIDANCE_RAMP && rule != FLEXVAR_GUIDANCE_CONSTANT) return cudaErrorInvalidValue;
  if ((int64_t)B * l == 0) return cudaSuccess;
  if ((int64_t)B * l > INT_MAX) return cudaErrorInvalidValue;
  // the scalars as PyTorch rounds them: (1 + t) and t from double to float32
  const float a = rule == FLEXVAR_GUIDANCE_RAMP ? (float)(1.0 + t) : 0.f, b = (float)t;
  if (V <= kThreads) return launch<1>(logits, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
  if (V <= 4 * kThreads) return launch<4>(logits, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
  if (V <= 16 * kThreads) return launch<16>(logits, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
  return launch<64>(logits, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
}
