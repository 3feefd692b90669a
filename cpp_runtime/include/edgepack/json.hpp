// JSON through nlohmann/json: reading manifests and prompt files, writing the one-line records of
// --json (results, timings, self-test) in the layout edgepack has always printed.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace edgepack {

// Objects keep their keys in the order written (one type for reading and writing).
using Json = nlohmann::ordered_json;

// A file that cannot be read or is not the JSON expected; the message names the file.
class JsonError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// nlohmann's message without its "[json.exception.type_error.302] " prefix.
std::string json_reason(const Json::exception& error);

// Throws JsonError "PATH: reason" when the file is unreadable or malformed.
Json read_json_file(const std::string& path);

// Runs `read` on a document from `path`; a missing key or a value of the wrong type becomes a
// JsonError naming the file.
template <typename Read>
auto read_fields(const std::string& path, Read&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const Json::exception& error) {
    throw JsonError(path + ": " + json_reason(error));
  }
}

// One JSON object on one line, keys in the order added: JsonLine().add("a", 1).add("b", "x").str()
// gives {"a": 1, "b": "x"}. Floating-point numbers have 6 significant digits (non-finite: null);
// text that is not valid UTF-8 is written with U+FFFD in place of the bad bytes.
class JsonLine {
 public:
  template <typename T>
  JsonLine& add(const std::string& key, T&& value) {
    object_[key] = std::forward<T>(value);
    return *this;
  }
  std::string str() const;

 private:
  Json object_ = Json::object();
};

// `text` as a JSON string literal.
std::string json_quote(const std::string& text);

}  // namespace edgepack
