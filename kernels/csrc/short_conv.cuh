// Short causal depthwise convolution: the per-thread work of the CUDA kernels, written as __host__ __device__
// functions so that tests/emulate_short_conv.cu can run exactly this code on the CPU, thread by thread and
// block by block, against a float64 reference (no GPU needed).
//
// One thread owns `vec` adjacent channels of one batch row and a chunk of time steps; the K taps, the bias
// and the last K-1 inputs (and, backward, the last K-1 output gradients) stay in registers as it walks
// forward in time. Every register array is indexed with compile-time constants only (unrolled loops).
//
// Backward, with z the pre-activation and g = dL/dz = gy * act'(z) (z recomputed, never stored):
//   dx[u]   = sum_j w[j] * g[u + (K-1) - j]          (an anti-causal convolution of g)
//   dw[j]  += g[s] * x[s - (K-1) + j]                 (summed over b, s: per thread, then per block, then
//   dbias  += g[s]                                     over the partial rows by the caller)
// A thread owning [t0, t1) walks s over [t0, t1 + K - 1): it needs g up to t1 + K - 2 for dx[t1 - 1], and
// x from t0 - (K-1) to recompute z. The halo steps (s >= t1) feed dx only, not dw/dbias.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "dtype.cuh"
#include "short_conv.h"

namespace wb {
namespace short_conv {

using ::wb::from_float;  // dtype.cuh
using ::wb::to_float;


__host__ __device__ __forceinline__ float sigmoid(float z) {
#if defined(__CUDA_ARCH__)
    return 1.0f / (1.0f + __expf(-z));  // __expf: 2 ulp, and exp(+large) = inf gives 0, as it should
#else
    return 1.0f / (1.0f + std::exp(-z));
#endif
}

// `VEC` elements as one aligned access: 16 bytes for 8 bf16 or 4 float, 8 bytes for 4 bf16 or 2 float.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
    T v[VEC];
};

template <typename T, int VEC>
__host__ __device__ __forceinline__ void unpack(const Pack<T, VEC>& q, float (&out)[VEC]) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) out[v] = to_float(q.v[v]);
}

template <typename T, int VEC>
__host__ __device__ __forceinline__ void load(const T* p, float (&out)[VEC]) {
    unpack(*reinterpret_cast<const Pack<T, VEC>*>(p), out);
}

// Loads kept in their storage type until used (half the registers for bfloat16); zeros when !valid.
template <typename T, int VEC>
__host__ __device__ __forceinline__ void load_raw(const T* p, bool valid, Pack<T, VEC>& q) {
    if (valid) {
        q = *reinterpret_cast<const Pack<T, VEC>*>(p);
    } else {
#pragma unroll
        for (int v = 0; v < VEC; ++v) q.v[v] = from_float<T>(0.0f);
    }
}

template <typename T, int VEC>
__host__ __device__ __forceinline__ void store(T* p, const float (&in)[VEC]) {
    Pack<T, VEC> q;
#pragma unroll
    for (int v = 0; v < VEC; ++v) q.v[v] = from_float<T>(in[v]);
    *reinterpret_cast<Pack<T, VEC>*>(p) = q;
}

template <int VEC>
__host__ __device__ __forceinline__ void zero(float (&a)[VEC]) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) a[v] = 0.0f;
}

template <int VEC>
__host__ __device__ __forceinline__ void copy(float (&dst)[VEC], const float (&src)[VEC]) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) dst[v] = src[v];
}

// Time steps loaded ahead of use: independent loads in flight before the first one is needed. The
// backward pass loads two tensors per step and keeps twice the state, so it looks ahead less.
constexpr int kFwdUnroll = 4;
constexpr int kBwdUnroll = 2;
// Register arrays need at least one element even when K = 1 leaves no history.
template <int K>
struct Hist {
    static constexpr int n = K > 1 ? K - 1 : 1;
};

template <int K, int VEC>
__host__ __device__ __forceinline__ void load_taps(const Params& p, int64_t c0, float (&w)[K][VEC],
                                                   float (&bias)[VEC]) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
#pragma unroll
        for (int j = 0; j < K; ++j) w[j][v] = p.w[(c0 + v) * K + j];
        bias[v] = p.bias != nullptr ? p.bias[c0 + v] : 0.0f;
    }
}

// z = bias + sum_j w[j] x[t - (K-1) + j]; hist[j] = x[t - (K-1) + j] for j < K-1, xt = x[t].
template <int K, int VEC>
__host__ __device__ __forceinline__ void preact(const float (&w)[K][VEC], const float (&bias)[VEC],
                                                const float (&hist)[Hist<K>::n][VEC], const float (&xt)[VEC],
                                                float (&z)[VEC]) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
        float acc = bias[v];
