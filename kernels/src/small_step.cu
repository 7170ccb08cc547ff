// Every block of one step in one cooperative kernel: see include/flexvar/small_step.h for the formula.
//
// Grid: one block of 256 threads (8 warps) per SM. Per transformer block, seven phases separated by
// grid-wide barriers:
//   LN1 -> qkv GEMM -> attention (q/k norms, cache write) -> proj GEMM (+ residual) -> LN2 ->
//   fc1 GEMM (+ GELU) -> fc2 GEMM (+ residual).
// GEMMs (M <= 64 rows): a thread block owns output tiles of 8 columns (tile c, c + grid, ...), its warps
// split K in chunks of 32. Per chunk a lane loads 8 consecutive k of one A row and one weight row
// (16 bytes each) and feeds two mma.m16n8k16: the k order inside a chunk is permuted alike for A and
// the weights, so no shared-memory staging or ldmatrix is needed and each weight byte is read once,
// straight from device memory. Each warp keeps several chunks in flight, and a GEMM's first weight
// loads (all of K at <= 16 rows) and its epilogue's bias/gamma lines are requested before the barrier
// that precedes it. The warps' partial sums are added in warp order (deterministic).
// Measured (bench/gpu/small_step_probe.cu, H100, d16, 2 rows): 28 us per transformer block, of which
// 7.8 us are the seven barriers and 8.4 us the weights at full bandwidth.
// Attention (start + l <= 256 keys): a thread block per (row, head, 8 queries) loads the keys and
// values of that head into shared memory (this step's keys normalised from qkv), one warp per query.
#include "flexvar/small_step.h"

#include <cooperative_groups.h>

#include <cmath>

#include "convert.cuh"

namespace cg = cooperative_groups;

namespace {

using flexvar_cuda::from_f;
using flexvar_cuda::to_f;

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kMaxTiles = 6;  // column tiles of 8 per thread block and GEMM
constexpr int kD = 64, kRowS = kD + 2;  // head dim; shared-memory row stride of keys/values (no bank conflicts)
constexpr int kMaxKeys = FLEXVAR_SMALL_STEP_MAX_KEYS;

// ---- element pairs (one 32-bit word holds two values of the dtype) ----------------------------------
template <typename T> __device__ __forceinline__ float2 unpack(uint32_t w);
template <> __device__ __forceinline__ float2 unpack<__half>(uint32_t w) {
  return __half22float2(*reinterpret_cast<const __half2*>(&w));
}
template <> __device__ __forceinline__ float2 unpack<__nv_bfloat16>(uint32_t w) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w));
}
template <typename T> __device__ __forceinline__ uint32_t pack(float a, float b) {
  const T lo = from_f<T>(a), hi = from_f<T>(b);
  return (uint32_t)(*reinterpret_cast<const uint16_t*>(&lo)) | ((uint32_t)(*reinterpret_cast<const uint16_t*>(&hi)) << 16);
}

// D += A B, m16n8k16, float32 accumulators
template <typename T> __device__ __forceinline__ void mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                          uint32_t a3, uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void mma<__half>(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                        uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma<__nv_bfloat16>(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                               uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// every thread gets the sum (warp totals added in warp order)
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) s += red[w];
  return s;
}

__device__ __forceinline__ float gelu_tanh(float v) {
  const float k0 = 0.7978845608028654f, k1 = 0.044715f;  // sqrt(2 / pi)
  return 0.5f * v * (1.f + tanhf(k0 * (v + k1 * v * v * v)));
}

// ---- phases -----------------------------------------------------------------------------------------
// out[r] = LN(x[r]) (1 + mods[b, si]) + mods[b, shi], rounded; one thread block per row
template <typename T>
__device__ void ln_mod(const float* x, int M, int C, int l, const T* mods, int si, int shi, float eps, T* out,
                       float* red) {
  constexpr int kPer = 8;  // C <= 2048
  for (int r = blockIdx.x; r < M; r += gridDim.x) {
    const float* xr = x + (size_t)r * C;
    const T* mb = mods + (size_t)(r / l) * 6 * C;
    float v[kPer], sc[kPer], sh[kPer];
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < kPer; ++e) {  // x, scale and shift loaded together: one round of latency
      const int c = threadIdx.x + e * kThreads;
      v[e] = c < C ? __ldcg(xr + c) : 0.f;
      sc[e] = c < C ? to_f(mb[si * C + c]) : 0.f;
      sh[e] = c < C ? to_f(mb[shi * C + c]) : 0.f;
      s += v[e];
    }
    const float mean = block_sum(s, red) / C;
    float q = 0.f;
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int c = threadIdx.x + e * kThreads;
      if (c < C) q += (v[e] - mean) * (v[e] - mean);
    }
    const float rstd = rsqrtf(block_sum(q, red) / C + eps);
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int c = threadIdx.x + e * kThreads;
      if (c < C) out[(size_t)r * C + c] = from_f<T>((v[e] - mean) * rstd * (1.f + sc[e]) + sh[e]);
    }
  }
}

