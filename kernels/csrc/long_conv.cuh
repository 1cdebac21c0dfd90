// Hyena's FFT long convolution: the per-thread work of the kernels around cuFFT, written as __host__
// __device__ functions so that tests/emulate_long_conv.cu runs exactly this code on the CPU (with a naive
// DFT in place of cuFFT) against a float64 direct convolution.
//
// Pack and unpack are tiled transposes in two phases with a barrier between them: phase 1 reads one layout
// into shared memory (`tile`, kTile x (kTile + 1) floats: the padding column keeps the transposed reads free
// of bank conflicts), phase 2 writes the other. Thread (tx, ty) of block (bx, by, bz) covers batch row bz,
// time tile bx and channel tile by; in phase 1 and 2 it handles rows ty, ty + kRows, ... of the tile with
// tx indexing the contiguous dimension of the layout it touches, so every warp access is contiguous.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.cuh"
#include "long_conv.h"

namespace wb {
namespace long_conv {

using ::wb::from_float;  // dtype.cuh
using ::wb::to_float;


__host__ __device__ __forceinline__ float2 cmul(float2 a, float2 b) {
    return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}
// a * conj(b)
__host__ __device__ __forceinline__ float2 cmul_conj(float2 a, float2 b) {
    return make_float2(a.x * b.x + a.y * b.y, a.y * b.x - a.x * b.y);
}

constexpr int kPerThread = kTile / kRows;
using Tile = float[kTile + 1];

// A thread that stores between its loads gets one memory round trip per load: the compiler may not move a load
// past a store to memory it cannot prove distinct. So every function below issues all of its loads (of a tile,
// or of a group of batch rows) before its first store.

// ---------------------------------------------------------------------------------------------------------
// Forward pack: u [B, T, C] -> xu [B, C, N], zero for t >= T. Grid: (tiles(N), tiles(C), B).

template <typename T>
__host__ __device__ __forceinline__ void forward_pack_load(const Params& p, Tile* tile, int tx, int ty, int64_t bx,
                                                           int64_t by, int64_t bz) {
    const T* u = static_cast<const T*>(p.u);
    const int64_t c = by * kTile + tx;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int r = ty + i * kRows;  // time within the tile
        const int64_t t = bx * kTile + r;
        tile[r][tx] = (t < p.T && c < p.C) ? to_float(u[bz * p.su_b + t * p.su_t + c]) : 0.0f;
    }
}

__host__ __device__ __forceinline__ void forward_pack_store(const Params& p, const Tile* tile, int tx, int ty,
                                                            int64_t bx, int64_t by, int64_t bz) {
    const int64_t t = bx * kTile + tx;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int r = ty + i * kRows;  // channel within the tile
        const int64_t c = by * kTile + r;
        if (t < p.N && c < p.C) p.xu[(bz * p.C + c) * p.N + t] = tile[tx][r];
    }
}

// ---------------------------------------------------------------------------------------------------------
// Forward unpack: z [B, C, N] (first T) -> w = conv + D u, y = gate * w, [B, T, C]. Grid: (tiles(T), tiles(C), B).

// Both unpacks (forward and backward) stage the same thing: the tile of z's first T columns, channels as rows.
__host__ __device__ __forceinline__ void unpack_load(const Params& p, Tile* tile, int tx, int ty, int64_t bx, int64_t by,
                                                     int64_t bz) {
    const int64_t t = bx * kTile + tx;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int r = ty + i * kRows;  // channel within the tile
        const int64_t c = by * kTile + r;
        tile[r][tx] = (t < p.T && c < p.C) ? p.z[(bz * p.C + c) * p.N + t] : 0.0f;
    }
}

