// Chunked linear attention, bfloat16 path: the sequential scan over the chunk states (chunk_linear_tc.cuh
// has the whole path and the mixes; chunk_linear_pk.cuh the per-key mixes).
//
// One block per (batch x head, row tile, column tile of the state), 8 warps, sequential over the chunks
// (reversed for the gradient pass). The state tile S stays in shared memory as float32. Per chunk: write S
// to `buf16` in bfloat16 for the mixes (and to `buf` in float32 for the backward glue); stage X and Y with
// their scales (scalar decay: Y's rows; per key: X's elements); then S = exp(b_L) S + X^T Y on tensor cores
// (the scalar decay scales the accumulators, a per-key decay scales S's rows in shared memory before).
// Forward: X = K, Y = V, scale exp(b_L - b). Reverse: X = Q, Y = dO, scale exp(b), start dS_T, end dS_0.
// Written once for the GPU and the CPU over the executor `Blk` (chunk_linear_tc.cuh's top).
#pragma once

#include "chunk_linear_tc_tiles.cuh"

namespace wb {
namespace chunk_linear {

#define WB_HD __host__ __device__ __forceinline__

// ---------------------------------------------------------------------------------------------------------
// A scan block holds `rows` rows (keys) and `cols` columns of the state: its rows and columns never mix
// (S = diag(a) S + X^T Y), so (batch x head, row tile, column tile) are independent. A block walks the
// chunks in order, so a scan takes (waves of blocks) x (chunks) x (one chunk's step), and a step is mostly
// latency. Two blocks fit on a multiprocessor (registers), 264 on an H100/H200: scan_tile takes the tiling
// with the fewest waves, and among those the least work per block (rows x columns). Candidates: every row
// (up to 128) or rows of 64; 64 or 32 columns. GLA's training shape (8 x 4 heads, Dk 96, Dv 192) had rows of
// 64 and 32 columns, 384 blocks in two waves, its scans 12.9 ms of a 93.5 ms step; every row and 32 columns
// make 192 blocks in one wave. The 8 x 16 benchmark shapes keep every row and 64 (Dv > 64) or 32 columns.
struct ScanTile {
    int rows, cols;
};
constexpr int64_t kScanSlots = 2 * 132;
WB_HD ScanTile scan_tile(int64_t BH, int64_t Dk, int64_t Dv) {
    const ScanTile cands[] = {{kMaxDim, 64}, {kMaxDim, 32}, {64, 64}, {64, 32}};
    ScanTile best{kMaxDim, 32};
    int64_t best_waves = 0, best_work = 0;
    for (const ScanTile& t : cands) {
        if ((t.cols == 64 && Dv <= 32) || (t.rows == 64 && Dk <= 64)) continue;
        const int64_t blocks = BH * ((Dk + t.rows - 1) / t.rows) * ((Dv + t.cols - 1) / t.cols);
        const int64_t waves = (blocks + kScanSlots - 1) / kScanSlots;
        const int64_t work = int64_t(pad16(Dk < t.rows ? Dk : t.rows)) * t.cols;
        if (best_waves == 0 || waves < best_waves || (waves == best_waves && work < best_work)) {
            best = t;
            best_waves = waves;
            best_work = work;
        }
    }
    return best;
}

// The scan (see the top), `rows` state rows (scan_tile) and COLS columns per block. Shared memory: S float
// [Dkp][COLS + 4], X bf16 [C][Dkp + 8], Y bf16 [C][COLS + 8], Dkp = the rows of a tile padded to 16.
struct ScanArgs {
    const bf16* X = nullptr;
    Scale s = Scale::None;  // of Y's rows
    const bf16* Y = nullptr;
    bf16* buf16 = nullptr;  // [B, H, N, Dk, Dv]: S_start(n) (forward) or G(n) (reverse), for the mixes
    float* buf = nullptr;  // the same in float32, or null (not written)
    const float* start = nullptr;  // [B, H, Dk, Dv] or null (zeros)
    float* end = nullptr;  // [B, H, Dk, Dv] or null (not written)
    bool reverse = false;
};

struct ScanSmem {
    int Dkp, ldS, ldX, ldY;
    int64_t oX, oY, x, y, bytes;  // buffer b of X at oX + b x, of Y at oY + b y
};

WB_HD ScanSmem scan_smem(int64_t Dk, int cols, int rows) {
    ScanSmem L;
    L.Dkp = pad16(Dk < rows ? Dk : rows);
    L.ldS = cols + 4;
    L.ldX = L.Dkp + 8;
    L.ldY = cols + 8;
    L.x = align128(int64_t(kChunk) * L.ldX * 2);
    L.y = align128(int64_t(kChunk) * L.ldY * 2);
    L.oX = align128(int64_t(L.Dkp) * L.ldS * 4);
    L.oY = L.oX + 2 * L.x;
    L.bytes = L.oY + 2 * L.y;
    return L;
}

// Scales the segments of dst that stage_raw(.., rows_p = kChunk, W, tid) gave this thread (so this thread's
// own copies, visible to it after its copy wait) by their row's scale; rows past the chunk's end are zeros.
// In two halves around the wait: own_row_scales() reads the scales (their loads in flight during the wait),
// scale_own_rows() applies them. U = the thread's segments, kChunk * W / 8 <= U * kThreads.
template <int U>
WB_HD void own_row_scales(const Params& p, const Chunk& c, int W, Scale s, int tid, float (&sc)[U]) {
    const int segs = W / 8;
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int r = (tid + u * kThreads) / segs;
        sc[u] = r < c.valid ? row_scale(p, c, s, r) : 1.f;
    }
}

template <int U>
WB_HD void scale_own_rows(bf16* dst, int ld, int W, int tid, const float (&sc)[U]) {
    const int segs = W / 8;
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int idx = tid + u * kThreads, r = idx / segs, e0 = (idx % segs) * 8;
        if (idx >= kChunk * segs) break;
        Pack8 v;
        v.u = *reinterpret_cast<const uint4*>(dst + r * ld + e0);
#pragma unroll
        for (int i = 0; i < 8; ++i) v.h[i] = from_float<bf16>(to_float(v.h[i]) * sc[u]);
        *reinterpret_cast<uint4*>(dst + r * ld + e0) = v.u;
    }
}

