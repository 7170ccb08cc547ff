// The host's step loop: modulation, token preparation, guidance and sampling, the transformer step
// and the decoder from AOTInductor packages, a KV cache the host owns.
// CPU artifacts: ATen ops and torch.multinomial (the reference runtime's random stream).
// CUDA artifacts (a build with FLEXVAR_HOST_CUDA): the fused kernels of kernels/ through their
// framework-free headers (next-step tokens; guidance + top-k + top-p + hashed draw, the Python fast
// runtime's sampler), everything on the device, one copy to the host at the end.
#include "flexvar_host.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#ifdef FLEXVAR_HOST_CUDA
#include <c10/cuda/CUDAStream.h>

#include "flexvar/guided_sample.h"
#include "flexvar/next_tokens.h"
#endif

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

namespace flexvar {
namespace {

const std::map<std::string, std::vector<int>> kPresets = {
    {"256-6", {1, 2, 4, 6, 10, 16}},
    {"256-7", {1, 2, 3, 5, 8, 11, 16}},
    {"256-8", {1, 2, 3, 4, 6, 10, 13, 16}},
    {"256-9", {1, 2, 3, 4, 5, 7, 10, 13, 16}},
    {"256-10", {1, 2, 3, 4, 5, 6, 8, 10, 13, 16}},
    {"256-11", {1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 16}},
    {"256-12", {1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16}},
    {"256-13", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16}},
    {"384-11", {1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 24}},
    {"512-12", {1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 23, 32}},
    {"512-15", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 23, 32}},
};
const std::vector<int> kGrid = {1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 23, 24, 32};

int parse_int(const std::string& s, const std::string& what) {
  const int64_t v = parse_integer(s, what);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    throw Error(what + ": out of range '" + s + "'");
  return static_cast<int>(v);
}

struct Bucket {
  int lo, hi;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> pkg;
};

torch::ScalarType precision_dtype(const std::string& p) {
  if (p == "float32") return torch::kFloat32;
  if (p == "float16") return torch::kFloat16;
  if (p == "bfloat16") return torch::kBFloat16;
  throw Error("unknown precision '" + p + "' in host.txt");
}

// Source rows (n_out, 4) int32 and weights (n_out, 4) float32 of PyTorch's bicubic resize
// (align_corners=False, A = -0.75, clamped borders) in its float32 arithmetic: flexvar.fast.bicubic_taps.
std::pair<torch::Tensor, torch::Tensor> bicubic_taps(int n_in, int n_out) {
  auto idx = torch::empty({n_out, 4}, torch::kInt32);
  auto wt = torch::empty({n_out, 4}, torch::kFloat32);
  const float A = -0.75f, scale = static_cast<float>(static_cast<double>(n_in) / n_out);
  auto near = [A](float x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };
  auto far = [A](float x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };
  for (int i = 0; i < n_out; ++i) {
    const float real = scale * (static_cast<float>(i) + 0.5f) - 0.5f, base = std::floor(real), t = real - base;
    const float w[4] = {far(t + 1), near(t), near(1 - t), far(2 - t)};
    for (int a = 0; a < 4; ++a) {
      idx[i][a] = std::min(std::max(static_cast<int>(base) + a - 1, 0), n_in - 1);
      wt[i][a] = w[a];
    }
  }
  return {idx, wt};
}

#ifdef FLEXVAR_HOST_CUDA
void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA kernel ") + what + " failed: " + cudaGetErrorString(e));
}
#endif

}  // namespace

