// Guidance + top-k + top-p + draw: see include/flexvar/guided_sample.h for the rule.
// Few rows: one block per row (256 to 1024 threads by vocabulary size); thread t holds g[t + THREADS j] in
// registers (PER values); from 4 rows per SM on, persistent blocks that stage the next row's logits
// in shared memory (cp.async) while they sample the current one. Many rows (from 1.5 per SM, vocabularies
// of more than 1024): `guided_sample_rows_kernel`, 256 threads a row holding it in shared memory, so that
// several rows share an SM. Both find the k-th largest by a 3-pass radix select (integer histograms in
// shared memory) and the top-p cut, when the survivors fit the sort (one per thread in the first, up to
// 1024 in the second), by sorting them (one bitonic network, `sort_desc`) and scanning their masses in
// descending order, else by a 31-step bisection over the masses in a fixed order; the draw scans the kept
// masses in vocabulary order.
#include "flexvar/guided_sample.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int kMaxVocab = 16384;
constexpr int kRadixBins = 2048;  // 11-bit digits: the k-th largest key in 3 passes (11, 11, 10 bits)

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

// Sum in a fixed order; every thread returns the same value. `red` holds one slot per warp.
template <int THREADS, typename T>
__device__ __forceinline__ T block_sum(T v, T* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);  // symmetric: all lanes equal
  __syncthreads();  // the previous call's readers are done with red
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  T s = 0;
#pragma unroll
  for (int w = 0; w < THREADS / 32; ++w) s += red[w];
  return s;
}

// The minimum over the block; every thread returns it. `red` holds one slot per warp.
template <int THREADS>
__device__ __forceinline__ float block_min(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // the previous call's readers are done with red
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float m = red[0];
#pragma unroll
  for (int w = 1; w < THREADS / 32; ++w) m = fminf(m, red[w]);
  return m;
}

// Inclusive and exclusive scan over threads in thread order (in-warp shuffles, then the warps'
// totals in order): excl of thread t + 1 is bitwise incl of thread t; returns the total.
template <int THREADS, typename T>
__device__ __forceinline__ T block_scan(T v, T& incl, T& excl, T* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T up = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += up;
  }
  excl = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) excl = 0;
  __syncthreads();
  if (lane == 31) red[warp] = incl;
  __syncthreads();
  T off = 0, total = 0;
#pragma unroll
  for (int w = 0; w < THREADS / 32; ++w) {
    if (w == warp) off = total;
    total += red[w];
  }
  excl += off, incl += off;
  return total;
}

// The key of the k-th largest of the block's values (1 <= k <= number of valid values): radix
// select, most significant digit first, with an integer histogram in shared memory. each_key(f) calls
// f(key) on every valid key the thread holds.
template <int THREADS, typename EachKey>
__device__ uint32_t kth_largest_key(EachKey each_key, int k, int* hist, int* redi, int* found) {
  uint32_t prefix = 0, mask = 0;
  constexpr int kShift[3] = {21, 10, 0}, kBits[3] = {11, 11, 10};
#pragma unroll
  for (int pass = 0; pass < 3; ++pass) {
    const int nb = 1 << kBits[pass], shift = kShift[pass];
    for (int b = threadIdx.x; b < nb; b += THREADS) hist[b] = 0;
    __syncthreads();
    each_key([&](uint32_t key) {
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & (nb - 1)], 1);
    });
    __syncthreads();
    // thread t owns bins [t c, t c + c); counts above a bin = bins of higher threads + higher own bins
    const int c = nb / THREADS > 0 ? nb / THREADS : 1, lo = threadIdx.x * c, hi = min(nb, lo + c);
    int own = 0;
    for (int b = lo; b < hi; ++b) own += hist[b];
    int incl, excl;
    const int total = block_scan<THREADS>(own, incl, excl, redi);
    int above = total - incl;  // in bins owned by higher threads
    for (int b = hi - 1; b >= lo; --b) {
      if (above < k && above + hist[b] >= k) found[0] = b, found[1] = k - above;
      above += hist[b];
    }
    __syncthreads();
    prefix |= (uint32_t)found[0] << shift;
    mask |= (uint32_t)(nb - 1) << shift;
    k = found[1];
    __syncthreads();  // found is rewritten by the next pass
  }
  return prefix;
}

