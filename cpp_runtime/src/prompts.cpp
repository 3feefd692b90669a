#include "edgepack/prompts.hpp"

#include "edgepack/json.hpp"

namespace edgepack {

std::vector<Prompt> read_prompts_file(const std::string& path) {
  const Json document = read_json_file(path);
  return read_fields(path, [&] {
    const Json& items = document.is_array() ? document : document.at("prompts");
    if (!items.is_array()) {
      throw JsonError(path + ": \"prompts\" must be an array, not " + items.type_name());
    }
    std::vector<Prompt> prompts;
    for (const Json& item : items) {
      const std::string id = "p" + std::to_string(prompts.size());
      if (item.is_string()) {
        prompts.push_back({id, item.get<std::string>()});
      } else {
        prompts.push_back({item.value("id", id), item.at("text").get<std::string>()});
      }
    }
    return prompts;
  });
}

std::vector<Prompt> read_prompt_lines(std::istream& input) {
  std::vector<Prompt> prompts;
  std::string line;
  while (std::getline(input, line)) {
    if (!line.empty()) prompts.push_back({"p" + std::to_string(prompts.size()), line});
  }
  return prompts;
}

}  // namespace edgepack
