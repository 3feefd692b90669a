#include "edgepack/json.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>

namespace edgepack {
namespace {

std::string scalar_text(const Json& value) {
  if (!value.is_number_float()) return value.dump(-1, ' ', false, Json::error_handler_t::replace);
  const double number = value.get<double>();
  if (!std::isfinite(number)) return "null";
  char text[32];
  std::snprintf(text, sizeof(text), "%.6g", number);
  return text;
}

// nlohmann's dump() has no ", " and ": " separators on one line; the records keep this layout.
void write(const Json& value, std::string& out) {
  if (value.is_object()) {
    out += '{';
    const char* separator = "";
    for (const auto& item : value.items()) {
      out += separator + json_quote(item.key()) + ": ";
      write(item.value(), out);
      separator = ", ";
    }
    out += '}';
  } else if (value.is_array()) {
    out += '[';
    for (std::size_t i = 0; i < value.size(); ++i) {
      if (i > 0) out += ", ";
      write(value[i], out);
    }
    out += ']';
  } else {
    out += scalar_text(value);
  }
}

}  // namespace

std::string json_reason(const Json::exception& error) {
  const std::string what = error.what();
  const auto end = what.find("] ");
  return what.rfind("[json.exception.", 0) == 0 && end != std::string::npos ? what.substr(end + 2)
                                                                            : what;
}

Json read_json_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw JsonError("cannot read " + path);
  try {
    return Json::parse(file);
  } catch (const Json::exception& error) {
    throw JsonError(path + ": " + json_reason(error));
  }
}

std::string JsonLine::str() const {
  std::string out;
  write(object_, out);
  return out;
}

std::string json_quote(const std::string& text) {
  return Json(text).dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace edgepack
