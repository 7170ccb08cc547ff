// cuBLASLt GEMMs with a per-shape algorithm choice: the CUDA side of flexvar::lt_linear, lt_select and
// lt_version (schemas, CPU definitions and the tuner in flexvar/kernels/lt_linear.py).
//
// y (M, N) = x (M, K) w (N, K)^T + b, optionally tanh-GELU'd, through cuBLASLt's BIAS / GELU_BIAS epilogues:
// the computation F.linear and torch._addmm_activation run, which always take the heuristic's first
// algorithm. Here each (device, M, N, K, dtype, epilogue) keeps the heuristic's candidates (split-K
// reductions in float32 only, 16-byte aligned operands, a 32 MiB workspace) and runs the one chosen by
// lt_select (default: the first). Inputs it does not take (float32, unaligned or strided operands) run
// through ATen instead. One workspace per device: calls must come from one stream at a time.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cublasLt.h>
#include <torch/library.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

namespace {

#define LT_CHECK(expr)                                                                                     \
  do {                                                                                                     \
    const cublasStatus_t s_ = (expr);                                                                      \
    TORCH_CHECK(s_ == CUBLAS_STATUS_SUCCESS, "cuBLASLt: " #expr " failed with status ", static_cast<int>(s_)); \
  } while (0)

constexpr uint64_t kWorkspaceBytes = 32ull << 20;
constexpr int kMaxCandidates = 16;
constexpr int64_t kBias = 0, kGeluBias = 1;

// the matmul and layout descriptors of y^T (N, M) = w (N, K) x^T (K, M) in cuBLASLt's column-major terms:
// w's rows are the columns of a (K, N) matrix taken transposed, x is (K, M), y is (N, M)
class Desc {
 public:
  Desc(int64_t M, int64_t N, int64_t K, cudaDataType_t dt, int64_t epilogue, const void* bias) {
    LT_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)));
    const cublasLtEpilogue_t epi = epilogue == kGeluBias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    LT_CHECK(cublasLtMatrixLayoutCreate(&a, dt, K, N, K));
    LT_CHECK(cublasLtMatrixLayoutCreate(&b, dt, K, M, K));
    LT_CHECK(cublasLtMatrixLayoutCreate(&c, dt, N, M, N));
  }
  ~Desc() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;

  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
};

using Key = std::tuple<int, int64_t, int64_t, int64_t, int, int64_t>;  // device, M, N, K, dtype, epilogue

struct Entry {
  std::vector<cublasLtMatmulAlgo_t> algos;  // the heuristic's usable candidates, in its order
  int chosen = 0;
};

struct State {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;
  std::map<int, at::Tensor> workspaces;
  std::map<Key, Entry> entries;
};

State& state() {
  static State s;  // never destroyed: handles outlive Python's teardown order
  return s;
}

cublasLtHandle_t handle(State& s, int dev) {
  auto it = s.handles.find(dev);
  if (it != s.handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  LT_CHECK(cublasLtCreate(&h));
  s.handles[dev] = h;
  return h;
}

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &st));
  return st != cudaStreamCaptureStatusNone;
}

// the device's workspace; allocated on the first call outside graph capture (nullptr before that)
void* workspace(State& s, const at::Tensor& like, cudaStream_t stream) {
  const int dev = like.get_device();
  auto it = s.workspaces.find(dev);
  if (it != s.workspaces.end()) return it->second.data_ptr();
  if (capturing(stream)) return nullptr;
  s.workspaces[dev] = at::empty({static_cast<int64_t>(kWorkspaceBytes)}, like.options().dtype(at::kByte));
  return s.workspaces[dev].data_ptr();
}

std::vector<cublasLtMatmulAlgo_t> candidates(cublasLtHandle_t h, const Desc& d) {
  cublasLtMatmulPreference_t pref = nullptr;
  LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, align = 16;
  cublasLtMatmulHeuristicResult_t res[kMaxCandidates] = {};
  int n = 0;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof(schemes));
  for (const auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(h, d.op, d.a, d.b, d.c, d.c, pref, kMaxCandidates, res, &n);
  cublasLtMatmulPreferenceDestroy(pref);
  std::vector<cublasLtMatmulAlgo_t> out;
  if (st != CUBLAS_STATUS_SUCCESS) return out;  // none: the caller runs ATen
  for (int i = 0; i < n; ++i)
    if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= kWorkspaceBytes) out.push_back(res[i].algo);
  return out;
}