// ep(row, col, sum_k A[row, k] W[col, k]) for this thread block's nt <= NTMAX column tiles; A (M, K),
// W (N, K) row-major. U chunks per warp are in flight at once: all their weight and A loads are
// issued before the first mma (U * (NTMAX + 2 MT) 16-byte loads per lane).
template <typename T, int MT, int NTMAX, int U, typename Ep, typename Pre, typename Sync>
__device__ void gemm_tiles(const T* A, int M, int K, const T* __restrict__ W, int nt, float* red, Ep ep, Pre pre,
                           Sync sync) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3, G = gridDim.x;
  float acc[NTMAX][MT][4];
#pragma unroll
  for (int i = 0; i < NTMAX; ++i)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) acc[i][mt][0] = acc[i][mt][1] = acc[i][mt][2] = acc[i][mt][3] = 0.f;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  const int chunks = K / 32;
  const T* wrow = W + ((size_t)blockIdx.x * 8 + g) * K + 8 * t;  // tile i adds i * G * 8 rows
  uint4 b[U][NTMAX], a[U][MT][2];
  auto load_w = [&](int ch0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int ch = ch0 + u * kWarps;
#pragma unroll
      for (int i = 0; i < NTMAX; ++i)
        b[u][i] = i < nt && ch < chunks ? __ldg(reinterpret_cast<const uint4*>(wrow + (size_t)i * G * 8 * K + ch * 32))
                                        : zero;
    }
  };
  // the weights do not depend on the previous phase: the first loads and the epilogue's operands are
  // in flight while the grid waits at the barrier
  load_w(warp);
  if (threadIdx.x < 8 * nt) pre((int)(blockIdx.x + (threadIdx.x >> 3) * G) * 8 + (threadIdx.x & 7));
  sync();
  for (int ch0 = warp; ch0 < chunks; ch0 += U * kWarps) {
    if (ch0 != warp) load_w(ch0);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int ch = ch0 + u * kWarps;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int row = mt * 16 + hf * 8 + g;
          a[u][mt][hf] = row < M && ch < chunks
                             ? __ldcg(reinterpret_cast<const uint4*>(A + (size_t)row * K + ch * 32 + 8 * t))
                             : zero;
        }
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int i = 0; i < NTMAX; ++i) {
        if (i < nt) {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma<T>(acc[i][mt], a[u][mt][0].x, a[u][mt][1].x, a[u][mt][0].y, a[u][mt][1].y, b[u][i].x, b[u][i].y);
            mma<T>(acc[i][mt], a[u][mt][0].z, a[u][mt][1].z, a[u][mt][0].w, a[u][mt][1].w, b[u][i].z, b[u][i].w);
          }
        }
      }
  }
  // partial sums of the warps -> shared memory, added in warp order
#pragma unroll
  for (int i = 0; i < NTMAX; ++i)
    if (i < nt)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        *reinterpret_cast<float4*>(red + (((size_t)warp * kMaxTiles + i) * MT + mt) * 128 + lane * 4) =
            make_float4(acc[i][mt][0], acc[i][mt][1], acc[i][mt][2], acc[i][mt][3]);
  __syncthreads();
  const int total = nt * MT * 128;
  for (int idx = threadIdx.x; idx < total; idx += kThreads) {
    const int i = idx / (MT * 128), rem = idx % (MT * 128), mt = rem / 128, ln = (rem % 128) / 4, e = rem % 4;
    const int row = mt * 16 + (ln >> 2) + (e >= 2 ? 8 : 0);
    if (row >= M) continue;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[(((size_t)w * kMaxTiles + i) * MT) * 128 + rem];
    ep(row, (int)(blockIdx.x + i * G) * 8 + 2 * (ln & 3) + (e & 1), s);
  }
  __syncthreads();  // red is reused
}

