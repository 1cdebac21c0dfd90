// Chunked linear attention with a scalar decay: the tensor-core path, taken for bfloat16 q, k, v
// (chunk_linear.h has the math; float32 inputs keep chunk_linear.cuh's float32 path).
//
// Two kernels (plus chunk_linear.cuh's cumsum), both 8 warps, bfloat16 16x16x16 wmma tiles with float32
// accumulators, operands staged in shared memory as bfloat16 (zero-padded to multiples of 16, rows padded by
// 16 bytes against bank conflicts):
//   scan: one block per (batch x head, 32 or 64 state columns), sequential over the chunks (reversed for
//         the gradient pass). The state tile S [Dk, 32 or 64] stays in shared memory as float32. Per
//         chunk: write S to `buf16` in bfloat16 for the mixes (and to `buf` in float32 for the backward
//         glue), S *= exp(b_L), stage X and Y * scale; then S += X^T Y on tensor cores. Forward: X = K,
//         Y = V, scale exp(b_L - b). Reverse: X = Q, Y = dO, scale exp(b), start dS_T, end dS_0.
//   mix:  one block per (chunk, batch x head), every operand staged by cp.async: scores X Y^T on tensor
//         cores, masked and decayed ([j <= i] exp(b_i - b_j)) in shared memory, rounded to bfloat16, then
//         out = M Z + (R * scale) H, with M the scores or their transpose and H a chunk state or its
//         transpose (both transposes are wmma's col-major loads). The four uses (chunk_linear.h):
//           O  = A V   + (Q e^b) S_start          dQ = P K   + (dO e^b) S_start^T
//           dK = P^T Q + (V e^(bL-b)) G^T         dV = A^T dO + (K e^(bL-b)) G
// The scaled operands, the decayed scores and the chunk states are rounded to bfloat16 before their
// products (as in fla's kernels); every sum is float32.
//
// chunk_linear_tc_tiles.cuh has the building blocks (tile products, cp.async copies, staging).
//
// Written once for the GPU and the CPU: a block's work is a sequence of steps over an executor `Blk`,
// `blk.threads(f)` (f(tid) for every thread, then a barrier) and `blk.warps(f)` (f(warp) once per warp, all
// its lanes together, then a barrier: the warp-collective wmma calls). chunk_linear.cu's executor runs them
// on the GPU; tests/emulate_chunk_linear.cu runs them on the CPU over tests/emulate.h's wmma shim. No step
// touches a fragment's elements (their layout is unspecified): decay, masks and scales are applied in
// shared memory between the tensor-core steps.
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

// ---------------------------------------------------------------------------------------------------------
// The mix (see the top): out = M Z + (R * scale) H for one chunk, rows < valid, columns < D2.
// Shared memory (MixSmem): X, Y bf16 [C][D1p + 8] (one of them becomes R), scores float [C][C + 4] (the
// float result [C][D2p + 4] later), M bf16 [C][C + 8], Z bf16 [C][D2p + 8], H bf16 as stored (transposed
// or not), b float [C].
struct MixTc {
    const bf16* X = nullptr;  // scores X_i . Y_j, X and Y [B, H, T, D1]
    const bf16* Y = nullptr;
    bool mt = false;  // M = the scores' transpose
    const bf16* Z = nullptr;  // [B, H, T, D2]
    bool r_is_y = false;  // R = Y's rows (else X's)
    Scale s = Scale::None;
    const bf16* Hm = nullptr;  // [B, H, N, D1, D2], or [B, H, N, D2, D1] when ht (the scans' buf16)
    bool ht = false;
    int64_t D1 = 0, D2 = 0;
    // With W: also dot[t] = out_t . W_t (float32 out, before rounding), W [B, H, T, D2], dot [B, H, T]
    const bf16* W = nullptr;
    float* dot = nullptr;
};

// Regions: the R slot (X or Y, whichever R is made of; scaled in place into R), the other slot followed by
// the float32 scores (the two together later hold the float32 result), M, Z, H and b. At
// D1 = D2 = 128 this is 111.5 KiB: two blocks per SM.
struct MixSmem {
    int D1p, D2p, ldx, ldz, ldo, ldh, lds, ldm;
    int64_t oQ, oS, oM, oZ, oH, oB, bytes;
};