// Bitonic sort of N values (a power of two), ITEMS = N / THREADS per thread, descending over the block:
// thread t holds positions t ITEMS + i (i < ITEMS) and returns the values sorted there. Partners in the
// same thread are exchanged in registers, in the same warp through shuffles, farther ones through
// shared memory `buf` (2 N floats, alternating halves so that one barrier per stage suffices; the
// first such stage writes the first half, so the caller may hand the values in through the second).
template <int THREADS, int N>
__device__ __forceinline__ void sort_desc(float (&v)[N / THREADS], float* buf) {
  constexpr int ITEMS = N / THREADS;
  const int t = threadIdx.x;
  int half = 0;
#pragma unroll
  for (int k = 2; k <= N; k <<= 1) {
#pragma unroll
    for (int j = k >> 1; j > 0; j >>= 1) {
      if (j < ITEMS) {  // both positions in this thread: position n = t ITEMS + i, partner n ^ j
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
          if ((i & j) == 0) {
            const bool desc = ((t * ITEMS + i) & k) == 0;
            const float lo = v[i], hi = v[i | j];
            v[i] = desc ? fmaxf(lo, hi) : fminf(lo, hi);
            v[i | j] = desc ? fminf(lo, hi) : fmaxf(lo, hi);
          }
        }
      } else {
        const int tj = j / ITEMS;  // the partner thread is t ^ tj, item for item
        float p[ITEMS];
        if (tj < 32) {
#pragma unroll
          for (int i = 0; i < ITEMS; ++i) p[i] = __shfl_xor_sync(0xffffffffu, v[i], tj);
        } else {
#pragma unroll
          for (int i = 0; i < ITEMS; ++i) buf[half * N + t * ITEMS + i] = v[i];
          __syncthreads();
#pragma unroll
          for (int i = 0; i < ITEMS; ++i) p[i] = buf[half * N + (t ^ tj) * ITEMS + i];
          half ^= 1;
        }
        const bool lower = (t & tj) == 0;
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
          const bool desc = ((t * ITEMS + i) & k) == 0;
          v[i] = lower == desc ? fmaxf(v[i], p[i]) : fminf(v[i], p[i]);
        }
      }
    }
  }
}

// Entry i's guided logit: cond (+ bias), or the rule's combination of cond and unc (each + bias first),
// with explicit roundings: no FMA contraction, the same float32 arithmetic as PyTorch's.
__device__ __forceinline__ float guided_value(float c, float u, bool has_bias, float bi, float a, float b, int rule) {
  if (has_bias) c = __fadd_rn(c, bi);
  if (rule == FLEXVAR_GUIDANCE_NONE) return c;
  if (has_bias) u = __fadd_rn(u, bi);
  return rule == FLEXVAR_GUIDANCE_RAMP ? __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, u))
                                       : __fadd_rn(u, __fmul_rn(b, __fsub_rn(c, u)));
}
__device__ __forceinline__ float guided(const float* cond, const float* unc, const float* __restrict__ bias, int i,
                                        float a, float b, int rule) {
  return guided_value(cond[i], rule == FLEXVAR_GUIDANCE_NONE ? 0.f : unc[i], bias != nullptr,
                      bias == nullptr ? 0.f : __ldg(bias + i), a, b, rule);
}

// The block's largest m and its index am (first index on ties) from each thread's own (m, am), which
// come from its values in increasing index order; every thread returns the result. best_v and best_i
// hold one slot per warp.
template <int THREADS>
__device__ __forceinline__ void block_argmax(float& m, int& am, float* best_v, int* best_i) {
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
  for (int w = 1; w < THREADS / 32; ++w)
    if (best_v[w] > m || (best_v[w] == m && best_i[w] < am)) m = best_v[w], am = best_i[w];
}

