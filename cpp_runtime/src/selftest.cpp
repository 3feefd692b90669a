#include "edgepack/selftest.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <iostream>
#include <set>

#include "edgepack/json.hpp"
#include "edgepack/platform.hpp"
#include "edgepack/sha256.hpp"

namespace edgepack {
namespace {

constexpr std::size_t kReportedMismatches = 5;

// What a bundle file is instead of a regular file reached through real directories ("" if it is
// one): a manifest path never leads through a symlink.
std::string entry_problem(const std::string& bundle_dir, const std::string& relative) {
  std::size_t end = 0;
  while (true) {
    end = relative.find('/', end);
    const std::string prefix = bundle_dir + "/" + relative.substr(0, end);
    struct stat info {};
    if (lstat(prefix.c_str(), &info) != 0) return "missing";
    if (S_ISLNK(info.st_mode)) return "a symlink (a bundle holds regular files only)";
    if (end == std::string::npos) {
      return S_ISREG(info.st_mode) ? "" : "not a regular file (a directory, FIFO, socket or device)";
    }
    if (!S_ISDIR(info.st_mode)) return "missing";
    ++end;
  }
}

std::string file_problem(const std::string& bundle_dir, const BundleFile& record) {
  const std::string& relative = record.path;
  const std::string unsafe = path_problem(relative);
  if (!unsafe.empty()) return "unsafe path: " + unsafe;
  const std::string kind = entry_problem(bundle_dir, relative);
  if (!kind.empty()) return relative + ": " + kind;
  const std::string path = bundle_dir + "/" + relative;
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) return record.path + ": missing";
  if (static_cast<std::uint64_t>(info.st_size) != record.size) {
    return record.path + ": size " + std::to_string(info.st_size) + " != " +
           std::to_string(record.size);
  }
  if (sha256_file(path) != record.sha256) return record.path + ": sha256 differs";
  return "";
}

}  // namespace

std::string path_problem(const std::string& path) {
  if (path.empty()) return "an empty path";
  const std::string quoted = "'" + path + "'";
  if (path[0] == '/') return quoted + " is absolute";
  for (const char c : path) {
    const auto code = static_cast<unsigned char>(c);
    if (code < 0x20 || code == 0x7f || c == '\\') {
      return quoted + " holds a backslash or a control character (NUL, newline)";
    }
  }
  std::size_t start = 0;
  while (true) {
    const std::size_t end = path.find('/', start);
    const std::string part =
        path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (part.empty() || part == "." || part == "..") {
      return quoted + " has an empty, '.' or '..' component";
    }
    if (end == std::string::npos) return "";
    start = end + 1;
  }
}

std::string default_bundle_dir() { return executable_dir() + "/../.."; }

Bundle read_bundle(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  const Json manifest = read_json_file(path);
  return read_fields(path, [&] {
    const Json& target = manifest.at("target");
    const auto engine_dir = manifest.at("engine_dir").get<std::string>();
    Bundle bundle{dir,
                  dir + "/" + engine_dir,
                  engine_dir,
                  target.at("name").get<std::string>(),
                  target.at("arch").get<std::string>(),
                  {}};
    for (const Json& record : manifest.at("files")) {
      bundle.files.push_back({record.at("path").get<std::string>(),
                              record.at("size").get<std::uint64_t>(),
                              record.at("sha256").get<std::string>()});
    }
    return bundle;
  });
}

Check check_files(const Bundle& bundle) {
  std::vector<std::string> problems;
  if (!path_problem(bundle.engine_dir_entry).empty()) {
    problems.push_back("engine_dir: " + path_problem(bundle.engine_dir_entry));
  }
  const std::vector<BundleFile>& files = bundle.files;
  std::set<std::string> seen;
  for (const BundleFile& record : files) {
    std::string problem = file_problem(bundle.dir, record);
    if (problem.empty() && !seen.insert(record.path).second) {
      problem = record.path + ": listed twice";
    }
    if (!problem.empty()) problems.push_back(problem);
  }
  std::string detail = std::to_string(files.size()) + " files match the manifest";
  if (!problems.empty()) {
    detail = std::to_string(problems.size()) + " of " + std::to_string(files.size()) +
             " files differ from the manifest: ";
    for (std::size_t i = 0; i < problems.size() && i < kReportedMismatches; ++i) {
      detail += (i ? "; " : "") + problems[i];
    }
    detail += " (rebuild or redeploy the bundle)";
  }
  return {"files", problems.empty(), detail, kExitBundleMismatch};
}

Check check_arch(const Bundle& bundle, const char* target_name, const char* target_arch) {
  const std::string machine = machine_arch();
  const std::string& bundle_arch = bundle.target_arch;
  const std::string& bundle_target = bundle.target_name;
  std::string problem;
  if (machine != target_arch) {
    problem = "this machine is " + machine + " but the runtime was built for " + target_arch;
  } else if (bundle_arch != target_arch || bundle_target != target_name) {
    problem = "the bundle is for " + bundle_target + " (" + bundle_arch +
              ") but the runtime was built for " + target_name + " (" + target_arch + ")";
  }
  const std::string detail =
      problem.empty() ? std::string(target_name) + " on " + machine : problem;
  return {"architecture", problem.empty(), detail, kExitArchMismatch};
}

void SelfTestReport::add(Check check) { checks_.push_back(std::move(check)); }

bool SelfTestReport::ok() const { return exit_code() == kExitOk; }

ExitCode SelfTestReport::exit_code() const {
  for (const Check& check : checks_) {
    if (!check.ok) return check.failure_code;
  }
  return kExitOk;
}

void SelfTestReport::print() const {
  auto checks = Json::array();
  for (const Check& check : checks_) {
    std::cerr << "self-test " << check.name << ": " << (check.ok ? "ok" : "FAILED") << " ("
              << check.detail << ")\n";
    checks.push_back({{"name", check.name}, {"ok", check.ok}, {"detail", check.detail}});
  }
  std::cout << JsonLine().add("type", "self_test").add("ok", ok()).add("checks", checks).str()
            << std::endl;
}

}  // namespace edgepack