WB_HD MixSmem mix_smem(int64_t D1, int64_t D2, bool ht) {
    MixSmem L;
    L.D1p = pad16(D1);
    L.D2p = pad16(D2);
    L.ldx = L.D1p + 8;
    L.ldz = L.D2p + 8;
    L.ldo = L.D2p + 4;
    L.ldh = ht ? L.D1p + 8 : L.D2p + 8;
    L.lds = kChunk + 4;
    L.ldm = kChunk + 8;
    const int64_t slot = align128(int64_t(kChunk) * L.ldx * 2), of = int64_t(kChunk) * L.ldo * 4;
    L.oQ = slot;
    L.oS = L.oQ + slot;
    const int64_t after = L.oS + align128(int64_t(kChunk) * L.lds * 4);
    L.oM = after > L.oQ + align128(of) ? after : L.oQ + align128(of);
    L.oZ = L.oM + align128(int64_t(kChunk) * L.ldm * 2);
    L.oH = L.oZ + align128(int64_t(kChunk) * L.ldz * 2);
    L.oB = L.oH + align128(int64_t(ht ? L.D2p : L.D1p) * L.ldh * 2);
    L.bytes = L.oB + align128(kChunk * 4);
    return L;
}

// Four float32 values to four aligned outputs in one store.
WB_HD void store4(float* o, const float* f) { *reinterpret_cast<float4*>(o) = make_float4(f[0], f[1], f[2], f[3]); }
WB_HD void store4(bf16* o, const float* f) {
    union {
        uint2 u;
        bf16 h[4];
    } v;
#pragma unroll
    for (int i = 0; i < 4; ++i) v.h[i] = from_float<bf16>(f[i]);
    *reinterpret_cast<uint2*>(o) = v.u;
}

