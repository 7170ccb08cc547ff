// Linear layer for few rows: see include/flexvar/linear.h for the contract.
//
// A block (4 warps) owns 64 output columns and BM = 16 MT rows. Per 64-wide k step, cp.async
// copies the block's 64 weight rows and BM x rows into one of kStages shared-memory slots (rows of
// 128 bytes; the two 64-byte halves swapped on odd rows, so a quarter-warp's 16-byte reads never
// share a bank). Warp w multiplies all BM rows by columns [16 w, 16 w + 16) with
// mma.m16n8k16 (float32 accumulators).
//
// Fragments without ldmatrix: an MMA's k order is free as long as x and w agree on it, so lane
// (g = lane / 4, t = lane % 4) reads the 8 consecutive k of 32-wide chunk c at 8 t as one 16-byte
// word and feeds words 2h and 2h + 1 as its k pairs (2t, 2t + 1) and (2t + 8, 2t + 9) of the
// chunk's MMA h: x row g (and g + 8) for A, w row g for B.
#include <stdint.h>

#include <atomic>

#include "flexvar/linear.h"

#include "convert.cuh"

namespace {

using flexvar_cuda::from_f;
using flexvar_cuda::to_f;

constexpr int kBN = 64;       // output columns per block
constexpr int kBK = 64;       // k per pipeline stage
constexpr int kThreads = 128;  // 4 warps x 16 columns
constexpr int kUnits = kBK * 2 / 16;  // 16-byte words per shared-memory row

template <int MT> struct Shape;
template <> struct Shape<1> { static constexpr int stages = 6; };
template <> struct Shape<2> { static constexpr int stages = 5; };
template <> struct Shape<4> { static constexpr int stages = 4; };

template <int MT> constexpr size_t smem_bytes() { return (size_t)Shape<MT>::stages * (kBN + 16 * MT) * kUnits * 16; }

template <typename T> __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void mma<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
__device__ __forceinline__ int swz(int row, int unit) { return row * kUnits + (unit ^ ((row & 1) << 2)); }

__device__ __forceinline__ float gelu_tanh(float v) {
  return 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
}

template <typename T, int MT>
__global__ void __launch_bounds__(kThreads) linear_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                          const T* __restrict__ bias, T* __restrict__ y, int M, int N,
                                                          int K, int k_slice, int act, float* __restrict__ workspace,
                                                          unsigned* __restrict__ counters) {
  constexpr int BM = 16 * MT, kRows = kBN + BM, kStages = Shape<MT>::stages;
  extern __shared__ uint4 smem[];  // kStages x kRows x kUnits: the weight rows, then the x rows
  __shared__ unsigned arrived_last;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * kBN, split = blockIdx.z;
  const int k_begin = split * k_slice, iters = k_slice / kBK;

  auto load_stage = [&](int slot, int k0) {
    uint4* st = smem + slot * kRows * kUnits;
#pragma unroll
    for (int r = 0; r < kRows * kUnits / kThreads; ++r) {
      const int id = tid + r * kThreads, row = id / kUnits, unit = id % kUnits;
      if (row < kBN) {
        cp_async16(st + swz(row, unit), w + (size_t)(n0 + row) * K + k0 + unit * 8, true);
      } else {
        const int r = m0 + row - kBN;
        cp_async16(st + swz(row, unit), x + (size_t)(r < M ? r : 0) * K + k0 + unit * 8, r < M);
      }
    }
  };

  float acc[MT][2][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < iters) load_stage(s, k_begin + s * kBK);
    cp_async_commit();
  }
  for (int it = 0; it < iters; ++it) {
    cp_async_wait<kStages - 2>();  // stage `it` has landed (one group committed per stage)
    __syncthreads();               // ... for every thread, and slot (it - 1) is free again
    const int next = it + kStages - 1;
    if (next < iters) load_stage(next % kStages, k_begin + next * kBK);
    cp_async_commit();
    const uint4* st = smem + (it % kStages) * kRows * kUnits;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int unit = c * 4 + t;
      uint4 wv[2], lo[MT], hi[MT];
#pragma unroll
      for (int j = 0; j < 2; ++j) wv[j] = st[swz(warp * 16 + j * 8 + g, unit)];
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        lo[i] = st[swz(kBN + i * 16 + g, unit)];
        hi[i] = st[swz(kBN + i * 16 + g + 8, unit)];
      }
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          const uint32_t a[4] = {word(lo[i], 2 * h), word(hi[i], 2 * h), word(lo[i], 2 * h + 1), word(hi[i], 2 * h + 1)};
#pragma unroll
          for (int j = 0; j < 2; ++j) mma<T>(acc[i][j], a, word(wv[j], 2 * h), word(wv[j], 2 * h + 1));
        }
    }
  }
  cp_async_wait<0>();

  const int splits = gridDim.z;
  if (splits > 1) {
    const int tiles = gridDim.x * gridDim.y, tile = blockIdx.y * gridDim.x + blockIdx.x;
    float4* mine = reinterpret_cast<float4*>(workspace) + ((size_t)split * tiles + tile) * (MT * 2) * kThreads;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        mine[(i * 2 + j) * kThreads + tid] = make_float4(acc[i][j][0], acc[i][j][1], acc[i][j][2], acc[i][j][3]);
    __threadfence();
    __syncthreads();
    if (tid == 0) arrived_last = atomicAdd(counters + tile, 1u) == (unsigned)(splits - 1);
    __syncthreads();
    if (!arrived_last) return;
    __threadfence();
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
    for (int p = 0; p < splits; ++p) {  // split order: the same sum whichever block arrives last
      const float4* part = reinterpret_cast<const float4*>(workspace) + ((size_t)p * tiles + tile) * (MT * 2) * kThreads;
      float4 v[MT][2];
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) v[i][j] = __ldcg(part + (i * 2 + j) * kThreads + tid);
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          acc[i][j][0] += v[i][j].x;
          acc[i][j][1] += v[i][j].y;
          acc[i][j][2] += v[i][j].z;
          acc[i][j][3] += v[i][j].w;
        }
    }
    if (tid == 0) counters[tile] = 0;  // every split has arrived: ready for the next launch
  }