namespace {
// Whether conv (std::stod, std::stoll) reads the whole of text into v.
template <typename T, typename Conv>
bool read_whole(const std::string& text, Conv conv, T& v) {
  size_t used = 0;
  try {
    v = conv(text, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used != 0 && used == text.size();
}
}  // namespace

double parse_number(const std::string& text, const std::string& what) {
  double v = 0;
  if (!read_whole(text, [](const std::string& t, size_t* n) { return std::stod(t, n); }, v))
    throw Error(what + ": invalid number '" + text + "'");
  return v;
}

int64_t parse_integer(const std::string& text, const std::string& what) {
  long long v = 0;
  if (read_whole(text, [](const std::string& t, size_t* n) { return std::stoll(t, n); }, v)) return v;
  parse_number(text, what);  // throws "invalid number" unless it is one
  throw Error(what + ": not an integer '" + text + "'");
}

Schedule parse_schedule(const std::string& text) {
  Schedule out;
  auto it = kPresets.find(text);
  if (it != kPresets.end()) {
    for (int s : it->second) out.emplace_back(s, s);
  } else {
    if (text.find(',') == std::string::npos && text.find('x') == std::string::npos &&
        text.find('-') != std::string::npos)
      throw Error("unknown schedule preset '" + text + "'");
    std::stringstream ss(text);
    std::string part;
    while (std::getline(ss, part, ',')) {
      auto x = part.find('x');
      if (x == std::string::npos) {
        int s = parse_int(part, "schedule step");
        out.emplace_back(s, s);
      } else {
        out.emplace_back(parse_int(part.substr(0, x), "schedule step"), parse_int(part.substr(x + 1), "schedule step"));
      }
    }
  }
  if (out.empty()) throw Error("schedule has no steps");
  std::pair<int, int> prev{0, 0};
  for (size_t i = 0; i < out.size(); ++i) {
    auto [h, w] = out[i];
    if (h < 1 || w < 1) throw Error("step " + std::to_string(i + 1) + " has a side below 1");
    if (h < prev.first || w < prev.second) throw Error("schedule decreases at step " + std::to_string(i + 1));
    prev = out[i];
  }
  return out;
}

struct Host::Impl {
  fs::path dir;
  std::map<std::string, std::string> kv;
  int64_t depth = 0, width = 0, heads = 0, vocab = 0, classes = 0;
  std::map<std::string, torch::Tensor> t;
  std::vector<Bucket> steps;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> decoder;
  torch::Device dev = torch::kCPU;
  torch::ScalarType dt = torch::kFloat32;  // the packages' precision (KV cache, modulation)
  torch::Tensor proj, word_b;              // CUDA: codebook projected through word_embed (V, C), its bias, in dt
  std::map<std::pair<int, int>, torch::Tensor> pos_cache;
  std::map<std::pair<int, int>, std::pair<torch::Tensor, torch::Tensor>> tap_cache;

  // (1, h*w, C) positions of a step: the 32x32 grid area-resized (float32), rounded to the packages'
  // dtype as the Python runtime holds them; once per shape
  torch::Tensor positions(int h, int w) {
    auto key = std::make_pair(h, w);
    auto it = pos_cache.find(key);
    if (it != pos_cache.end()) return it->second;
    auto pos = F::adaptive_avg_pool2d(t["pos_1LC"], F::AdaptiveAvgPool2dFuncOptions({h, w})).flatten(2).transpose(1, 2);
    return pos_cache[key] = pos.to(dt).contiguous();
  }

  // bicubic taps from n_in to n_out on the device
  const std::pair<torch::Tensor, torch::Tensor>& taps(int n_in, int n_out) {
    auto key = std::make_pair(n_in, n_out);
    auto it = tap_cache.find(key);
    if (it != tap_cache.end()) return it->second;
    auto [i, w] = bicubic_taps(n_in, n_out);
    return tap_cache[key] = {i.to(dev), w.to(dev)};
  }

  int64_t num(const std::string& k) const {
    auto it = kv.find(k);
    if (it == kv.end()) throw Error(dir.string() + ": host.txt lacks '" + k + "'");
    return parse_int(it->second, k);
  }

  torch::Tensor load_tensor(const std::string& name, const std::string& dims) {
    std::vector<int64_t> shape;
    std::stringstream ss(dims);
    std::string d;
    int64_t n = 1;
    while (std::getline(ss, d, 'x')) {
      shape.push_back(parse_int(d, "tensor shape"));
      n *= shape.back();
    }
    fs::path p = dir / "host" / (name + ".f32");
    std::ifstream f(p, std::ios::binary);
    if (!f) throw Error(dir.string() + ": incomplete: missing host/" + name + ".f32");
    std::vector<float> buf(static_cast<size_t>(n));
    f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(n * sizeof(float)));
    if (f.gcount() != static_cast<std::streamsize>(n * sizeof(float)) || f.peek() != EOF)
      throw Error(dir.string() + ": host/" + name + ".f32 does not hold a " + dims + " float32 tensor");
    return torch::from_blob(buf.data(), shape, torch::kFloat32).clone();
  }

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> load_package(const std::string& file) {
    fs::path p = dir / file;
    if (!fs::is_regular_file(p)) throw Error(dir.string() + ": incomplete: missing package " + file);
    if (file.find(kv["fingerprint"]) == std::string::npos)
      throw Error(dir.string() + ": package " + file + " was built for other weights");
    try {
      return std::make_unique<torch::inductor::AOTIModelPackageLoader>(p.string());
    } catch (const std::exception& e) {  // a corrupt or foreign package: one line that names it
      std::string msg = e.what();
      msg = msg.substr(0, std::min(msg.find('\n'), size_t(200)));
      throw Error(p.string() + ": AOTInductor cannot load it (" + msg + "); export the directory again with --rebuild");
    }
  }
};

Host::Host(const std::string& artifact_dir) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.dir = artifact_dir;
  if (!fs::is_directory(m.dir)) throw Error(artifact_dir + ": no such artifact directory");
  std::ifstream f(m.dir / "host.txt");
  if (!f) throw Error(artifact_dir + ": no host.txt: export it with `flexvar export --backend aoti --out " + artifact_dir + "`");
  std::vector<std::pair<std::string, std::string>> tensors, packages;
  std::string line;
  while (std::getline(f, line)) {
    std::stringstream ls(line);
    std::string key;
    ls >> key;
    if (key == "tensor") {
      std::string name, dims;
      ls >> name >> dims;
      tensors.emplace_back(name, dims);
    } else if (key == "step") {
      std::string bucket, lo, hi, file;
      ls >> bucket >> lo >> hi >> file;
      packages.emplace_back(lo + " " + hi, file);
    } else if (!key.empty()) {
      std::string rest;
      ls >> rest;
      m.kv[key] = rest;
    }
  }
  // the manifest written by the same export must name the same weights
  std::ifstream mf(m.dir / "manifest.json");
  std::stringstream ms;
  ms << mf.rdbuf();
  if (!mf || ms.str().find("\"fingerprint\": \"" + m.kv["fingerprint"] + "\"") == std::string::npos)
    throw Error(artifact_dir + ": host.txt and manifest.json name different weights (mismatched directory)");
  m.depth = m.num("depth");
  m.width = m.num("width");
  m.heads = m.num("heads");
  m.vocab = m.num("vocab");
  m.classes = m.num("classes");
  m.dt = precision_dtype(m.kv.count("precision") ? m.kv["precision"] : "float32");
  const std::string device = m.kv.count("device") ? m.kv["device"] : "cpu";
  if (device == "cuda") {
#ifdef FLEXVAR_HOST_CUDA
    if (!torch::cuda::is_available()) throw Error(artifact_dir + ": exported for CUDA, but no CUDA device is available");
    m.dev = torch::Device(torch::kCUDA, 0);
#else
    throw Error(artifact_dir + ": exported for CUDA; this flexvar_host was built without CUDA (rebuild with nvcc "
                "and a CUDA torch)");
#endif
  } else if (device != "cpu") {
    throw Error(artifact_dir + ": exported for device '" + device + "', which the host does not run");
  }
  for (auto& [name, dims] : tensors) m.t[name] = m.load_tensor(name, dims).to(m.dev);
  for (const char* need : {"class_emb", "ada_w", "ada_b", "head_ada_w", "head_ada_b", "pos_1LC", "pos_start",
                           "codebook", "word_w", "word_b"})
    if (!m.t.count(need)) throw Error(artifact_dir + ": incomplete: host.txt lists no tensor '" + need + "'");
  if (packages.empty()) throw Error(artifact_dir + ": incomplete: no transformer step package");
  for (auto& [range, file] : packages) {
    std::stringstream rs(range);
    Bucket b;
    rs >> b.lo >> b.hi;
    b.pkg = m.load_package(file);
    m.steps.push_back(std::move(b));
  }
  if (!m.kv.count("decoder")) throw Error(artifact_dir + ": incomplete: no decoder package");
  m.decoder = m.load_package(m.kv["decoder"]);
  if (m.dev.is_cuda()) {  // the projected codebook and bias of the fused next-token kernel
    m.proj = torch::matmul(m.t["codebook"], m.t["word_w"].t()).to(m.dt).contiguous();
    m.word_b = m.t["word_b"].to(m.dt).contiguous();
  }
}