// The draw: u = uniform(seed, step, row), r = u * (sum of kept), and the first v whose running sum of
// kept[0, V) (in shared memory, visible to every thread) exceeds r into out[row]; each thread owns a
// contiguous chunk, the chunks' sums are scanned in thread order.
template <int THREADS>
__device__ __forceinline__ void draw(const float* kept, int V, int row, const int64_t* __restrict__ seed, int step,
                                     float* redf, int64_t* __restrict__ out) {
  const int per = (V + THREADS - 1) / THREADS;
  const int lo = min(V, threadIdx.x * per), hi = min(V, lo + per);
  float s = 0.f;
  for (int i = lo; i < hi; ++i) s += kept[i];
  float incl, excl;
  const float total = block_scan<THREADS>(s, incl, excl, redf);
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

// One row: cond and unc point at its conditional and unconditional logits (global memory, or the
// shared-memory copy staged by the persistent kernel); kept is V floats of shared memory.
template <int THREADS, int PER>
__device__ __forceinline__ void sample_row(const float* cond, const float* unc, const float* __restrict__ bias,
                                           float* kept, int row, int V, float a, float b, int rule, int top_k,
                                           float top_p, const int64_t* __restrict__ seed, int step,
                                           int64_t* __restrict__ out) {
  constexpr int kWarps = THREADS / 32;
  __shared__ int hist[kRadixBins];
  __shared__ float redf[kWarps];
  __shared__ int redi[kWarps];
  __shared__ float best_v[kWarps];
  __shared__ int best_i[kWarps];
  __shared__ int found[2];
  __shared__ float sortbuf[2 * THREADS];
  float g[PER];
  bool valid[PER];
  float m = -INFINITY;
  int am = INT_MAX;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * THREADS;
    valid[j] = i < V;
    g[j] = valid[j] ? guided(cond, unc, bias, i, a, b, rule) : -INFINITY;
    if (g[j] > m) m = g[j], am = i;  // i grows with j: the first index wins ties
  }
  block_argmax<THREADS>(m, am, best_v, best_i);
  if (top_k == 1 || V == 1 || am == INT_MAX) {
    if (threadIdx.x == 0) out[row] = am == INT_MAX ? 0 : am;
    return;
  }

  // top-k survivors: g >= the k-th largest
  bool live[PER];
  if (top_k > 0 && top_k < V) {
    uint32_t key[PER];
#pragma unroll
    for (int j = 0; j < PER; ++j) key[j] = key_of(g[j]);
    const uint32_t kth = kth_largest_key<THREADS>(
        [&](auto f) {
#pragma unroll
          for (int j = 0; j < PER; ++j)
            if (valid[j]) f(key[j]);
        },
        top_k, hist, redi, found);
#pragma unroll
    for (int j = 0; j < PER; ++j) live[j] = valid[j] && key[j] >= kth;
  } else {
#pragma unroll
    for (int j = 0; j < PER; ++j) live[j] = valid[j];
  }
  // masses of the survivors (0 elsewhere); from here g holds e
  int n_live = 0;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    g[j] = live[j] ? expf(g[j] - m) : 0.f;
    n_live += live[j];
  }
  if (top_p > 0.f && top_p < 1.f) {
    // the survivors packed into kept[0, S) in a fixed order, so the bisection's sums are deterministic
    int at, end;
    const int S = block_scan<THREADS>(n_live, end, at, redi);
#pragma unroll
    for (int j = 0; j < PER; ++j)
      if (live[j]) kept[at++] = g[j];
    __syncthreads();
    if (S <= THREADS) {
      // few survivors (top-k <= THREADS): sorted descending, one per thread; the kept ones are those
      // whose tie group starts with less than top_p * Z of mass before it (the release's rule), i.e.
      // masses >= the smallest such group's value T
      float sorted[1] = {threadIdx.x < S ? kept[threadIdx.x] : -1.f};
      sort_desc<THREADS, THREADS>(sorted, sortbuf);
      const float e = sorted[0];
      float incl, excl;
      const float Z = block_scan<THREADS>(fmaxf(e, 0.f), incl, excl, redf);
      __syncthreads();  // sortbuf is reused below
      sortbuf[threadIdx.x] = e;
      __syncthreads();
      const bool starts = threadIdx.x == 0 || sortbuf[threadIdx.x - 1] != e;
      const float T = block_min<THREADS>(threadIdx.x < S && starts && excl < top_p * Z ? e : INFINITY, redf);
#pragma unroll
      for (int j = 0; j < PER; ++j)
        if (g[j] < T) g[j] = 0.f;
      __syncthreads();  // kept and redf are rewritten below
    } else {
    float z = 0.f;
    for (int i = threadIdx.x; i < S; i += THREADS) z += kept[i];
    const float need = top_p * block_sum<THREADS>(z, redf);
    // the largest G with (mass of e whose bits > G) >= top_p * Z; keep e with bits > G. Masses are
    // >= 0, so their bits order them; G = 0 always qualifies (the whole mass).
    uint32_t G = 0;
    for (int bit = 30; bit >= 0; --bit) {
      const uint32_t cand = G | (1u << bit);
      float s = 0.f;
      for (int i = threadIdx.x; i < S; i += THREADS) s += __float_as_uint(kept[i]) > cand ? kept[i] : 0.f;
      if (block_sum<THREADS>(s, redf) >= need) G = cand;
    }
#pragma unroll
    for (int j = 0; j < PER; ++j)
      if (__float_as_uint(g[j]) <= G) g[j] = 0.f;
    __syncthreads();  // kept is rewritten below
    }
  }

  // the draw over the kept masses in vocabulary order
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * THREADS;
    if (i < V) kept[i] = g[j];
  }
  __syncthreads();
  draw<THREADS>(kept, V, row, seed, step, redf, out);
}

