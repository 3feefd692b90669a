#include "edgepack/json.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace edgepack {

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : text_(text) {}

  Json document() {
    Json value = parse_value();
    skip_space();
    if (pos_ != text_.size()) fail("unexpected trailing characters");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw JsonError("invalid JSON at offset " + std::to_string(pos_) + ": " + what);
  }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\r' || text_[pos_] == '\t')) {
      ++pos_;
    }
  }

  char peek() {
    skip_space();
    if (pos_ >= text_.size()) fail("unexpected end of input");
    return text_[pos_];
  }

  void expect(char wanted) {
    if (peek() != wanted) fail(std::string("expected '") + wanted + "'");
    ++pos_;
  }

  bool consume_word(const char* word) {
    const std::string w(word);
    if (text_.compare(pos_, w.size(), w) != 0) return false;
    pos_ += w.size();
    return true;
  }

  Json parse_value() {
    Json value;
    const char c = peek();
    if (c == '{') return parse_object();
    if (c == '[') return parse_array();
    if (c == '"') {
      value.kind_ = Json::Kind::String;
      value.string_ = parse_string();
    } else if (consume_word("true")) {
      value.kind_ = Json::Kind::Bool;
      value.bool_ = true;
    } else if (consume_word("false")) {
      value.kind_ = Json::Kind::Bool;
    } else if (consume_word("null")) {
      value.kind_ = Json::Kind::Null;
    } else {
      value.kind_ = Json::Kind::Number;
      value.number_ = parse_number();
    }
    return value;
  }

  Json parse_object() {
    Json value;
    value.kind_ = Json::Kind::Object;
    value.object_ = std::make_shared<Json::Object>();
    expect('{');
    if (peek() == '}') return ++pos_, value;
    while (true) {
      if (peek() != '"') fail("expected a string key");
      std::string key = parse_string();
      expect(':');
      (*value.object_)[key] = parse_value();
      if (peek() == '}') return ++pos_, value;
      expect(',');
    }
  }

  Json parse_array() {
    Json value;
    value.kind_ = Json::Kind::Array;
    value.array_ = std::make_shared<Json::Array>();
    expect('[');
    if (peek() == ']') return ++pos_, value;
    while (true) {
      value.array_->push_back(parse_value());
      if (peek() == ']') return ++pos_, value;
      expect(',');
    }
  }

  double parse_number() {
    const char* start = text_.c_str() + pos_;
    char* end = nullptr;
    const double number = std::strtod(start, &end);
    if (end == start) fail("expected a value");
    pos_ += static_cast<std::size_t>(end - start);
    return number;
  }

  unsigned hex4() {
    if (pos_ + 4 > text_.size()) fail("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[pos_++];
      code <<= 4;
      if (h >= '0' && h <= '9') code |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f') code |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') code |= static_cast<unsigned>(h - 'A' + 10);
      else fail("bad \\u escape");
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  unsigned escaped_code_point() {
    unsigned code = hex4();
    if (code >= 0xD800 && code < 0xDC00 && text_.compare(pos_, 2, "\\u") == 0) {
      pos_ += 2;
      const unsigned low = hex4();
      code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    }
    return code;
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (pos_ < text_.size()) {
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) break;
      const char e = text_[pos_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': append_utf8(out, escaped_code_point()); break;
        default: out += e;
      }
    }
    fail("unterminated string");
  }

  const std::string& text_;
  std::size_t pos_ = 0;
};

Json Json::parse(const std::string& text) { return JsonParser(text).document(); }

Json Json::parse_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw JsonError("cannot read " + path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  try {
    return parse(buffer.str());
  } catch (const JsonError& error) {
    throw JsonError(path + ": " + error.what());
  }
}

static const char* kind_name(Json::Kind kind) {
  static const char* names[] = {"null", "boolean", "number", "string", "array", "object"};
  return names[static_cast<int>(kind)];
}

static void require(const Json& value, Json::Kind kind) {
  if (!value.is(kind)) {
    throw JsonError(std::string("expected a JSON ") + kind_name(kind) + ", found " +
                    kind_name(value.kind()));
  }
}

bool Json::has(const std::string& key) const {
  return is(Kind::Object) && object_->count(key) > 0;
}

const Json& Json::operator[](const std::string& key) const {
  require(*this, Kind::Object);
  const auto found = object_->find(key);
  if (found == object_->end()) throw JsonError("missing key \"" + key + "\"");
  return found->second;
}

const Json::Array& Json::array() const { return require(*this, Kind::Array), *array_; }
const Json::Object& Json::object() const { return require(*this, Kind::Object), *object_; }
const std::string& Json::string() const { return require(*this, Kind::String), string_; }
double Json::number() const { return require(*this, Kind::Number), number_; }
bool Json::boolean() const { return require(*this, Kind::Bool), bool_; }

std::string json_quote(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

static std::string number_text(double value) {
  if (!std::isfinite(value)) return "null";
  char text[32];
  std::snprintf(text, sizeof(text), "%.6g", value);
  return text;
}

JsonLine& JsonLine::field(const std::string& key, const std::string& json) {
  if (!body_.empty()) body_ += ", ";
  body_ += json_quote(key) + ": " + json;
  return *this;
}

JsonLine& JsonLine::add(const std::string& key, const std::string& value) {
  return field(key, json_quote(value));
}
JsonLine& JsonLine::add(const std::string& key, const char* value) {
  return field(key, json_quote(value));
}
JsonLine& JsonLine::add(const std::string& key, double value) {
  return field(key, number_text(value));
}
JsonLine& JsonLine::add(const std::string& key, std::int64_t value) {
  return field(key, std::to_string(value));
}
JsonLine& JsonLine::add(const std::string& key, bool value) {
  return field(key, value ? "true" : "false");
}
JsonLine& JsonLine::add(const std::string& key, const std::vector<double>& values) {
  std::string json = "[";
  for (std::size_t i = 0; i < values.size(); ++i) json += (i ? ", " : "") + number_text(values[i]);
  return field(key, json + "]");
}
JsonLine& JsonLine::add(const std::string& key, const std::vector<std::int32_t>& values) {
  std::string json = "[";
  for (std::size_t i = 0; i < values.size(); ++i) json += (i ? ", " : "") + std::to_string(values[i]);
  return field(key, json + "]");
}
JsonLine& JsonLine::add_raw(const std::string& key, const std::string& json) {
  return field(key, json);
}

}  // namespace edgepack