template <class Blk, typename TO>
WB_HD void mix_block(Blk& blk, const Params& p, const Chunk& c, const MixTc& m, TO* out, unsigned char* smem) {
    const MixSmem L = mix_smem(m.D1, m.D2, m.ht);
    bf16* Rs = reinterpret_cast<bf16*>(smem);  // X or Y, then R
    bf16* other = reinterpret_cast<bf16*>(smem + L.oQ);
    bf16* Xs = m.r_is_y ? other : Rs;
    bf16* Ys = m.r_is_y ? Rs : other;
    float* Of = reinterpret_cast<float*>(smem + L.oQ);  // after the scores, over the other slot and them
    float* Sf = reinterpret_cast<float*>(smem + L.oS);
    bf16* Ms = reinterpret_cast<bf16*>(smem + L.oM);
    bf16* Zs = reinterpret_cast<bf16*>(smem + L.oZ);
    bf16* Hs = reinterpret_cast<bf16*>(smem + L.oH);
    float* b = reinterpret_cast<float*>(smem + L.oB);
    // Every operand as stored, by copy16, in two groups: X and Y (the scores) waited for here, Z and H (the
    // last product) at the end of the third step; R is scaled from X's or Y's copy once the scores are done.
    blk.threads([&](int tid) {
        stage_rows_raw(p, c, Xs, L.ldx, m.X, m.D1, L.D1p, tid);
        stage_rows_raw(p, c, Ys, L.ldx, m.Y, m.D1, L.D1p, tid);
        copy_commit();
        stage_rows_raw(p, c, Zs, L.ldz, m.Z, m.D2, L.D2p, tid);
        const bf16* h = m.Hm + (c.bh * p.N + c.n) * m.D1 * m.D2;
        if (m.ht) {
            stage_raw(Hs, L.ldh, h, m.D2, m.D1, 0, L.D2p, L.D1p, tid);
        } else {
            stage_raw(Hs, L.ldh, h, m.D1, m.D2, 0, L.D1p, L.D2p, tid);
        }
        copy_commit();
        for (int r = tid; r < kChunk; r += kThreads) b[r] = bcum_at(p, c, r);
        copy_wait_prior();  // X and Y
    });
    // scores X Y^T: [C, C], Y read transposed (col-major B)
    blk.warps([&](int w) {
        constexpr int ct = kChunk / 16;
        for (int t = w; t < ct * ct; t += kWarps) {
            const int m0 = (t / ct) * 16, n0 = (t % ct) * 16;
            FragC acc;
            acc_zero(acc);
            mma_k<wmma::row_major, wmma::col_major>(acc, Xs, L.ldx, Ys, L.ldx, m0, n0, L.D1p);
            acc_store(Sf + m0 * L.lds + n0, acc, L.lds);
        }
    });
    blk.threads([&](int tid) {  // 8 elements at a time
        float x[8], bj[8];
        for (int idx = tid; idx < kChunk * (kChunk / 8); idx += kThreads) {
            const int i = idx / (kChunk / 8), j0 = (idx % (kChunk / 8)) * 8;
            load8(Sf + i * L.lds + j0, x);
            load8(b + j0, bj);
            const float bi = b[i];
#pragma unroll
            for (int e = 0; e < 8; ++e) x[e] = j0 + e <= i ? x[e] * exp_f(bi - bj[e]) : 0.f;
            store8(Ms + i * L.ldm + j0, x);
        }
        const bool decay = p.bcum != nullptr && m.s != Scale::None;
        const int segs = L.D1p / 8;
        for (int idx = tid; decay && idx < kChunk * segs; idx += kThreads) {
            const int r = idx / segs, e0 = (idx % segs) * 8;
            const float sc = exp_f(m.s == Scale::ExpB ? b[r] : b[c.valid - 1] - b[r]);
            load8(Rs + r * L.ldx + e0, x);
#pragma unroll
            for (int e = 0; e < 8; ++e) x[e] *= sc;
            store8(Rs + r * L.ldx + e0, x);  // in place: one thread per segment
        }
        copy_wait();  // Z and H
    });
    // out = M Z + R H: M and H read transposed (col-major) when asked
    blk.warps([&](int w) {
        strips(w, L.D2p / 16, [&](auto& acc, int m0, int n0) {
            constexpr int RB = std::extent<std::remove_reference_t<decltype(acc)>>::value;
            mma_scores_strip(acc, Ms, L.ldm, m.mt, Zs, L.ldz, m0, n0);
            if (m.ht) {
                mma_k_strip<RB, wmma::row_major, wmma::col_major>(acc, Rs, L.ldx, Hs, L.ldh, m0, n0, L.D1p);
            } else {
                mma_k_strip<RB, wmma::row_major, wmma::row_major>(acc, Rs, L.ldx, Hs, L.ldh, m0, n0, L.D1p);
            }
#pragma unroll
            for (int r = 0; r < RB; ++r) acc_store(Of + (m0 + 16 * r) * L.ldo + n0, acc[r], L.ldo);
        });
    });
    // out: 4 columns per thread and store where they are aligned; then the row dots out_i . W_i, a warp per
    // row (8 rows per warp), each lane 4 consecutive columns, W loaded (8 bytes per row and lane) for all 8
    // rows before the stores. (A shared-memory atomic add per 4 columns, 32 lanes on one row's sum, had cost
    // dQ's and dK's mixes 60% of their time: tools/profile_chunk_linear.cu.)
    blk.threads([&](int tid) {
        const int segs = L.D2p / 4;
        const bool vec = m.D2 % 4 == 0 && reinterpret_cast<uintptr_t>(out) % (4 * sizeof(TO)) == 0;
        const int64_t row0 = c.bh * p.T + c.t0;
        constexpr int RW = kChunk / kWarps;
        static_assert(kMaxDim <= 4 * 32, "a lane's 4 columns cover a row");
        const int warp = tid / 32, lane = tid % 32, e0 = 4 * lane;
        const bool wvec = m.D2 % 4 == 0 && reinterpret_cast<uintptr_t>(m.W) % 8 == 0;
        float w[RW][4];
        if (m.W != nullptr) {
#pragma unroll
            for (int r = 0; r < RW; ++r) {
                const int i = warp + kWarps * r;
                const bf16* src = m.W + (row0 + i) * m.D2 + e0;
                if (i < c.valid && wvec && e0 < m.D2) {
                    union {
                        uint2 u;
                        bf16 h[4];
                    } v;
                    v.u = *reinterpret_cast<const uint2*>(src);
#pragma unroll
                    for (int e = 0; e < 4; ++e) w[r][e] = to_float(v.h[e]);
                } else {
#pragma unroll
                    for (int e = 0; e < 4; ++e) w[r][e] = i < c.valid && e0 + e < m.D2 ? to_float(src[e]) : 0.f;
                }
            }
        }
        for (int idx = tid; idx < c.valid * segs; idx += kThreads) {
            const int i = idx / segs, s0 = (idx % segs) * 4;
            TO* o = out + (row0 + i) * m.D2 + s0;
            const float* f = Of + i * L.ldo + s0;
            if (vec && s0 < m.D2) {
                store4(o, f);
            } else {
                for (int e = 0; e < 4 && s0 + e < m.D2; ++e) o[e] = from_float<TO>(f[e]);
            }
        }
        if (m.W == nullptr) return;
#pragma unroll
        for (int r = 0; r < RW; ++r) {
            const int i = warp + kWarps * r;  // the same for the warp's lanes: all of them reach the sum
            if (i >= c.valid) break;
            float part = 0.f;
            if (e0 < L.D2p) {  // columns past D2 are zeros in Of and in w
                const float4 f = *reinterpret_cast<const float4*>(Of + i * L.ldo + e0);
                part = f.x * w[r][0] + f.y * w[r][1] + f.z * w[r][2] + f.w * w[r][3];
            }
            warp_sum_store(m.dot + row0 + i, part, lane);
        }
    });
}

