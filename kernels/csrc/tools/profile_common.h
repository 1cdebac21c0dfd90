// What the GPU diagnostics in this folder share: a CUDA error check that exits, deterministic random fills on
// the device, allocation, and a timer that flushes the L2 before every run and reports the median.
// (build.rs keys each tool's program on this folder's headers too.)
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../dtype.cuh"

namespace prof {

#define CK(x)                                                                                       \
    do {                                                                                            \
        cudaError_t e_ = (x);                                                                       \
        if (e_ != cudaSuccess) {                                                                    \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            std::exit(1);                                                                           \
        }                                                                                           \
    } while (0)

// A uniform value in [0, 1) from an element index and a seed (splitmix64's finaliser).
__device__ inline float hash_uniform(uint64_t i, uint32_t seed) {
    uint64_t x = i * 0x9E3779B97F4A7C15ull + seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return float(x >> 40) / float(1 << 24);
}

// x[i] = lo + (hi - lo) * uniform, in T (float or bfloat16).
template <typename T>
__global__ void fill(T* x, int64_t n, uint32_t seed, float lo, float hi) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        x[i] = wb::from_float<T>(lo + (hi - lo) * hash_uniform(uint64_t(i), seed));
}

template <typename T>
T* alloc(int64_t n) {
    void* p = nullptr;
    CK(cudaMalloc(&p, std::max<int64_t>(n, 1) * sizeof(T)));
    return static_cast<T*>(p);
}

// CUDA events around f() on the default stream, the L2 flushed before every run by writing a 256 MiB buffer.
struct FlushTimer {
    cudaEvent_t a, b;
    void* flush = nullptr;
    FlushTimer() {
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        CK(cudaMalloc(&flush, 256 << 20));
    }
    // Median ms of f() over `runs` runs after `warmup` untimed ones.
    template <class F>
    float median(F&& f, int runs, int warmup) {
        for (int i = 0; i < warmup; ++i) f();
        std::vector<float> ms;
        for (int i = 0; i < runs; ++i) {
            CK(cudaMemsetAsync(flush, i & 0xff, 256 << 20));
            CK(cudaEventRecord(a));
            f();
            CK(cudaEventRecord(b));
            CK(cudaEventSynchronize(b));
            float t = 0;
            CK(cudaEventElapsedTime(&t, a, b));
            ms.push_back(t);
        }
        std::sort(ms.begin(), ms.end());
        return ms[ms.size() / 2];
    }
};

}  // namespace prof
