// What this binary was compiled for and what it runs on.
#pragma once

#include <cstdint>
#include <string>

namespace edgepack {

constexpr const char* compiled_arch() {
#if defined(__aarch64__)
  return "aarch64";
#elif defined(__x86_64__)
  return "x86_64";
#else
  return "unknown";
#endif
}

constexpr bool same_text(const char* a, const char* b) {
  return *a == *b && (*a == '\0' || same_text(a + 1, b + 1));
}

// The machine the process runs on, as uname(2) reports it (qemu-user reports the guest's).
std::string machine_arch();

// Peak resident set size of this process in bytes.
std::uint64_t peak_rss_bytes();

// Directory holding the running executable.
std::string executable_dir();

}  // namespace edgepack