__device__ __forceinline__ void cp_async16(float* smem, const float* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async4(float* smem, const float* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)), "l"(gmem));
}

// Sampled row `row` (image row / l, token row % l): its conditional logits, and its unconditional ones
// (image + B) when `both`; with rule "none" (not both) the logits are (B, l, V) and unc = cond.
struct RowLogits {
  const float* cond;
  const float* unc;
};
__device__ __forceinline__ RowLogits row_logits(const float* logits, int row, int B, int l, int V, bool both) {
  const int img = row / l, tok = row % l;
  const float* cond = logits + ((int64_t)img * l + tok) * V;
  return {cond, both ? logits + ((int64_t)(img + B) * l + tok) * V : cond};
}

// Row `row`'s conditional logits into dst[0, V) and, when `both`, its unconditional ones into
// dst[Vp, Vp + V) with asynchronous copies (16 bytes each where the rows are 16-byte aligned),
// committed as one group.
__device__ __forceinline__ void stage_row(float* dst, const float* logits, int row, int B, int l, int V, int Vp,
                                          bool wide, bool both) {
  const RowLogits r = row_logits(logits, row, B, l, V, both);
  const float *cond = r.cond, *unc = r.unc;
  if (wide) {
    for (int i = 4 * threadIdx.x; i < V; i += 4 * blockDim.x) {
      cp_async16(dst + i, cond + i);
      if (both) cp_async16(dst + Vp + i, unc + i);
    }
  } else {
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      cp_async4(dst + i, cond + i);
      if (both) cp_async4(dst + Vp + i, unc + i);
    }
  }
  asm volatile("cp.async.commit_group;\n" ::);
}

