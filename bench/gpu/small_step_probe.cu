// Probe of the small_step kernel (session 6): time per step and per phase at d16/d24 shapes, fp16,
// random weights, and the cost of one grid-wide barrier on its own.
//   nvcc -O3 -std=c++17 -Ikernels/include -gencode=arch=compute_90,code=sm_90 \
//        bench/gpu/small_step_probe.cu -o /tmp/small_step_probe && /tmp/small_step_probe
// Phases per block, from CTA 0's global-timer stamps after each barrier: LN1, qkv, attention, proj,
// LN2, fc1, fc2 (each includes the barrier that ends it).
#include "../../kernels/src/small_step.cu"

#include <cstdio>
#include <vector>

#define CHECK(x)                                                                      \
  do {                                                                                \
    cudaError_t e_ = (x);                                                             \
    if (e_ != cudaSuccess) {                                                          \
      std::printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));          \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

__global__ void fill(__half* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15, h *= 0x2C1B3C6Du, h ^= h >> 12;
    p[i] = __float2half(((h & 0xFFFF) / 32768.f - 1.f) * scale);
  }
}

__global__ void barriers_only(int n) {
  cg::grid_group grid = cg::this_grid();
  for (int i = 0; i < n; ++i) grid.sync();
}

static __half* rnd(size_t n, uint32_t seed, float scale) {
  __half* p;
  CHECK(cudaMalloc(&p, n * sizeof(__half)));
  fill<<<512, 256>>>(p, n, seed, scale);
  return p;
}

static void probe(int depth, int C, int R, int l, int start) {
  const int H = C / 64, hidden = 4 * C, L = 680;
  flexvar_small_step_args_t a{};
  uint32_t seed = 1;
  for (int i = 0; i < depth; ++i) {
    float* qs;
    CHECK(cudaMalloc(&qs, H * sizeof(float)));
    std::vector<float> ones(H, 4.f);
    CHECK(cudaMemcpy(qs, ones.data(), H * sizeof(float), cudaMemcpyHostToDevice));
    a.blocks[i] = {rnd((size_t)3 * C * C, seed++, 0.03f), rnd(3 * C, seed++, 0.1f), qs,
                   rnd((size_t)C * C, seed++, 0.03f), rnd(C, seed++, 0.1f), rnd((size_t)hidden * C, seed++, 0.03f),
                   rnd(hidden, seed++, 0.1f), rnd((size_t)C * hidden, seed++, 0.015f), rnd(C, seed++, 0.1f)};
  }
  const int M = R * l;
  CHECK(cudaMalloc(&a.x, (size_t)M * C * sizeof(float)));
  CHECK(cudaMemset(a.x, 0, (size_t)M * C * sizeof(float)));
  a.mods = rnd((size_t)depth * R * 6 * C, seed++, 0.2f);
  a.kv = rnd((size_t)depth * 2 * L * R * H * 64, seed++, 0.1f);
  CHECK(cudaMalloc(&a.scratch, flexvar_small_step_scratch_bytes(M, C, hidden, FLEXVAR_FLOAT16)));
  a.R = R, a.l = l, a.C = C, a.H = H, a.d = 64, a.hidden = hidden, a.depth = depth, a.L = L, a.start = start;
  a.eps = 1e-6f;
  CHECK(cudaDeviceSynchronize());
  for (int i = 0; i < 3; ++i) CHECK(flexvar_small_step(&a, FLEXVAR_FLOAT16, 0));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  const int reps = 20;
  CHECK(cudaEventRecord(e0));
  for (int i = 0; i < reps; ++i) CHECK(flexvar_small_step(&a, FLEXVAR_FLOAT16, 0));
  CHECK(cudaEventRecord(e1));
  CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, e0, e1));
  uint64_t* tr;
  const int slots = 1 + 7 * depth;
  CHECK(cudaMalloc(&tr, slots * sizeof(uint64_t)));
  a.trace = tr;
  CHECK(flexvar_small_step(&a, FLEXVAR_FLOAT16, 0));
  std::vector<uint64_t> h(slots);
  CHECK(cudaMemcpy(h.data(), tr, slots * sizeof(uint64_t), cudaMemcpyDeviceToHost));
  double ph[7] = {0};
  for (int b = 0; b < depth; ++b)
    for (int p = 0; p < 7; ++p) ph[p] += (double)(h[1 + 7 * b + p] - h[7 * b + p]) / depth / 1000.0;
  const double weights_mb = depth * 12.0 * C * C * 2 / 1e6;
  std::printf("small_step C=%d depth=%d rows=%d (R=%d l=%d start=%d): %.1f us per step (%.1f us per block, "
              "%.0f GB/s of weights); per block us: LN1 %.2f qkv %.2f attn %.2f proj %.2f LN2 %.2f fc1 %.2f fc2 %.2f\n",
              C, depth, M, R, l, start, 1000.0 * ms / reps, 1000.0 * ms / reps / depth,
              weights_mb / (ms / reps) , ph[0], ph[1], ph[2], ph[3], ph[4], ph[5], ph[6]);
  CHECK(cudaFree(tr));  // (the rest is left to process exit)
}

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  {
    int n = 1000;
    void* args[] = {&n};
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    CHECK(cudaLaunchCooperativeKernel((void*)barriers_only, sms, 256, args, 0, 0));
    CHECK(cudaEventRecord(e0));
    CHECK(cudaLaunchCooperativeKernel((void*)barriers_only, sms, 256, args, 0, 0));
    CHECK(cudaEventRecord(e1));
    CHECK(cudaEventSynchronize(e1));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    std::printf("grid barrier: %.2f us each (%d blocks of 256 threads, %d barriers)\n", 1000.0 * ms / n, sms, n);
  }
  const int l16[][2] = {{1, 0}, {4, 1}, {9, 5}, {16, 14}, {25, 30}};
  for (auto& s : l16) probe(16, 1024, 2, s[0], s[1]);
  probe(24, 1536, 2, 1, 0);
  probe(24, 1536, 2, 9, 5);
  probe(24, 1536, 2, 16, 14);
  return 0;
}
