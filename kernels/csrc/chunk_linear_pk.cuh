// Chunked linear attention with one log-decay per key (GLA's gates): the tensor-core mixes, for bfloat16
// q, k, v (chunk_linear.h has the shapes; kernels/src/chunk_linear.rs the math). The chunk states come from
// chunk_linear_scan.cuh's scan, which with p.per_key takes X decayed by the cumsum and decays the state's rows.
//
// With b the within-chunk cumulative log-decays [C, Dk] (non-increasing down each column), the ratio of a
// pair j <= i is exp(b_i - b_j), one per key, inside every sum over keys. The chunk is cut into 4 sub-chunks
// of 16 rows (one wmma tile each way), and every pair goes through a reference row r of its row block I
// (r = 16 I) or column block J (r = 16 J + 15): exp(b_i - b_j) = exp(b_i - b_r) exp(b_r - b_j), one factor
// folded into each operand of a tensor-core product; every row block I (or column block J) needs its own
// scaled copy of the other operand, its own sub-chunk's rows included (16 + 32 + 48 + 64 = 160 rows).
//   - A pair in different sub-chunks (j in J < I, i in I): both factors are <= 1.
//   - A pair in the same sub-chunk: one factor is <= 1, the other >= 1, at most exp of the sub-chunk's decay
//     over 15 steps. While that stays below exp(kDiagMaxExp) for every key of every sub-chunk (GLA's gates,
//     logsigmoid / 16, decay a sub-chunk by a few units at most) the diagonal tiles are tensor-core products
//     too. Past it (a chunk whose decays would overflow the factors) the block falls back to the exact
//     ratios, summed over keys in float32 (FMA, no tensor cores): a flag in shared memory, set by whichever
//     thread scaled an element past the bound, read by all after the next barrier, so the branch is uniform.
// The four mixes, per chunk (S: the chunk's starting state, G: dLoss/dS_end, both [Dk, Dv], bfloat16):
//   scores family (per-key scores A_ij = sum_d q_id k_jd exp(b_id - b_jd), j <= i):
//     O  = A V + (Q * exp(b)) S                       R = Q scaled elementwise; writes M = A masked, bf16
//     dV = A^T dO + (K * exp(b_L - b)) G              chunk_linear_tc.cuh's mix over the forward's M and
//                                                     the cumsum's K * exp(b_L - b) (mix_pk_dv)
//   gradient family (plain scores P_ij = dO_i . v_j, j <= i; the decay inside the sum over pairs):
//     dQ_id = sum_j P_ij k_jd exp(b_id - b_jd) + exp(b_id) (dO S^T)_id            (row blocks I, r = 16 I)
//     dK_jd = sum_i P_ij q_id exp(b_id - b_jd) + exp(b_Ld - b_jd) (V G^T)_jd      (column blocks J, r = 16 J + 15)
//   and, for the log-decay gradient, q * dq - k * dk elementwise in float32 (the dQ mix writes q * dq to
//   p.qdq, the dK mix k * dk to p.kdk). dg_td is formed from them as the scalar case's glue does, per
//   key (chunk_linear.cuh's dg_key_thread): the within-chunk reverse cumsum of (q * dq - k * dk)_.d plus
//   sum_e G(n)_de S_end(n)_de, with the same bfloat16 G the dK product used, so that the two cancel to
//   float32 rounding under strong decay.
// The elementwise steps (scaled copies, exact diagonal sums, the gradient family's last step) take 8 keys
// at a time from shared memory, with the decays staged by cp.async like the operands: measured per block
// step (tools/profile_chunk_linear.cu), scalar loads and a global load per element had made them most of a
// mix's time.
// Written for the GPU and the CPU over the executor `Blk` of chunk_linear_tc.cuh.
#pragma once

#include "chunk_linear_tc.cuh"

