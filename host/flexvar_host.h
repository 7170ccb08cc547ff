// flexvar_host: generate FlexVAR images in C++ from the artifacts of
// `flexvar export --backend aoti --out DIR` (AOTInductor packages + host assets), no Python.
// The header does not expose torch: link the flexvar_host library (which links libtorch).
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace flexvar {

// Every failure (bad directory, schedule, label, parameter) is a flexvar::Error with a one-line message.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Options {
  std::vector<int64_t> labels;       // classes 0 .. num_classes-1
  std::string schedule = "256-10";   // preset, "1,2,4,8" or "1x2,2x4"
  double cfg = 2.5;
  std::string guidance = "ramp";     // or "constant"
  int64_t top_k = 900;               // 0 = off, 1 = greedy
  double top_p = 0.95;               // 0 = off
  uint64_t seed = 0;
  int64_t max_pn = 16;
  bool greedy_off_grid = true;       // the release's greedy sampling of off-grid steps
};

struct StepCodes {
  int h = 0, w = 0;
  std::vector<int64_t> codes;        // (B, h, w) row-major
};

struct Result {
  int height = 0, width = 0;
  std::vector<std::vector<uint8_t>> images;  // one RGB buffer (height * width * 3) per label
  std::vector<StepCodes> steps;
};

using Schedule = std::vector<std::pair<int, int>>;

// A schedule from a table-7 preset name, sides "1,2,4" or pairs "1x2,2x4"; throws Error.
Schedule parse_schedule(const std::string& text);

// The whole of `text` as a number / an integer; otherwise Error("<what>: invalid number '<text>'")
// (or "not an integer"). The library's own parsing and the command line share them.
double parse_number(const std::string& text, const std::string& what);
int64_t parse_integer(const std::string& text, const std::string& what);

class Host {
 public:
  // Opens and checks an artifact directory; throws Error if it is missing, incomplete or mismatched.
  explicit Host(const std::string& artifact_dir);
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  Result generate(const Options& options);
  int num_classes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexvar
