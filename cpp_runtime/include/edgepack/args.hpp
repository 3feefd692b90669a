// Command-line options through CLI11, with the conventions of edgepack's runtimes: long options
// only, the last of a repeated option wins, --help shows each default, and every problem is one
// UsageError line (exit code 2).
#pragma once

#include <CLI/CLI.hpp>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgepack {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline void use_conventions(CLI::App& app) {
  app.set_help_flag("--help", "Show this help.");
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.allow_extras();  // reported by parse_args, in its words
}

// `--name VALUE_NAME` into `value`; its value now is the default --help shows.
template <typename T>
CLI::Option* add_value(CLI::App& app, const std::string& name, T& value,
                       const std::string& value_name, const std::string& help) {
  CLI::Option* option = app.add_option(name, value, help)->capture_default_str();
  const std::string fallback = option->get_default_str();
  return option->option_text(value_name)
      ->description(fallback.empty() ? help : help + " [default: " + fallback + "]");
}

// Parses argv into the options of `app`. False when --help was asked for: the help is printed.
inline bool parse_args(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return false;
  } catch (const CLI::ParseError& error) {
    throw UsageError(error.what());
  }
  const std::vector<std::string> extras = app.remaining();
  if (extras.empty()) return true;
  const std::string& word = extras.front();
  if (word.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + word + "'");
  throw UsageError("unknown option " + word.substr(0, word.find('=')) + " (see --help)");
}

}  // namespace edgepack
