#include "edgepack/args.hpp"

#include <cstdlib>

namespace edgepack {

Args::Args(std::string program, std::string summary, std::vector<Option> options)
    : program_(std::move(program)), summary_(std::move(summary)), options_(std::move(options)) {}

const Option& Args::find(const std::string& name) const {
  for (const Option& option : options_) {
    if (option.name == name) return option;
  }
  throw UsageError("unknown option --" + name + " (see --help)");
}

void Args::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string word = argv[i];
    if (word.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + word + "'");
    word = word.substr(2);
    std::string value = "1";
    const auto equals = word.find('=');
    if (equals != std::string::npos) {
      value = word.substr(equals + 1);
      word = word.substr(0, equals);
    }
    const Option& option = find(word);
    if (!option.value_name.empty() && equals == std::string::npos) {
      if (i + 1 >= argc) throw UsageError("--" + word + " needs a value " + option.value_name);
      value = argv[++i];
    }
    values_[word] = value;
  }
}

bool Args::flag(const std::string& name) const { return find(name), values_.count(name) > 0; }
bool Args::given(const std::string& name) const { return flag(name); }

std::string Args::text(const std::string& name) const {
  const Option& option = find(name);
  const auto found = values_.find(name);
  return found == values_.end() ? option.fallback : found->second;
}

long Args::integer(const std::string& name, long min, long max) const {
  const std::string value = text(name);
  char* end = nullptr;
  const long number = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || number < min || number > max) {
    throw UsageError("--" + name + " must be an integer from " + std::to_string(min) + " to " +
                     std::to_string(max) + " (got '" + value + "')");
  }
  return number;
}

double Args::real(const std::string& name, double min, double max) const {
  const std::string value = text(name);
  char* end = nullptr;
  const double number = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0' || number < min || number > max) {
    throw UsageError("--" + name + " must be a number from " + std::to_string(min) + " to " +
                     std::to_string(max) + " (got '" + value + "')");
  }
  return number;
}

std::string Args::usage() const {
  std::string text = "usage: " + program_ + " [options]\n" + summary_ + "\n\noptions:\n";
  for (const Option& option : options_) {
    std::string left = "  --" + option.name + (option.value_name.empty() ? "" : " " + option.value_name);
    left.resize(std::max<std::size_t>(left.size() + 1, 28), ' ');
    text += left + option.help;
    if (!option.fallback.empty()) text += " [default: " + option.fallback + "]";
    text += "\n";
  }
  return text;
}

}  // namespace edgepack