template <typename T>
__host__ __device__ __forceinline__ void forward_unpack_store(const Params& p, const Tile* tile, int tx, int ty,
                                                              int64_t bx, int64_t by, int64_t bz) {
    const int64_t c = by * kTile + tx;
    if (c >= p.C) return;
    const float d = p.D != nullptr ? p.D[c] : 0.0f;
    const T* u = static_cast<const T*>(p.u);
    const T* gate = static_cast<const T*>(p.gate);
    float uu[kPerThread], gg[kPerThread];
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int64_t t = bx * kTile + ty + i * kRows;  // time within the tile: ty + i kRows
        uu[i] = p.D != nullptr && t < p.T ? to_float(u[bz * p.su_b + t * p.su_t + c]) : 0.0f;
        gg[i] = gate != nullptr && t < p.T ? to_float(gate[bz * p.sg_b + t * p.sg_t + c]) : 1.0f;
    }
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int r = ty + i * kRows;
        const int64_t t = bx * kTile + r;
        if (t >= p.T) continue;
        const int64_t idx = (bz * p.T + t) * p.C + c;
        const float w = fmaf(d, uu[i], tile[tx][r]);
        if (p.w != nullptr) static_cast<T*>(p.w)[idx] = from_float<T>(w);
        static_cast<T*>(p.y)[idx] = from_float<T>(gg[i] * w);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Backward pack: e = dy * gate, dgate = dy * w, dD partial sums of e * u; u -> xu and e -> xe, [B, C, N]
// zero-padded. Grid: (tiles(N), tiles(C), B). `tile_u`, `tile_e`: two tiles; `red`: kRows x kTile floats.

template <typename T>
__host__ __device__ __forceinline__ void backward_pack_load(const Params& p, Tile* tile_u, Tile* tile_e, float* red,
                                                            int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
    const T* u = static_cast<const T*>(p.u);
    const T* dy = static_cast<const T*>(p.dy);
    const T* gate = static_cast<const T*>(p.gate);
    const int64_t c = by * kTile + tx;
    float g[kPerThread], uu[kPerThread], gt[kPerThread], w[kPerThread];
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int64_t t = bx * kTile + ty + i * kRows;  // time within the tile: ty + i kRows
        const int64_t idx = (bz * p.T + t) * p.C + c;
        const bool in = t < p.T && c < p.C;
        g[i] = in ? to_float(dy[idx]) : 0.0f;
        uu[i] = in ? to_float(u[bz * p.su_b + t * p.su_t + c]) : 0.0f;
        gt[i] = in && gate != nullptr ? to_float(gate[bz * p.sg_b + t * p.sg_t + c]) : 1.0f;
        w[i] = in && gate != nullptr ? to_float(static_cast<const T*>(p.w)[idx]) : 0.0f;
    }
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int r = ty + i * kRows;
        const int64_t t = bx * kTile + r;
        const float e = g[i] * gt[i];
        if (gate != nullptr && t < p.T && c < p.C)
            static_cast<T*>(p.dgate)[(bz * p.T + t) * p.C + c] = from_float<T>(g[i] * w[i]);
        acc = fmaf(e, uu[i], acc);
        tile_u[r][tx] = uu[i];
        tile_e[r][tx] = e;
    }
    red[ty * kTile + tx] = acc;
}

