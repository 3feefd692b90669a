#include "edgepack/selftest.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <iostream>

#include "edgepack/platform.hpp"
#include "edgepack/sha256.hpp"

namespace edgepack {
namespace {

constexpr std::size_t kReportedMismatches = 5;

std::string file_problem(const std::string& bundle_dir, const Json& record) {
  const std::string relative = record["path"].string();
  const std::string path = bundle_dir + "/" + relative;
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) return relative + ": missing";
  const auto expected_size = static_cast<long long>(record["size"].number());
  if (static_cast<long long>(info.st_size) != expected_size) {
    return relative + ": size " + std::to_string(info.st_size) + " != " +
           std::to_string(expected_size);
  }
  if (sha256_file(path) != record["sha256"].string()) return relative + ": sha256 differs";
  return "";
}

}  // namespace

std::string default_bundle_dir() { return executable_dir() + "/../.."; }

Bundle read_bundle(const std::string& dir) {
  Bundle bundle{dir, "", Json::parse_file(dir + "/manifest.json")};
  bundle.engine_dir = dir + "/" + bundle.manifest["engine_dir"].string();
  return bundle;
}

Check check_files(const Bundle& bundle) {
  std::vector<std::string> problems;
  const Json::Array& files = bundle.manifest["files"].array();
  for (const Json& record : files) {
    std::string problem = file_problem(bundle.dir, record);
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
  const Json& target = bundle.manifest["target"];
  const std::string bundle_arch = target["arch"].string();
  const std::string bundle_target = target["name"].string();
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
  std::string checks = "[";
  for (const Check& check : checks_) {
    std::cerr << "self-test " << check.name << ": " << (check.ok ? "ok" : "FAILED") << " ("
              << check.detail << ")\n";
    if (checks.size() > 1) checks += ", ";
    checks += JsonLine().add("name", check.name).add("ok", check.ok).add("detail", check.detail).str();
  }
  std::cout << JsonLine().add("type", "self_test").add("ok", ok()).add_raw("checks", checks + "]").str()
            << std::endl;
}

}  // namespace edgepack
