// The checks of `--self-test`: bundle files against the manifest's hashes, the machine's and the
// bundle's architecture against the build's, then (from the backend) a short real generation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgepack {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,
  kExitUsage = 2,
  kExitBundleMismatch = 3,
  kExitArchMismatch = 4,
  kExitEngineFailure = 5,
};

struct Check {
  std::string name;
  bool ok;
  std::string detail;
  ExitCode failure_code;
};

struct BundleFile {
  std::string path;  // relative to the bundle
  std::uint64_t size;
  std::string sha256;
};

// What the runtime reads of a bundle's manifest.json.
struct Bundle {
  std::string dir;
  std::string engine_dir;        // dir + "/" + the manifest's engine_dir
  std::string engine_dir_entry;  // the manifest's engine_dir as written (its path is checked)
  std::string target_name;
  std::string target_arch;
  std::vector<BundleFile> files;
};

// The bundle around this executable (bundle/runtime/bin/<exe>) unless a directory is given.
std::string default_bundle_dir();
// Throws JsonError when the manifest is missing or malformed.
Bundle read_bundle(const std::string& dir);

// Why a manifest path is not a normalized relative POSIX path ("" when it is): the rule of
// edgepack/bundle.py path_problem. check_files refuses such paths, symlinks and non-files.
std::string path_problem(const std::string& path);
Check check_files(const Bundle& bundle);
Check check_arch(const Bundle& bundle, const char* target_name, const char* target_arch);

class SelfTestReport {
 public:
  void add(Check check);
  bool ok() const;
  ExitCode exit_code() const;  // the first failure's
  // One human line per check on stderr, one JSON line on stdout.
  void print() const;

 private:
  std::vector<Check> checks_;
};

}  // namespace edgepack