__host__ __device__ __forceinline__ void backward_pack_store(const Params& p, const Tile* tile_u, const Tile* tile_e,
                                                             const float* red, int tx, int ty, int64_t bx, int64_t by,
                                                             int64_t bz) {
    const int64_t t = bx * kTile + tx;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int r = ty + i * kRows;  // channel within the tile
        const int64_t c = by * kTile + r;
        if (t < p.N && c < p.C) {
            const int64_t o = (bz * p.C + c) * p.N + t;
            p.xu[o] = tile_u[tx][r];
            p.xe[o] = tile_e[tx][r];
        }
    }
    // dD: this block's sum over its time steps, one row of partial sums per (batch row, time tile).
    const int64_t c = by * kTile + tx;
    const int64_t tiles_t = tiles(p.T);
    if (ty == 0 && p.dD_part != nullptr && bx < tiles_t && c < p.C) {
        float s = 0.0f;
        for (int j = 0; j < kRows; ++j) s += red[j * kTile + tx];
        p.dD_part[(bz * tiles_t + bx) * p.C + c] = s;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Backward unpack: du = z[:, :, :T]^T + D e with e = dy * gate recomputed in [B, T, C] (the packed e is freed
// before this runs). Grid: (tiles(T), tiles(C), B).

template <typename T>
__host__ __device__ __forceinline__ void backward_unpack_store(const Params& p, const Tile* tile, int tx, int ty,
                                                               int64_t bx, int64_t by, int64_t bz) {
    const int64_t c = by * kTile + tx;
    if (c >= p.C) return;
    const T* dy = static_cast<const T*>(p.dy);
    const T* gate = static_cast<const T*>(p.gate);
    const float d = p.D != nullptr ? p.D[c] : 0.0f;
    float e[kPerThread];
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int64_t t = bx * kTile + ty + i * kRows;  // time within the tile: ty + i kRows
        const bool in = p.D != nullptr && t < p.T;
        const float g = in ? to_float(dy[(bz * p.T + t) * p.C + c]) : 0.0f;
        e[i] = in && gate != nullptr ? g * to_float(gate[bz * p.sg_b + t * p.sg_t + c]) : g;
    }
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
        const int r = ty + i * kRows;
        const int64_t t = bx * kTile + r;
        if (t >= p.T) continue;
        static_cast<T*>(p.du)[(bz * p.T + t) * p.C + c] = from_float<T>(fmaf(d, e[i], tile[tx][r]));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Spectral products: thread i < C * F owns bin (c, f) = (i / F, i % F) of every batch row, kBatchGroup rows
// loaded at a time.
constexpr int kBatchGroup = 8;

__host__ __device__ __forceinline__ void forward_spectral_thread(const Params& p, int64_t i) {
    const int64_t cf = p.C * bins(p.N);
    if (i >= cf) return;
    const float2 k = p.K[i];
    for (int64_t b0 = 0; b0 < p.B; b0 += kBatchGroup) {
        float2 x[kBatchGroup];
#pragma unroll
        for (int j = 0; j < kBatchGroup; ++j) x[j] = b0 + j < p.B ? p.X[(b0 + j) * cf + i] : make_float2(0.0f, 0.0f);
#pragma unroll
        for (int j = 0; j < kBatchGroup; ++j)
            if (b0 + j < p.B) p.X[(b0 + j) * cf + i] = cmul(x[j], k);
    }
}

// E[b] *= conj(K) (the correlation that gives du); dK = sum_b E[b] conj(U[b]) / N (the correlation of e with u
// that gives dk), from E before the product.
__host__ __device__ __forceinline__ void backward_spectral_thread(const Params& p, int64_t i) {
    const int64_t cf = p.C * bins(p.N);
    if (i >= cf) return;
    const float2 k = p.K[i];
    float2 acc = make_float2(0.0f, 0.0f);
    for (int64_t b0 = 0; b0 < p.B; b0 += kBatchGroup) {
        float2 e[kBatchGroup], u[kBatchGroup];
#pragma unroll
        for (int j = 0; j < kBatchGroup; ++j) {
            const bool in = b0 + j < p.B;
            e[j] = in ? p.E[(b0 + j) * cf + i] : make_float2(0.0f, 0.0f);
            u[j] = in ? p.U[(b0 + j) * cf + i] : make_float2(0.0f, 0.0f);
        }
#pragma unroll
        for (int j = 0; j < kBatchGroup; ++j) {
            const float2 prod = cmul_conj(e[j], u[j]);
            acc.x += prod.x;
            acc.y += prod.y;
            if (b0 + j < p.B) p.E[(b0 + j) * cf + i] = cmul_conj(e[j], k);
        }
    }
    p.dK[i] = make_float2(acc.x * p.inv_n, acc.y * p.inv_n);
}

}  // namespace long_conv
}  // namespace wb
