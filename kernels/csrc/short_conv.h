// Short causal depthwise convolution fused with its activation: the host-side interface of short_conv.cu.
//
//   y[b, t, c] = act(bias[c] + sum_{j<K} w[c, j] * x[b, t - (K-1) + j, c])      (x before t = 0 is 0)
//
// x, y, gy, gx: [B, T, C] contiguous, float32 or bfloat16; w: [C, K], bias: [C] or null, and their gradients
// dw, dbias: all in x's dtype (read and written directly, so a call launches no conversions). K in 1..=4,
// act: 0 identity, 1 SiLU. The backward pass is two launches: the main kernel (dx, and per-block partial
// sums of dw and dbias in float32) and a finishing kernel that sums the partial rows into dw and dbias.
//
// This header is plain C++ (no device code, no torch), shared by the launchers (short_conv.cu), the torch
// glue (extension.cpp) and the host emulation test (tests/emulate_short_conv.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace wb {
namespace short_conv {

constexpr int kMaxTaps = 4;
// A block is one warp wide over channel vectors (so a warp's loads of one time step are contiguous) and
// kThreadsY time chunks deep (so the backward pass can reduce dw and dbias over time inside the block).
constexpr int kThreadsX = 32;
constexpr int kThreadsY = 8;
constexpr int kThreads = kThreadsX * kThreadsY;
// Channels per thread: 8-byte copies in both passes (4 bfloat16 or 2 float32 channels; 16 bytes made the
// bfloat16 forward 5-20% slower on the H200: twice the registers per thread, half the threads), 1 when C or
// an address does not allow the vector. Diagnostic tools may override them to measure.
#ifndef WB_SHORT_CONV_FWD_VEC_BYTES
#define WB_SHORT_CONV_FWD_VEC_BYTES 8
#endif
#ifndef WB_SHORT_CONV_BWD_VEC_BYTES
#define WB_SHORT_CONV_BWD_VEC_BYTES 8
#endif
constexpr int kFwdVecBytes = WB_SHORT_CONV_FWD_VEC_BYTES;
constexpr int kBwdVecBytes = WB_SHORT_CONV_BWD_VEC_BYTES;
// The finishing kernel's block: channels by row slices of the partial sums (short_conv.cuh's finish_*).
constexpr int kFinishX = 32;
constexpr int kFinishY = 32;

enum class DType { F32, BF16 };

inline int dtype_bytes(DType dt) { return dt == DType::F32 ? 4 : 2; }

struct Params {
    const void* x = nullptr;  // [B, T, C]
    const void* w = nullptr;  // [C, K]
    const void* bias = nullptr;  // [C] or null
    void* y = nullptr;  // [B, T, C], forward output
    const void* gy = nullptr;  // [B, T, C], backward input
    void* gx = nullptr;  // [B, T, C], backward output
    float* partial = nullptr;  // [partial_rows, K + 1, C]: per-block sums of dw (rows 0..K-1) and dbias (row K)
    void* dw = nullptr;  // [C, K], backward output
    void* dbias = nullptr;  // [C] or null, backward output
    int64_t partial_rows = 0;
    int64_t B = 0, T = 0, C = 0;
    int64_t chunk = 0;  // time steps per thread
};

// How a launch covers [B, T, C]: thread (tx, ty) of block (bx, by, bz) owns channels
// [(bx * kThreadsX + tx) * vec, + vec) and time steps [(by * kThreadsY + ty) * chunk, + chunk) of batch bz.
struct Plan {
    int vec = 1;
    int64_t chunk = 1;
    int64_t grid_x = 1, grid_y = 1, grid_z = 1;
    int64_t partial_rows = 0;  // backward: one row of partial sums per (bz, by)
};

// Time steps per thread at least (the automatic plan): each thread's walk starts with K-1 history steps and
// a pipeline fill, and the backward pass ends with K-1 halo steps and a block reduction. Measured on the
// H200 (BENCHMARKS.md, profile-short-conv): the forward is fastest at 32-64 steps, the backward at 64.
constexpr int64_t kFwdMinChunk = 32;
constexpr int64_t kBwdMinChunk = 64;

// The launch plan for a given vector width. `num_sms` sizes the grid to fill the GPU (about two waves of
// resident threads) with at least `min_chunk` steps per thread; `chunk_override` > 0 fixes the time chunk
// instead (tuning and tests).
inline Plan make_plan(int64_t B, int64_t T, int64_t C, int vec, int num_sms, int64_t chunk_override,
                      int64_t min_chunk = 16) {
    Plan p;
    p.vec = vec;
    const int64_t cvecs = (C + vec - 1) / vec;
    p.grid_x = (cvecs + kThreadsX - 1) / kThreadsX;
    p.grid_z = B;
    int64_t chunk = chunk_override;
    if (chunk <= 0) {
        const int64_t target_threads = int64_t(num_sms > 0 ? num_sms : 132) * 2048 * 2;
        const int64_t threads_per_step = p.grid_x * kThreadsX * (B > 0 ? B : 1);
        int64_t chunks = target_threads / threads_per_step;
        if (chunks < 1) chunks = 1;
        chunk = (T + chunks - 1) / chunks;
        if (chunk < min_chunk) chunk = min_chunk;
        if (chunk > 256) chunk = 256;
    }
    int64_t nchunks = (T + chunk - 1) / chunk;
    while ((nchunks + kThreadsY - 1) / kThreadsY > 65535) {  // gridDim.y limit
        chunk *= 2;
        nchunks = (T + chunk - 1) / chunk;
    }
    p.chunk = chunk;
    p.grid_y = (nchunks + kThreadsY - 1) / kThreadsY;
    if (p.grid_y < 1) p.grid_y = 1;
    p.partial_rows = B * p.grid_y;
    return p;
}

// The vector width for a pass: the widest that divides C and keeps every [B, T, C] pointer aligned.
inline int pick_vec(DType dt, int64_t C, bool aligned16, int vec_bytes) {
    const int vec = vec_bytes / dtype_bytes(dt);
    return (aligned16 && C % vec == 0) ? vec : 1;
}

// Plans on the current CUDA device (its multiprocessor count) with the process-wide chunk override.
Plan forward_plan(DType dt, int64_t B, int64_t T, int64_t C, bool aligned16);
Plan backward_plan(DType dt, int64_t B, int64_t T, int64_t C, bool aligned16);
// Tuning knob for benchmarks: the time chunk per thread (0: automatic).
void set_chunk_override(int64_t chunk);

// Launch on `stream`; return null or the CUDA error's text.
const char* forward(const Params& p, const Plan& plan, DType dt, int K, bool silu, cudaStream_t stream);
const char* backward(const Params& p, const Plan& plan, DType dt, int K, bool silu, cudaStream_t stream);

}  // namespace short_conv
}  // namespace wb