// Per-key decays: the scales of this thread's own segments of X (as stage_raw gave them: keys [key0, key0 +
// W)), exp(b_rd) or exp(b_Ld - b_rd), 1 for rows past the chunk's end and keys past Dk (zeros there). In
// two halves around the copy wait, like own_row_scales: the decays' loads are in flight during the wait.
// UK = the thread's segments, kChunk * W / 8 <= UK * kThreads.
// The decays come as 16-byte loads where the keys allow (Dk % 4 == 0 and 8 keys inside Dk): a scalar load
// per key had made the per-key scan's first step twice the scalar decay's.
template <int UK>
WB_HD void own_key_scales(const Params& p, const Chunk& c, int64_t key0, int W, Scale s, int tid, float (&sc)[UK][8]) {
    const int segs = W / 8;
    const float* chunk_b = p.bcum + (c.bh * p.T + c.t0) * p.Dk;
    const float* last = chunk_b + (c.valid - 1) * p.Dk;  // b_L
    const bool vec = p.Dk % 4 == 0 && reinterpret_cast<uintptr_t>(p.bcum) % 16 == 0;
#pragma unroll
    for (int u = 0; u < UK; ++u) {
        const int idx = tid + u * kThreads, r = idx / segs, e0 = (idx % segs) * 8;
        const bool row = idx < kChunk * segs && r < c.valid;
        const int64_t k0 = key0 + e0;
        float b[8], bl[8];
        if (row && vec && k0 + 8 <= p.Dk) {
            load8(chunk_b + r * p.Dk + k0, b);
            load8(last + k0, bl);
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const bool in = row && k0 + e < p.Dk;
                b[e] = in ? chunk_b[r * p.Dk + k0 + e] : 0.f;
                bl[e] = in ? last[k0 + e] : 0.f;
            }
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const bool in = row && k0 + e < p.Dk;
            sc[u][e] = in ? exp_f(s == Scale::ExpB ? b[e] : bl[e] - b[e]) : 1.f;
        }
    }
}

