// Float conversions of the kernels' element types (float32, bfloat16), for the GPU and the host emulation:
// every kernel reads its inputs with to_float, computes in float32 and writes with from_float<T>.
#pragma once

#include <cuda_bf16.h>

namespace wb {

__host__ __device__ __forceinline__ float to_float(float v) { return v; }
__host__ __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__host__ __device__ __forceinline__ T from_float(float v);
template <>
__host__ __device__ __forceinline__ float from_float<float>(float v) {
    return v;
}
template <>
__host__ __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

}  // namespace wb