// One row per block (grid = rows), logits read from global memory in the row's first phase.
template <int THREADS, int PER>
__global__ void __launch_bounds__(THREADS) guided_sample_kernel(
    const float* __restrict__ logits, const float* __restrict__ bias, int B, int l, int V, float a, float b, int rule,
    int top_k, float top_p, const int64_t* __restrict__ seed, int step, int64_t* __restrict__ out) {
  extern __shared__ float kept[];  // V floats: the survivors' masses (top-p), then the kept masses (draw)
  const int row = blockIdx.x;
  const RowLogits r = row_logits(logits, row, B, l, V, rule != FLEXVAR_GUIDANCE_NONE);
  sample_row<THREADS, PER>(r.cond, r.unc, bias, kept, row, V, a, b, rule, top_k, top_p, seed, step, out);
}

// More rows than blocks (as many blocks as fit on the SMs at once, one per SM at V = 8912): each
// block takes rows blockIdx.x, + gridDim.x, ..., and
// copies the next row's logits into shared memory while it samples the current one, so the loads
// of a row overlap the selection and the draw of the one before (the row's own work is unchanged).
template <int THREADS, int PER>
__global__ void __launch_bounds__(THREADS) guided_sample_persistent_kernel(
    const float* __restrict__ logits, const float* __restrict__ bias, int B, int l, int V, int Vp, bool wide, float a,
    float b, int rule, int top_k, float top_p, const int64_t* __restrict__ seed, int step, int64_t* __restrict__ out) {
  extern __shared__ float smem[];  // kept (Vp), then two stages of (cond, unc) (2 Vp each; cond only unguided)
  float* kept = smem;
  const bool both = rule != FLEXVAR_GUIDANCE_NONE;
  const int rows = B * l, stage = both ? 2 * Vp : Vp;
  int row = blockIdx.x;
  stage_row(smem + Vp, logits, row, B, l, V, Vp, wide, both);
  for (int it = 0; row < rows; ++it, row += gridDim.x) {
    float* cur = smem + Vp + (it & 1) * stage;
    if (row + gridDim.x < rows) {  // the buffer was last read in iteration it - 1, before its final barrier
      stage_row(smem + Vp + ((it + 1) & 1) * stage, logits, row + gridDim.x, B, l, V, Vp, wide, both);
      asm volatile("cp.async.wait_group 1;\n" ::);  // all but the group just committed: the current row
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncthreads();  // every thread's copies of the current row have landed
    sample_row<THREADS, PER>(cur, both ? cur + Vp : cur, bias, kept, row, V, a, b, rule, top_k, top_p, seed, step,
                             out);
    __syncthreads();  // done with cur (and kept) before they are rewritten
  }
}

constexpr int kSortN = 1024;  // the many-rows kernel sorts up to this many survivors

// Many rows (the late steps of a large batch): one block of THREADS per row, whose values live in shared
// memory rather than registers, so that several rows share an SM (four at V = 8912 with 256 threads) and
// the barriers and latencies of one row's phases overlap the work of the others; the persistent kernel
// holds one row per SM at a time. The same rule as `sample_row`: the k-th largest by the same radix
// select, the top-p cut by sorting up to kSortN survivors (ITEMS per thread), else by the same bisection
// over the masses' bit patterns (over the whole row, in a fixed order), then the same draw.
template <int THREADS>
__global__ void __launch_bounds__(THREADS) guided_sample_rows_kernel(
    const float* __restrict__ logits, const float* __restrict__ bias, int B, int l, int V, float a, float b, int rule,
    int top_k, float top_p, const int64_t* __restrict__ seed, int step, int64_t* __restrict__ out) {
  constexpr int kWarps = THREADS / 32, ITEMS = kSortN / THREADS;
  extern __shared__ float g[];  // V floats: the guided logits, then the survivors' masses, then the kept masses
  __shared__ int hist[kRadixBins];
  __shared__ float buf[2 * kSortN];  // the survivors packed (second half), then the sort's exchanges
  __shared__ float last[THREADS];     // each thread's last sorted value
  __shared__ float redf[kWarps];
  __shared__ int redi[kWarps];
  __shared__ float best_v[kWarps];
  __shared__ int best_i[kWarps];
  __shared__ int found[2];
  const int row = blockIdx.x;
  const RowLogits r = row_logits(logits, row, B, l, V, rule != FLEXVAR_GUIDANCE_NONE);
  float m = -INFINITY;
  int am = INT_MAX;
  const bool both = rule != FLEXVAR_GUIDANCE_NONE, has_bias = bias != nullptr;
  constexpr int kLoads = 8;  // values per thread whose global loads are issued together (no shared-memory store
                             // between them, which the compiler would not move generic loads across)
  for (int i0 = threadIdx.x; i0 < V; i0 += kLoads * THREADS) {
    float c[kLoads], u[kLoads], bi[kLoads];
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      const int i = i0 + j * THREADS;
      c[j] = i < V ? __ldg(r.cond + i) : 0.f;
      u[j] = both && i < V ? __ldg(r.unc + i) : 0.f;
      bi[j] = has_bias && i < V ? __ldg(bias + i) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      const int i = i0 + j * THREADS;
      if (i < V) {
        const float v = guided_value(c[j], u[j], has_bias, bi[j], a, b, rule);
        g[i] = v;
        if (v > m) m = v, am = i;  // i grows: the first index wins ties
      }
    }
  }
  block_argmax<THREADS>(m, am, best_v, best_i);  // its barrier also publishes g
  if (top_k == 1 || V == 1 || am == INT_MAX) {
    if (threadIdx.x == 0) out[row] = am == INT_MAX ? 0 : am;
    return;
  }
  // top-k survivors (g >= the k-th largest) -> their masses exp(g - m); 0 elsewhere
  uint32_t kth = 0;
  const bool cut = top_k > 0 && top_k < V;
  if (cut)
    kth = kth_largest_key<THREADS>(
        [&](auto f) {
          for (int i = threadIdx.x; i < V; i += THREADS) f(key_of(g[i]));
        },
        top_k, hist, redi, found);
  const bool nucleus = top_p > 0.f && top_p < 1.f;
  int n_live = 0;
  for (int i = threadIdx.x; i < V; i += THREADS) {
    const bool live = !cut || key_of(g[i]) >= kth;
    g[i] = live ? expf(g[i] - m) : nucleus ? -1.f : 0.f;  // -1: dropped, until the top-p cut below
    n_live += live;
  }
  if (nucleus) {
    int at, end;
    const int S = block_scan<THREADS>(n_live, end, at, redi);  // its barriers publish g
    float T = INFINITY;  // the kept masses are those >= T (the bisection's cut sets T = 0 after zeroing)
    if (S <= kSortN) {
      // the survivors (masses >= 0; the dropped ones are -1 until the cut) packed into buf's second half in a
      // fixed order, sorted descending, ITEMS per thread; kept: the masses >= the value T of the last tie group
      // that starts with less than top_p * Z of mass before it (as `sample_row`)
      float* packed = buf + kSortN;
      for (int i = threadIdx.x; i < V; i += THREADS)
        if (g[i] >= 0.f) packed[at++] = g[i];
      __syncthreads();
      float v[ITEMS];
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        const int n = threadIdx.x * ITEMS + i;
        v[i] = n < S ? packed[n] : -1.f;
      }
      sort_desc<THREADS, kSortN>(v, buf);
      float own = 0.f;
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) own += fmaxf(v[i], 0.f);
      last[threadIdx.x] = v[ITEMS - 1];
      float incl, excl;
      const float Z = block_scan<THREADS>(own, incl, excl, redf);  // its barriers publish last
      float before = excl, prev = threadIdx.x > 0 ? last[threadIdx.x - 1] : 0.f;
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        const int n = threadIdx.x * ITEMS + i;
        if (n < S && (n == 0 || prev != v[i]) && before < top_p * Z) T = fminf(T, v[i]);
        before += fmaxf(v[i], 0.f);
        prev = v[i];
      }
      T = block_min<THREADS>(T, redf);
    } else {
      // the largest G with (mass of e whose bits > G) >= top_p * Z, over the whole row in a fixed order;
      // keep e with bits > G (as `sample_row`)
      float z = 0.f;
      for (int i = threadIdx.x; i < V; i += THREADS) z += fmaxf(g[i], 0.f);
      const float need = top_p * block_sum<THREADS>(z, redf);
      uint32_t G = 0;
      for (int bit = 30; bit >= 0; --bit) {
        const uint32_t cand = G | (1u << bit);
        float s = 0.f;
        for (int i = threadIdx.x; i < V; i += THREADS) {
          const float e = fmaxf(g[i], 0.f);
          s += __float_as_uint(e) > cand ? e : 0.f;
        }
        if (block_sum<THREADS>(s, redf) >= need) G = cand;
      }
      for (int i = threadIdx.x; i < V; i += THREADS)
        if (!(g[i] >= 0.f) || __float_as_uint(g[i]) <= G) g[i] = 0.f;
      T = 0.f;
    }
    for (int i = threadIdx.x; i < V; i += THREADS)
      if (g[i] < T) g[i] = 0.f;
  }
  __syncthreads();  // g complete before the draw reads other threads' chunks
  draw<THREADS>(g, V, row, seed, step, redf, out);
}

