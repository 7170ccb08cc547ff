// Linear layer for few rows: see include/flexvar/linear.h for the contract.
//
// A block (4 warps) owns 64 output columns and BM = 16 MT rows. Per 64-wide k step, cp.async
// copies the block's 64 weight rows and BM x rows into one of kStages shared-memory slots (rows of
// 128 bytes; the two 64-byte halves swapped on odd rows, so a quarter-warp's 16-byte reads never
// share a bank). Warp w multiplies all BM rows by columns [16 w, 16 w + 16) with
// mma.m16n8k16 (float32 accumulators). With splits > 1 (sm_90), the blocks of one output tile form a
// thread-block cluster along K: each leaves its float32 partial tile in its shared memory and, after a
// cluster barrier, block r sums its share of the tile over the cluster's blocks in rank order
// (distributed shared memory) and writes it.
//
// Fragments without ldmatrix: an MMA's k order is free as long as x and w agree on it, so lane
// (g = lane / 4, t = lane % 4) reads the 8 consecutive k of 32-wide chunk c at 8 t as one 16-byte
// word and feeds words 2h and 2h + 1 as its k pairs (2t, 2t + 1) and (2t + 8, 2t + 9) of the
// chunk's MMA h: x row g (and g + 8) for A, w row g for B.
#include <stdint.h>

#include <atomic>

#include <cooperative_groups.h>

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

// y[r, col], y[r, col + 1] = act(v + bias) rounded once; rows past M are padding
template <typename T>
__device__ __forceinline__ void store_pair(T* __restrict__ y, const T* __restrict__ bias, int act, int M, int N, int r,
                                           int col, float v0, float v1) {
  if (r >= M) return;
  if (bias) {
    v0 += to_f(bias[col]);
    v1 += to_f(bias[col + 1]);
  }
  if (act == FLEXVAR_ACT_GELU_TANH) {
    v0 = gelu_tanh(v0);
    v1 = gelu_tanh(v1);
  }
  const T pair[2] = {from_f<T>(v0), from_f<T>(v1)};
  *reinterpret_cast<uint32_t*>(y + (size_t)r * N + col) = *reinterpret_cast<const uint32_t*>(pair);
}

template <typename T, int MT>
__global__ void __launch_bounds__(kThreads) linear_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                          const T* __restrict__ bias, T* __restrict__ y, int M, int N,
                                                          int K, int k_slice, int act) {
  constexpr int BM = 16 * MT, kRows = kBN + BM, kStages = Shape<MT>::stages;
  extern __shared__ uint4 smem[];  // kStages x kRows x kUnits: the weight rows, then the x rows
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
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    constexpr int kSlots = MT * 2 * kThreads;  // float4 slots of a partial tile: slot (i * 2 + j) * kThreads + tid
    float4* part = reinterpret_cast<float4*>(smem);  // the pipeline's slots are free now
    __syncthreads();
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        part[(i * 2 + j) * kThreads + tid] = make_float4(acc[i][j][0], acc[i][j][1], acc[i][j][2], acc[i][j][3]);
    cluster.sync();
    const int rank = (int)cluster.block_rank(), share = (kSlots + splits - 1) / splits;
    const int last = (rank + 1) * share < kSlots ? (rank + 1) * share : kSlots;
    for (int slot = rank * share + tid; slot < last; slot += kThreads) {
      float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int p = 0; p < splits; ++p) {  // rank order: the same sum whichever block runs first
        const float4 v = cluster.map_shared_rank(part, p)[slot];
        sum.x += v.x;
        sum.y += v.y;
        sum.z += v.z;
        sum.w += v.w;
      }
      const int owner = slot % kThreads, ij = slot / kThreads, i = ij / 2, j = ij % 2;
      const int ol = owner & 31, col = n0 + (owner >> 5) * 16 + j * 8 + 2 * (ol & 3), r0 = m0 + i * 16 + (ol >> 2);
      store_pair(y, bias, act, M, N, r0, col, sum.x, sum.y);
      store_pair(y, bias, act, M, N, r0 + 8, col, sum.z, sum.w);
    }
    cluster.sync();  // peers read this block's partial until here
#endif
    return;
  }

#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int col = n0 + warp * 16 + j * 8 + 2 * t;
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      const int r0 = m0 + i * 16 + g;
      store_pair(y, bias, act, M, N, r0, col, acc[i][j][0], acc[i][j][1]);
      store_pair(y, bias, act, M, N, r0 + 8, col, acc[i][j][2], acc[i][j][3]);
    }
  }
}

