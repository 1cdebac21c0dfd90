// Chunked linear attention with a scalar per-head decay (kernels/src/chunk_linear.rs has the math): the
// host-side interface of chunk_linear.cu. Covers `linear_attention` (no decay), `retnet` and Mamba2's SSD;
// with `per_key` (bfloat16 q, k, v) GLA's per-key decays, whose mixes are chunk_linear_pk.cuh's.
//
//   S_t = a_t S_{t-1} + k_t^T v_t,   o_t = q_t S_t,   a_t = exp(g_t), g_t <= 0 (absent: a_t = 1)
//
// q, k [B, H, T, Dk]; v, o, dO [B, H, T, Dv]: contiguous, float32 or bfloat16 (one dtype). g [B, H, T],
// s0 / the final state / its gradient [B, H, Dk, Dv], and every workspace and gradient written here are
// float32 (the torch glue converts). Arithmetic is float32 throughout. 1 <= Dk, Dv <= kMaxDim.
//
// Chunked form, chunk length C = kChunk, N = ceil(T / C) chunks; b_i = sum of g over the chunk up to and
// including i (`bcum`), L = the chunk's last valid position:
//   scores   A_ij = [j <= i] exp(b_i - b_j) q_i . k_j                       [C, C] per chunk
//   update   U    = (K * exp(b_L - b))^T V                                  [Dk, Dv] per chunk
//   pass     S_start(n) = S; S = exp(b_L) S + U(n)   (sequential over chunks, one thread per state element)
//   output   O    = A V + (Q * exp(b)) S_start                              [C, Dv] per chunk
// Backward (recomputes A, U and the states; G(n) = dLoss/dS_end(n)):
//   W    = (Q * exp(b))^T dO;  reverse pass G(n) = G; G = exp(b_L) G + W(n); dS0 = G at the end
//   P_ij = [j <= i] exp(b_i - b_j) dO_i . v_j
//   dQ = P K + (dO * exp(b)) S_start^T      dK = P^T Q + (V * exp(b_L - b)) G^T
//   dV = A^T dO + (K * exp(b_L - b)) G
//   dg (glue) = within-chunk reverse cumsum of (q . dq - k . dk), plus <G(n), S_end(n)> for the whole chunk.
//
// Work split, float32 inputs (chunk_linear.cuh): every "per chunk" step is one block of kThreads threads per
// (chunk, batch x head); its operands are staged in shared memory as float32 (rows padded to an odd stride:
// no bank conflicts), then each thread computes a register tile of the output: rows warp + 8 r, columns
// lane + 32 c. The state pass is one thread per state element.
// Bfloat16 inputs (chunk_linear_tc.cuh) take tensor cores: a sequential scan per (batch x head, 32 state
// columns) that keeps its state tile on chip and adds U (or W) with bfloat16 mma, and one fused block per
// (chunk, batch x head) for each of O, dQ, dK, dV that recomputes its scores (A or P) on tensor cores;
// `scores` and `pscores` are not used there.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace wb {
namespace chunk_linear {

constexpr int kChunk = 64;
constexpr int kThreads = 256;  // 8 warps
constexpr int kMaxDim = 128;   // Dk, Dv <= 128: register tiles of 4 columns of 32, 16 rows of 8
// Per-key decays take value widths up to 256 where the per-key mixes fit in a block's shared memory (the
// opt-in limit of an H100/H200, 227 KiB): Dk = 96 with Dv = 192 (GLA's 4 heads at d_model 768) does.
constexpr int kMaxValueDimPerKey = 256;
constexpr int64_t kMaxSmemBytes = 232448;

enum class DType { F32, BF16 };

struct Params {
    const void* q = nullptr;  // [B, H, T, Dk]
    const void* k = nullptr;  // [B, H, T, Dk]
    const void* v = nullptr;  // [B, H, T, Dv]
    const float* g = nullptr;  // [B, H, T] log-decays ([B, H, T, Dk] when per_key), or null (no decay)
    bool per_key = false;  // one log-decay per key (GLA; bfloat16 q, k, v only: chunk_linear_pk.cuh)
    const float* s0 = nullptr;  // [B, H, Dk, Dv] or null
    void* o = nullptr;  // [B, H, T, Dv]
    float* sT = nullptr;  // [B, H, Dk, Dv]
    // workspaces
    float* bcum = nullptr;  // [B, H, T] ([B, H, T, Dk] when per_key; only with g)
    bool bcum_ready = false;  // per_key: bcum holds the forward pass's (saved); the cumsum forms kg16, qg16 only
    // per_key (bfloat16): the scans' decayed operands, written by the cumsum with bcum where not null:
    void* kg16 = nullptr;  // [B, H, T, Dk] bfloat16: k * exp(b_L - b), the forward scan's X
    void* qg16 = nullptr;  // [B, H, T, Dk] bfloat16: q * exp(b), the reverse scan's X (backward only)
    // per_key: the masked scores M of each chunk, [B, H, N, C, C] bfloat16: the forward pass writes them,
    // the backward pass's dV = M^T dO + (K e^(bL-b)) G reads them (their recomputation was half its time)
    void* scores16 = nullptr;
    float* states = nullptr;  // [B, H, N, Dk, Dv]: U, then S_start in place (float32 path only)
    void* states16 = nullptr;  // [B, H, N, Dk, Dv] bfloat16: S_start (bf16 path: the mixes read these)
    float* scores = nullptr;  // [B, H, N, C, C]: A
    // backward
    const void* dout = nullptr;  // [B, H, T, Dv]
    const float* dsT = nullptr;  // [B, H, Dk, Dv] or null
    float* gstates = nullptr;  // [B, H, N, Dk, Dv]: W, then G in place (bf16 path: G)
    void* gstates16 = nullptr;  // [B, H, N, Dk, Dv] bfloat16: G (bf16 path)
    float* pscores = nullptr;  // [B, H, N, C, C]: P
    float* dq = nullptr;  // [B, H, T, Dk] (float32 path)
    float* dk = nullptr;  // [B, H, T, Dk] (float32 path)
    float* dv = nullptr;  // [B, H, T, Dv] (float32 path)
    // bf16 path: dQ, dK, dV in bfloat16, and the rows' q . dq and k . dk (from float32 dq, dk) for dg
    void* dq16 = nullptr;  // [B, H, T, Dk]
    void* dk16 = nullptr;  // [B, H, T, Dk]
    void* dv16 = nullptr;  // [B, H, T, Dv]
    float* qdq = nullptr;  // [B, H, T]; per_key: [B, H, T, Dk], q * dq elementwise
    float* kdk = nullptr;  // [B, H, T]; per_key: [B, H, T, Dk], k * dk elementwise
    float* ds0 = nullptr;  // [B, H, Dk, Dv]
    float* dgk = nullptr;  // [B, H, T, Dk]: the per-key log-decays' gradient (per_key backward)
    float* gdot = nullptr;  // [B, H, N, Dk]: sum_e G(n)_de S_end(n)_de, G in bfloat16 (bf16 backward)
    int64_t B = 0, H = 0, T = 0, Dk = 0, Dv = 0;
    int64_t N = 0;  // ceil(T / kChunk)
};

inline int64_t nchunks(int64_t T) { return (T + kChunk - 1) / kChunk; }

// Whether the kernels take these head dims: 1 <= Dk <= 128 and 1 <= Dv <= 128, or with per-key decays
// Dv <= 256 where every per-key mix fits in shared memory.
bool fits(int64_t Dk, int64_t Dv, bool per_key);

// Shared memory (floats) of the per-chunk kernels: rows padded to D + 1.
inline int64_t smem_scores(int64_t D) { return 2 * int64_t(kChunk) * (D + 1) + kChunk; }
inline int64_t smem_update(int64_t Dk, int64_t Dv) { return int64_t(kChunk) * (Dk + 1 + Dv + 1); }
inline int64_t smem_rowmix(int64_t D1, int64_t D2) {
    return int64_t(kChunk) * (kChunk + 1) + int64_t(kChunk) * (D2 + 1) + int64_t(kChunk) * (D1 + 1) +
           D1 * (D2 + 1);
}

// Launch on `stream`; return null or the error's text. `p.N` must be filled in; the forward pass writes
// o, sT and the workspaces bcum, states, scores; the backward pass needs dout (and dsT) and writes every
// workspace, dq, dk, dv, ds0 (and recomputes sT into `sT` when it is not null).
const char* forward(const Params& p, DType dt, cudaStream_t stream);
const char* backward(const Params& p, DType dt, cudaStream_t stream);

}  // namespace chunk_linear
}  // namespace wb
