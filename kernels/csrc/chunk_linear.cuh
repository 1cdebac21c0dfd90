// Chunked linear attention with a scalar decay: the per-thread work of the CUDA kernels (chunk_linear.h has
// the math, the shapes and the work split).
//
// Written once for the GPU and the CPU. Every per-chunk kernel is two steps separated by one block
// barrier: `*_load` (each thread stages a strided share of the operands into shared memory) and
// `*_compute` (each thread computes and stores its register tile from shared memory). chunk_linear.cu runs
// them as load; __syncthreads(); compute. tests/emulate_chunk_linear.cu runs the load of every thread of a
// block, then the compute of every thread, so this exact code is checked against float64 on the CPU.
// Register arrays are indexed with compile-time constants only; rows and columns past the problem's edge
// compute on zeros and store nothing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "dtype.cuh"
#include "chunk_linear.h"

namespace wb {
namespace chunk_linear {

using ::wb::from_float;  // dtype.cuh
using ::wb::to_float;

#define WB_HD __host__ __device__ __forceinline__


// On the GPU the hardware exponential (__expf: ex2.approx after one multiply, relative error about 2^-21
// for the exponents <= 0 these kernels take), not expf's longer exact-rounding sequence.
WB_HD float exp_f(float v) {
#if defined(__CUDA_ARCH__)
    return __expf(v);
#else
    return std::exp(v);
#endif
}

// Where one chunk of one (batch, head) sequence lies.
struct Chunk {
    int64_t bh = 0;  // batch x head index
    int64_t n = 0;  // chunk index
    int64_t t0 = 0;  // first time step
    int valid = 0;  // steps in this chunk (C, or fewer in the last one)
};

WB_HD Chunk chunk_of(const Params& p, int64_t n, int64_t bh) {
    Chunk c;
    c.bh = bh;
    c.n = n;
    c.t0 = n * kChunk;
    const int64_t left = p.T - c.t0;
    c.valid = int(left < kChunk ? left : kChunk);
    return c;
}

// Row scaling applied while staging an operand: none, exp(b_i), or exp(b_L - b_i).
enum class Scale { None, ExpB, ExpLastMinusB };

// The within-chunk cumulative log-decay of row r (0 without decay; rows past the end take b_L).
WB_HD float bcum_at(const Params& p, const Chunk& c, int r) {
    if (p.bcum == nullptr) return 0.f;
    const int rr = r < c.valid ? r : c.valid - 1;
    return p.bcum[c.bh * p.T + c.t0 + rr];
}

// Per-key decays (p.per_key): the within-chunk cumulative log-decay of row r and key d (rows past the end
// take b_L).
WB_HD float bcum_key(const Params& p, const Chunk& c, int r, int64_t d) {
    const int rr = r < c.valid ? r : c.valid - 1;
    return p.bcum[(c.bh * p.T + c.t0 + rr) * p.Dk + d];
}

WB_HD float row_scale(const Params& p, const Chunk& c, Scale s, int r) {
    if (s == Scale::None || p.bcum == nullptr) return 1.f;
    const float b = bcum_at(p, c, r);
    return s == Scale::ExpB ? exp_f(b) : exp_f(bcum_at(p, c, c.valid - 1) - b);
}

// Stages rows [0, C) of a [T, D] operand of this sequence (`src` points at the whole [B, H, T, D] tensor)
// into dst [C][ld], rows past the chunk's end as zeros, each row scaled.
template <typename T>
WB_HD void stage_rows(const Params& p, const Chunk& c, float* dst, int ld, const T* src, int64_t D, Scale s, int tid) {
    for (int64_t idx = tid; idx < int64_t(kChunk) * D; idx += kThreads) {
        const int r = int(idx / D);
        const int64_t col = idx % D;
        float v = 0.f;
        if (r < c.valid) v = to_float(src[(c.bh * p.T + c.t0 + r) * D + col]) * row_scale(p, c, s, r);
        dst[r * ld + col] = v;
    }
}

// Stages a float32 [rows, cols] matrix (or its transpose when `trans`: src is [cols, rows]) into dst[rows][ld].
WB_HD void stage_matrix(float* dst, int ld, const float* src, int64_t rows, int64_t cols, bool trans, int tid) {
    for (int64_t idx = tid; idx < rows * cols; idx += kThreads) {
        const int64_t r = idx / cols, col = idx % cols;
        dst[r * ld + col] = trans ? src[col * rows + r] : src[idx];
    }
}

// acc[r][c] += sum_{x < K} X(i, x) Y(x, e) for rows i = warp + 8 r < nrows and columns e = lane + 32 c < ncols,
// with X(i, x) = X[i * xi + x * xk] and Y(x, e) = Y[x * yk + e * ye] (strides give transposes for free).
// A warp shares its row (broadcast reads of X) and reads 32 consecutive columns of Y.
template <int RT, int CT>
WB_HD void tile_mm(float (&acc)[RT][CT], const float* X, int xi, int xk, const float* Y, int yk, int ye, int K,
                   int warp, int lane, int nrows, int ncols) {
    for (int x = 0; x < K; ++x) {
        float y[CT];
#pragma unroll
        for (int c = 0; c < CT; ++c) {
            const int e = lane + 32 * c;
            y[c] = e < ncols ? Y[x * yk + e * ye] : 0.f;
        }
#pragma unroll
        for (int r = 0; r < RT; ++r) {
            const int i = warp + 8 * r;
            if (i < nrows) {
                const float xv = X[i * xi + x * xk];
#pragma unroll
                for (int c = 0; c < CT; ++c) acc[r][c] += xv * y[c];
            }
        }
    }
}

template <int RT, int CT>
WB_HD void zero(float (&acc)[RT][CT]) {
#pragma unroll
    for (int r = 0; r < RT; ++r)
#pragma unroll
        for (int c = 0; c < CT; ++c) acc[r][c] = 0.f;
}

// ---------------------------------------------------------------------------------------------------------
// 1. Within-chunk cumulative log-decays: one thread per (batch x head, chunk).
//    Every load first (the stores to bcum would otherwise hold each next load back: 64 latencies in a row).
WB_HD void cumsum_thread(const Params& p, int64_t idx) {
    if (idx >= p.B * p.H * p.N) return;
    const Chunk c = chunk_of(p, idx % p.N, idx / p.N);
    const int64_t at = c.bh * p.T + c.t0;
    float g[kChunk];
#pragma unroll
    for (int r = 0; r < kChunk; ++r) g[r] = r < c.valid ? p.g[at + r] : 0.f;
    float acc = 0.f;
#pragma unroll
    for (int r = 0; r < kChunk; ++r) {
        acc += g[r];
        if (r < c.valid) p.bcum[at + r] = acc;
    }
}

// Per-key decays: one thread per (batch x head, chunk, key); neighbouring threads read neighbouring keys.
// Then, where p.kg16 / p.qg16 are set, the scans' decayed operands k * exp(b_L - b) and q * exp(b), rounded
// to bfloat16 as the scan's own scaling of its staged copies had rounded them: the scans then stage them as
// they are, with no per-key decay to load inside their sequential loop. For head dims that are not a
// multiple of 8; chunk_linear_scan.cuh's cumsum_key8_thread takes 8 keys per thread.
WB_HD void cumsum_key_thread(const Params& p, int64_t idx) {
    if (idx >= p.B * p.H * p.N * p.Dk) return;
    const int64_t d = idx % p.Dk, rest = idx / p.Dk;
    const Chunk c = chunk_of(p, rest % p.N, rest / p.N);
    const int64_t at = (c.bh * p.T + c.t0) * p.Dk + d;
    float acc = 0.f;
    for (int r = 0; r < c.valid && !p.bcum_ready; ++r) {
        acc += p.g[at + r * p.Dk];
        p.bcum[at + r * p.Dk] = acc;
    }
    if (p.bcum_ready) acc = p.bcum[at + (c.valid - 1) * p.Dk];
    using bf = __nv_bfloat16;
    for (int r = 0; r < c.valid; ++r) {
        const int64_t i = at + r * p.Dk;
        const float b = p.bcum[i];
        if (p.kg16 != nullptr)
            static_cast<bf*>(p.kg16)[i] = from_float<bf>(to_float(static_cast<const bf*>(p.k)[i]) * exp_f(acc - b));
        if (p.qg16 != nullptr)
            static_cast<bf*>(p.qg16)[i] = from_float<bf>(to_float(static_cast<const bf*>(p.q)[i]) * exp_f(b));
    }
}

// The sum of v over a warp's 32 lanes, stored by lane 0 at `at`; every lane of the warp must call it. On the
// CPU the emulation runs a warp's lanes one after another in order: lane 0 stores, the others add.
WB_HD void warp_sum_store(float* at, float v, int lane) {
#if defined(__CUDA_ARCH__)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) *at = v;
#else
    if (lane == 0) {
        *at = v;
    } else {
        *at += v;
    }
#endif
}

// The log-decay gradient's <G(n), S_end(n)> per row of the state (bfloat16 backward): p.gdot[bh, n, d] =
// sum_e G(n)_de S_end(n)_de, G and S_end(n) = S_start(n + 1) the bfloat16 ones the mixes took (states16), or
// S_T in float32. (The backward scan had also written the chunk states in float32 for this: twice the
// state-out bytes, and twice the bytes read here.) One warp per row, its lanes along the row (coalesced
// reads: a thread per row reading across rows thrashed L1, 0.6 ms at head dim 128). Threads past the rows
// come in whole warps.
WB_HD void gdot_thread(const Params& p, int64_t idx) {
    const int64_t row = idx / 32;
    const int lane = int(idx % 32);
    if (row >= p.B * p.H * p.N * p.Dk) return;
    const int64_t d = row % p.Dk, rest = row / p.Dk, n = rest % p.N, bh = rest / p.N;
    const int64_t per = p.Dk * p.Dv;
    const auto* G = static_cast<const __nv_bfloat16*>(p.gstates16) + (bh * p.N + n) * per + d * p.Dv;
    float acc = 0.f;
    if (n + 1 < p.N) {
        const auto* send = static_cast<const __nv_bfloat16*>(p.states16) + (bh * p.N + n + 1) * per + d * p.Dv;
        for (int64_t e = lane; e < p.Dv; e += 32) acc += to_float(G[e]) * to_float(send[e]);
    } else {
        const float* send = p.sT + bh * per + d * p.Dv;
        for (int64_t e = lane; e < p.Dv; e += 32) acc += to_float(G[e]) * send[e];
    }
    warp_sum_store(p.gdot + row, acc, lane);
}

// The per-key log-decays' gradient, one thread per (batch x head, chunk, key) (chunk_linear_pk.cuh): the
// within-chunk reverse cumsum of p.qdq - p.kdk = (q * dq - k * dk) down key d's column, plus gdot_thread's
// sum_e G(n)_de S_end(n)_de. kDgRows rows of loads go out before their stores (a store between loads had
// held each next load back: one memory round trip per row).
constexpr int kDgRows = 8;
WB_HD void dg_key_thread(const Params& p, int64_t idx) {
    if (idx >= p.B * p.H * p.N * p.Dk) return;
    const int64_t d = idx % p.Dk, rest = idx / p.Dk;
    const Chunk c = chunk_of(p, rest % p.N, rest / p.N);
    float acc = p.gdot[(c.bh * p.N + c.n) * p.Dk + d];
    const int64_t at = (c.bh * p.T + c.t0) * p.Dk + d;
    for (int r0 = c.valid - 1; r0 >= 0; r0 -= kDgRows) {
        float v[kDgRows];
#pragma unroll
        for (int j = 0; j < kDgRows; ++j) {
            const int64_t i = at + int64_t(r0 - j) * p.Dk;
            v[j] = r0 - j >= 0 ? p.qdq[i] - p.kdk[i] : 0.f;
        }
#pragma unroll
        for (int j = 0; j < kDgRows; ++j) {
            if (r0 - j < 0) break;
            acc += v[j];
            p.dgk[at + int64_t(r0 - j) * p.Dk] = acc;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// 2. Scores out[i][j] = [j <= i] exp(b_i - b_j) X_i . Y_j for one chunk ([C, C] at out + chunk offset).
//    Shared memory: X [C][D + 1], Y [C][D + 1], b [C].
template <typename T>
WB_HD void scores_load(const Params& p, const Chunk& c, const T* X, const T* Y, int64_t D, float* smem, int tid) {
    const int ld = int(D) + 1;
    stage_rows(p, c, smem, ld, X, D, Scale::None, tid);
    stage_rows(p, c, smem + kChunk * ld, ld, Y, D, Scale::None, tid);
    float* b = smem + 2 * kChunk * ld;
    for (int r = tid; r < kChunk; r += kThreads) b[r] = bcum_at(p, c, r);
}

WB_HD void scores_compute(const Params& p, const Chunk& c, int64_t D, float* out, const float* smem, int tid) {
    const int ld = int(D) + 1;
    const float* X = smem;
    const float* Y = smem + kChunk * ld;
    const float* b = smem + 2 * kChunk * ld;
    const int warp = tid / 32, lane = tid % 32;
    float acc[kChunk / 8][kChunk / 32];
    zero(acc);
    tile_mm(acc, X, ld, 1, Y, 1, ld, int(D), warp, lane, kChunk, kChunk);
    float* o = out + (c.bh * p.N + c.n) * kChunk * kChunk;
#pragma unroll
    for (int r = 0; r < kChunk / 8; ++r) {
        const int i = warp + 8 * r;
#pragma unroll
        for (int cc = 0; cc < kChunk / 32; ++cc) {
            const int j = lane + 32 * cc;
            o[i * kChunk + j] = j <= i ? acc[r][cc] * exp_f(b[i] - b[j]) : 0.f;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// 3. Per-chunk outer product out[d][e] = sum_j s_j X_j[d] Y_j[e] ([Dk, Dv] at out + chunk offset):
//    U = (K * exp(b_L - b))^T V, W = (Q * exp(b))^T dO. Shared memory: X [C][Dk + 1], Y [C][Dv + 1].
template <typename T>
WB_HD void update_load(const Params& p, const Chunk& c, const T* X, Scale s, const T* Y, float* smem, int tid) {
    stage_rows(p, c, smem, int(p.Dk) + 1, X, p.Dk, s, tid);
    stage_rows(p, c, smem + kChunk * (p.Dk + 1), int(p.Dv) + 1, Y, p.Dv, Scale::None, tid);
}

WB_HD void update_compute(const Params& p, const Chunk& c, float* out, const float* smem, int tid) {
    const int ldx = int(p.Dk) + 1, ldy = int(p.Dv) + 1;
    const int warp = tid / 32, lane = tid % 32;
    float acc[kMaxDim / 8][kMaxDim / 32];
    zero(acc);
    tile_mm(acc, smem, 1, ldx, smem + kChunk * ldx, ldy, 1, kChunk, warp, lane, int(p.Dk), int(p.Dv));
    float* o = out + (c.bh * p.N + c.n) * p.Dk * p.Dv;
#pragma unroll
    for (int r = 0; r < kMaxDim / 8; ++r) {
        const int d = warp + 8 * r;
#pragma unroll
        for (int cc = 0; cc < kMaxDim / 32; ++cc) {
            const int e = lane + 32 * cc;
            if (d < p.Dk && e < p.Dv) o[d * p.Dv + e] = acc[r][cc];
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// 4. The pass over chunks, one thread per (batch x head, state element). Forward (`reverse` false): buf holds
//    U(n) and becomes S_start(n); start = s0, end -> sT. Reverse: buf holds W(n) and becomes G(n) (the
//    gradient of S_end(n)); start = dsT, end -> ds0. Null start: zeros; null end: not written.
WB_HD void pass_thread(const Params& p, float* buf, const float* start, float* end, bool reverse, int64_t idx) {
    const int64_t per = p.Dk * p.Dv;
    if (idx >= p.B * p.H * per) return;
    const int64_t bh = idx / per, el = idx % per;
    float s = start != nullptr ? start[idx] : 0.f;
    for (int64_t m = 0; m < p.N; ++m) {
        const int64_t n = reverse ? p.N - 1 - m : m;
        const Chunk c = chunk_of(p, n, bh);
        const float a = p.bcum != nullptr ? exp_f(bcum_at(p, c, c.valid - 1)) : 1.f;
        float* slot = buf + (bh * p.N + n) * per + el;
        const float u = *slot;
        *slot = s;
        s = a * s + u;
    }
    if (end != nullptr) end[idx] = s;
}

// ---------------------------------------------------------------------------------------------------------
// 5. Row mix for one chunk: out[r][col] = sum_x M(r, x) Z[x][col] + sum_y (s_r R[r][y]) Hm(y, col), rows
//    r < valid, columns < D2. M is a [C, C] score matrix (transposed when `mt`), Z [C, D2] and R [C, D1] rows
//    of inputs, Hm a [D1, D2] state (stored transposed, [D2, D1], when `ht`). The four uses:
//      O  = A V   + (Q  e^b)      S_start       dQ = P K   + (dO e^b)      S_start^T
//      dK = P^T Q + (V e^{bL-b})  G^T           dV = A^T dO + (K e^{bL-b}) G
//    Shared memory: M [C][C + 1], Z [C][D2 + 1], R [C][D1 + 1], Hm [D1][D2 + 1].
struct RowMix {
    const float* M = nullptr;  // [B, H, N, C, C]
    bool mt = false;
    const float* Hm = nullptr;  // [B, H, N, D1 x D2]
    bool ht = false;
    Scale s = Scale::None;
    int64_t D1 = 0, D2 = 0;
};

template <typename T>
WB_HD void rowmix_load(const Params& p, const Chunk& c, const RowMix& m, const T* Z, const T* R, float* smem,
                       int tid) {
    const int ldm = kChunk + 1, ldz = int(m.D2) + 1, ldr = int(m.D1) + 1;
    float* Ms = smem;
    float* Zs = Ms + kChunk * ldm;
    float* Rs = Zs + kChunk * ldz;
    float* Hs = Rs + kChunk * ldr;
    stage_matrix(Ms, ldm, m.M + (c.bh * p.N + c.n) * kChunk * kChunk, kChunk, kChunk, m.mt, tid);
    stage_rows(p, c, Zs, ldz, Z, m.D2, Scale::None, tid);
    stage_rows(p, c, Rs, ldr, R, m.D1, m.s, tid);
    stage_matrix(Hs, ldz, m.Hm + (c.bh * p.N + c.n) * m.D1 * m.D2, m.D1, m.D2, m.ht, tid);
}

template <typename TO>
WB_HD void rowmix_compute(const Params& p, const Chunk& c, const RowMix& m, TO* out, const float* smem, int tid) {
    const int ldm = kChunk + 1, ldz = int(m.D2) + 1, ldr = int(m.D1) + 1;
    const float* Ms = smem;
    const float* Zs = Ms + kChunk * ldm;
    const float* Rs = Zs + kChunk * ldz;
    const float* Hs = Rs + kChunk * ldr;
    const int warp = tid / 32, lane = tid % 32;
    float acc[kChunk / 8][kMaxDim / 32];
    zero(acc);
    tile_mm(acc, Ms, ldm, 1, Zs, ldz, 1, kChunk, warp, lane, c.valid, int(m.D2));
    tile_mm(acc, Rs, ldr, 1, Hs, ldz, 1, int(m.D1), warp, lane, c.valid, int(m.D2));
#pragma unroll
    for (int r = 0; r < kChunk / 8; ++r) {
        const int i = warp + 8 * r;
#pragma unroll
        for (int cc = 0; cc < kMaxDim / 32; ++cc) {
            const int e = lane + 32 * cc;
            if (i < c.valid && e < m.D2) out[(c.bh * p.T + c.t0 + i) * m.D2 + e] = from_float<TO>(acc[r][cc]);
        }
    }
}

// The four row mixes of chunk_linear.h.
inline RowMix mix_output(const Params& p) { return {p.scores, false, p.states, false, Scale::ExpB, p.Dk, p.Dv}; }
inline RowMix mix_dq(const Params& p) { return {p.pscores, false, p.states, true, Scale::ExpB, p.Dv, p.Dk}; }
inline RowMix mix_dk(const Params& p) {
    return {p.pscores, true, p.gstates, true, Scale::ExpLastMinusB, p.Dv, p.Dk};
}
inline RowMix mix_dv(const Params& p) {
    return {p.scores, true, p.gstates, false, Scale::ExpLastMinusB, p.Dk, p.Dv};
}

// ---------------------------------------------------------------------------------------------------------
// The launch sequences, over a launcher `L` (chunk_linear.cu's runs kernels; the emulation's runs the
// same steps on the CPU) with cumsum(), pass(), scores<T>(), update<T>() and rowmix<T, TO>().
// The forward pass up to the chunk states and scores (shared by forward and backward).
template <typename T, class L>
void states_and_scores(L& l, const Params& p, float* sT) {
    l.cumsum();
    l.template update<T>(p.k, Scale::ExpLastMinusB, p.v, p.states);  // U
    l.pass(p.states, p.s0, sT, false);  // S_start
    l.template scores<T>(p.q, p.k, p.Dk, p.scores);  // A
}

template <typename T, class L>
void run_forward(L& l, const Params& p) {
    states_and_scores<T>(l, p, p.sT);
    l.template rowmix<T, T>(mix_output(p), p.v, p.q, static_cast<T*>(p.o));
}

template <typename T, class L>
void run_backward(L& l, const Params& p) {
    states_and_scores<T>(l, p, p.sT);
    l.template update<T>(p.q, Scale::ExpB, p.dout, p.gstates);  // W
    l.pass(p.gstates, p.dsT, p.ds0, true);  // G
    l.template scores<T>(p.dout, p.v, p.Dv, p.pscores);  // P
    l.template rowmix<T, float>(mix_dq(p), p.k, p.dout, p.dq);
    l.template rowmix<T, float>(mix_dk(p), p.q, p.v, p.dk);
    l.template rowmix<T, float>(mix_dv(p), p.dout, p.k, p.dv);
}

#undef WB_HD

}  // namespace chunk_linear
}  // namespace wb
