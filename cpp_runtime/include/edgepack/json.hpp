// A small JSON reader (manifests, prompt files) and a one-line JSON writer (results, timings).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgepack {

class JsonError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Json {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  using Array = std::vector<Json>;
  using Object = std::map<std::string, Json>;

  Json() = default;
  static Json parse(const std::string& text);
  static Json parse_file(const std::string& path);

  Kind kind() const { return kind_; }
  bool is(Kind kind) const { return kind_ == kind; }
  bool has(const std::string& key) const;
  // Accessors throw JsonError naming the expected kind when the value is of another.
  const Json& operator[](const std::string& key) const;
  const Array& array() const;
  const Object& object() const;
  const std::string& string() const;
  double number() const;
  bool boolean() const;

 private:
  friend class JsonParser;
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
};

// Writes one JSON object on one line: JsonLine().add("a", 1).add("b", "x").str().
class JsonLine {
 public:
  JsonLine& add(const std::string& key, const std::string& value);
  JsonLine& add(const std::string& key, const char* value);
  JsonLine& add(const std::string& key, double value);
  JsonLine& add(const std::string& key, std::int64_t value);
  JsonLine& add(const std::string& key, int value) { return add(key, static_cast<std::int64_t>(value)); }
  JsonLine& add(const std::string& key, bool value);
  JsonLine& add(const std::string& key, const std::vector<double>& values);
  JsonLine& add(const std::string& key, const std::vector<std::int32_t>& values);
  JsonLine& add_raw(const std::string& key, const std::string& json);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  JsonLine& field(const std::string& key, const std::string& json);
  std::string body_;
};

std::string json_quote(const std::string& text);

}  // namespace edgepack
