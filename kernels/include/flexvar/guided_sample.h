/* Guidance + top-k + top-p + one seeded draw per token in one pass over the vocabulary, without
 * sorting it. One thread block per (image, token) row: up to 1024 threads holding the row in registers
 * for few rows; from 1.5 rows per SM on (vocabularies of more than 1024), 256 threads holding it in shared
 * memory, several rows to an SM (the many-rows kernel). The environment variable FLEXVAR_SAMPLE_KERNEL
 * ("rows", "block"; read at each launch, so a CUDA graph keeps the choice of its capture) overrides the
 * choice, for benchmarks and tests; the rule below is the same for all:
 *
 *   (cond and uncond: the logits' rows + bias, where a bias is given)
 *   g[v]   = ramp:     (1 + t) * cond[v] - t * uncond[v]     (1 + t and t rounded to float32 from
 *                      double, then float32 products and sum without FMA, as PyTorch computes it)
 *            constant: uncond[v] + t * (cond[v] - uncond[v])
 *            none:     logits[v] (already guided; the logits are (B, l, V))
 *   top_k = 1 (or V = 1): code = argmax g (first index on ties); nothing else is computed.
 *   survivors: g[v] >= the top_k-th largest g (all of them when top_k = 0 or top_k >= V)
 *   e[v]   = exp(g[v] - max g) on survivors, Z = sum e
 *   top-p (0 < top_p < 1): keep a survivor v while the mass of the survivors strictly more likely
 *            than v is < top_p * Z (the release's sorted rule, ties kept together)
 *   draw:  u = uniform(seed, step, row) (the hash below), r = u * sum of kept e, and the code is
 *          the first kept v in vocabulary order whose running sum of kept e exceeds r.
 *
 * The k-th largest value is found by a radix select over the order-preserving 32-bit keys of the
 * floats (integer histograms); the top-p cut, when at most 1024 survivors remain (one per thread in the
 * 1024-thread blocks, four per thread in the many-rows kernel's), by sorting them and scanning their
 * masses in descending order, else by bisection over the masses' bit patterns. Reductions and scans run in a fixed order: the result depends only
 * on the inputs (no atomics on floats), so a seed reproduces its codes on every run.
 *
 * uniform(seed, step, row) = (h(h(seed) ^ ((row + step * 0x9E3779B) mod 2^32)) >> 8) / 2^24,
 *   h(x) = x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x5BD1E995; x ^= x >> 16 (uint32).
 */
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FLEXVAR_GUIDANCE_RAMP = 0, FLEXVAR_GUIDANCE_CONSTANT = 1, FLEXVAR_GUIDANCE_NONE = 2 } flexvar_guidance_t;

/* logits: float32 (2B, l, V), rows b < B conditional, b >= B unconditional; with FLEXVAR_GUIDANCE_NONE
 * (B, l, V) sampled as given (g = logits, t unused: guidance already applied, e.g. to the head's input,
 * which is linear); bias: NULL or float32 (V,) added to every row of logits first (rounded, as PyTorch's
 * broadcast add); seed: one int64 on the device (read by the kernel, so a CUDA graph can be replayed
 * with new seeds); out: int64 (B, l). */
cudaError_t flexvar_guided_sample(const float* logits, const float* bias, int B, int l, int V, double t,
                                  flexvar_guidance_t rule, int top_k, float top_p, const int64_t* seed, int step,
                                  int64_t* out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
