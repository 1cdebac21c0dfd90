// Chunked linear attention with one log-decay per key (GLA's gates): the tensor-core mixes, for bfloat16
// q, k, v (chunk_linear.h has the shapes; kernels/src/chunk_linear.rs the math). The chunk states come from
// chunk_linear_tc.cuh's scan, which with p.per_key scales X elementwise and decays the state's rows.
//
// With b the within-chunk cumulative log-decays [C, Dk] (non-increasing down each column), the ratio of a
// pair j <= i is exp(b_i - b_j), one per key, inside every sum over keys. No exponential here exceeds 1:
// the chunk is cut into 4 sub-chunks of 16 rows (one wmma tile each way), and
//   - a pair in different sub-chunks (j in J < I, i in I) goes through a reference row r between them:
//     exp(b_i - b_j) = exp(b_i - b_r) exp(b_r - b_j), both factors <= 1, one folded into each operand of a
//     tensor-core product; every row block I (or column block J) needs its own scaled copy of the other
//     operand (16 + 32 + 48 = 96 rows in all);
//   - a pair in the same sub-chunk takes its exact ratio, summed over keys in float32 (FMA, no tensor cores).
// The four mixes, per chunk (S: the chunk's starting state, G: dLoss/dS_end, both [Dk, Dv], bfloat16):
//   scores family (per-key scores A_ij = sum_d q_id k_jd exp(b_id - b_jd), j <= i):
//     O  = A V + (Q * exp(b)) S                       R = Q scaled elementwise
//     dV = A^T dO + (K * exp(b_L - b)) G              R = K scaled elementwise
//   gradient family (plain scores P_ij = dO_i . v_j, j <= i; the decay inside the sum over pairs):
//     dQ_id = sum_j P_ij k_jd exp(b_id - b_jd) + exp(b_id) (dO S^T)_id            (row blocks I, r = 16 I)
//     dK_jd = sum_i P_ij q_id exp(b_id - b_jd) + exp(b_Ld - b_jd) (V G^T)_jd      (column blocks J, r = 16 J + 15)
//   and, for the log-decay gradient, q * dq - k * dk elementwise in float32 (p.qdq: the dQ mix writes
//   q * dq, the dK mix then subtracts k * dk). dg_td is formed from it as the scalar case's glue does, per
//   key (chunk_linear.cuh's dg_key_thread): the within-chunk reverse cumsum of (q * dq - k * dk)_.d plus
//   sum_e G(n)_de S_end(n)_de, with the same bfloat16 G the dK product used, so that the two cancel to
//   float32 rounding under strong decay.
// Written for the GPU and the CPU over the executor `Blk` of chunk_linear_tc.cuh.
#pragma once

#include "chunk_linear_tc.cuh"