int rows_per_tile(int M) { return M <= 16 ? 16 : M <= 32 ? 32 : 64; }

template <typename T, int MT>
cudaError_t launch(const void* x, const void* w, const void* b, void* y, int M, int N, int K, int splits,
                   flexvar_act_t act, cudaStream_t stream) {
  constexpr size_t stage = (size_t)(kBN + 16 * MT) * kUnits * 16;
  static_assert(stage * Shape<MT>::stages <= 227 * 1024, "shared memory");
  const int iters = K / splits / kBK;
  // a block never has more than `iters` stages in flight: only those slots are used
  const size_t smem = stage * (iters < Shape<MT>::stages ? iters : Shape<MT>::stages);
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  static std::atomic<unsigned long long> raised{0};  // devices on which the shared-memory limit is raised
  if (device >= 64 || !(raised.load() >> device & 1ull)) {
    e = cudaFuncSetAttribute(linear_kernel<T, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)(stage * Shape<MT>::stages));
    if (e != cudaSuccess) return e;
    if (device < 64) raised.fetch_or(1ull << device);
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((M + 16 * MT - 1) / (16 * MT), N / kBN, splits);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute cluster[1];
  cluster[0].id = cudaLaunchAttributeClusterDimension;
  cluster[0].val.clusterDim.x = 1;
  cluster[0].val.clusterDim.y = 1;
  cluster[0].val.clusterDim.z = splits;
  cfg.attrs = cluster;
  cfg.numAttrs = splits > 1 ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, linear_kernel<T, MT>, static_cast<const T*>(x), static_cast<const T*>(w),
                            static_cast<const T*>(b), static_cast<T*>(y), M, N, K, K / splits, (int)act);
}

template <typename T>
cudaError_t launch_rows(const void* x, const void* w, const void* b, void* y, int M, int N, int K, int splits,
                        flexvar_act_t act, cudaStream_t stream) {
  switch (rows_per_tile(M)) {
    case 16: return launch<T, 1>(x, w, b, y, M, N, K, splits, act, stream);
    case 32: return launch<T, 2>(x, w, b, y, M, N, K, splits, act, stream);
    default: return launch<T, 4>(x, w, b, y, M, N, K, splits, act, stream);
  }
}

bool has_clusters() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  return major >= 9;
}

}  // namespace

extern "C" int flexvar_linear_splits(int M, int N, int K, int num_sms) {
  if (M < 1 || N < kBN || K < kBK || !has_clusters()) return 1;
  const int bm = rows_per_tile(M);
  const long tiles = (long)((M + bm - 1) / bm) * (N / kBN);
  // enough blocks for two per multiprocessor, each with at least two 64-wide k steps
  int s = 1;
  while (s < FLEXVAR_LINEAR_MAX_SPLITS && tiles * s < 2L * num_sms && K % (kBK * 2 * s) == 0 && K / (2 * s) >= 2 * kBK)
    s *= 2;
  return s;
}

extern "C" cudaError_t flexvar_linear(const void* x, const void* w, const void* b, void* y, int M, int N, int K,
                                      int splits, flexvar_act_t act, flexvar_dtype_t dtype, cudaStream_t stream) {
  if (M < 0 || N <= 0 || K <= 0 || N % kBN || splits < 1 || splits > FLEXVAR_LINEAR_MAX_SPLITS ||
      K % (kBK * splits))
    return cudaErrorInvalidValue;
  if (N / kBN > 65535 || (M + 15) / 16 > 0x7FFFFFFF / 16) return cudaErrorInvalidValue;
  if (act != FLEXVAR_ACT_NONE && act != FLEXVAR_ACT_GELU_TANH) return cudaErrorInvalidValue;
  if (splits > 1 && !has_clusters()) return cudaErrorInvalidValue;
  if (M == 0) return cudaSuccess;
  switch (dtype) {
    case FLEXVAR_BFLOAT16: return launch_rows<__nv_bfloat16>(x, w, b, y, M, N, K, splits, act, stream);
    case FLEXVAR_FLOAT16: return launch_rows<__half>(x, w, b, y, M, N, K, splits, act, stream);
    default: return cudaErrorInvalidValue;
  }
}
