// The few CUDA runtime declarations the generated GPU runtimes use, for syntax checks on hosts
// without the CUDA toolkit. A real build includes <cuda_runtime_api.h> instead.
#pragma once

#ifdef EDGEPACK_WITH_SDK_HEADERS
#include <cuda_runtime_api.h>
#else
extern "C" {
typedef struct CUstream_st* cudaStream_t;
typedef int cudaError_t;
struct cudaDeviceProp {
  char name[256];
  int major;
  int minor;
};
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
const char* cudaGetErrorString(cudaError_t error);
}
#endif