// Tile counts per thread block differ by at most one across the grid: blocks with one or two tiles
// (the C-wide projections) go deep in K (8 / MT chunks per warp in flight), the others wide in N
// (4 chunks for 16 rows: a whole 1024-deep K per warp, all of it requested before the barrier).
// `sync` is the grid barrier before the GEMM (called once by every thread); pre(col) is called once
// per column of this thread block before it, to prefetch what ep(.., col, ..) reads.
template <typename T, int MT, typename Ep, typename Pre, typename Sync>
__device__ void gemm(const T* A, int M, int K, const T* __restrict__ W, int N, float* red, Ep ep, Pre pre,
                     Sync sync) {
  const int tiles = N / 8, G = gridDim.x;
  const int nt = (int)blockIdx.x < tiles ? (tiles - 1 - (int)blockIdx.x) / G + 1 : 0;
  if (nt == 0) {  // the whole thread block
    sync();
    return;
  }
  if (nt <= 2) {
    gemm_tiles<T, MT, 2, (MT >= 4 ? 2 : 8 / MT)>(A, M, K, W, nt, red, ep, pre, sync);
  } else {
    gemm_tiles<T, MT, kMaxTiles, (MT >= 4 ? 1 : (MT == 2 ? 2 : 4))>(A, M, K, W, nt, red, ep, pre, sync);
  }
}

__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// q/k norms, this step's keys and values into the cache, attention; o (M, C)
template <typename T>
__device__ void attention(const flexvar_small_step_args_t& a, int blk, const T* qkv, T* o, unsigned char* smem) {
  T* Ks = reinterpret_cast<T*>(smem);
  T* Vs = Ks + kMaxKeys * kRowS;
  float* qs = reinterpret_cast<float*>(Vs + kMaxKeys * kRowS);
  float* ps = qs + kWarps * kD;
  const int R = a.R, l = a.l, H = a.H, C = a.C, start = a.start, end = a.start + a.l;
  const int nq = (l + kWarps - 1) / kWarps, units = R * H * nq;
  const size_t layer = (size_t)a.L * R * H * kD;
  T* kc = static_cast<T*>(a.kv) + (size_t)blk * 2 * layer;
  T* vc = kc + layer;
  const float* scale = a.blocks[blk].q_scale;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int u = blockIdx.x; u < units; u += gridDim.x) {
    const int qc = u % nq, h = (u / nq) % H, b = u / nq / H;
    for (int i = threadIdx.x; i < start * (kD / 2); i += kThreads) {  // earlier steps' keys and values
      const int tk = i / (kD / 2), p = i % (kD / 2);
      const size_t at = (((size_t)tk * R + b) * H + h) * kD + 2 * p;
      *reinterpret_cast<uint32_t*>(Ks + tk * kRowS + 2 * p) = *reinterpret_cast<const uint32_t*>(kc + at);
      *reinterpret_cast<uint32_t*>(Vs + tk * kRowS + 2 * p) = *reinterpret_cast<const uint32_t*>(vc + at);
    }
    for (int j = warp; j < l; j += kWarps) {  // this step's: k normalised (float32), rounded once
      const T* src = qkv + (size_t)(b * l + j) * 3 * C + h * kD + 2 * lane;
      const float2 k = unpack<T>(__ldcg(reinterpret_cast<const unsigned int*>(src + C)));
      const float n = fmaxf(sqrtf(warp_sum(k.x * k.x + k.y * k.y)), 1e-12f);
      const uint32_t kk = pack<T>(__fdiv_rn(k.x, n), __fdiv_rn(k.y, n));
      const uint32_t vv = __ldcg(reinterpret_cast<const unsigned int*>(src + 2 * C));
      const int tk = start + j;
      *reinterpret_cast<uint32_t*>(Ks + tk * kRowS + 2 * lane) = kk;
      *reinterpret_cast<uint32_t*>(Vs + tk * kRowS + 2 * lane) = vv;
      if (qc == 0) {  // one thread block per (row, head) writes the cache
        const size_t at = (((size_t)tk * R + b) * H + h) * kD + 2 * lane;
        *reinterpret_cast<uint32_t*>(kc + at) = kk;
        *reinterpret_cast<uint32_t*>(vc + at) = vv;
      }
    }
    __syncthreads();
    const int j = qc * kWarps + warp;
    if (j < l) {
      const int r = b * l + j;
      const float2 q = unpack<T>(__ldcg(reinterpret_cast<const unsigned int*>(qkv + (size_t)r * 3 * C + h * kD + 2 * lane)));
      const float n = fmaxf(sqrtf(warp_sum(q.x * q.x + q.y * q.y)), 1e-12f), s = scale[h];
      const float2 qr = unpack<T>(pack<T>(__fmul_rn(__fdiv_rn(q.x, n), s), __fmul_rn(__fdiv_rn(q.y, n), s)));
      float* qw = qs + warp * kD;
      float* pw = ps + warp * kMaxKeys;
      qw[2 * lane] = qr.x, qw[2 * lane + 1] = qr.y;
      __syncwarp();
      float m = -INFINITY;
      for (int tk = lane; tk < end; tk += 32) {
        const T* kr = Ks + tk * kRowS;
        float sc = 0.f;
#pragma unroll
        for (int p = 0; p < kD / 2; ++p) {
          const float2 kf = unpack<T>(*reinterpret_cast<const uint32_t*>(kr + 2 * p));
          sc += qw[2 * p] * kf.x + qw[2 * p + 1] * kf.y;
        }
        pw[tk] = sc;
        m = fmaxf(m, sc);
      }
      m = warp_max(m);
      float z = 0.f;
      for (int tk = lane; tk < end; tk += 32) {
        const float e = expf(pw[tk] - m);
        pw[tk] = e;
        z += e;
      }
      z = warp_sum(z);
      __syncwarp();
      float o0 = 0.f, o1 = 0.f;
      for (int tk = 0; tk < end; ++tk) {
        const float p = pw[tk];
        const float2 vf = unpack<T>(*reinterpret_cast<const uint32_t*>(Vs + tk * kRowS + 2 * lane));
        o0 += p * vf.x, o1 += p * vf.y;
      }
      *reinterpret_cast<uint32_t*>(o + (size_t)r * C + h * kD + 2 * lane) = pack<T>(o0 / z, o1 / z);
    }
    __syncthreads();  // shared memory is refilled by the next unit
  }
}

