// Prompts from a JSON file (edgepack's prompt sets, or a plain array of strings) or from stdin.
#pragma once

#include <istream>
#include <string>
#include <vector>

namespace edgepack {

struct Prompt {
  std::string id;
  std::string text;
};

// {"prompts": [{"id": ..., "text": ...}, ...]} or ["text", ...]; throws JsonError.
std::vector<Prompt> read_prompts_file(const std::string& path);
// One prompt per non-empty line.
std::vector<Prompt> read_prompt_lines(std::istream& input);

}  // namespace edgepack