template <int UK>
WB_HD void scale_own_keys(bf16* dst, int ld, int W, int tid, const float (&sc)[UK][8]) {
    const int segs = W / 8;
#pragma unroll
    for (int u = 0; u < UK; ++u) {
        const int idx = tid + u * kThreads, r = idx / segs, e0 = (idx % segs) * 8;
        if (idx >= kChunk * segs) break;
        float x[8];
        load8(dst + r * ld + e0, x);
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] *= sc[u][e];
        store8(dst + r * ld + e0, x);
    }
}

// Double-buffered: the step of chunk m issues the copies of chunk m + 1 before it waits for its own (issued
// one step earlier), so the loads of the next chunk overlap this chunk's state write-out and products.
template <int COLS, class Blk>
WB_HD void scan_block(Blk& blk, const Params& p, const ScanArgs& a, int64_t bh, int64_t row0, int rows, int64_t col0,
                      unsigned char* smem) {
    const ScanSmem L = scan_smem(p.Dk, COLS, rows);
    const int64_t nrows = p.Dk - row0 < rows ? p.Dk - row0 : rows;
    float* S = reinterpret_cast<float*>(smem);
    // the buffers of the m-th chunk visited (pointer arithmetic, not an array: no local memory)
    auto Xs = [&](int64_t m) { return reinterpret_cast<bf16*>(smem + L.oX + (m & 1) * L.x); };
    auto Ys = [&](int64_t m) { return reinterpret_cast<bf16*>(smem + L.oY + (m & 1) * L.y); };
    const int64_t per = p.Dk * p.Dv;
    const int64_t ncols = p.Dv - col0 < COLS ? p.Dv - col0 : COLS;
    // whether the state's rows take 8-column vector stores (bfloat16 16 bytes, float32 twice 16 bytes)
    const bool vec_out = p.Dv % 8 == 0 && col0 % 8 == 0 && reinterpret_cast<uintptr_t>(a.buf16) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(a.buf) % 16 == 0;
    auto chunk_at = [&](int64_t m) { return chunk_of(p, a.reverse ? p.N - 1 - m : m, bh); };
    // X's rows and Y's columns [col0, col0 + COLS) of the m-th chunk visited, as stored, into buffer m % 2.
    auto issue = [&](int64_t m, int tid) {
        const Chunk c = chunk_at(m);
        stage_raw(Xs(m), L.ldX, a.X + (c.bh * p.T + c.t0) * p.Dk, c.valid, p.Dk, row0, kChunk, L.Dkp, tid);
        stage_raw(Ys(m), L.ldY, a.Y + (c.bh * p.T + c.t0) * p.Dv, c.valid, p.Dv, col0, kChunk, COLS, tid);
        copy_commit();
    };
    // State element (d, e) of the tile is (row0 + d, col0 + e) of the [Dk, Dv] state.
    blk.threads([&](int tid) {
        for (int idx = tid; idx < L.Dkp * COLS; idx += kThreads) {
            const int d = idx / COLS, e = idx % COLS;
            const bool in = d < nrows && e < ncols && a.start != nullptr;
            S[d * L.ldS + e] = in ? a.start[bh * per + (row0 + d) * p.Dv + col0 + e] : 0.f;
        }
        issue(0, tid);
    });
    for (int64_t m = 0; m < p.N; ++m) {
        const Chunk c = chunk_at(m);
        blk.threads([&](int tid) {
            if (m + 1 < p.N) issue(m + 1, tid);
            constexpr int U = (kChunk * COLS / 8 + kThreads - 1) / kThreads;  // Y segments per thread
            constexpr int UK = (kChunk * kMaxDim / 8 + kThreads - 1) / kThreads;  // X segments per thread
            const bool decayed = a.s != Scale::None && p.bcum != nullptr;
            const bool scaled = decayed && !p.per_key;  // scalar decay: Y's rows; per key: X's elements
            float sc[U], ks[UK][8];
            if (scaled) own_row_scales<U>(p, c, COLS, a.s, tid, sc);
            if (decayed && p.per_key) own_key_scales<UK>(p, c, row0, L.Dkp, a.s, tid, ks);
            if (m + 1 < p.N) {
                copy_wait_prior();  // all but the group just issued
            } else {
                copy_wait();
            }
            if (scaled) scale_own_rows<U>(Ys(m), L.ldY, COLS, tid, sc);  // U = X^T diag(scale) Y
            if (decayed && p.per_key) scale_own_keys<UK>(Xs(m), L.ldX, L.Dkp, tid, ks);  // (X * scale)^T Y
            // the state out (8 columns at a time); per key, then decayed row by row (row d by exp(b_Ld)); the
            // scalar decay scales the accumulators in the next step instead
            const int64_t slot = (bh * p.N + c.n) * per + row0 * p.Dv + col0;
            constexpr int csegs = COLS / 8;
            for (int idx = tid; idx < L.Dkp * csegs; idx += kThreads) {
                const int d = idx / csegs, e0 = (idx % csegs) * 8;
                float x[8];
                load8(S + d * L.ldS + e0, x);
                if (d < nrows) {
                    const int64_t at = slot + d * p.Dv + e0;
                    if (vec_out && e0 + 8 <= ncols) {
                        store8(a.buf16 + at, x);
                        if (a.buf != nullptr) store8(a.buf + at, x);
                    } else {
                        for (int e = 0; e < 8 && e0 + e < ncols; ++e) {
                            a.buf16[at + e] = from_float<bf16>(x[e]);
                            if (a.buf != nullptr) a.buf[at + e] = x[e];
                        }
                    }
                }
                if (p.per_key && p.bcum != nullptr) {
                    const float dd = d < nrows ? exp_f(bcum_key(p, c, c.valid - 1, row0 + d)) : 1.f;
#pragma unroll
                    for (int e = 0; e < 8; ++e) x[e] *= dd;
                    store8(S + d * L.ldS + e0, x);
                }
            }
        });
        const bool scalar_decay = p.bcum != nullptr && !p.per_key;
        const float decay = scalar_decay ? exp_f(bcum_at(p, c, c.valid - 1)) : 1.f;
        blk.warps([&](int w) {
            constexpr int ct = COLS / 16;
            for (int t = w; t < (L.Dkp / 16) * ct; t += kWarps) {
                const int m0 = (t / ct) * 16, n0 = (t % ct) * 16;
                FragC acc;
                acc_load(acc, S + m0 * L.ldS + n0, L.ldS);
                if (scalar_decay) acc_scale(acc, decay);  // S *= exp(b_L), every element alike
                // S(d, e) += sum_j X[j][d] Y[j][e]: X read transposed (col-major A)
                mma_k<wmma::col_major, wmma::row_major>(acc, Xs(m), L.ldX, Ys(m), L.ldY, m0, n0, kChunk);
                acc_store(S + m0 * L.ldS + n0, acc, L.ldS);
            }
        });
    }
    blk.threads([&](int tid) {
        if (a.end == nullptr) return;
        for (int idx = tid; idx < L.Dkp * COLS; idx += kThreads) {
            const int d = idx / COLS, e = idx % COLS;
            if (d < nrows && e < ncols) a.end[bh * per + (row0 + d) * p.Dv + col0 + e] = S[d * L.ldS + e];
        }
    });
}

#undef WB_HD

}  // namespace chunk_linear
}  // namespace wb