template <typename T, int MT>
__global__ void __launch_bounds__(kThreads, 1) small_step_kernel(const flexvar_small_step_args_t a) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* red = reinterpret_cast<float*>(smem);
  cg::grid_group grid = cg::this_grid();
  const int M = a.R * a.l, C = a.C, hidden = a.hidden, l = a.l;
  T* wide = static_cast<T*>(a.scratch);                                // (M, max(3C, hidden)): qkv, then fc1's output
  T* narrow = wide + (size_t)M * (3 * C > hidden ? 3 * C : hidden);  // (M, C): LN outputs, attention output
  float* x = a.x;
  // optional trace: CTA 0 stamps the global timer at the start and after every barrier (probes only)
  const bool tracing = a.trace != nullptr && blockIdx.x == 0 && threadIdx.x == 0;
  int stamp = 0;
  auto sync = [&]() {
    grid.sync();
    if (tracing) {
      uint64_t ns;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
      a.trace[stamp++] = ns;
    }
  };
  if (tracing) {
    uint64_t ns;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
    a.trace[stamp++] = ns;
  }
  for (int blk = 0; blk < a.depth; ++blk) {
    const flexvar_block_weights_t& w = a.blocks[blk];
    const T* mods = static_cast<const T*>(a.mods) + (size_t)blk * a.R * 6 * C;
    const T* bqkv = static_cast<const T*>(w.bqkv);
    const T* bproj = static_cast<const T*>(w.bproj);
    const T* b1 = static_cast<const T*>(w.b1);
    const T* b2 = static_cast<const T*>(w.b2);

    const int R = a.R;
    auto rows_pre = [&](const T* bias, int k, int n) {  // a bias column and one modulation column per row
      prefetch_l2(bias + n);
      if (k >= 0)
        for (int b = 0; b < R; ++b) prefetch_l2(mods + ((size_t)b * 6 + k) * C + n);
    };
    ln_mod<T>(x, M, C, l, mods, 2, 4, a.eps, narrow, red);
    gemm<T, MT>(
        narrow, M, C, static_cast<const T*>(w.wqkv), 3 * C, red,
        [&](int r, int n, float s) { wide[(size_t)r * 3 * C + n] = from_f<T>(s + to_f(bqkv[n])); },
        [&](int n) { rows_pre(bqkv, -1, n); }, sync);
    sync();
    attention<T>(a, blk, wide, narrow, smem);
    gemm<T, MT>(
        narrow, M, C, static_cast<const T*>(w.wproj), C, red,
        [&](int r, int n, float s) {
          const float y = to_f(from_f<T>(s + to_f(bproj[n])));
          float* xp = x + (size_t)r * C + n;
          __stcg(xp, __ldcg(xp) + y * to_f(mods[(size_t)(r / l) * 6 * C + n]));
        },
        [&](int n) { rows_pre(bproj, 0, n); }, sync);
    sync();
    ln_mod<T>(x, M, C, l, mods, 3, 5, a.eps, narrow, red);
    gemm<T, MT>(
        narrow, M, C, static_cast<const T*>(w.w1), hidden, red,
        [&](int r, int n, float s) { wide[(size_t)r * hidden + n] = from_f<T>(gelu_tanh(s + to_f(b1[n]))); },
        [&](int n) { rows_pre(b1, -1, n); }, sync);
    gemm<T, MT>(
        wide, M, hidden, static_cast<const T*>(w.w2), C, red,
        [&](int r, int n, float s) {
          const float y = to_f(from_f<T>(s + to_f(b2[n])));
          float* xp = x + (size_t)r * C + n;
          __stcg(xp, __ldcg(xp) + y * to_f(mods[((size_t)(r / l) * 6 + 1) * C + n]));
        },
        [&](int n) { rows_pre(b2, 1, n); }, sync);
    sync();
  }
}

