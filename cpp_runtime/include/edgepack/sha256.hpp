// SHA-256 (FIPS 180-4) of a file, hex-encoded: the hash bundle manifests record.
#pragma once

#include <string>

namespace edgepack {

// Throws std::runtime_error when the file cannot be read.
std::string sha256_file(const std::string& path);
std::string sha256_hex(const std::string& data);

}  // namespace edgepack