// The four mixes (chunk_linear.h).
inline const bf16* states16(const Params& p) { return static_cast<const bf16*>(p.states16); }
inline const bf16* gstates16(const Params& p) { return static_cast<const bf16*>(p.gstates16); }
inline MixTc mix_tc_output(const Params& p) {
    const auto* q = static_cast<const bf16*>(p.q);
    return {q, static_cast<const bf16*>(p.k), false, static_cast<const bf16*>(p.v), false, Scale::ExpB, states16(p),
            false, p.Dk, p.Dv};
}
inline MixTc mix_tc_dq(const Params& p) {
    const auto* d = static_cast<const bf16*>(p.dout);
    return {d, static_cast<const bf16*>(p.v), false, static_cast<const bf16*>(p.k), false, Scale::ExpB, states16(p),
            true, p.Dv, p.Dk};
}
inline MixTc mix_tc_dk(const Params& p) {
    const auto* d = static_cast<const bf16*>(p.dout);
    return {d, static_cast<const bf16*>(p.v), true, static_cast<const bf16*>(p.q), true, Scale::ExpLastMinusB,
            gstates16(p), true, p.Dv, p.Dk};
}
inline MixTc mix_tc_dv(const Params& p) {
    const auto* q = static_cast<const bf16*>(p.q);
    return {q, static_cast<const bf16*>(p.k), true, static_cast<const bf16*>(p.dout), true, Scale::ExpLastMinusB,
            gstates16(p), false, p.Dk, p.Dv};
}

// ---------------------------------------------------------------------------------------------------------
// The launch sequences of the bfloat16 path, over a launcher `L` with cumsum(), scan(ScanArgs) and
// mix<TO>(MixTc, TO*). The mixes read the bfloat16 chunk states (states16, gstates16) and write bfloat16
// (o, dq16, dk16, dv16; the dQ and dK mixes also the rows' q . dq and k . dk). The backward pass
// recomputes the chunk states and also writes them in float32 (states), for the glue's log-decay
// gradient <G(n), S_end(n)>, which takes G in bfloat16 (gstates16), as the dK and dV products did.
template <class L>
void run_forward_tc(L& l, const Params& p) {
    const auto* k = static_cast<const bf16*>(p.k);
    const auto* v = static_cast<const bf16*>(p.v);
    l.cumsum();
    auto* s16 = static_cast<bf16*>(p.states16);
    l.scan(ScanArgs{k, Scale::ExpLastMinusB, v, s16, nullptr, p.s0, p.sT, false});  // S_start, S_T
    l.template mix<bf16>(mix_tc_output(p), static_cast<bf16*>(p.o));
}

template <class L>
void run_backward_tc(L& l, const Params& p) {
    const auto* q = static_cast<const bf16*>(p.q);
    const auto* k = static_cast<const bf16*>(p.k);
    const auto* v = static_cast<const bf16*>(p.v);
    const auto* dout = static_cast<const bf16*>(p.dout);
    l.cumsum();
    auto* s16 = static_cast<bf16*>(p.states16);
    auto* g16 = static_cast<bf16*>(p.gstates16);
    // Without a decay (plain linear attention) there is no log-decay gradient: no float32 states, row dots
    // or <G(n), S_end(n)>.
    const bool decay = p.g != nullptr;
    l.scan(ScanArgs{k, Scale::ExpLastMinusB, v, s16, decay ? p.states : nullptr, p.s0, p.sT, false});  // S_start
    l.scan(ScanArgs{q, Scale::ExpB, dout, g16, nullptr, p.dsT, p.ds0, true});  // G (bfloat16 only), dS_0
    MixTc dq = mix_tc_dq(p), dk = mix_tc_dk(p);
    if (decay) {
        dq.W = q;  // q_t . dq_t and k_t . dk_t for the log-decay gradient, from float32 dq, dk
        dq.dot = p.qdq;
        dk.W = k;
        dk.dot = p.kdk;
    }
    l.template mix<bf16>(dq, static_cast<bf16*>(p.dq16));
    l.template mix<bf16>(dk, static_cast<bf16*>(p.dk16));
    l.template mix<bf16>(mix_tc_dv(p), static_cast<bf16*>(p.dv16));
    if (decay) l.gdot();  // <G(n), S_end(n)> per row, for the glue's dg
}

#undef WB_HD

}  // namespace chunk_linear
}  // namespace wb