namespace wb {
namespace chunk_linear {

#define WB_HD __host__ __device__ __forceinline__

constexpr int kSub = 16;  // sub-chunk rows: one wmma tile
constexpr int kSubs = kChunk / kSub;
constexpr int kCopyRows = kSub * kSubs * (kSubs - 1) / 2;  // rows of the scaled copies (96)
constexpr int kOffRows = kChunk - kSub;  // rows of the off-diagonal partial products (48)

// Where the scaled copy for row block I (1..3) starts (scores family and dQ: rows j < 16 I of K or
// Z), and for column block J (0..2) (dK: rows i >= 16 (J + 1) of Q).
WB_HD int copy_row_block(int I) { return kSub * I * (I - 1) / 2; }  // 0, 16, 48
WB_HD int copy_col_block(int J) {  // 0, 48, 80
    int at = 0;
    for (int x = 0; x < J; ++x) at += kChunk - kSub * (x + 1);
    return at;
}

struct MixPk {
    bool grad = false;  // the gradient family (dQ, dK); else the scores family (O, dV)
    const bf16* X = nullptr;  // scores X_i . Y_j: Q, K (scores family) or dO, V (gradient family)
    const bf16* Y = nullptr;
    bool mt = false;  // dV: M = A^T; dK: rows are the scores' columns
    bool r_is_y = false;  // R = Y's rows (else X's)
    const bf16* Z = nullptr;  // V, dO (scores family, D2 = Dv) or K, Q (gradient family, D2 = Dk)
    Scale s = Scale::None;  // scores family: R's scale; gradient family: the state term's scale
    const bf16* Hm = nullptr;  // [B, H, N, Dk, Dv] (the scans' buf16)
    int64_t D1 = 0, D2 = 0;  // the scores' width, the output's width
    const bf16* W = nullptr;  // gradient family: q (dQ) or k (dK), for el = +- W * out
    float* el = nullptr;
};

// Regions (bytes), every one 128-byte aligned. Scores family: R, the other staged slot, b, then {the scaled
// copies QT [C] and KT [96]} later the float32 result, scores, M, Z, H. Gradient family: R, then {the other
// slot and the scores} later the off-diagonal partials [48], b, Z, the scaled copies ZT [96], M, H, the
// float32 result. At Dk = Dv = 128: 186.5 KiB (scores), 202.5 KiB (gradient): one block per SM.
struct PkSmem {
    int D1p, D2p, Dkp, ldx, ldz, ldc, ldb, ldo, lds, ldm, ldh;
    int64_t oOther, oB, oC, oS, oM, oZ, oH, oO, bytes;
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
    const int64_t slot = align128(int64_t(kChunk) * L.ldx * 2);
    const int64_t scores = align128(int64_t(kChunk) * L.lds * 4);
    const int64_t b = align128(int64_t(kChunk) * L.ldb * 4);
    const int64_t copies = align128(int64_t(kCopyRows) * L.ldc * 2);
    const int64_t result = align128(int64_t(kChunk) * L.ldo * 4);
    const int64_t msize = align128(int64_t(kChunk) * L.ldm * 2);
    const int64_t zsize = align128(int64_t(kChunk) * L.ldz * 2);
    const int64_t hsize = align128(int64_t(L.Dkp) * L.ldh * 2);
    L.oOther = slot;
    if (!m.grad) {
        L.oB = L.oOther + slot;
        L.oC = L.oB + b;  // QT at oC, KT after it; later the result
        L.oO = L.oC;
        L.oS = L.oC + max64(align128(int64_t(kChunk) * L.ldc * 2) + copies, result);
        L.oM = L.oS + scores;
    } else {
        L.oS = L.oOther + slot;  // the other slot and the scores; later the partials at oOther
        L.oB = L.oOther + max64(slot + scores, align128(int64_t(kOffRows) * L.ldo * 4));
        L.oC = L.oB + b;
        L.oM = L.oC + copies;
    }
    L.oZ = L.oM + msize;
    L.oH = L.oZ + zsize;
    const int64_t end = L.oH + hsize;
    if (m.grad) L.oO = end;
    L.bytes = m.grad ? end + result : end;
    return L;
}

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
    const int Dk = int(p.Dk);
    auto b = [&](int r, int d) { return Bs[r * L.ldb + d]; };

    blk.threads([&](int tid) {
        stage_rows_raw(p, c, Xs, L.ldx, m.X, m.D1, L.D1p, tid);
        stage_rows_raw(p, c, Ys, L.ldx, m.Y, m.D1, L.D1p, tid);
        stage_rows_raw(p, c, Zs, L.ldz, m.Z, m.D2, L.D2p, tid);
        stage_raw(Hs, L.ldh, m.Hm + (c.bh * p.N + c.n) * p.Dk * p.Dv, p.Dk, p.Dv, 0, L.Dkp, pad16(p.Dv), tid);
        for (int idx = tid; idx < kChunk * L.Dkp; idx += kThreads) {
            const int r = idx / L.Dkp, d = idx % L.Dkp;
            Bs[r * L.ldb + d] = d < Dk ? bcum_key(p, c, r, d) : 0.f;
        }
        copy_wait();
    });

