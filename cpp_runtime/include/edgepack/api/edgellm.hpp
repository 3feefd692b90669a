// The part of TensorRT Edge-LLM's C++ runtime the generated runtime uses, declared from its
// documentation (LLMInferenceRuntime: engine dir, request/response structs, a CUDA stream) so the
// rendered code can be syntax-checked anywhere. Check it against the SDK's headers on the device:
// a real build defines EDGEPACK_WITH_SDK_HEADERS and includes those instead.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "edgepack/api/cuda_min.hpp"

#ifdef EDGEPACK_WITH_SDK_HEADERS
#include <runtime/llmInferenceRuntime.h>
#else
namespace trt_edgellm {
namespace rt {

struct Message {
  std::string role;
  std::string content;
};

struct LLMGenerationRequest {
  struct Request {
    std::vector<Message> messages;
  };
  std::vector<Request> requests;
  float temperature = 1.0F;
  float topP = 1.0F;
  int64_t topK = 1;
  int64_t maxGenerateLength = 128;
};

struct LLMGenerationResponse {
  std::vector<std::vector<int32_t>> outputIds;
  std::vector<std::string> outputTexts;
};

class LLMInferenceRuntime {
 public:
  LLMInferenceRuntime(std::string const& engineDir, std::string const& multimodalEngineDir,
                      std::unordered_map<std::string, std::string> const& loraWeightsMap,
                      cudaStream_t stream);
  bool handleRequest(LLMGenerationRequest const& request, LLMGenerationResponse& response,
                     cudaStream_t stream);
};

}  // namespace rt
}  // namespace trt_edgellm
#endif
