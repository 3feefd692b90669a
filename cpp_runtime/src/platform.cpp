#include "edgepack/platform.hpp"

#include <limits.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace edgepack {

std::string machine_arch() {
  utsname names{};
  return uname(&names) == 0 ? std::string(names.machine) : std::string("unknown");
}

std::uint64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::uint64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

std::string executable_dir() {
  char path[PATH_MAX];
  const ssize_t length = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (length <= 0) return ".";
  std::string full(path, static_cast<std::size_t>(length));
  const auto slash = full.rfind('/');
  return slash == std::string::npos ? "." : full.substr(0, slash);
}

}  // namespace edgepack