Host::~Host() = default;

int Host::num_classes() const { return static_cast<int>(impl_->classes); }

Result Host::generate(const Options& o) {
  Impl& m = *impl_;
  torch::NoGradGuard no_grad;
  if (o.labels.empty()) throw Error("no labels given");
  for (int64_t l : o.labels)
    if (l < 0 || l >= m.classes)
      throw Error("label " + std::to_string(l) + " is out of range 0-" + std::to_string(m.classes - 1));
  if (!(o.cfg >= 0 && o.cfg <= 100)) throw Error("cfg must be a number from 0 to 100");  // flexvar.sampling.MAX_CFG
  if (o.guidance != "ramp" && o.guidance != "constant") throw Error("guidance must be ramp or constant");
  if (o.top_k < 0) throw Error("top_k must be >= 0");
  if (!(o.top_p >= 0 && o.top_p <= 1)) throw Error("top_p must be within [0, 1]");
  if (o.max_pn < 1) throw Error("max_pn must be >= 1");
  const Schedule sched = parse_schedule(o.schedule);
  if (sched.back().first < 2 || sched.back().second < 2) throw Error("the last step must be at least 2x2 tokens");
  const int64_t B = static_cast<int64_t>(o.labels.size()), C = m.width, D = m.depth, H = m.heads, V = m.vocab;
  const int n = static_cast<int>(sched.size());

  // per generation: cond and every block's (and the head's) modulation
  std::vector<int64_t> both(o.labels);
  both.insert(both.end(), o.labels.size(), m.classes);  // the null class of the unconditional half
  auto cond = m.t["class_emb"].index_select(0, torch::tensor(both, torch::kLong).to(m.dev));
  auto act = torch::silu(cond);
  std::vector<torch::Tensor> mods;
  for (int64_t i = 0; i < D; ++i) mods.push_back(torch::linear(act, m.t["ada_w"][i], m.t["ada_b"][i]).view({2 * B, 6, C}));
  auto blocks = torch::stack(mods).to(m.dt);
  auto head = torch::linear(act, m.t["head_ada_w"], m.t["head_ada_b"]).view({2 * B, 2, C}).to(m.dt);

  int64_t total = 0;
  for (auto [h, w] : sched) total += int64_t(h) * w;
  const auto opts = torch::TensorOptions().device(m.dev).dtype(m.dt);
  std::vector<torch::Tensor> kc, vc;  // the host's token-major KV cache, (L, 2B, H, d) per layer
  for (int64_t i = 0; i < D; ++i) {
    kc.push_back(torch::empty({total, 2 * B, H, C / H}, opts));
    vc.push_back(torch::empty({total, 2 * B, H, C / H}, opts));
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
#ifdef FLEXVAR_HOST_CUDA
  torch::Tensor seed_dev;  // the hashed sampler reads a 32-bit word from device memory: the seed folded as
  if (m.dev.is_cuda()) {  // flexvar.fast.seed_word folds it (the low word XOR a hash of the high word)
    uint32_t hi = static_cast<uint32_t>(o.seed >> 32);
    hi = (hi ^ (hi >> 16)) * 0x7FEB352Du;
    hi = (hi ^ (hi >> 15)) * 0x5BD1E995u;
    const uint32_t word = static_cast<uint32_t>(o.seed) ^ hi ^ (hi >> 16);
    seed_dev = torch::full({1}, static_cast<int64_t>(word), torch::TensorOptions().dtype(torch::kLong).device(m.dev));
  }
#endif
  std::vector<torch::Tensor> codes;  // (B, h, w) int64 per step, on the device
  int64_t start = 0;
  for (int si = 0; si < n; ++si) {
    auto [h, w] = sched[si];
    const int64_t l = int64_t(h) * w;
    torch::Tensor x;
    if (si == 0) {
      x = cond.to(m.dt).unsqueeze(1).to(torch::kFloat32) + m.t["pos_start"].to(m.dt).to(torch::kFloat32) +
          m.positions(h, w).to(torch::kFloat32);
    } else if (!m.dev.is_cuda()) {
      const auto& prev = codes.back();
      auto vec = m.t["codebook"].index_select(0, prev.flatten()).view({B, prev.size(1), prev.size(2), -1}).permute({0, 3, 1, 2});
      auto up = F::interpolate(vec, F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w})
                                        .mode(torch::kBicubic).align_corners(false));
      x = (torch::linear(up.flatten(2).transpose(1, 2), m.t["word_w"], m.t["word_b"]) + m.positions(h, w)).repeat({2, 1, 1});
    } else {
#ifdef FLEXVAR_HOST_CUDA
      const auto& prev = codes.back();
      const auto& [ry, wy] = m.taps(static_cast<int>(prev.size(1)), h);
      const auto& [rx, wx] = m.taps(static_cast<int>(prev.size(2)), w);
      const auto& pos = m.positions(h, w);
      auto tok = torch::empty({B, l, C}, opts);
      const flexvar_dtype_t kd = m.dt == torch::kFloat32 ? FLEXVAR_FLOAT32 : (m.dt == torch::kBFloat16 ? FLEXVAR_BFLOAT16 : FLEXVAR_FLOAT16);
      check_cuda(flexvar_next_tokens(prev.data_ptr<int64_t>(), static_cast<int>(B), static_cast<int>(prev.size(1)),
                                     static_cast<int>(prev.size(2)), m.proj.data_ptr(), static_cast<int>(V),
                                     static_cast<int>(C), m.word_b.data_ptr(), pos.data_ptr(), ry.data_ptr<int32_t>(),
                                     wy.data_ptr<float>(), rx.data_ptr<int32_t>(), wx.data_ptr<float>(), h, w,
                                     tok.data_ptr(), kd, c10::cuda::getCurrentCUDAStream().stream()),
                 "next_tokens");
      x = tok.to(torch::kFloat32).repeat({2, 1, 1});
#endif
    }
    Bucket* bucket = nullptr;
    for (auto& b : m.steps)
      if (b.lo <= l && l <= b.hi) bucket = &b;
    if (!bucket) throw Error("no step package covers a step of " + std::to_string(l) + " tokens");
    std::vector<torch::Tensor> in{x.contiguous(), blocks, head};
    for (int64_t i = 0; i < D; ++i) in.push_back(kc[i].narrow(0, 0, start));
    for (int64_t i = 0; i < D; ++i) in.push_back(vc[i].narrow(0, 0, start));
    auto out = bucket->pkg->run(in);
    for (int64_t i = 0; i < D; ++i) {
      kc[i].narrow(0, start, l).copy_(out[1 + i]);
      vc[i].narrow(0, start, l).copy_(out[1 + D + i]);
    }
    start += l;
    // guidance: ramp (1+t)c - t u, or constant u + cfg (c - u); the release's greedy policy off the grid
    const bool big = std::max(h, w) > o.max_pn;
    double t = o.cfg;
    if (o.guidance == "ramp" && !big && n > 1) t = o.cfg * si / std::min(n - 1, 9);
    auto on = [](int s) { return std::find(kGrid.begin(), kGrid.end(), s) != kGrid.end(); };
    const int64_t k = (o.greedy_off_grid && (big || !on(h) || !on(w))) ? 1 : o.top_k;
    if (m.dev.is_cuda()) {
#ifdef FLEXVAR_HOST_CUDA
      auto logits = out[0].to(torch::kFloat32).contiguous();
      auto idx = torch::empty({B, h, w}, torch::TensorOptions().dtype(torch::kLong).device(m.dev));
      check_cuda(flexvar_guided_sample(logits.data_ptr<float>(), nullptr, static_cast<int>(B), static_cast<int>(l),
                                       static_cast<int>(V), t,
                                       o.guidance == "ramp" ? FLEXVAR_GUIDANCE_RAMP : FLEXVAR_GUIDANCE_CONSTANT,
                                       static_cast<int>(std::min(k, V)), static_cast<float>(o.top_p),
                                       seed_dev.data_ptr<int64_t>(), si, idx.data_ptr<int64_t>(),
                                       c10::cuda::getCurrentCUDAStream().stream()),
                 "guided_sample");
      codes.push_back(idx);
#endif
      continue;
    }
    auto c = out[0].narrow(0, 0, B), u = out[0].narrow(0, B, B);
    auto logits = o.guidance == "ramp" ? (1 + t) * c - t * u : u + t * (c - u);
    // sampling: top-k, top-p, one multinomial draw
    const float inf = std::numeric_limits<float>::infinity();
    if (k > 0 && k < V) {
      auto kth = std::get<0>(logits.topk(k, -1)).narrow(-1, k - 1, 1);
      logits = logits.masked_fill(logits < kth, -inf);
    }
    if (o.top_p > 0 && o.top_p < 1) {
      auto sorted = logits.sort(-1, false);
      auto drop = std::get<0>(sorted).softmax(-1).cumsum(-1) <= (1 - o.top_p);
      drop.narrow(-1, V - 1, 1).fill_(false);
      logits = logits.masked_fill(drop.scatter(-1, std::get<1>(sorted), drop), -inf);
    }
    codes.push_back(torch::multinomial(logits.softmax(-1).view({-1, V}), 1, true, gen).view({B, h, w}));
  }
  auto img = m.decoder->run({codes.back().contiguous()})[0].to(torch::kCPU).contiguous();  // (B, H, W, 3) uint8
  Result res;
  for (size_t si = 0; si < codes.size(); ++si) {
    auto c = codes[si].to(torch::kCPU).contiguous();
    res.steps.push_back(StepCodes{sched[si].first, sched[si].second,
                                  std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel())});
  }
  res.height = static_cast<int>(img.size(1));
  res.width = static_cast<int>(img.size(2));
  for (int64_t b = 0; b < B; ++b) {
    auto one = img[b].contiguous();
    res.images.emplace_back(one.data_ptr<uint8_t>(), one.data_ptr<uint8_t>() + one.numel());
  }
  return res;
}

}  // namespace flexvar