namespace wb {
namespace chunk_linear {

#define WB_HD __host__ __device__ __forceinline__

constexpr int kSub = 16;  // sub-chunk rows: one wmma tile
constexpr int kSubs = kChunk / kSub;
constexpr int kCopyRows = kSub * kSubs * (kSubs + 1) / 2;  // rows of the scaled copies (160)
// The largest exponent a diagonal tile's factor may take (exp(40) = 2.4e17: bfloat16 and float32 hold
// 1e38); a larger one makes the block take the exact diagonal sums.
constexpr float kDiagMaxExp = 40.0f;

// Where the scaled copy for row block I (0..3) starts (scores family and dQ: rows j < 16 (I + 1) of K or
// Z), and for column block J (0..3) (dK: rows i >= 16 J of Q).
WB_HD int copy_row_block(int I) { return kSub * I * (I + 1) / 2; }  // 0, 16, 48, 96
WB_HD int copy_col_block(int J) {  // 0, 64, 112, 144
    int at = 0;
    for (int x = 0; x < J; ++x) at += kChunk - kSub * x;
    return at;
}
// The row block of copy row v, and the column block.
WB_HD int row_block_of(int v) { return v < copy_row_block(2) ? (v < copy_row_block(1) ? 0 : 1) : v < copy_row_block(3) ? 2 : 3; }
WB_HD int col_block_of(int v) { return v < copy_col_block(2) ? (v < copy_col_block(1) ? 0 : 1) : v < copy_col_block(3) ? 2 : 3; }

struct MixPk {
    bool grad = false;  // the gradient family (dQ, dK); else the scores family (O, dV)
    const bf16* X = nullptr;  // scores X_i . Y_j: Q, K (scores family) or dO, V (gradient family)
    const bf16* Y = nullptr;
    bool mt = false;  // dK: rows are the scores' columns
    bool r_is_y = false;  // R = Y's rows (else X's)
    const bf16* Z = nullptr;  // V, dO (scores family, D2 = Dv) or K, Q (gradient family, D2 = Dk)
    Scale s = Scale::None;  // scores family: R's scale; gradient family: the state term's scale
    const bf16* Hm = nullptr;  // [B, H, N, Dk, Dv] (the scans' buf16)
    int64_t D1 = 0, D2 = 0;  // the scores' width, the output's width
    const bf16* W = nullptr;  // gradient family: q (dQ) or k (dK), for el = W * out
    float* el = nullptr;  // gradient family: q * dq (dQ, p.qdq) or k * dk (dK, p.kdk), [B, H, T, Dk]
    bf16* Mout = nullptr;  // O: the masked scores M out, [B, H, N, C, C] (p.scores16), for dV
};

// Regions (bytes), every one 128-byte aligned. Scores family: R, the other staged slot, b, then {the scaled
// copies QT [C] and KT [160]} later the float32 result, scores, M, Z, H, the flag. Gradient family: R
// (later W, the q or k that el multiplies, when it fits there; else W after the result), then {the other
// slot and the scores} later the partial products [C], b, M, Z, H later the scaled copies ZT [160], the
// flag, the float32 result. At Dk = Dv = 128: 203.6 KiB (scores), 185.6 KiB (gradient): one block per SM;
// at 64: 110.6 and 109.6 KiB, two.
struct PkSmem {
    int D1p, D2p, Dkp, ldx, ldz, ldc, ldb, ldo, lds, ldm, ldh, ldw;
    int64_t oOther, oB, oC, oS, oM, oZ, oH, oO, oW, oF, bytes;
};

WB_HD int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

WB_HD PkSmem pk_smem(const Params& p, const MixPk& m) {
    PkSmem L;
    L.D1p = pad16(m.D1);
    L.D2p = pad16(m.D2);
    L.Dkp = pad16(p.Dk);
    L.ldx = L.D1p + 8;
    L.ldz = L.D2p + 8;
    L.ldc = L.Dkp + 8;  // the scaled copies (of Q, K or Z: Dk wide)
    L.ldb = L.Dkp + 4;
    L.ldo = L.D2p + 4;
    L.lds = kChunk + 4;
    L.ldm = kChunk + 8;
    L.ldh = pad16(p.Dv) + 8;  // H as stored, [Dk][Dv]
    L.ldw = L.Dkp + 8;
    const int64_t slot = align128(int64_t(kChunk) * L.ldx * 2);
    const int64_t scores = align128(int64_t(kChunk) * L.lds * 4);
    const int64_t b = align128(int64_t(kChunk) * L.ldb * 4);
    const int64_t copies = align128(int64_t(kCopyRows) * L.ldc * 2);
    const int64_t result = align128(int64_t(kChunk) * L.ldo * 4);
    const int64_t msize = align128(int64_t(kChunk) * L.ldm * 2);
    const int64_t zsize = align128(int64_t(kChunk) * L.ldz * 2);
    const int64_t hsize = align128(int64_t(L.Dkp) * L.ldh * 2);
    const int64_t wsize = align128(int64_t(kChunk) * L.ldw * 2);
    L.oOther = slot;
    if (!m.grad) {
        L.oB = L.oOther + slot;
        L.oC = L.oB + b;  // QT at oC, KT after it; later the result
        L.oO = L.oC;
        L.oS = L.oC + max64(align128(int64_t(kChunk) * L.ldc * 2) + copies, result);
        L.oM = L.oS + scores;
        L.oZ = L.oM + msize;
        L.oH = L.oZ + zsize;
        L.oF = L.oH + hsize;
    } else {
        L.oS = L.oOther + slot;  // the other slot and the scores; later the partials at oOther
        L.oB = L.oOther + max64(slot + scores, align128(int64_t(kChunk) * L.ldo * 4));
        L.oM = L.oB + b;
        L.oZ = L.oM + msize;
        L.oH = L.oZ + zsize;
        L.oC = L.oH;  // H is read by the first product only; the scaled copies are written after it
        L.oF = L.oH + max64(hsize, copies);
    }
    const int64_t end = L.oF + 128 + align128(kChunk * 4);  // the fallback flag (an int), then P's diagonal
    L.oW = 0;
    L.bytes = end;
    if (m.grad) {
        L.oO = end;
        L.bytes = end + result;
        if (wsize > slot) {  // W does not fit in the R slot
            L.oW = L.bytes;
            L.bytes += wsize;
        }
    }
    return L;
}

// Whether rows of D bfloat16 (and float32) values at `base` take 8-wide vector stores.
WB_HD bool rows_vec8_out(const void* base, int64_t D) { return D % 8 == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0; }

// M = the float32 scores S rounded to bfloat16, zero above the diagonal (j > i), 8 columns at a time.
// diag (the gradient family): the diagonal goes to diag[i] (rounded to bfloat16 as M would hold it) and M
// keeps only j < i.
WB_HD void mask_scores(const float* S, int lds, bf16* M, int ldm, int tid, float* diag = nullptr) {
    for (int idx = tid; idx < kChunk * (kChunk / 8); idx += kThreads) {
        const int i = idx / (kChunk / 8), j0 = (idx % (kChunk / 8)) * 8;
        float x[8];
        load8(S + i * lds + j0, x);
        if (diag != nullptr && i >= j0 && i < j0 + 8) diag[i] = to_float(from_float<bf16>(x[i - j0]));
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = j0 + e < i || (j0 + e == i && diag == nullptr) ? x[e] : 0.f;
        store8(M + i * ldm + j0, x);
    }
}

// The elementwise steps work on 8 keys (or columns) at a time: every row stride below is a multiple of 16
// bytes and every padded width a multiple of 16, so each 8-wide load or store is one or two 16-byte words.
template <class Blk>
WB_HD void mix_pk_block(Blk& blk, const Params& p, const Chunk& c, const MixPk& m, bf16* out, unsigned char* smem) {
    const PkSmem L = pk_smem(p, m);
    bf16* Rs = reinterpret_cast<bf16*>(smem);
    bf16* other = reinterpret_cast<bf16*>(smem + L.oOther);
    bf16* Xs = m.r_is_y ? other : Rs;
    bf16* Ys = m.r_is_y ? Rs : other;
    float* Bs = reinterpret_cast<float*>(smem + L.oB);
    bf16* Cs = reinterpret_cast<bf16*>(smem + L.oC);  // scores family: QT [C], then KT [96]; gradient: ZT [96]
    bf16* KT = Cs + kChunk * L.ldc;
    float* Sf = reinterpret_cast<float*>(smem + L.oS);
    bf16* Ms = reinterpret_cast<bf16*>(smem + L.oM);
    bf16* Zs = reinterpret_cast<bf16*>(smem + L.oZ);
    bf16* Hs = reinterpret_cast<bf16*>(smem + L.oH);
    float* Of = reinterpret_cast<float*>(smem + L.oO);
    float* Tf = reinterpret_cast<float*>(smem + L.oOther);  // gradient family: partials [48], after the scores
    bf16* Ws = reinterpret_cast<bf16*>(smem + L.oW);  // gradient family: W, in the R slot when oW is 0
    int* exact = reinterpret_cast<int*>(smem + L.oF);  // set: the diagonal tiles take the exact sums
    float* pdiag = reinterpret_cast<float*>(smem + L.oF + 128);  // gradient family: P_ii (bf16-rounded)
    const int segs = L.Dkp / 8;  // 8-key segments of a row
    const int64_t row0 = c.bh * p.T + c.t0;
    const bf16* W = m.grad ? m.W + row0 * p.Dk : nullptr;
    auto brow = [&](int r) { return Bs + r * L.ldb; };

    // The copies in two groups: what the second step needs first (scores family: X, Y, b; gradient family:
    // X, Y, H), waited for here; the rest (Z and H, or Z, b and W) lands during the second step and is waited
    // for at its end. (With one block per SM at head dim 128 nothing else hid the staging's 10K cycles.)
    blk.threads([&](int tid) {
        const bf16* h = m.Hm + (c.bh * p.N + c.n) * p.Dk * p.Dv;
        if (tid == 0) *exact = 0;
        stage_rows_raw(p, c, Xs, L.ldx, m.X, m.D1, L.D1p, tid);
        stage_rows_raw(p, c, Ys, L.ldx, m.Y, m.D1, L.D1p, tid);
        if (m.grad) {
            stage_raw(Hs, L.ldh, h, p.Dk, p.Dv, 0, L.Dkp, pad16(p.Dv), tid);
        } else {
            stage_f32_rows(Bs, L.ldb, p.bcum + row0 * p.Dk, c.valid, p.Dk, kChunk, L.Dkp, tid);  // rows past: b_L
        }
        copy_commit();
        stage_rows_raw(p, c, Zs, L.ldz, m.Z, m.D2, L.D2p, tid);
        if (m.grad) {
            stage_f32_rows(Bs, L.ldb, p.bcum + row0 * p.Dk, c.valid, p.Dk, kChunk, L.Dkp, tid);
            if (L.oW != 0) stage_raw(Ws, L.ldw, W, c.valid, p.Dk, 0, kChunk, L.Dkp, tid);
        } else {
            stage_raw(Hs, L.ldh, h, p.Dk, p.Dv, 0, L.Dkp, pad16(p.Dv), tid);
        }
        copy_commit();
        copy_wait_prior();  // the first group
    });

    if (!m.grad) {
        // Scores family. QT: Q's row block I scaled by exp(b_i - b_r), r = 16 I; KT: for each I, rows
        // j < 16 (I + 1) of K scaled by exp(b_r - b_j).
        const bf16* Q = Xs;
        const bf16* K = Ys;
        blk.threads([&](int tid) {
            float x[8], bx[8], by[8];
            bool over = false;
            for (SegWalk sw(tid, segs); sw.r < kChunk; sw.next()) {
                const int i = sw.r, d0 = sw.s * 8;
                load8(Q + i * L.ldx + d0, x);
                load8(brow(i) + d0, bx);
                load8(brow((i / kSub) * kSub) + d0, by);
#pragma unroll
                for (int e = 0; e < 8; ++e) x[e] *= exp_f(bx[e] - by[e]);
                store8(Cs + i * L.ldc + d0, x);
            }
            for (SegWalk sw(tid, segs); sw.r < kCopyRows; sw.next()) {
                const int v = sw.r, d0 = sw.s * 8;
                const int I = row_block_of(v);
                const int j = v - copy_row_block(I);
                load8(K + j * L.ldx + d0, x);
                load8(brow(I * kSub) + d0, bx);
                load8(brow(j) + d0, by);
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    over |= bx[e] - by[e] > kDiagMaxExp;
                    x[e] *= exp_f(bx[e] - by[e]);
                }
                store8(KT + v * L.ldc + d0, x);
            }
            if (over) *exact = 1;
        });
        // the score tiles QT_I KT_I^T, J <= I (10; the diagonal ones only without the fallback)
        blk.warps([&](int w) {
            const bool diag = *exact == 0;
            for (int t = w; t < kSubs * (kSubs + 1) / 2; t += kWarps) {
                int I = 0, J = t;
                while (J > I) {
                    J -= I + 1;
                    ++I;
                }
                if (J == I && !diag) continue;
                FragC acc;
                acc_zero(acc);
                mma_k<wmma::row_major, wmma::col_major>(acc, Cs, L.ldc, KT + copy_row_block(I) * L.ldc, L.ldc,
                                                        I * kSub, J * kSub, L.Dkp);
                acc_store(Sf + I * kSub * L.lds + J * kSub, acc, L.lds);
            }
            copy_wait();  // Z and H (the barrier publishes them)
        });
        // the fallback: the pairs j <= i of each diagonal block (136 of them), exactly, numbered row by row;
        // the entries above the diagonal are never read (M masks them)
        if (*exact != 0) blk.threads([&](int tid) {
            constexpr int tri = kSub * (kSub + 1) / 2;
            float bx[8], by[8];
            for (int idx = tid; idx < kSubs * tri; idx += kThreads) {
                const int blk0 = (idx / tri) * kSub;
                int r = 0, pr = idx % tri;
                while (pr > r) pr -= ++r;
                const int i = blk0 + r, j = blk0 + pr;
                float acc = 0.f, q[8], k[8];
                for (int d0 = 0; d0 < L.Dkp; d0 += 8) {
                    load8(Q + i * L.ldx + d0, q);
                    load8(K + j * L.ldx + d0, k);
                    load8(brow(i) + d0, bx);
                    load8(brow(j) + d0, by);
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc += q[e] * k[e] * exp_f(bx[e] - by[e]);
                }
                Sf[i * L.lds + j] = acc;
            }
        });
        // M = the masked scores in bfloat16; R scaled elementwise in place
        blk.threads([&](int tid) {
            float x[8], bx[8], bl[8] = {};
            mask_scores(Sf, L.lds, Ms, L.ldm, tid);
            for (SegWalk sw(tid, segs); sw.r < c.valid; sw.next()) {
                const int r = sw.r, d0 = sw.s * 8;
                load8(Rs + r * L.ldx + d0, x);
                load8(brow(r) + d0, bx);
                if (m.s != Scale::ExpB) load8(brow(c.valid - 1) + d0, bl);
#pragma unroll
                for (int e = 0; e < 8; ++e) x[e] *= exp_f(m.s == Scale::ExpB ? bx[e] : bl[e] - bx[e]);
                store8(Rs + r * L.ldx + d0, x);
            }
        });
        // out = M Z + R H (the result over the scaled copies)
        blk.warps([&](int w) {
            strips(w, L.D2p / 16, [&](auto& acc, int m0, int n0) {
                constexpr int RB = std::extent<std::remove_reference_t<decltype(acc)>>::value;
                mma_scores_strip(acc, Ms, L.ldm, m.mt, Zs, L.ldz, m0, n0);
                mma_k_strip<RB, wmma::row_major, wmma::row_major>(acc, Rs, L.ldx, Hs, L.ldh, m0, n0, L.Dkp);
#pragma unroll
                for (int r = 0; r < RB; ++r) acc_store(Of + (m0 + 16 * r) * L.ldo + n0, acc[r], L.ldo);
            });
        });
        blk.threads([&](int tid) {
            if (m.Mout != nullptr) {  // the masked scores, for the backward pass's dV
                bf16* mo = m.Mout + (c.bh * p.N + c.n) * kChunk * kChunk;
                for (int idx = tid; idx < kChunk * (kChunk / 8); idx += kThreads) {
                    const int i = idx / (kChunk / 8), j0 = (idx % (kChunk / 8)) * 8;
                    *reinterpret_cast<uint4*>(mo + i * kChunk + j0) = *reinterpret_cast<const uint4*>(Ms + i * L.ldm + j0);
                }
            }
            bf16* o = out + row0 * m.D2;
            const bool vec = rows_vec8_out(o, m.D2);
            const int osegs = L.D2p / 8;
            float x[8];
            for (SegWalk sw(tid, osegs); sw.r < c.valid; sw.next()) {
                const int i = sw.r, e0 = sw.s * 8;
                load8(Of + i * L.ldo + e0, x);
                if (vec && e0 + 8 <= m.D2) {
                    store8(o + i * m.D2 + e0, x);
                } else {
                    for (int e = 0; e < 8 && e0 + e < m.D2; ++e) o[i * m.D2 + e0 + e] = from_float<bf16>(x[e]);
                }
            }
        });
        return;
    }