#pragma unroll
        for (int j = 0; j < K - 1; ++j) acc = fmaf(w[j][v], hist[j][v], acc);
        z[v] = fmaf(w[K - 1][v], xt[v], acc);
    }
}

// Slide a window of the last K-1 values by one step, `now` entering at the end.
template <int K, int VEC>
__host__ __device__ __forceinline__ void slide(float (&hist)[Hist<K>::n][VEC], const float (&now)[VEC]) {
    if (K > 1) {
#pragma unroll
        for (int j = 0; j + 1 < K - 1; ++j) copy(hist[j], hist[j + 1]);
        copy(hist[Hist<K>::n - 1], now);
    }
}

// Preload x[t0 - (K-1) .. t0 - 1] (zeros before t = 0).
template <typename T, int K, int VEC>
__host__ __device__ __forceinline__ void load_history(const T* x, int64_t C, int64_t t0,
                                                      float (&hist)[Hist<K>::n][VEC]) {
#pragma unroll
    for (int j = 0; j < Hist<K>::n; ++j) {
        const int64_t t = t0 - (K - 1) + j;
        if (K > 1 && t >= 0) {
            load<T, VEC>(x + t * C, hist[j]);
        } else {
            zero(hist[j]);
        }
    }
}

template <typename T, int K, int VEC, bool SILU>
__host__ __device__ __forceinline__ void forward_thread(const Params& p, int tx, int ty, int64_t bx, int64_t by,
                                                        int64_t bz) {
    const int64_t c0 = (bx * kThreadsX + tx) * VEC;
    const int64_t t0 = (by * kThreadsY + ty) * p.chunk;
    if (c0 >= p.C || t0 >= p.T) return;
    const int64_t t1 = t0 + p.chunk < p.T ? t0 + p.chunk : p.T;
    const int64_t C = p.C;
    const T* x = static_cast<const T*>(p.x) + bz * p.T * C + c0;
    T* y = static_cast<T*>(p.y) + bz * p.T * C + c0;

    float w[K][VEC], bias[VEC];
    load_taps<K, VEC>(p, c0, w, bias);
    float hist[Hist<K>::n][VEC];
    load_history<T, K, VEC>(x, C, t0, hist);

    for (int64_t tb = t0; tb < t1; tb += kFwdUnroll) {
        Pack<T, VEC> xr[kFwdUnroll];
#pragma unroll
        for (int u = 0; u < kFwdUnroll; ++u) load_raw<T, VEC>(x + (tb + u) * C, tb + u < t1, xr[u]);
#pragma unroll
        for (int u = 0; u < kFwdUnroll; ++u) {
            if (tb + u < t1) {
                float xt[VEC], z[VEC];
                unpack(xr[u], xt);
                preact<K, VEC>(w, bias, hist, xt, z);
                if (SILU) {
#pragma unroll
                    for (int v = 0; v < VEC; ++v) z[v] = z[v] * sigmoid(z[v]);
                }
                store<T, VEC>(y + (tb + u) * C, z);
                slide<K, VEC>(hist, xt);
            }
        }
    }
}