bool aligned(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// whether cuBLASLt runs these operands here (else ATen does)
bool takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const auto dt = x.scalar_type();
  return x.is_cuda() && w.device() == x.device() && b.device() == x.device() && x.dim() == 2 && w.dim() == 2 &&
         b.dim() == 1 && (dt == at::kHalf || dt == at::kBFloat16) && w.scalar_type() == dt && b.scalar_type() == dt &&
         x.size(1) == w.size(1) && b.size(0) == w.size(0) && x.size(1) % 8 == 0 && w.size(0) % 8 == 0 &&
         x.is_contiguous() && w.is_contiguous() && b.is_contiguous() && aligned(x) && aligned(w) && aligned(b);
}

at::Tensor aten_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t epilogue) {
  if (epilogue == kGeluBias) return at::_addmm_activation(b, x, w.t(), 1, 1, /*use_gelu=*/true);
  return at::addmm(b, x, w.t());
}

Key key_of(const at::Tensor& x, const at::Tensor& w, int64_t epilogue) {
  return Key(x.get_device(), x.size(0), w.size(0), x.size(1), static_cast<int>(x.scalar_type()), epilogue);
}

Entry& entry(State& s, const Key& k, cublasLtHandle_t h, const Desc& d) {
  auto it = s.entries.find(k);
  if (it == s.entries.end()) it = s.entries.emplace(k, Entry{candidates(h, d), 0}).first;
  return it->second;
}

at::Tensor lt_linear_cuda(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t epilogue) {
  TORCH_CHECK(epilogue == kBias || epilogue == kGeluBias, "lt_linear: epilogue must be 0 (bias) or 1 (GELU + bias)");
  if (!takes(x, w, b) || x.size(0) == 0) return aten_linear(x, w, b, epilogue);
  const at::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t M = x.size(0), N = w.size(0), K = x.size(1);
  const cudaDataType_t dt = x.scalar_type() == at::kHalf ? CUDA_R_16F : CUDA_R_16BF;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mu);
  void* ws = workspace(s, x, stream);
  if (ws == nullptr) return aten_linear(x, w, b, epilogue);  // first call inside a capture: nothing allocated yet
  const cublasLtHandle_t h = handle(s, x.get_device());
  const Desc d(M, N, K, dt, epilogue, b.data_ptr());
  const Entry& e = entry(s, key_of(x, w, epilogue), h, d);
  if (e.algos.empty()) return aten_linear(x, w, b, epilogue);
  auto y = at::empty({M, N}, x.options());
  const float one = 1.f, zero = 0.f;
  LT_CHECK(cublasLtMatmul(h, d.op, &one, w.data_ptr(), d.a, x.data_ptr(), d.b, &zero, y.data_ptr(), d.c, y.data_ptr(),
                          d.c, &e.algos[e.chosen], ws, kWorkspaceBytes, stream));
  return y;
}

// the number of candidates for these operands' shape (0: lt_linear runs ATen for them); index >= 0 chooses
// candidate `index` for every later lt_linear of that shape, -1 only counts
int64_t lt_select_cuda(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t epilogue, int64_t index) {
  TORCH_CHECK(epilogue == kBias || epilogue == kGeluBias, "lt_select: epilogue must be 0 (bias) or 1 (GELU + bias)");
  if (!takes(x, w, b)) return 0;
  const at::cuda::CUDAGuard guard(x.device());
  const cudaDataType_t dt = x.scalar_type() == at::kHalf ? CUDA_R_16F : CUDA_R_16BF;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mu);
  workspace(s, x, at::cuda::getCurrentCUDAStream());
  const Desc d(x.size(0), w.size(0), x.size(1), dt, epilogue, b.data_ptr());
  Entry& e = entry(s, key_of(x, w, epilogue), handle(s, x.get_device()), d);
  const int64_t n = static_cast<int64_t>(e.algos.size());
  TORCH_CHECK(index >= -1 && (index < n || (n == 0 && index <= 0)), "lt_select: index ", index, " of ", n, " candidates");
  if (index >= 0 && n > 0) e.chosen = static_cast<int>(index);
  return n;
}

int64_t lt_version_cuda(const at::Tensor&) { return static_cast<int64_t>(cublasLtGetVersion()); }

}  // namespace

TORCH_LIBRARY_IMPL(flexvar, CUDA, m) {
  m.impl("lt_linear", &lt_linear_cuda);
  m.impl("lt_select", &lt_select_cuda);
  m.impl("lt_version", &lt_version_cuda);
}