    // Gradient family. P = X Y^T (dO V^T) and the state term R H^T, both on tensor cores.
    blk.warps([&](int w) {
        constexpr int st = kChunk / 16;
        const int ct = L.D2p / 16;
        for (int t = w; t < st * st + st * ct; t += kWarps) {
            FragC acc;
            acc_zero(acc);
            if (t < st * st) {
                const int m0 = (t / st) * 16, n0 = (t % st) * 16;
                mma_k<wmma::row_major, wmma::col_major>(acc, Xs, L.ldx, Ys, L.ldx, m0, n0, L.D1p);
                acc_store(Sf + m0 * L.lds + n0, acc, L.lds);
            } else {
                const int u = t - st * st, m0 = (u / ct) * 16, n0 = (u % ct) * 16;
                mma_k<wmma::row_major, wmma::col_major>(acc, Rs, L.ldx, Hs, L.ldh, m0, n0, L.D1p);
                acc_store(Of + m0 * L.ldo + n0, acc, L.ldo);
            }
        }
        copy_wait();  // Z, b and W (the barrier publishes them)
    });
    // M = P masked in bfloat16; the scaled copies of Z: per row block I (dQ: rows j < 16 (I + 1),
    // exp(b_r - b_j), r = 16 I) or per column block J (dK: rows i >= 16 J, exp(b_i - b_r), r = 16 J + 15).
    // The R slot is free from here: W's copy into it starts now and lands before the last step.
    blk.threads([&](int tid) {
        if (L.oW == 0) stage_raw(Ws, L.ldw, W, c.valid, p.Dk, 0, kChunk, L.Dkp, tid);
        mask_scores(Sf, L.lds, Ms, L.ldm, tid, pdiag);
        float x[8], bx[8], by[8];
        bool over = false;
        for (SegWalk sw(tid, segs); sw.r < kCopyRows; sw.next()) {
            const int v = sw.r, d0 = sw.s * 8;
            int row, hi, lo;  // the copy of Z's `row`, scaled by exp(b_hi - b_lo)
            if (!m.mt) {
                const int I = row_block_of(v);
                row = v - copy_row_block(I), hi = I * kSub, lo = row;
            } else {
                const int J = col_block_of(v);
                row = v - copy_col_block(J) + kSub * J, hi = row, lo = kSub * J + kSub - 1;
            }
            load8(Zs + row * L.ldz + d0, x);
            load8(brow(hi) + d0, bx);
            load8(brow(lo) + d0, by);
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                over |= bx[e] - by[e] > kDiagMaxExp;
                x[e] *= exp_f(bx[e] - by[e]);
            }
            store8(Cs + v * L.ldc + d0, x);
        }
        if (over) *exact = 1;
    });
    // the partial products, 16 rows per block (over the other slot and the scores), the diagonal tile
    // included unless the block falls back to the exact diagonal sums
    blk.warps([&](int w) {
        const int ct = L.D2p / 16;
        const int diag = *exact == 0 ? kSub : 0;
        for (int t = w; t < kSubs * ct; t += kWarps) {
            const int blkno = t / ct, n0 = (t % ct) * 16;
            if (!m.mt && blkno == 0 && diag == 0) continue;  // nothing off the diagonal
            if (m.mt && blkno == kSubs - 1 && diag == 0) continue;
            FragC acc;
            acc_zero(acc);
            if (!m.mt) {  // dQ, row block I: P[I, j < 16 I + diag] ZT_I
                const int I = blkno;
                mma_k<wmma::row_major, wmma::row_major>(acc, Ms, L.ldm, Cs + copy_row_block(I) * L.ldc, L.ldc,
                                                        I * kSub, n0, I * kSub + diag);
            } else {  // dK, column block J: P[i >= 16 (J + 1) - diag, J]^T ZT_J
                const int J = blkno, i0 = kSub * (J + 1) - diag;
                mma_k<wmma::col_major, wmma::row_major>(acc, Ms + i0 * L.ldm, L.ldm,
                                                        Cs + (copy_col_block(J) + kSub - diag) * L.ldc, L.ldc, J * kSub,
                                                        n0, kChunk - i0);
            }
            acc_store(Tf + blkno * kSub * L.ldo + n0, acc, L.ldo);
        }
        copy_wait();  // W (this thread's copies; the barrier publishes them)
    });
    // out = the state term scaled + the partial products scaled (+ the diagonal blocks exactly, in the
    // fallback) + the pairs (i, i); el = W out
    const bool diag_exact = *exact != 0;
    blk.threads([&](int tid) {
        bf16* o = out + row0 * p.Dk;
        float* el = m.el + row0 * p.Dk;
        const bool vec = rows_vec8_out(o, p.Dk) && rows_vec8_out(el, p.Dk);
        float acc[8], bi[8], x[8], bx[8];
        for (SegWalk sw(tid, segs); sw.r < c.valid; sw.next()) {
            const int i = sw.r, d0 = sw.s * 8, blk0 = (i / kSub) * kSub;
            load8(brow(i) + d0, bi);
            load8(Of + i * L.ldo + d0, acc);
            if (!m.mt) {  // dQ row i
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[e] *= exp_f(bi[e]);
                if (blk0 > 0 || !diag_exact) {
                    load8(Tf + i * L.ldo + d0, x);
                    load8(brow(blk0) + d0, bx);
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[e] += exp_f(bi[e] - bx[e]) * x[e];
                }
                for (int j = blk0; diag_exact && j < i; ++j) {
                    const float mv = to_float(Ms[i * L.ldm + j]);
                    load8(Zs + j * L.ldz + d0, x);
                    load8(brow(j) + d0, bx);
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[e] += mv * x[e] * exp_f(bi[e] - bx[e]);
                }
            } else {  // dK row i (a column of P)
                load8(brow(c.valid - 1) + d0, bx);
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[e] *= exp_f(bx[e] - bi[e]);
                if (blk0 < kChunk - kSub || !diag_exact) {
                    load8(Tf + i * L.ldo + d0, x);
                    load8(brow(blk0 + kSub - 1) + d0, bx);
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[e] += exp_f(bx[e] - bi[e]) * x[e];
                }
                for (int r = i + 1; diag_exact && r < blk0 + kSub; ++r) {
                    const float mv = to_float(Ms[r * L.ldm + i]);
                    load8(Zs + r * L.ldz + d0, x);
                    load8(brow(r) + d0, bx);
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[e] += mv * x[e] * exp_f(bx[e] - bi[e]);
                }
            }
            {  // the pair (i, i), ratio 1, outside the products: q.dq - k.dk then cancels it exactly, as dg needs
                const float pv = pdiag[i];
                load8(Zs + i * L.ldz + d0, x);
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[e] = fmaf(pv, x[e], acc[e]);
            }
            load8(Ws + i * L.ldw + d0, x);
#pragma unroll
            for (int e = 0; e < 8; ++e) x[e] *= acc[e];  // el = W * out, from float32 out
            if (vec && d0 + 8 <= p.Dk) {
                store8(o + i * p.Dk + d0, acc);
                store8(el + i * p.Dk + d0, x);
            } else {
                for (int e = 0; e < 8 && d0 + e < p.Dk; ++e) {
                    o[i * p.Dk + d0 + e] = from_float<bf16>(acc[e]);
                    el[i * p.Dk + d0 + e] = x[e];
                }
            }
        }
    });
}