template <typename T, int MT>
size_t smem_bytes() {
  const size_t g = (size_t)kWarps * kMaxTiles * MT * 128 * sizeof(float);
  const size_t at = 2 * (size_t)kMaxKeys * kRowS * sizeof(T) + (size_t)kWarps * (kD + kMaxKeys) * sizeof(float);
  return g > at ? g : at;
}

int sm_count() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 0;
  return n;
}

template <typename T, int MT>
cudaError_t launch(const flexvar_small_step_args_t* a, cudaStream_t stream) {
  auto kernel = small_step_kernel<T, MT>;
  const size_t smem = smem_bytes<T, MT>();
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  int per_sm = 0;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  if (e != cudaSuccess) return e;
  if (per_sm < 1) return cudaErrorCooperativeLaunchTooLarge;
  void* params[] = {const_cast<flexvar_small_step_args_t*>(a)};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(sm_count()), dim3(kThreads), params,
                                     smem, stream);
}

template <typename T>
cudaError_t launch_rows(const flexvar_small_step_args_t* a, cudaStream_t stream) {
  const int M = a->R * a->l;
  if (M <= 16) return launch<T, 1>(a, stream);
  if (M <= 32) return launch<T, 2>(a, stream);
  return launch<T, 4>(a, stream);
}

}  // namespace

extern "C" size_t flexvar_small_step_scratch_bytes(int M, int C, int hidden, flexvar_dtype_t dtype) {
  const size_t el = dtype == FLEXVAR_FLOAT32 ? 4 : 2;
  return (size_t)M * ((3 * C > hidden ? 3 * C : hidden) + C) * el;
}

extern "C" cudaError_t flexvar_small_step_supported(int R, int l, int C, int H, int d, int hidden, int depth, int L,
                                                    int start, flexvar_dtype_t dtype) {
  if (dtype != FLEXVAR_BFLOAT16 && dtype != FLEXVAR_FLOAT16) return cudaErrorInvalidValue;
  if (R < 1 || l < 1 || (int64_t)R * l > FLEXVAR_SMALL_STEP_MAX_ROWS) return cudaErrorInvalidValue;
  if (start < 0 || start + l > L || start + l > kMaxKeys) return cudaErrorInvalidValue;
  if (d != kD || (int64_t)H * d != C || C > 2048 || C % 32 || hidden % 32 || hidden < 1) return cudaErrorInvalidValue;
  if (depth < 1 || depth > FLEXVAR_SMALL_STEP_MAX_DEPTH) return cudaErrorInvalidValue;
  const int sms = sm_count();
  if (sms < 1) return cudaErrorNoDevice;
  const int widest = (3 * C > hidden ? 3 * C : hidden) / 8;
  if ((widest + sms - 1) / sms > kMaxTiles) return cudaErrorInvalidValue;
  return cudaSuccess;
}

extern "C" cudaError_t flexvar_small_step(const flexvar_small_step_args_t* a, flexvar_dtype_t dtype,
                                          cudaStream_t stream) {
  const cudaError_t ok = flexvar_small_step_supported(a->R, a->l, a->C, a->H, a->d, a->hidden, a->depth, a->L, a->start,
                                                     dtype);
  if (ok != cudaSuccess) return ok;
  if (dtype == FLEXVAR_FLOAT16) return launch_rows<__half>(a, stream);
  return launch_rows<__nv_bfloat16>(a, stream);
}
