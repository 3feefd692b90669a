// Command-line options: declared once with their help, parsed strictly (unknown options fail).
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgepack {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Option {
  std::string name;  // without the leading "--"
  std::string value_name;  // empty for a flag
  std::string help;
  std::string fallback;  // the value when not given (options with a value only)
};

class Args {
 public:
  Args(std::string program, std::string summary, std::vector<Option> options);

  // Throws UsageError naming the bad argument.
  void parse(int argc, char** argv);

  bool flag(const std::string& name) const;
  bool given(const std::string& name) const;
  std::string text(const std::string& name) const;
  long integer(const std::string& name, long min, long max) const;
  double real(const std::string& name, double min, double max) const;
  std::string usage() const;

 private:
  const Option& find(const std::string& name) const;

  std::string program_;
  std::string summary_;
  std::vector<Option> options_;
  std::map<std::string, std::string> values_;
};

}  // namespace edgepack