// The four mixes (top of the file).
inline MixPk mix_pk_output(const Params& p) {
    MixPk m;
    m.X = static_cast<const bf16*>(p.q);
    m.Y = static_cast<const bf16*>(p.k);
    m.Z = static_cast<const bf16*>(p.v);
    m.s = Scale::ExpB;
    m.Hm = states16(p);
    m.D1 = p.Dk;
    m.D2 = p.Dv;
    m.Mout = static_cast<bf16*>(p.scores16);
    return m;
}
// dV = M^T dO + (K e^(bL-b)) G, the forward's masked scores M (p.scores16) and the cumsum's K e^(bL-b)
// (p.kg16): chunk_linear_tc.cuh's mix with precomputed scores, two blocks per SM at head dim 128. (Its
// per-key mix, which recomputed M, took 0.58 ms at B 8, H 16, T 2048, Dk = Dv = 128, half of it the exact
// within-sub-chunk sums.)
inline MixTc mix_pk_dv(const Params& p) {
    MixTc m = mix_tc_dv(p);
    m.Y = static_cast<const bf16*>(p.kg16);  // R (r_is_y)
    m.s = Scale::None;
    m.Mg = static_cast<const bf16*>(p.scores16);
    return m;
}
inline MixPk mix_pk_dq(const Params& p) {
    MixPk m;
    m.grad = true;
    m.X = static_cast<const bf16*>(p.dout);
    m.Y = static_cast<const bf16*>(p.v);
    m.Z = static_cast<const bf16*>(p.k);
    m.s = Scale::ExpB;
    m.Hm = states16(p);
    m.D1 = p.Dv;
    m.D2 = p.Dk;
    m.W = static_cast<const bf16*>(p.q);
    m.el = p.qdq;
    return m;
}
inline MixPk mix_pk_dk(const Params& p) {
    MixPk m = mix_pk_dq(p);
    m.mt = true;
    m.r_is_y = true;
    m.Z = static_cast<const bf16*>(p.q);
    m.s = Scale::ExpLastMinusB;
    m.Hm = gstates16(p);
    m.W = static_cast<const bf16*>(p.k);
    m.el = p.kdk;
    return m;
}

