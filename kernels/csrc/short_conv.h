// Short causal depthwise convolution fused with its activation: the host-side interface of short_conv.cu.
//
//   y[b, t, c] = act(bias[c] + sum_{j<K} w[c, j] * x[b, t - (K-1) + j, c])      (x before t = 0 is 0)
//
// x, y, gy, gx: [B, T, C] contiguous, float32 or bfloat16; w: [C, K] float32 (the caller converts, it is
// tiny); bias: [C] float32 or null. K in 1..=4, act: 0 identity, 1 SiLU.
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
// Channels per thread: 16-byte loads in the forward pass, 8-byte loads in the backward pass (which keeps
// twice the per-channel state in registers); 1 when C or an address does not allow the vector.
constexpr int kFwdVecBytes = 16;
constexpr int kBwdVecBytes = 8;

enum class DType { F32, BF16 };

inline int dtype_bytes(DType dt) { return dt == DType::F32 ? 4 : 2; }

struct Params {
    const void* x = nullptr;  // [B, T, C]
    const float* w = nullptr;  // [C, K]
    const float* bias = nullptr;  // [C] or null
    void* y = nullptr;  // [B, T, C], forward output
    const void* gy = nullptr;  // [B, T, C], backward input
    void* gx = nullptr;  // [B, T, C], backward output
    float* partial = nullptr;  // [partial_rows, K + 1, C]: per-block sums of dw (rows 0..K-1) and dbias (row K)
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

// The launch plan for a given vector width. `num_sms` sizes the grid to fill the GPU (about two waves of
// resident threads); `chunk_override` > 0 fixes the time chunk instead (tuning and tests).
inline Plan make_plan(int64_t B, int64_t T, int64_t C, int vec, int num_sms, int64_t chunk_override) {
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
        if (chunk < 16) chunk = 16;  // amortise the K-1 halo steps each chunk re-reads
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