// Fills acc[j] (j < K) with this thread's share of dw[c, j] and acc[K] with its share of dbias[c], and
// writes gx for the steps it owns.
template <typename T, int K, int VEC, bool SILU>
__host__ __device__ __forceinline__ void backward_thread(const Params& p, int tx, int ty, int64_t bx, int64_t by,
                                                         int64_t bz, float (&acc)[K + 1][VEC]) {
#pragma unroll
    for (int j = 0; j <= K; ++j) zero(acc[j]);
    const int64_t c0 = (bx * kThreadsX + tx) * VEC;
    const int64_t t0 = (by * kThreadsY + ty) * p.chunk;
    if (c0 >= p.C || t0 >= p.T) return;
    const int64_t C = p.C;
    const int64_t t1 = t0 + p.chunk < p.T ? t0 + p.chunk : p.T;
    const int64_t s_end = t1 + K - 1;  // dx[u] is complete at s = u + K - 1
    const int64_t s_load = s_end < p.T ? s_end : p.T;  // inputs exist up to p.T - 1; g is 0 beyond
    const int64_t base = bz * p.T * C + c0;
    const T* x = static_cast<const T*>(p.x) + base;
    const T* gy = static_cast<const T*>(p.gy) + base;
    T* gx = static_cast<T*>(p.gx) + base;

    float w[K][VEC], bias[VEC];
    load_taps<K, VEC>(p, c0, w, bias);
    float hist[Hist<K>::n][VEC];  // x[s - (K-1) + j]
    load_history<T, K, VEC>(x, C, t0, hist);
    float ghist[Hist<K>::n][VEC];  // g[s - (K-1) + j]; steps before t0 never reach an owned dx
#pragma unroll
    for (int j = 0; j < Hist<K>::n; ++j) zero(ghist[j]);

    for (int64_t sb = t0; sb < s_end; sb += kBwdUnroll) {
        Pack<T, VEC> xr[kBwdUnroll], gr[kBwdUnroll];
#pragma unroll
        for (int u = 0; u < kBwdUnroll; ++u) {
            load_raw<T, VEC>(x + (sb + u) * C, sb + u < s_load, xr[u]);
            load_raw<T, VEC>(gy + (sb + u) * C, sb + u < s_load, gr[u]);
        }
#pragma unroll
        for (int u = 0; u < kBwdUnroll; ++u) {
            const int64_t s = sb + u;
            if (s < s_end) {
                float xt[VEC], gt[VEC], g[VEC];
                unpack(xr[u], xt);
                unpack(gr[u], gt);
                if (s < p.T) {
                    if (SILU) {
                        float z[VEC];
                        preact<K, VEC>(w, bias, hist, xt, z);
#pragma unroll
                        for (int v = 0; v < VEC; ++v) {
                            const float sg = sigmoid(z[v]);
                            g[v] = gt[v] * (sg * (1.0f + z[v] * (1.0f - sg)));
                        }
                    } else {
                        copy(g, gt);
                    }
                } else {
                    zero(g);
                }
                if (s < t1) {
#pragma unroll
                    for (int v = 0; v < VEC; ++v) {
#pragma unroll
                        for (int j = 0; j < K - 1; ++j) acc[j][v] = fmaf(g[v], hist[j][v], acc[j][v]);
                        acc[K - 1][v] = fmaf(g[v], xt[v], acc[K - 1][v]);
                        acc[K][v] += g[v];
                    }
                }
                if (s - (K - 1) >= t0) {
                    // dx[s - (K-1)] = sum_j w[j] g[s - j]: g[s] is g, g[s - j] is ghist[K-1-j] for j >= 1.
                    float dx[VEC];
#pragma unroll
                    for (int v = 0; v < VEC; ++v) {
                        float a = w[0][v] * g[v];
#pragma unroll
                        for (int j = 1; j < K; ++j) a = fmaf(w[j][v], ghist[K - 1 - j][v], a);
                        dx[v] = a;
                    }
                    store<T, VEC>(gx + (s - (K - 1)) * C, dx);
                }
                slide<K, VEC>(hist, xt);
                slide<K, VEC>(ghist, g);
            }
        }
    }
}

// Block reduction of the backward partial sums, in two steps separated by a barrier:
// stash (every thread writes its acc to shared memory), then reduce (thread (tx, ty) sums fields
// ty, ty + kThreadsY, ... over the block's kThreadsY time chunks and writes them to its partial row).
// Layout smem[f][ty][tx]: consecutive tx hit consecutive banks on both sides.
template <int K, int VEC>
__host__ __device__ __forceinline__ void stash(float* smem, int tx, int ty, const float (&acc)[K + 1][VEC]) {
#pragma unroll
    for (int j = 0; j <= K; ++j) {
#pragma unroll
        for (int v = 0; v < VEC; ++v) smem[(j * VEC + v) * kThreads + ty * kThreadsX + tx] = acc[j][v];
    }
}

template <int K, int VEC>
__host__ __device__ __forceinline__ void reduce(const Params& p, const float* smem, int tx, int ty, int64_t bx,
                                                int64_t by, int64_t bz, int64_t grid_y) {
    const int64_t c0 = (bx * kThreadsX + tx) * VEC;
    if (c0 >= p.C) return;
    const int64_t row = bz * grid_y + by;
    for (int f = ty; f < (K + 1) * VEC; f += kThreadsY) {
        float s = 0.0f;
#pragma unroll
        for (int y = 0; y < kThreadsY; ++y) s += smem[f * kThreads + y * kThreadsX + tx];
        const int j = f / VEC, v = f % VEC;
        p.partial[(row * (K + 1) + j) * p.C + c0 + v] = s;
    }
}

}  // namespace short_conv
}  // namespace wb
