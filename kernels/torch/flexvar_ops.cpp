// Thin torch launcher: checks shapes/devices, dispatches dtypes, registers the CUDA kernels of
// ops whose schemas (and CPU/fake implementations) are defined in flexvar/kernels/__init__.py.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "flexvar/guided_sample.h"
#include "flexvar/next_tokens.h"
#include "flexvar/qk_norm_cache.h"
#include "flexvar/small_step.h"

namespace {

flexvar_dtype_t to_flexvar(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return FLEXVAR_FLOAT32;
    case at::kBFloat16: return FLEXVAR_BFLOAT16;
    case at::kHalf: return FLEXVAR_FLOAT16;
    default: TORCH_CHECK(false, "flexvar kernels: unsupported dtype ", t);
  }
}

at::Tensor next_tokens_cuda(const at::Tensor& prev, const at::Tensor& proj, const at::Tensor& bias,
                            const at::Tensor& pos, const at::Tensor& ry, const at::Tensor& wy,
                            const at::Tensor& rx, const at::Tensor& wx) {
  TORCH_CHECK(prev.dim() == 3 && prev.scalar_type() == at::kLong, "prev must be int64 (B, h0, w0)");
  TORCH_CHECK(proj.dim() == 2 && bias.dim() == 1 && pos.dim() == 2, "proj (V, C), bias (C), pos (L, C)");
  TORCH_CHECK(ry.dim() == 2 && ry.size(1) == 4 && rx.dim() == 2 && rx.size(1) == 4, "taps must be (n, 4)");
  TORCH_CHECK(ry.scalar_type() == at::kInt && rx.scalar_type() == at::kInt, "tap indices must be int32");
  TORCH_CHECK(wy.scalar_type() == at::kFloat && wx.scalar_type() == at::kFloat, "tap weights must be float32");
  TORCH_CHECK(wy.sizes() == ry.sizes() && wx.sizes() == rx.sizes(), "tap weights and indices differ in shape");
  const int64_t C = proj.size(1), h = ry.size(0), w = rx.size(0);
  TORCH_CHECK(bias.size(0) == C && pos.size(1) == C && pos.size(0) == h * w, "bias/pos do not fit (h*w, C)");
  TORCH_CHECK(bias.scalar_type() == proj.scalar_type() && pos.scalar_type() == proj.scalar_type(),
              "proj, bias and pos must share a dtype");
  for (const at::Tensor* t : {&prev, &proj, &bias, &pos, &ry, &wy, &rx, &wx}) {
    TORCH_CHECK(t->is_cuda() && t->device() == proj.device(), "all inputs must be on one CUDA device");
  }
  const at::cuda::CUDAGuard guard(proj.device());
  auto prev_c = prev.contiguous(), proj_c = proj.contiguous(), bias_c = bias.contiguous(), pos_c = pos.contiguous();
  auto ry_c = ry.contiguous(), wy_c = wy.contiguous(), rx_c = rx.contiguous(), wx_c = wx.contiguous();
  auto out = at::empty({prev.size(0), h * w, C}, proj.options());
  C10_CUDA_CHECK(flexvar_next_tokens(prev_c.data_ptr<int64_t>(), prev.size(0), prev.size(1), prev.size(2),
                                     proj_c.data_ptr(), proj.size(0), C, bias_c.data_ptr(), pos_c.data_ptr(),
                                     ry_c.data_ptr<int32_t>(), wy_c.data_ptr<float>(), rx_c.data_ptr<int32_t>(),
                                     wx_c.data_ptr<float>(), h, w, out.data_ptr(), to_flexvar(proj.scalar_type()),
                                     at::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor guided_sample_cuda(const at::Tensor& logits, const at::Tensor& seed, double t, int64_t rule, int64_t top_k,
                              double top_p, int64_t step, const std::optional<at::Tensor>& bias) {
  const bool guided = rule == FLEXVAR_GUIDANCE_NONE;  // (B, l, V) already guided
  TORCH_CHECK(logits.dim() == 3 && logits.scalar_type() == at::kFloat && (guided || logits.size(0) % 2 == 0),
              "logits must be float32 (2B, l, V), or (B, l, V) with rule 2 (none)");
  TORCH_CHECK(seed.numel() == 1 && seed.scalar_type() == at::kLong, "seed must be one int64");
  TORCH_CHECK(logits.is_cuda() && seed.device() == logits.device(), "logits and seed must be on one CUDA device");
  TORCH_CHECK(rule == FLEXVAR_GUIDANCE_RAMP || rule == FLEXVAR_GUIDANCE_CONSTANT || guided,
              "rule must be 0 (ramp), 1 (constant) or 2 (none)");
  TORCH_CHECK(top_k >= 0 && top_p >= 0 && top_p <= 1, "top_k >= 0 and 0 <= top_p <= 1");
  const at::cuda::CUDAGuard guard(logits.device());
  auto lg = logits.contiguous();
  const int64_t B = guided ? logits.size(0) : logits.size(0) / 2, l = logits.size(1), V = logits.size(2);
  at::Tensor bc;
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == V && bias->scalar_type() == at::kFloat &&
                    bias->device() == logits.device(), "bias must be float32 (V,) on the logits' device");
    bc = bias->contiguous();
  }
  auto out = at::empty({B, l}, logits.options().dtype(at::kLong));
  C10_CUDA_CHECK(flexvar_guided_sample(lg.data_ptr<float>(), bc.defined() ? bc.data_ptr<float>() : nullptr, B, l, V, t,
                                       static_cast<flexvar_guidance_t>(rule),
                                       static_cast<int>(std::min<int64_t>(top_k, V)), static_cast<float>(top_p),
                                       seed.data_ptr<int64_t>(), static_cast<int>(step), out.data_ptr<int64_t>(),
                                       at::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor qk_norm_cache_cuda(const at::Tensor& qkv, const at::Tensor& scale, at::Tensor& k_cache,
                              at::Tensor& v_cache, int64_t start) {
  TORCH_CHECK(qkv.dim() == 3 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(),
              "qkv must be (B, l, 3C) and the caches (L, B, H, d)");
  const int64_t B = qkv.size(0), l = qkv.size(1), L = k_cache.size(0), H = k_cache.size(2), d = k_cache.size(3);
  TORCH_CHECK(k_cache.size(1) == B && qkv.size(2) == 3 * H * d, "qkv (B, l, 3 H d) does not fit the cache (L, B, H, d)");
  TORCH_CHECK(d % 32 == 0 && d <= 256, "head dim must be a multiple of 32, at most 256");
  TORCH_CHECK(scale.numel() == H && scale.scalar_type() == at::kFloat, "scale must be float32 (H)");
  TORCH_CHECK(start >= 0 && start + l <= L, "tokens [start, start + l) must lie in the cache");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "the caches must be contiguous");
  TORCH_CHECK(k_cache.scalar_type() == qkv.scalar_type() && v_cache.scalar_type() == qkv.scalar_type(),
              "qkv and the caches must share a dtype");
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&qkv, &scale, &k_cache, &v_cache}) {
    TORCH_CHECK(t->is_cuda() && t->device() == qkv.device(), "all inputs must be on one CUDA device");
  }
  const at::cuda::CUDAGuard guard(qkv.device());
  auto qkv_c = qkv.contiguous(), scale_c = scale.contiguous();
  auto q = at::empty({B, l, H, d}, qkv.options());
  C10_CUDA_CHECK(flexvar_qk_norm_cache(qkv_c.data_ptr(), B, l, H, d, scale_c.data_ptr<float>(), q.data_ptr(),
                                       k_cache.data_ptr(), v_cache.data_ptr(), L, start,
                                       to_flexvar(qkv.scalar_type()), at::cuda::getCurrentCUDAStream()));
  return q;
}

void small_step_cuda(at::Tensor& x, const at::Tensor& mods, at::Tensor& kv, at::TensorList wqkv, at::TensorList bqkv,
                     at::TensorList qscale, at::TensorList wproj, at::TensorList bproj, at::TensorList w1,
                     at::TensorList b1, at::TensorList w2, at::TensorList b2, int64_t start, double eps) {
  TORCH_CHECK(x.dim() == 3 && x.scalar_type() == at::kFloat && x.is_contiguous(), "x must be contiguous float32 (R, l, C)");
  TORCH_CHECK(kv.dim() == 6 && kv.size(1) == 2 && kv.is_contiguous(), "kv must be a contiguous (depth, 2, L, R, H, d) cache");
  const int64_t R = x.size(0), l = x.size(1), C = x.size(2), depth = kv.size(0), L = kv.size(2), H = kv.size(4),
                d = kv.size(5);
  const at::ScalarType dt = kv.scalar_type();
  TORCH_CHECK(kv.size(3) == R && H * d == C, "the cache (depth, 2, L, R, H, d) does not fit x (R, l, C)");
  TORCH_CHECK(mods.sizes() == at::IntArrayRef({depth, R, 6, C}) && mods.scalar_type() == dt && mods.is_contiguous(),
              "mods must be contiguous (depth, R, 6, C) in the cache's dtype");
  for (at::TensorList t : {wqkv, bqkv, qscale, wproj, bproj, w1, b1, w2, b2}) {
    TORCH_CHECK((int64_t)t.size() == depth, "one weight per block expected, got ", t.size(), " for depth ", depth);
  }
  TORCH_CHECK(depth >= 1 && depth <= FLEXVAR_SMALL_STEP_MAX_DEPTH, "1 to ", FLEXVAR_SMALL_STEP_MAX_DEPTH, " blocks");
  const int64_t hidden = w1[0].size(0);
  flexvar_small_step_args_t a{};
  for (int64_t i = 0; i < depth; ++i) {
    const std::pair<const at::Tensor*, std::vector<int64_t>> want[] = {
        {&wqkv[i], {3 * C, C}}, {&bqkv[i], {3 * C}}, {&wproj[i], {C, C}}, {&bproj[i], {C}},
        {&w1[i], {hidden, C}}, {&b1[i], {hidden}}, {&w2[i], {C, hidden}}, {&b2[i], {C}}};
    for (const auto& [t, shape] : want) {
      TORCH_CHECK(t->sizes() == at::IntArrayRef(shape) && t->scalar_type() == dt && t->is_contiguous() &&
                      t->device() == x.device(),
                  "block ", i, ": a weight of shape ", t->sizes(), " where contiguous ", at::IntArrayRef(shape),
                  " in the cache's dtype on x's device was expected");
    }
    TORCH_CHECK(qscale[i].numel() == H && qscale[i].scalar_type() == at::kFloat && qscale[i].is_contiguous(),
                "block ", i, ": q scale must be contiguous float32 (H)");
    a.blocks[i] = {wqkv[i].data_ptr(), bqkv[i].data_ptr(), qscale[i].data_ptr<float>(), wproj[i].data_ptr(),
                   bproj[i].data_ptr(), w1[i].data_ptr(), b1[i].data_ptr(), w2[i].data_ptr(), b2[i].data_ptr()};
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&x, &mods, &kv}) {
    TORCH_CHECK(t->is_cuda() && t->device() == x.device(), "all inputs must be on one CUDA device");
  }
  const at::cuda::CUDAGuard guard(x.device());
  const flexvar_dtype_t fdt = to_flexvar(dt);
  TORCH_CHECK(flexvar_small_step_supported(R, l, C, H, d, hidden, depth, L, start, fdt) == cudaSuccess,
              "small_step: shapes outside the kernel's limits (include/flexvar/small_step.h)");
  auto scratch = at::empty({(int64_t)flexvar_small_step_scratch_bytes(R * l, C, hidden, fdt)},
                           x.options().dtype(at::kByte));
  a.x = x.data_ptr<float>();
  a.mods = mods.data_ptr();
  a.kv = kv.data_ptr();
  a.scratch = scratch.data_ptr();
  a.R = R, a.l = l, a.C = C, a.H = H, a.d = d, a.hidden = hidden, a.depth = depth, a.L = L, a.start = start;
  a.eps = static_cast<float>(eps);
  C10_CUDA_CHECK(flexvar_small_step(&a, fdt, at::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(flexvar, CUDA, m) {
  m.impl("next_tokens", &next_tokens_cuda);
  m.impl("guided_sample", &guided_sample_cuda);
  m.impl("qk_norm_cache", &qk_norm_cache_cuda);
  m.impl("small_step", &small_step_cuda);
}
