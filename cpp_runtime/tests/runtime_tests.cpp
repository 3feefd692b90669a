// Tests of the code every runtime shares: SHA-256 against the FIPS 180-2 / NIST CAVP examples, the
// layout of the --json records, prompt files, and the option conventions. Exits 1 on a failure.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "edgepack/args.hpp"
#include "edgepack/json.hpp"
#include "edgepack/prompts.hpp"
#include "edgepack/sha256.hpp"

namespace {

using namespace edgepack;

int g_failures = 0;

void expect_equal(const std::string& what, const std::string& found, const std::string& wanted) {
  if (found == wanted) return;
  ++g_failures;
  std::cerr << "FAILED " << what << ": got " << found << ", wanted " << wanted << "\n";
}

void expect_true(const std::string& what, bool ok) { expect_equal(what, ok ? "true" : "false", "true"); }

// The message of the exception `run` throws as E ("" when it throws none).
template <typename E, typename Run>
std::string error_of(Run&& run) {
  try {
    run();
  } catch (const E& error) {
    return error.what();
  }
  return "";
}

std::string write_file(const std::string& name, const std::string& content) {
  const std::string path = (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                           std::string("/edgepack-runtime-tests-") + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

void sha256_nist_vectors() {
  expect_equal("sha256 of the empty string", sha256_hex(""),
               "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  expect_equal("sha256 of \"abc\"", sha256_hex("abc"),
               "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  expect_equal("sha256 of the 448-bit message",
               sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  const std::string wanted = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  expect_equal("sha256 of one million 'a'", sha256_hex(million), wanted);
  const std::string path = write_file("million-a", million);
  expect_equal("sha256_file of one million 'a'", sha256_file(path), wanted);
  std::remove(path.c_str());
}

void json_line_layout() {
  expect_equal("a record's layout",
               JsonLine()
                   .add("type", "timings")
                   .add("prompts", 12)
                   .add("load_s", 0.6417361234)
                   .add("ok", false)
                   .add("token_ids", std::vector<std::int32_t>{504, 3575})
                   .add("e2e_s_samples", std::vector<double>{1.0683, 0.904758, 2.0})
                   .str(),
               R"({"type": "timings", "prompts": 12, "load_s": 0.641736, "ok": false, )"
               R"("token_ids": [504, 3575], "e2e_s_samples": [1.0683, 0.904758, 2]})");
  expect_equal("escapes", JsonLine().add("text", "a\"b\\c\nd\te\x01").str(),
               R"({"text": "a\"b\\c\nd\te\u0001"})");
  expect_equal("non-finite numbers", JsonLine().add("x", std::numeric_limits<double>::infinity()).str(), R"({"x": null})");
  expect_equal("bytes that are not UTF-8", json_quote("ok\xff"), "\"ok\xEF\xBF\xBD\"");
  auto checks = Json::array();
  checks.push_back({{"name", "files"}, {"ok", true}});
  expect_equal("nested records", JsonLine().add("checks", checks).str(),
               R"({"checks": [{"name": "files", "ok": true}]})");
}

void prompt_files() {
  const std::string sets = write_file(
      "set.json", R"({"name": "x", "prompts": [{"id": "a", "text": "caf\u00e9 \ud83d\ude00"}, {"text": "b"}]})");
  const std::vector<Prompt> prompts = read_prompts_file(sets);
  expect_true("a prompt set has two prompts", prompts.size() == 2);
  if (prompts.size() == 2) {
    expect_equal("an id", prompts[0].id, "a");
    expect_equal("\\u escapes become UTF-8", prompts[0].text, "caf\xC3\xA9 \xF0\x9F\x98\x80");
    expect_equal("a missing id is numbered", prompts[1].id, "p1");
  }
  const std::string plain = write_file("plain.json", R"(["one", "two"])");
  expect_true("a plain array", read_prompts_file(plain).size() == 2);
  const std::vector<std::pair<std::string, std::string>> broken = {
      {"truncated.json", R"({"prompts": [)"},
      {"object.json", R"({"prompts": {"id": "a"}})"},
      {"id.json", R"({"prompts": [{"id": 3, "text": "x"}]})"},
      {"text.json", R"({"prompts": [{"id": "a"}]})"},
  };
  for (const auto& [name, content] : broken) {
    const std::string path = write_file(name, content);
    const std::string error = error_of<JsonError>([&] { read_prompts_file(path); });
    expect_true(name + " is a JsonError naming the file (" + error + ")", error.rfind(path + ": ", 0) == 0);
    std::remove(path.c_str());
  }
  expect_equal("a missing file", error_of<JsonError>([] { read_prompts_file("/nonexistent.json"); }),
               "cannot read /nonexistent.json");
  std::remove(sets.c_str());
  std::remove(plain.c_str());
}

std::string parse(std::vector<std::string> words, int& value) {
  CLI::App app("test", "test");
  use_conventions(app);
  add_value(app, "--n", value, "N", "A number.")->check(CLI::Range(1, 4));
  words.insert(words.begin(), "test");
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  return error_of<UsageError>([&] { parse_args(app, static_cast<int>(argv.size()), argv.data()); });
}

void option_conventions() {
  int value = 2;
  expect_equal("the last of a repeated option wins", parse({"--n", "1", "--n=3"}, value), "");
  expect_equal("value", std::to_string(value), "3");
  expect_equal("an unknown option", parse({"--nope=1"}, value), "unknown option --nope (see --help)");
  expect_equal("a stray word", parse({"word"}, value), "unexpected argument 'word'");
  expect_true("out of range names the option", parse({"--n", "9"}, value).rfind("--n: ", 0) == 0);
  expect_true("a missing value names the option", parse({"--n"}, value).rfind("--n: ", 0) == 0);
}

}  // namespace

int main() {
  sha256_nist_vectors();
  json_line_layout();
  prompt_files();
  option_conventions();
  std::cout << (g_failures == 0 ? "all runtime tests passed" : "runtime tests FAILED") << "\n";
  return g_failures == 0 ? 0 : 1;
}