// From 1.5 rows per SM on, rows of more than 1024 entries go to the many-rows kernel (H100, V = 8912, d16 256-10's
// shapes, `bench/gpu/sample_probe.py`: 256 rows 27.7 against 40.5 us, 8,192 rows 516 against 1,230 us; at 100
// rows 25.0 against 22.8 us).
constexpr int kRowsKernelPerSm2 = 3;  // twice the rows per SM

struct DeviceLimits {
  int sms = 0, smem_optin = 0;
};

// The current device's SM count and opt-in shared memory per block (read once per device; threads that
// race here write the same values, and a half-written entry only sends a launch to the per-row kernel).
static cudaError_t device_limits(DeviceLimits& lim) {
  static DeviceLimits cache[64];
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev < 0 || dev >= 64) return cudaErrorInvalidDevice;
  if (cache[dev].sms == 0) {
    DeviceLimits d;
    if ((e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return e;
    if ((e = cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess)
      return e;
    cache[dev] = d;
  }
  lim = cache[dev];
  return cudaSuccess;
}

// FLEXVAR_SAMPLE_KERNEL overrides which kernel samples (benchmarks, tests): "rows" the many-rows kernel (256
// threads a row; "rows512": 512) at any size, "block" the one-block-per-row kernels (persistent from 4 rows per SM).
enum class Choice { kAuto, kRows, kRows512, kBlock };
static Choice kernel_choice() {
  const char* e = std::getenv("FLEXVAR_SAMPLE_KERNEL");
  if (e == nullptr) return Choice::kAuto;
  if (std::strcmp(e, "rows") == 0) return Choice::kRows;
  if (std::strcmp(e, "rows512") == 0) return Choice::kRows512;
  if (std::strcmp(e, "block") == 0) return Choice::kBlock;
  return Choice::kAuto;
}

template <int THREADS>
cudaError_t launch_rows(const float* logits, const float* bias, int B, int l, int V, float a, float b, int rule,
                        int top_k, float top_p, const int64_t* seed, int step, int64_t* out, cudaStream_t stream) {
  auto kernel = guided_sample_rows_kernel<THREADS>;
  const size_t smem = (size_t)V * sizeof(float);
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  // as much shared memory per SM as there is: four rows of V = 8912 at a time on the H100
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
  if (e != cudaSuccess) return e;
  kernel<<<B * l, THREADS, smem, stream>>>(logits, bias, B, l, V, a, b, rule, top_k, top_p, seed, step, out);
  return cudaGetLastError();
}

template <int THREADS, int PER>
cudaError_t launch(const float* logits, const float* bias, int B, int l, int V, float a, float b, int rule, int top_k,
                   float top_p, const int64_t* seed, int step, int64_t* out, cudaStream_t stream) {
  DeviceLimits lim;
  cudaError_t e = device_limits(lim);
  if (e != cudaSuccess) return e;
  const int rows = B * l, Vp = (V + 3) & ~3;
  const Choice choice = kernel_choice();
  if (choice == Choice::kRows512)
    return launch_rows<512>(logits, bias, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
  if (choice == Choice::kRows || (choice == Choice::kAuto && V > 1024 && 2 * rows >= kRowsKernelPerSm2 * lim.sms))
    return launch_rows<256>(logits, bias, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
  // kept + two stages of one row's logits (cond and unc; cond only when unguided)
  const size_t smem_persistent = (size_t)(rule == FLEXVAR_GUIDANCE_NONE ? 3 : 5) * Vp * sizeof(float);
  auto kernel = guided_sample_persistent_kernel<THREADS, PER>;
  cudaFuncAttributes attr{};
  // from 4 rows per SM on (H100, V = 8912: batch 32's step 10, 8,192 rows, 1,215 vs 1,334 us; at 2 rows per
  // SM, batch 1's step 10, no gain), where its shared memory fits (not at V = 8912 on an A100's 163 KB);
  // the kernel's attributes are read only then (fewer rows, batch 1's steps, ask nothing more of the driver)
  if (rows >= 4 * lim.sms && (e = cudaFuncGetAttributes(&attr, kernel)) == cudaSuccess &&
      smem_persistent + attr.sharedSizeBytes <= (size_t)lim.smem_optin) {
    if ((e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_persistent)) !=
        cudaSuccess)
      return e;
    int per_sm = 1;
    if ((e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, THREADS, smem_persistent)) != cudaSuccess)
      return e;
    const int grid = std::min(rows, std::max(1, per_sm) * lim.sms);
    const bool wide = V % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
    kernel<<<grid, THREADS, smem_persistent, stream>>>(logits, bias, B, l, V, Vp, wide, a, b, rule, top_k, top_p, seed,
                                                       step, out);
    return cudaGetLastError();
  }
  if (e != cudaSuccess) return e;
  const size_t smem = (size_t)V * sizeof(float);
  if (smem > 32 * 1024) {  // with the static arrays, past the 48 KB default
    e = cudaFuncSetAttribute(guided_sample_kernel<THREADS, PER>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  guided_sample_kernel<THREADS, PER><<<rows, THREADS, smem, stream>>>(logits, bias, B, l, V, a, b, rule, top_k, top_p,
                                                                     seed, step, out);
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t flexvar_guided_sample(const float* logits, const float* bias, int B, int l, int V, double t,
                                             flexvar_guidance_t rule, int top_k, float top_p, const int64_t* seed,
                                             int step, int64_t* out, cudaStream_t stream) {
  if (B < 0 || l < 0 || V < 1 || V > kMaxVocab || top_k < 0) return cudaErrorInvalidValue;
  if (rule != FLEXVAR_GUIDANCE_RAMP && rule != FLEXVAR_GUIDANCE_CONSTANT && rule != FLEXVAR_GUIDANCE_NONE)
    return cudaErrorInvalidValue;
  if ((int64_t)B * l == 0) return cudaSuccess;
  if ((int64_t)B * l > INT_MAX) return cudaErrorInvalidValue;
  // the scalars as PyTorch rounds them: (1 + t) and t from double to float32
  const float a = rule == FLEXVAR_GUIDANCE_RAMP ? (float)(1.0 + t) : 0.f, b = (float)t;
  if (V <= 256) return launch<256, 1>(logits, bias, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
  if (V <= 1024) return launch<256, 4>(logits, bias, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
  if (V <= 4096) return launch<512, 8>(logits, bias, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
  if (V <= 10240) return launch<1024, 10>(logits, bias, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
  return launch<1024, 16>(logits, bias, B, l, V, a, b, rule, top_k, top_p, seed, step, out, stream);
}