    if (!m.grad) {
        // Scores family. QT: Q's row block I scaled by exp(b_i - b_r), r = 16 I; KT: for each I >= 1, rows
        // j < 16 I of K scaled by exp(b_r - b_j); the diagonal blocks exactly.
        const bf16* Q = Xs;
        const bf16* K = Ys;
        blk.threads([&](int tid) {
            for (int idx = tid; idx < kChunk * L.Dkp; idx += kThreads) {
                const int i = idx / L.Dkp, d = idx % L.Dkp, r = (i / kSub) * kSub;
                Cs[i * L.ldc + d] = from_float<bf16>(to_float(Q[i * L.ldx + d]) * exp_f(b(i, d) - b(r, d)));
            }
            for (int idx = tid; idx < kCopyRows * L.Dkp; idx += kThreads) {
                const int v = idx / L.Dkp, d = idx % L.Dkp;
                const int I = v < copy_row_block(2) ? 1 : v < copy_row_block(3) ? 2 : 3;
                const int j = v - copy_row_block(I);
                KT[v * L.ldc + d] = from_float<bf16>(to_float(K[j * L.ldx + d]) * exp_f(b(I * kSub, d) - b(j, d)));
            }
            // the pairs j <= i of each diagonal block (136 of them), numbered row by row; the entries above
            // the diagonal are never read (M masks them)
            constexpr int tri = kSub * (kSub + 1) / 2;
            for (int idx = tid; idx < kSubs * tri; idx += kThreads) {
                const int blk0 = (idx / tri) * kSub;
                int r = 0, pr = idx % tri;
                while (pr > r) pr -= ++r;
                const int i = blk0 + r, j = blk0 + pr;
                float acc = 0.f;
                for (int d = 0; d < Dk; ++d)
                    acc += to_float(Q[i * L.ldx + d]) * to_float(K[j * L.ldx + d]) * exp_f(b(i, d) - b(j, d));
                Sf[i * L.lds + j] = acc;
            }
        });
        // the blocks below the diagonal: QT_I KT_I^T, 6 tiles
        blk.warps([&](int w) {
            for (int t = w; t < kSubs * (kSubs - 1) / 2; t += kWarps) {
                int I = 1, J = t;
                while (J >= I) {
                    J -= I;
                    ++I;
                }
                FragC acc;
                acc_zero(acc);
                mma_k<wmma::row_major, wmma::col_major>(acc, Cs, L.ldc, KT + copy_row_block(I) * L.ldc, L.ldc,
                                                        I * kSub, J * kSub, L.Dkp);
                acc_store(Sf + I * kSub * L.lds + J * kSub, acc, L.lds);
            }
        });
        // M = the masked scores in bfloat16; R scaled elementwise in place
        blk.threads([&](int tid) {
            for (int idx = tid; idx < kChunk * kChunk; idx += kThreads) {
                const int i = idx / kChunk, j = idx % kChunk;
                Ms[i * L.ldm + j] = from_float<bf16>(j <= i ? Sf[i * L.lds + j] : 0.f);
            }
            for (int idx = tid; idx < c.valid * L.Dkp; idx += kThreads) {
                const int r = idx / L.Dkp, d = idx % L.Dkp;
                if (d >= Dk) continue;
                const float e = m.s == Scale::ExpB ? b(r, d) : b(c.valid - 1, d) - b(r, d);
                Rs[r * L.ldx + d] = from_float<bf16>(to_float(Rs[r * L.ldx + d]) * exp_f(e));
            }
        });
        // out = M Z + R H (the result over the scaled copies)
        blk.warps([&](int w) {
            const int ct = L.D2p / 16;
            for (int t = w; t < (kChunk / 16) * ct; t += kWarps) {
                const int m0 = (t / ct) * 16, n0 = (t % ct) * 16;
                FragC acc;
                acc_zero(acc);
                mma_scores(acc, Ms, L.ldm, m.mt, Zs, L.ldz, m0, n0);
                mma_k<wmma::row_major, wmma::row_major>(acc, Rs, L.ldx, Hs, L.ldh, m0, n0, L.Dkp);
                acc_store(Of + m0 * L.ldo + n0, acc, L.ldo);
            }
        });
        blk.threads([&](int tid) {
            for (int idx = tid; idx < c.valid * L.D2p; idx += kThreads) {
                const int i = idx / L.D2p, e = idx % L.D2p;
                if (e < m.D2) out[(c.bh * p.T + c.t0 + i) * m.D2 + e] = from_float<bf16>(Of[i * L.ldo + e]);
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
    });
    // M = P masked in bfloat16; the scaled copies of Z: per row block I (dQ: rows j < 16 I, exp(b_r - b_j),
    // r = 16 I) or per column block J (dK: rows i >= 16 (J + 1), exp(b_i - b_r), r = 16 J + 15).
    blk.threads([&](int tid) {
        for (int idx = tid; idx < kChunk * kChunk; idx += kThreads) {
            const int i = idx / kChunk, j = idx % kChunk;
            Ms[i * L.ldm + j] = from_float<bf16>(j <= i ? Sf[i * L.lds + j] : 0.f);
        }
        for (int idx = tid; idx < kCopyRows * L.Dkp; idx += kThreads) {
            const int v = idx / L.Dkp, d = idx % L.Dkp;
            float x;
            if (!m.mt) {
                const int I = v < copy_row_block(2) ? 1 : v < copy_row_block(3) ? 2 : 3;
                const int j = v - copy_row_block(I);
                x = to_float(Zs[j * L.ldz + d]) * exp_f(b(I * kSub, d) - b(j, d));
            } else {
                const int J = v < copy_col_block(1) ? 0 : v < copy_col_block(2) ? 1 : 2;
                const int i = v - copy_col_block(J) + kSub * (J + 1);
                x = to_float(Zs[i * L.ldz + d]) * exp_f(b(i, d) - b(kSub * J + kSub - 1, d));
            }
            Cs[v * L.ldc + d] = from_float<bf16>(x);
        }
    });
    // the off-diagonal blocks' partial products, 16 rows per block (over the other slot and the scores)
    blk.warps([&](int w) {
        const int ct = L.D2p / 16;
        for (int t = w; t < (kSubs - 1) * ct; t += kWarps) {
            const int blkno = t / ct, n0 = (t % ct) * 16;
            FragC acc;
            acc_zero(acc);
            if (!m.mt) {  // dQ, row block I: P[I, j < 16 I] ZT_I
                const int I = blkno + 1;
                mma_k<wmma::row_major, wmma::row_major>(acc, Ms, L.ldm, Cs + copy_row_block(I) * L.ldc, L.ldc,
                                                        I * kSub, n0, I * kSub);
            } else {  // dK, column block J: P[i >= 16 (J + 1), J]^T ZT_J
                const int J = blkno, i0 = kSub * (J + 1);
                mma_k<wmma::col_major, wmma::row_major>(acc, Ms + i0 * L.ldm, L.ldm, Cs + copy_col_block(J) * L.ldc,
                                                        L.ldc, J * kSub, n0, kChunk - i0);
            }
            acc_store(Tf + blkno * kSub * L.ldo + n0, acc, L.ldo);
        }
    });
    // out = the state term scaled + the partial products scaled + the diagonal blocks exactly; el = +- W out
    blk.threads([&](int tid) {
        for (int idx = tid; idx < c.valid * L.Dkp; idx += kThreads) {
            const int i = idx / L.Dkp, d = idx % L.Dkp;
            if (d >= Dk) continue;
            const float bi = b(i, d);
            const int blk0 = (i / kSub) * kSub;
            float acc;
            if (!m.mt) {  // dQ row i
                acc = exp_f(bi) * Of[i * L.ldo + d];
                if (blk0 > 0) acc += exp_f(bi - b(blk0, d)) * Tf[(blk0 - kSub + i % kSub) * L.ldo + d];
                for (int j = blk0; j <= i; ++j)
                    acc += to_float(Ms[i * L.ldm + j]) * to_float(Zs[j * L.ldz + d]) * exp_f(bi - b(j, d));
            } else {  // dK row i (a column of P)
                acc = exp_f(b(c.valid - 1, d) - bi) * Of[i * L.ldo + d];
                if (blk0 < kChunk - kSub) acc += exp_f(b(blk0 + kSub - 1, d) - bi) * Tf[i * L.ldo + d];
                for (int r = i; r < blk0 + kSub; ++r)
                    acc += to_float(Ms[r * L.ldm + i]) * to_float(Zs[r * L.ldz + d]) * exp_f(b(r, d) - bi);
            }
            const int64_t at = (c.bh * p.T + c.t0 + i) * p.Dk + d;
            out[at] = from_float<bf16>(acc);
            const float wv = to_float(m.W[at]) * acc;
            if (!m.mt) {
                m.el[at] = wv;
            } else {
                m.el[at] -= wv;
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
    return m;
}
inline MixPk mix_pk_dv(const Params& p) {
    MixPk m = mix_pk_output(p);
    m.mt = true;
    m.r_is_y = true;
    m.Z = static_cast<const bf16*>(p.dout);
    m.s = Scale::ExpLastMinusB;
    m.Hm = gstates16(p);
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
    return m;
}

// Whether every per-key mix of these head dims fits in a block's shared memory (chunk_linear.h's fits).
inline bool pk_fits(int64_t Dk, int64_t Dv) {
    Params p;
    p.Dk = Dk;
    p.Dv = Dv;
    int64_t most = 0;
    for (const MixPk& m : {mix_pk_output(p), mix_pk_dv(p), mix_pk_dq(p), mix_pk_dk(p)}) most = max64(most, pk_smem(p, m).bytes);
    return most <= kMaxSmemBytes;
}

// The launch sequences with per-key decays, over a launcher `L` with cumsum(), scan(ScanArgs) and
// mix_pk(MixPk, bf16*). The dQ mix runs before the dK mix (it writes the el that the dK mix subtracts from).
template <class L>
void run_forward_pk(L& l, const Params& p) {
    l.cumsum();
    l.scan(ScanArgs{static_cast<const bf16*>(p.k), Scale::ExpLastMinusB, static_cast<const bf16*>(p.v),
                    static_cast<bf16*>(p.states16), nullptr, p.s0, p.sT, false});  // S_start, S_T
    l.mix_pk(mix_pk_output(p), static_cast<bf16*>(p.o));
}

// The backward pass also writes the chunk states in float32 (p.states) for dg's <G(n), S_end(n)>, and ends
// with chunk_linear.cuh's dg_key (p.dgk).
template <class L>
void run_backward_pk(L& l, const Params& p) {
    l.cumsum();
    l.scan(ScanArgs{static_cast<const bf16*>(p.k), Scale::ExpLastMinusB, static_cast<const bf16*>(p.v),
                    static_cast<bf16*>(p.states16), p.states, p.s0, p.sT, false});  // S_start, S_T
    l.scan(ScanArgs{static_cast<const bf16*>(p.q), Scale::ExpB, static_cast<const bf16*>(p.dout),
                    static_cast<bf16*>(p.gstates16), nullptr, p.dsT, p.ds0, true});  // G, dS_0
    l.mix_pk(mix_pk_dq(p), static_cast<bf16*>(p.dq16));
    l.mix_pk(mix_pk_dk(p), static_cast<bf16*>(p.dk16));
    l.mix_pk(mix_pk_dv(p), static_cast<bf16*>(p.dv16));
    l.gdot();
    l.dg_key();
}

#undef WB_HD

}  // namespace chunk_linear
}  // namespace wb
