// flexvar_host: the command line over flexvar_host.h.
//   flexvar_host --artifacts DIR --labels 5,77 --schedule 1,2,3,4,6,8 --cfg 2.5 --guidance constant
//                --top-k 1 --top-p 0 --seed 0 --out DIR [--save-codes FILE] [--repeat N]
// --repeat N generates N more times after the first and prints the latency of those calls
// (median, min, max in ms: the whole generate(), decode and the copy to host memory included).
// Writes DIR/0000_class5.ppm, ... (binary PPM); --save-codes writes one line per image and step:
// `image step h w code code ...`. Errors: one line on stderr, exit 2.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "flexvar_host.h"

namespace fs = std::filesystem;

namespace {

// path's bytes replaced whole: written beside it, renamed over it; a failed write removes its temporary file
void write_atomic(const fs::path& path, const std::string& data) {
  fs::path tmp = path;
  tmp += ".tmp";
  std::ofstream f(tmp, std::ios::binary);
  if (f) f.write(data.data(), static_cast<std::streamsize>(data.size()));
  f.close();
  if (!f) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw flexvar::Error("cannot write " + path.string());
  }
  fs::rename(tmp, path);
}

// Fail before any work if a file cannot be made in `dir` (tried with a folder made and removed), or, where `dir`
// does not exist yet and may be made (`may_make`), in its parent, which must exist: as the Python CLI's output check.
void check_writable(fs::path dir, const std::string& what, bool may_make) {
  std::error_code ec;
  if (dir.empty()) dir = ".";
  fs::path where = fs::is_directory(dir, ec) || !may_make ? dir : dir.parent_path();
  if (where.empty()) where = ".";
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) throw flexvar::Error(what + ": exists and is not a folder");
  if (!fs::is_directory(where, ec)) throw flexvar::Error(what + ": no such folder " + where.string());
  const fs::path probe = where / (".flexvar_host-probe-" + std::to_string(std::chrono::steady_clock::now()
                                                                               .time_since_epoch().count()));
  if (!fs::create_directory(probe, ec) || ec)
    throw flexvar::Error(what + ": cannot write there (" + (ec ? ec.message() : std::string("exists")) + ")");
  fs::remove(probe, ec);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::map<std::string, std::string> a = {{"--schedule", "256-10"}, {"--cfg", "2.5"}, {"--guidance", "ramp"},
                                            {"--top-k", "900"},      {"--top-p", "0.95"}, {"--seed", "0"},
                                            {"--max-pn", "16"}};
    bool greedy_off_grid = true;
    for (int i = 1; i < argc; ++i) {
      std::string k = argv[i];
      if (k == "--no-greedy-off-grid") {
        greedy_off_grid = false;
        continue;
      }
      if (k == "-h" || k == "--help") {
        std::cout << "usage: flexvar_host --artifacts DIR --labels N[,N...] [--schedule S] [--cfg F] "
                     "[--guidance ramp|constant] [--top-k K] [--top-p P] [--seed S] [--max-pn N] "
                     "[--no-greedy-off-grid] --out DIR [--save-codes FILE] [--repeat N]\n";
        return 0;
      }
      static const char* known[] = {"--artifacts", "--labels", "--schedule", "--cfg", "--guidance", "--top-k",
                                    "--top-p", "--seed", "--out", "--save-codes", "--max-pn", "--repeat"};
      bool ok = false;
      for (const char* n : known) ok |= (k == n);
      if (!ok) throw flexvar::Error("unknown argument " + k);
      if (i + 1 >= argc) throw flexvar::Error("argument " + k + " needs a value");
      a[k] = argv[++i];
    }
    for (const char* need : {"--artifacts", "--labels", "--out"})
      if (!a.count(need)) throw flexvar::Error(std::string("the argument ") + need + " is required");
    flexvar::Options o;
    std::stringstream ls(a["--labels"]);
    std::string part;
    while (std::getline(ls, part, ',')) {
      o.labels.push_back(flexvar::parse_integer(part, "argument --labels"));
    }
    o.schedule = a["--schedule"];
    o.cfg = flexvar::parse_number(a["--cfg"], "argument --cfg");
    o.guidance = a["--guidance"];
    o.top_k = flexvar::parse_integer(a["--top-k"], "argument --top-k");
    o.top_p = flexvar::parse_number(a["--top-p"], "argument --top-p");
    const int64_t seed = flexvar::parse_integer(a["--seed"], "argument --seed");
    if (seed < 0) throw flexvar::Error("argument --seed: must be >= 0");
    o.seed = static_cast<uint64_t>(seed);
    o.max_pn = flexvar::parse_integer(a["--max-pn"], "argument --max-pn");
    o.greedy_off_grid = greedy_off_grid;
    flexvar::parse_schedule(o.schedule);  // fail on a bad schedule before loading anything
    check_writable(a["--out"], a["--out"], true);
    if (a.count("--save-codes")) check_writable(fs::path(a["--save-codes"]).parent_path(), a["--save-codes"], false);

    const int64_t repeat = a.count("--repeat") ? flexvar::parse_integer(a["--repeat"], "argument --repeat") : 0;
    if (repeat < 0) throw flexvar::Error("argument --repeat: must be >= 0");

    flexvar::Host host(a["--artifacts"]);
    flexvar::Result r = host.generate(o);
    if (repeat > 0) {
      std::vector<double> ms;
      for (int64_t i = 0; i < repeat; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        r = host.generate(o);  // returns after the images are in host memory
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
      std::printf("flexvar_host: latency_ms median %.3f min %.3f max %.3f repeats %lld batch %zu\n", med, ms.front(),
                  ms.back(), static_cast<long long>(repeat), o.labels.size());
    }

    fs::path out = a["--out"];
    fs::create_directories(out);
    for (size_t b = 0; b < r.images.size(); ++b) {
      char name[64];
      std::snprintf(name, sizeof(name), "%04zu_class%lld.ppm", b, static_cast<long long>(o.labels[b]));
      std::string ppm = "P6\n" + std::to_string(r.width) + " " + std::to_string(r.height) + "\n255\n";
      ppm.append(reinterpret_cast<const char*>(r.images[b].data()), r.images[b].size());
      write_atomic(out / name, ppm);
    }
    if (a.count("--save-codes")) {
      std::ostringstream cs;
      const size_t B = o.labels.size();
      for (size_t b = 0; b < B; ++b)
        for (size_t s = 0; s < r.steps.size(); ++s) {
          const auto& st = r.steps[s];
          cs << b << " " << s << " " << st.h << " " << st.w;
          const size_t n = size_t(st.h) * st.w;
          for (size_t j = 0; j < n; ++j) cs << " " << st.codes[b * n + j];
          cs << "\n";
        }
      write_atomic(a["--save-codes"], cs.str());
    }
    std::cout << "flexvar_host: " << r.images.size() << " image(s) " << r.height << "x" << r.width << ", "
              << r.steps.size() << " steps, written to " << out.string() << "\n";
    return 0;
  } catch (const flexvar::Error& e) {
    std::cerr << "flexvar_host: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    std::cerr << "flexvar_host: internal error: " << msg << "\n";
    return 1;
  }
}
