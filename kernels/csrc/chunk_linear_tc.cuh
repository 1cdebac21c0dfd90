// Chunked linear attention with a scalar decay: the tensor-core path, taken for bfloat16 q, k, v
// (chunk_linear.h has the math; float32 inputs keep chunk_linear.cuh's float32 path).
//
// Two kernels (plus chunk_linear.cuh's cumsum), both 8 warps, bfloat16 16x16x16 wmma tiles with float32
// accumulators, operands staged in shared memory as bfloat16 (zero-padded to multiples of 16, rows padded by
// 16 bytes against bank conflicts):
//   scan: chunk_linear_scan.cuh: one block per (batch x head, state tile), sequential over the chunks,
//         S = exp(b_L) S + X^T Y on tensor cores, writing each chunk's starting state in bfloat16.
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
// depends on where a fragment's elements lie (their layout is unspecified): decays, masks and scales are
// applied in shared memory between the tensor-core steps, or uniformly to every element (acc_scale).
#pragma once

#include "chunk_linear_scan.cuh"

namespace wb {
namespace chunk_linear {

#define WB_HD __host__ __device__ __forceinline__

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
    // Precomputed masked scores [B, H, N, C, C] (per-key decays: the forward's, p.scores16): M is staged
    // from them, R comes scaled (s = None) and X is not read.
    const bf16* Mg = nullptr;
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

// Z and H as stored (the last product's operands), by copy16.
WB_HD void stage_mix_tail(const Params& p, const Chunk& c, const MixTc& m, bf16* Zs, bf16* Hs, const MixSmem& L, int tid) {
    stage_rows_raw(p, c, Zs, L.ldz, m.Z, m.D2, L.D2p, tid);
    const bf16* h = m.Hm + (c.bh * p.N + c.n) * m.D1 * m.D2;
    if (m.ht) {
        stage_raw(Hs, L.ldh, h, m.D2, m.D1, 0, L.D2p, L.D1p, tid);
    } else {
        stage_raw(Hs, L.ldh, h, m.D1, m.D2, 0, L.D1p, L.D2p, tid);
    }
}

// The mix's first steps: every operand staged, the scores X Y^T, M = the decayed, masked scores in bfloat16,
// R scaled in place.
template <class Blk>
WB_HD void mix_scores(Blk& blk, const Params& p, const Chunk& c, const MixTc& m, const MixSmem& L, unsigned char* smem) {
    bf16* Rs = reinterpret_cast<bf16*>(smem);  // X or Y, then R
    bf16* other = reinterpret_cast<bf16*>(smem + L.oQ);
    bf16* Xs = m.r_is_y ? other : Rs;
    bf16* Ys = m.r_is_y ? Rs : other;
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
        stage_mix_tail(p, c, m, Zs, Hs, L, tid);
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
        for (SegWalk sw(tid, segs); decay && sw.r < kChunk; sw.next()) {
            const int r = sw.r, e0 = sw.s * 8;
            const float sc = exp_f(m.s == Scale::ExpB ? b[r] : b[c.valid - 1] - b[r]);
            load8(Rs + r * L.ldx + e0, x);
#pragma unroll
            for (int e = 0; e < 8; ++e) x[e] *= sc;
            store8(Rs + r * L.ldx + e0, x);  // in place: one thread per segment
        }
        copy_wait();  // Z and H
    });
}

// The mix's last product and its stores (after mix_scores, or the precomputed scores' staging).
template <class Blk, typename TO>
WB_HD void mix_out(Blk& blk, const Params& p, const Chunk& c, const MixTc& m, TO* out, const MixSmem& L,
                   unsigned char* smem) {
    const bf16* Rs = reinterpret_cast<const bf16*>(smem);
    float* Of = reinterpret_cast<float*>(smem + L.oQ);
    const bf16* Ms = reinterpret_cast<const bf16*>(smem + L.oM);
    const bf16* Zs = reinterpret_cast<const bf16*>(smem + L.oZ);
    const bf16* Hs = reinterpret_cast<const bf16*>(smem + L.oH);
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
        for (SegWalk sw(tid, segs); sw.r < c.valid; sw.next()) {
            const int i = sw.r, s0 = sw.s * 4;
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


template <class Blk, typename TO>
WB_HD void mix_block(Blk& blk, const Params& p, const Chunk& c, const MixTc& m, TO* out, unsigned char* smem) {
    const MixSmem L = mix_smem(m.D1, m.D2, m.ht);
    if (m.Mg != nullptr) {  // R, M, Z and H as stored, then the product
        blk.threads([&](int tid) {
            stage_rows_raw(p, c, reinterpret_cast<bf16*>(smem), L.ldx, m.r_is_y ? m.Y : m.X, m.D1, L.D1p, tid);
            stage_raw(reinterpret_cast<bf16*>(smem + L.oM), L.ldm, m.Mg + (c.bh * p.N + c.n) * kChunk * kChunk, kChunk,
                      kChunk, 0, kChunk, kChunk, tid);
            stage_mix_tail(p, c, m, reinterpret_cast<bf16*>(smem + L.oZ), reinterpret_cast<bf16*>(smem + L.oH), L, tid);
            copy_wait();
        });
    } else {
        mix_scores(blk, p, c, m, L, smem);
    }
    mix_out(blk, p, c, m, out, L, smem);
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
// recomputes the chunk states (bfloat16 only); the log-decay gradient's <G(n), S_end(n)> takes G and S in
// bfloat16 (gstates16, states16), as the dK and dV products did.
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
    // Without a decay (plain linear attention) there is no log-decay gradient: no row dots or
    // <G(n), S_end(n)>.
    const bool decay = p.g != nullptr;
    l.scan(ScanArgs{k, Scale::ExpLastMinusB, v, s16, nullptr, p.s0, p.sT, false});  // S_start
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