// Whether every per-key mix of these head dims fits in a block's shared memory (chunk_linear.h's fits).
inline bool pk_fits(int64_t Dk, int64_t Dv) {
    Params p;
    p.Dk = Dk;
    p.Dv = Dv;
    int64_t most = 0;
    for (const MixPk& m : {mix_pk_output(p), mix_pk_dq(p), mix_pk_dk(p)}) most = max64(most, pk_smem(p, m).bytes);
    return most <= kMaxSmemBytes && mix_smem(Dk, Dv, false).bytes <= kMaxSmemBytes;
}

// The launch sequences with per-key decays, over a launcher `L` with cumsum(), scan(ScanArgs),
// mix_pk(MixPk, bf16*) and mix<bf16>(MixTc, bf16*). The cumsum writes the scans' decayed X (p.kg16; p.qg16, which the backward pass
// needs, only where it is set).
template <class L>
void run_forward_pk(L& l, const Params& p) {
    l.cumsum();  // also kg16
    l.scan(ScanArgs{static_cast<const bf16*>(p.kg16), Scale::None, static_cast<const bf16*>(p.v),
                    static_cast<bf16*>(p.states16), nullptr, p.s0, p.sT, false});  // S_start, S_T
    l.mix_pk(mix_pk_output(p), static_cast<bf16*>(p.o));
}

// The backward pass ends with dg: chunk_linear.cuh's gdot (<G(n), S_end(n)>, both in bfloat16) and dg_key
// (p.dgk).
template <class L>
void run_backward_pk(L& l, const Params& p) {
    l.cumsum();  // kg16 and qg16 (and bcum, unless the forward pass's is given: p.bcum_ready)
    l.scan(ScanArgs{static_cast<const bf16*>(p.kg16), Scale::None, static_cast<const bf16*>(p.v),
                    static_cast<bf16*>(p.states16), nullptr, p.s0, p.sT, false});  // S_start, S_T
    l.scan(ScanArgs{static_cast<const bf16*>(p.qg16), Scale::None, static_cast<const bf16*>(p.dout),
                    static_cast<bf16*>(p.gstates16), nullptr, p.dsT, p.ds0, true});  // G, dS_0
    l.mix_pk(mix_pk_dq(p), static_cast<bf16*>(p.dq16));
    l.mix_pk(mix_pk_dk(p), static_cast<bf16*>(p.dk16));
    l.template mix<bf16>(mix_pk_dv(p), static_cast<bf16*>(p.dv16));
    l.gdot();
    l.dg_key();
}

#undef WB_HD

}  // namespace chunk_linear
}  // namespace wb
