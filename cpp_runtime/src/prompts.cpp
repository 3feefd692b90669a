#include "edgepack/prompts.hpp"

#include "edgepack/json.hpp"

namespace edgepack {

std::vector<Prompt> read_prompts_file(const std::string& path) {
  const Json document = Json::parse_file(path);
  const Json::Array& items =
      document.is(Json::Kind::Array) ? document.array() : document["prompts"].array();
  std::vector<Prompt> prompts;
  for (const Json& item : items) {
    const std::string id = "p" + std::to_string(prompts.size());
    if (item.is(Json::Kind::String)) {
      prompts.push_back({id, item.string()});
    } else {
      prompts.push_back({item.has("id") ? item["id"].string() : id, item["text"].string()});
    }
  }
  return prompts;
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
