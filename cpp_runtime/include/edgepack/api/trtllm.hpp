// The part of TensorRT-LLM's executor API (1.2.x, C++) the generated runtime uses, declared from
// its documentation so the rendered code can be syntax-checked anywhere. A real build defines
// EDGEPACK_WITH_SDK_HEADERS and includes <tensorrt_llm/executor/executor.h> instead.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#ifdef EDGEPACK_WITH_SDK_HEADERS
#include <tensorrt_llm/executor/executor.h>
#else
namespace tensorrt_llm {
namespace executor {

using SizeType32 = std::int32_t;
using TokenIdType = std::int32_t;
using VecTokens = std::vector<TokenIdType>;
using BeamTokens = std::vector<VecTokens>;
using IdType = std::uint64_t;

enum class ModelType { kDECODER_ONLY = 0 };

class SamplingConfig {
 public:
  explicit SamplingConfig(SizeType32 beamWidth = 1, std::optional<SizeType32> topK = std::nullopt,
                          std::optional<float> topP = std::nullopt);
  void setTemperature(std::optional<float> temperature);
};

class KvCacheConfig {
 public:
  explicit KvCacheConfig(bool enableBlockReuse = false,
                         std::optional<SizeType32> maxTokens = std::nullopt);
};

class ExecutorConfig {
 public:
  explicit ExecutorConfig(SizeType32 maxBeamWidth = 1);
  void setKvCacheConfig(KvCacheConfig const& kvCacheConfig);
  void setMaxBatchSize(SizeType32 maxBatchSize);
};

class Request {
 public:
  Request(VecTokens inputTokenIds, SizeType32 maxTokens, bool streaming = false,
          SamplingConfig const& samplingConfig = SamplingConfig());
  void setEndId(SizeType32 endId);
};

struct Result {
  bool isFinal;
  BeamTokens outputTokenIds;
};

class Response {
 public:
  bool hasError() const;
  std::string const& getErrorMsg() const;
  Result const& getResult() const;
  IdType getRequestId() const;
};

class Executor {
 public:
  Executor(std::string const& modelPath, ModelType modelType, ExecutorConfig const& config);
  IdType enqueueRequest(Request const& request);
  std::vector<Response> awaitResponses(IdType const& requestId,
                                       std::optional<std::chrono::milliseconds> const& timeout =
                                           std::nullopt);
};

}  // namespace executor
}  // namespace tensorrt_llm
#endif