#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int col = n0 + warp * 16 + j * 8 + 2 * t;
    const float b0 = bias ? to_f(bias[col]) : 0.f, b1 = bias ? to_f(bias[col + 1]) : 0.f;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = m0 + i * 16 + g + half * 8;
        if (r >= M) continue;
        float v0 = acc[i][j][2 * half] + b0, v1 = acc[i][j][2 * half + 1] + b1;
        if (act == FLEXVAR_ACT_GELU_TANH) {
          v0 = gelu_tanh(v0);
          v1 = gelu_tanh(v1);
        }
        T pair[2] = {from_f<T>(v0), from_f<T>(v1)};
        *reinterpret_cast<uint32_t*>(y + (size_t)r * N + col) = *reinterpret_cast<const uint32_t*>(pair);
      }
  }
}

int rows_per_tile(int M) { return M <= 16 ? 16 : M <= 32 ? 32 : 64; }

template <typename T, int MT>
cudaError_t launch(const void* x, const void* w, const void* b, void* y, int M, int N, int K, int splits,
                   flexvar_act_t act, float* workspace, unsigned* counters, cudaStream_t stream) {
  constexpr size_t smem = smem_bytes<MT>();
  static_assert(smem <= 227 * 1024, "shared memory");
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  static std::atomic<unsigned long long> raised{0};  // devices on which the shared-memory limit is raised
  if (device >= 64 || !(raised.load() >> device & 1ull)) {
    e = cudaFuncSetAttribute(linear_kernel<T, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    if (device < 64) raised.fetch_or(1ull << device);
  }
  const dim3 grid((M + 16 * MT - 1) / (16 * MT), N / kBN, splits);
  linear_kernel<T, MT><<<grid, kThreads, smem, stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                         static_cast<const T*>(b), static_cast<T*>(y), M, N, K,
                                                         K / splits, (int)act, workspace, counters);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_rows(const void* x, const void* w, const void* b, void* y, int M, int N, int K, int splits,
                        flexvar_act_t act, float* workspace, unsigned* counters, cudaStream_t stream) {
  switch (rows_per_tile(M)) {
    case 16: return launch<T, 1>(x, w, b, y, M, N, K, splits, act, workspace, counters, stream);
    case 32: return launch<T, 2>(x, w, b, y, M, N, K, splits, act, workspace, counters, stream);
    default: return launch<T, 4>(x, w, b, y, M, N, K, splits, act, workspace, counters, stream);
  }
}

}  // namespace

extern "C" int flexvar_linear_splits(int M, int N, int K, int num_sms) {
  if (M < 1 || N < kBN || K < kBK) return 1;
  const int bm = rows_per_tile(M);
  const long tiles = (long)((M + bm - 1) / bm) * (N / kBN);
  // a block's float32 partial tile (bm x 64 x 4 bytes) stays at most a quarter of the weights it
  // streams (64 x k_slice x 2 bytes): k_slice >= 8 bm; and at least two 64-wide k steps per block
  const int min_slice = bm * 8 > 2 * kBK ? bm * 8 : 2 * kBK;
  int s = 1;
  while (s < 16 && tiles * s < num_sms && K % (kBK * 2 * s) == 0 && K / (2 * s) >= min_slice) s *= 2;
  return s;
}

extern "C" size_t flexvar_linear_workspace(int M, int N, int splits) {
  if (splits <= 1 || M < 1) return 0;
  const int bm = rows_per_tile(M);
  return (size_t)splits * ((M + bm - 1) / bm) * (N / kBN) * bm * kBN;
}

extern "C" size_t flexvar_linear_counters(int M, int N) {
  if (M < 1) return 0;
  const int bm = rows_per_tile(M);
  return (size_t)((M + bm - 1) / bm) * (N / kBN);
}

extern "C" cudaError_t flexvar_linear(const void* x, const void* w, const void* b, void* y, int M, int N, int K,
                                      int splits, flexvar_act_t act, float* workspace, unsigned* counters,
                                      flexvar_dtype_t dtype, cudaStream_t stream) {
  if (M < 0 || N <= 0 || K <= 0 || N % kBN || splits < 1 || K % (kBK * splits)) return cudaErrorInvalidValue;
  if (N / kBN > 65535 || (M + 15) / 16 > 0x7FFFFFFF / 16 || splits > 65535) return cudaErrorInvalidValue;
  if (act != FLEXVAR_ACT_NONE && act != FLEXVAR_ACT_GELU_TANH) return cudaErrorInvalidValue;
  if (splits > 1 && (!workspace || !counters)) return cudaErrorInvalidValue;
  if (M == 0) return cudaSuccess;
  switch (dtype) {
    case FLEXVAR_BFLOAT16:
      return launch_rows<__nv_bfloat16>(x, w, b, y, M, N, K, splits, act, workspace, counters, stream);
    case FLEXVAR_FLOAT16: return launch_rows<__half>(x, w, b, y, M, N, K, splits, act, workspace, counters, stream);
    default: return cudaErrorInvalidValue;
  }
}
