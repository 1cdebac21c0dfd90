// Mamba's selective scan (S6): the host-side interface of selective_scan.cu.
//
//   h_t = exp(dt_t A) ⊙ h_{t-1} + (dt_t x_t) B_t^T      h: [B, D, N] per batch row, h_{-1} = h0 (or 0)
//   y_t = h_t C_t + Dskip ⊙ x_t
//
// x, dt, y, dx, ddt: [B, T, D]; Bm, Cm: [B, T, N]; all contiguous, float32 or bfloat16 (one dtype).
// A [D, N], Dskip [D], h0 [B, D, N], the final state, the checkpoints and every gradient the kernels reduce
// are float32 (the torch glue converts). Arithmetic is float32 throughout.
//
// Work split: one thread owns NPL states n = k * G + lane (k < NPL) of one channel d of one batch row and
// walks all T steps; the G lanes of a channel sit in one aligned group of a warp and sum their parts of
// y_t = sum_n h_t[n] C_t[n] with shuffles. A block of THREADS threads covers THREADS / G channels of one
// batch row. The state never leaves registers.
//
// Backward recomputes instead of storing every state: the forward pass writes the state at the start of
// every kChunk-step chunk (`ckpt`, [B, nchunks, D, N] float32: T / 32 times the state, not T times; none
// when no gradient can follow). The backward pass walks chunks from the last: from the chunk's checkpoint
// it recomputes the state at the start of each sub-chunk of 8 steps (4 when a thread owns 4 states; kept
// in shared memory), then per sub-chunk (last first) its states and decays (kept in registers), and runs
// the adjoint recurrence
//   G_t = gy_t C_t + exp(dt_{t+1} A) ⊙ G_{t+1},   G_{T-1} = gy_{T-1} C_{T-1} + dL/dh_T
// backwards through it. Gradients of B and C are sums over channels: each warp sums its channels' parts with
// shuffles, the block adds its warps' sums after a barrier per sub-chunk and writes one partial row per
// (block, t); the caller sums the rows ([tiles, B, T, N]).
//
// For N <= 16 (with the workspaces seg_g and seg_dt) the backward pass is split over time as well
// (selective_scan_twopass.cuh): a local reverse pass per kChunk-step segment from a zero adjoint and a
// combine over segments give the adjoint entering every segment, so each chunk is its own block (grid
// tiles x B x nchunks) instead of one block walking all of T; dA and dD then come as one partial row per
// chunk ([B * nchunks, D, N], [B * nchunks, D]) and dh0 from the combine.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace wb {
namespace selective_scan {

constexpr int kChunk = 32;  // steps between forward checkpoints
// Threads per block on the GPU (the emulation also runs smaller blocks). 256 rather than more: two or more
// blocks per multiprocessor, so one block's barrier waits are covered by another's work.
constexpr int kThreads = 256;
constexpr int kMaxState = 64;  // N <= 64: 16 lanes x 4 states per lane
// The two-pass forward (selective_scan_twopass.cuh): states per thread (it runs for N <= 16; states n >= N
// stay 0) and channels per block.
constexpr int kTwoPassStates = 16;
constexpr int kTwoPassThreads = 128;

enum class DType { F32, BF16 };

struct Params {
    // forward inputs
    const void* x = nullptr;  // [B, T, D]
    const void* dt = nullptr;  // [B, T, D]
    const float* A = nullptr;  // [D, N]
    const void* Bm = nullptr;  // [B, T, N]
    const void* Cm = nullptr;  // [B, T, N]
    const float* Dskip = nullptr;  // [D] or null
    const float* h0 = nullptr;  // [B, D, N] or null
    // forward outputs
    void* y = nullptr;  // [B, T, D]
    float* hT = nullptr;  // [B, D, N]
    float* ckpt = nullptr;  // [B, nchunks, D, N]: the state before step c * kChunk (forward: null = skip)
    // the two-pass forward (selective_scan_twopass.cuh; N <= 16, taken when these and ckpt are given):
    float* seg_h = nullptr;  // [B, nchunks, D, N]: each segment's end state from a zero start
    float* seg_dt = nullptr;  // [B, nchunks, D]: each segment's sum of dt
    // backward inputs
    const void* gy = nullptr;  // [B, T, D]
    const float* ghT = nullptr;  // [B, D, N] or null
    // the segmented backward (N <= 16, taken when seg_g and seg_dt are given; see the top of the file):
    float* seg_g = nullptr;  // [B, nchunks, D, N]: the adjoint entering each segment's last step
    // backward outputs
    void* dx = nullptr;  // [B, T, D]
    void* ddt = nullptr;  // [B, T, D]
    float* dA_part = nullptr;  // [B, D, N] (summed over B by the caller); segmented: [B, nchunks, D, N]
    float* dD_part = nullptr;  // [B, D]; segmented: [B, nchunks, D]
    float* dB_part = nullptr;  // [tiles, B, T, N] (summed over tiles by the caller)
    float* dC_part = nullptr;  // [tiles, B, T, N]
    float* dh0 = nullptr;  // [B, D, N]
    int64_t B = 0, T = 0, D = 0, N = 0;
    int64_t nchunks = 0;  // ceil(T / kChunk)
    int64_t tiles = 0;  // blocks per batch row: ceil(D / (threads / G))
};

// Lanes per channel (G) and states per lane (NPL) for a state size N <= kMaxState.
struct Shape {
    int G = 16;
    int NPL = 1;
};

// (N <= 16 gives each lane up to 4 states: with the segmented backward's chunks as blocks there are blocks
// enough at 4 lanes per channel, and the per-step work of x, dt and dy is shared by 4 states, not 1.)
inline Shape pick_shape(int64_t N) {
    if (N <= 4) return {4, 1};
    if (N <= 16) return {4, 4};
    return {16, 4};
}

inline int64_t nchunks(int64_t T) { return (T + kChunk - 1) / kChunk; }
inline int64_t tiles(int64_t D, int64_t N, int threads) {
    const int64_t per_block = threads / pick_shape(N).G;
    return (D + per_block - 1) / per_block;
}

// A Params with the shape and its plan (nchunks, tiles) filled in; the caller sets the pointers.
inline Params plan(int64_t B, int64_t T, int64_t D, int64_t N, int threads = kThreads) {
    Params p;
    p.B = B;
    p.T = T;
    p.D = D;
    p.N = N;
    p.nchunks = nchunks(T);
    p.tiles = tiles(D, N, threads);
    return p;
}

// Whether the backward pass runs segmented when given seg_g and seg_dt (then dA_part and dD_part have
// B * nchunks rows).
inline bool segmentable(int64_t N, int64_t nchunks_) { return N <= kTwoPassStates && nchunks_ <= 65535; }

// Launch on `stream`; return null or the CUDA error's text. `p.nchunks` and `p.tiles` must be filled in.
const char* forward(const Params& p, DType dt, cudaStream_t stream);
const char* backward(const Params& p, DType dt, cudaStream_t stream);

}  // namespace selective_scan
}  // namespace wb
