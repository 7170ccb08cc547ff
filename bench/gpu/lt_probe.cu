// cuBLASLt algorithm probe for the fast runtime's block GEMMs at few rows (session 13).
//
// For each (M, N, K, epilogue) of a d16 / d24 block at batch 1 (M = 2 l: the conditional and unconditional rows
// of steps 3-10 of 256-10), asks cuBLASLt's heuristic for up to 32 algorithms (fp16 in and out, float32
// compute, bias or GELU+bias epilogue, 32 MiB workspace: what PyTorch's F.linear / _addmm_activation ask
// for, which take the first) and times each inside a CUDA graph of 24 launches, each on another copy of the
// weights (over 100 MB in all, so the weights come from device memory as in a generation). Prints the first
// algorithm's time, the best one's, and the sum of both over a generation's GEMMs.
//
//   nvcc -O2 -arch=sm_90 -o /tmp/lt_probe bench/gpu/lt_probe.cu -I$CUBLAS_INC -L$CUBLAS_LIB -lcublasLt
//   /tmp/lt_probe 1024     # d16 width; 1536 for d24
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  std::printf("CUDA error %s at line %d\n", cudaGetErrorString(e_), __LINE__); std::exit(1); } } while (0)
#define LK(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) { \
  std::printf("cuBLASLt status %d at line %d\n", int(s_), __LINE__); std::exit(1); } } while (0)

namespace {

struct Shape { const char* name; int N, K; bool gelu; };

__global__ void fill(__half* p, size_t n, unsigned seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed;
    h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
    p[i] = __float2half((float(h & 0xFFFF) / 65535.f - 0.5f) * scale);
  }
}

// Time of one launch, microseconds: a graph of `reps` launches (each on the next weight copy), replayed `rounds` times.
float time_algo(cublasLtHandle_t lt, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                cublasLtMatrixLayout_t lc, const cublasLtMatmulAlgo_t* algo, const std::vector<__half*>& w,
                const __half* x, __half* y, void* ws, size_t ws_bytes, cudaStream_t st) {
  const float one = 1.f, zero = 0.f;
  const int reps = 24, rounds = 5;
  for (int i = 0; i < 2; ++i)  // outside the graph: the kernel loaded, failures seen
    if (cublasLtMatmul(lt, desc, &one, w[i], la, x, lb, &zero, y, lc, y, lc, algo, ws, ws_bytes, st)
        != CUBLAS_STATUS_SUCCESS) return -1.f;
  CK(cudaStreamSynchronize(st));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < reps; ++i)
    cublasLtMatmul(lt, desc, &one, w[i % w.size()], la, x, lb, &zero, y, lc, y, lc, algo, ws, ws_bytes, st);
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  CK(cudaGraphLaunch(ge, st));  // warm
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int r = 0; r < rounds; ++r) {
    CK(cudaEventRecord(a, st));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000.f / reps);
  }
  std::sort(t.begin(), t.end());
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int C = argc > 1 ? std::atoi(argv[1]) : 1024;
  const int rows[] = {18, 32, 50, 72, 128, 200, 338, 512};  // 2 l at steps 3-10 of 256-10
  const int depth = C == 1024 ? 16 : C == 1280 ? 20 : 24;
  const Shape shapes[] = {{"qkv", 3 * C, C, false}, {"proj", C, C, false}, {"fc1", 4 * C, C, true},
                          {"fc2", C, 4 * C, false}};
  cublasLtHandle_t lt;
  LK(cublasLtCreate(&lt));
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  const size_t ws_bytes = size_t(32) << 20;
  void* ws;
  CK(cudaMalloc(&ws, ws_bytes));
  __half *x, *y, *bias;
  CK(cudaMalloc(&x, size_t(512) * 4 * C * sizeof(__half)));
  CK(cudaMalloc(&y, size_t(512) * 4 * C * sizeof(__half)));
  CK(cudaMalloc(&bias, size_t(4) * C * sizeof(__half)));
  fill<<<512, 256, 0, st>>>(x, size_t(512) * 4 * C, 1, 2.f);
  fill<<<64, 256, 0, st>>>(bias, size_t(4) * C, 2, 0.1f);
  const size_t wn = size_t(4) * C * C;  // the largest weight
  const int copies = int(std::max<size_t>(4, (size_t(160) << 20) / (wn * sizeof(__half))));
  std::vector<__half*> w(copies);
  for (int i = 0; i < copies; ++i) {
    CK(cudaMalloc(&w[i], wn * sizeof(__half)));
    fill<<<1024, 256, 0, st>>>(w[i], wn, 10 + i, 0.05f);
  }
  CK(cudaStreamSynchronize(st));
  std::printf("width %d, %d weight copies of %.1f MB; us per GEMM (graph of 24, weights from device memory)\n", C,
              copies, wn * 2 / 1e6);
  std::printf("%-5s %5s %9s %9s %5s %6s  best algo (tile id, stages id, split-k, cluster?)\n", "gemm", "M",
              "first", "best", "#alg", "gain");
  double sum_first = 0, sum_best = 0;
  for (const Shape& s : shapes) {
    for (int M : rows) {
      cublasLtMatmulDesc_t desc;
      LK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
      LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof(tA)));
      LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof(tB)));
      cublasLtEpilogue_t epi = s.gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
      LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      const void* bp = bias;
      LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
      // column-major view: Y^T (N x M) = W (given as K x N, transposed) * X^T (K x M)
      cublasLtMatrixLayout_t la, lb, lc;
      LK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16F, s.K, s.N, s.K));
      LK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16F, s.K, M, s.K));
      LK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16F, s.N, M, s.N));
      cublasLtMatmulPreference_t pref;
      LK(cublasLtMatmulPreferenceCreate(&pref));
      LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                              sizeof(ws_bytes)));
      cublasLtMatmulHeuristicResult_t res[32];
      int n = 0;
      LK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 32, res, &n));
      float first = -1.f, best = 1e30f;
      int best_i = -1;
      for (int i = 0; i < n; ++i) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > ws_bytes) continue;
        float t = time_algo(lt, desc, la, lb, lc, &res[i].algo, w, x, y, ws, ws_bytes, st);
        if (i == 0) first = t;
        if (t > 0 && t < best) { best = t; best_i = i; }
      }
      int tile = -1, stages = -1, splitk = -1;
      size_t got;
      if (best_i >= 0) {
        cublasLtMatmulAlgoConfigGetAttribute(&res[best_i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &got);
        cublasLtMatmulAlgoConfigGetAttribute(&res[best_i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages,
                                             sizeof(stages), &got);
        cublasLtMatmulAlgoConfigGetAttribute(&res[best_i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                             sizeof(splitk), &got);
      }
      std::printf("%-5s %5d %9.2f %9.2f %5d %5.1f%%  #%d (%d, %d, %d)\n", s.name, M, first, best, n,
                  first > 0 ? 100.f * (first - best) / first : 0.f, best_i, tile, stages, splitk);
      sum_first += first * depth;
      sum_best += best * depth;
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatrixLayoutDestroy(la);
      cublasLtMatrixLayoutDestroy(lb);
      cublasLtMatrixLayoutDestroy(lc);
      cublasLtMatmulDescDestroy(desc);
    }
  }
  std::printf("a generation's block GEMMs at steps 3-10 (x%d blocks): first %.3f ms, best %.3f ms\n", depth,
              sum_first / 1000, sum_best / 1000);
  return 0;
}
