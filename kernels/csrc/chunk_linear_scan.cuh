// Chunked linear attention, bfloat16 path: the sequential scan over the chunk states (chunk_linear_tc.cuh
// has the whole path and the mixes; chunk_linear_pk.cuh the per-key mixes).
//
// One block per (batch x head, row tile, column tile of the state), 8 warps, sequential over the chunks
// (reversed for the gradient pass). The state tile S stays in the warps' registers as float32 wmma
// accumulators. Per chunk: write S to `buf16` in bfloat16 for the mixes (and to `buf` in float32 for the
// backward glue); then S = exp(b_L) S + X^T Y on tensor cores. A scalar decay scales Y's rows as staged and
// the accumulators uniformly; per-key decays come in X (the cumsum's k * exp(b_L - b) or q * exp(b)) and
// scale S's rows on their way through the warp's staging tile.
// Forward: X = K, Y = V, scale exp(b_L - b). Reverse: X = Q, Y = dO, scale exp(b), start dS_T, end dS_0.
// Written once for the GPU and the CPU over the executor `Blk` (chunk_linear_tc.cuh's top; the scan also
// takes its warps_free, lanes, syncwarp, PerWarp and PerThread). At the end, the per-key cumsum that forms
// the scans' decayed operands.
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

// A scan's operands: S = decay S + X^T diag(scale) Y, the scale of Y's rows `s` (a scalar decay). With
// per-key decays X comes decayed (the cumsum's kg16 or qg16) and the state's rows decay by exp(b_L).
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

// Scales this thread's own segments of Y (as stage_raw(.., rows_p = kChunk, W, tid) gave them; visible to it
// after its copy wait) by their row's scale. U = the thread's segments, kChunk * W / 8 <= U * kThreads.
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

// The scan (see the top), `rows` state rows (scan_tile) and COLS columns per block.
// The state tile lives in the warps' registers (ScanAcc). A chunk is one barrier: the copies run two
// chunks ahead in three buffers, and what moves a warp's state out (to the chunk states in global memory,
// and through the per-key row decay) goes through a staging pair of its own. Measured before (session 5,
// the state in shared memory, two barriers and a global load of the decays per chunk): 5.5-6K cycles per
// chunk for the state out, as many for the products, 13K for the out with per-key decays. A first version
// of this one stored 16 rows of 32 bytes per instruction (tiles one by one): its float32 out took 36K cycles
// per chunk, against 15K with full rows of sectors per instruction.
struct ScanSmem {
    int Dkp, ldX, ldY;
    int64_t oX, oY, oD, oT, x, y, d, bytes;  // buffer b of X at oX + b x, of Y at oY + b y, decays at oD + b d
};
constexpr int kScanBufs = 3;
constexpr int kStageLd = 36;  // a staging pair's row stride, floats (a multiple of 4: wmma and float4 rows)
constexpr int kStageFloats = 16 * kStageLd;  // a pair of tiles side by side, 16 x 32

WB_HD ScanSmem scan_smem(int64_t Dk, int cols, int rows) {
    ScanSmem L;
    L.Dkp = pad16(Dk < rows ? Dk : rows);
    L.ldX = L.Dkp + 8;
    L.ldY = cols + 8;
    L.x = align128(int64_t(kChunk) * L.ldX * 2);
    L.y = align128(int64_t(kChunk) * L.ldY * 2);
    L.d = align128(int64_t(L.Dkp) * 4);
    L.oX = 0;
    L.oY = L.oX + kScanBufs * L.x;
    L.oD = L.oY + kScanBufs * L.y;
    L.oT = L.oD + kScanBufs * L.d;
    L.bytes = L.oT + int64_t(kWarps) * kStageFloats * 4;  // a staging pair per warp
    return L;
}

// A warp's tiles of the state, kept in registers across the chunks: pairs of tiles side by side (16 rows,
// 32 columns), pair q = w + kWarps j of warp w for j < kPairs, row tile q / (COLS / 32), columns 32 (q %
// (COLS / 32)). A warp's tiles then share their A and B fragments two by two, and its state goes out as
// rows of 64 bytes (bfloat16) or 128 (float32).
template <int COLS>
struct ScanAcc {
    static constexpr int kPairs = kMaxDim / 16 * (COLS / 32) / kWarps;  // 2 (64 columns) or 1 (32)
    static constexpr int kTiles = 2 * kPairs;
    FragC acc[kTiles];  // tile 2 j + h: pair j, columns 16 h
};

// A scalar decay's log-decays for this thread's own segments of Y (their rows r, and b_L), loaded a chunk
// ahead; the exponentials are taken where they are applied. U = the thread's segments of Y.
template <int U>
struct ScanRowB {
    float b[U];
    float bl;
};

// acc[2 j + h] += X[:, m0[j] + .]^T Y[:, n0 + 16 h + .] over the chunk for the pairs with m0[j] >= 0 (X
// read transposed: col-major A); the pairs of a warp share their columns n0 (kWarps is a multiple of the
// pairs per row), so per k step two B fragments and one A fragment per pair.
// (E, bfloat16, is a template parameter so that the host pass leaves the body unchecked, like mma_k's)
template <int NP, class F, class E>
WB_HD void mma_state_pairs(F (&acc)[2 * NP], const int (&m0)[NP], const E* X, int ldX, const E* Y, int ldY, int n0) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::col_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::row_major> fb[2];
    for (int k = 0; k < kChunk; k += 16) {
        load_frag(fb[0], Y + k * ldY + n0, ldY);
        load_frag(fb[1], Y + k * ldY + n0 + 16, ldY);
#pragma unroll
        for (int j = 0; j < NP; ++j) {
            if (m0[j] < 0) continue;
            load_frag(fa, X + k * ldX + m0[j], ldX);
            wmma::mma_sync(acc[2 * j], fa, fb[0], acc[2 * j]);
            wmma::mma_sync(acc[2 * j + 1], fa, fb[1], acc[2 * j + 1]);
        }
    }
}

template <int COLS, class Blk>
WB_HD void scan_block(Blk& blk, const Params& p, const ScanArgs& a, int64_t bh, int64_t row0, int rows, int64_t col0,
                      unsigned char* smem) {
    constexpr int cp = COLS / 32;  // pairs per row tile
    constexpr int NP = ScanAcc<COLS>::kPairs;
    constexpr int csegs = COLS / 8;
    constexpr int U = (kChunk * csegs + kThreads - 1) / kThreads;  // Y segments per thread
    const ScanSmem L = scan_smem(p.Dk, COLS, rows);
    const int64_t nrows = p.Dk - row0 < rows ? p.Dk - row0 : rows;
    const int pairs = (L.Dkp / 16) * cp;
    // the buffers of the m-th chunk visited (pointer arithmetic, not an array: no local memory)
    auto Xs = [&](int64_t m) { return reinterpret_cast<bf16*>(smem + L.oX + (m % kScanBufs) * L.x); };
    auto Ys = [&](int64_t m) { return reinterpret_cast<bf16*>(smem + L.oY + (m % kScanBufs) * L.y); };
    auto Ds = [&](int64_t m) { return reinterpret_cast<float*>(smem + L.oD + (m % kScanBufs) * L.d); };
    auto stage = [&](int w) { return reinterpret_cast<float*>(smem + L.oT) + w * kStageFloats; };
    const int64_t per = p.Dk * p.Dv;
    const int64_t ncols = p.Dv - col0 < COLS ? p.Dv - col0 : COLS;
    const bool decayed = p.bcum != nullptr;
    const bool row_scaled = decayed && !p.per_key && a.s != Scale::None;  // Y's rows (a scalar decay)
    // whether the state's rows take vector stores (8 bfloat16 or 4 float32 columns: 16 bytes)
    const bool vec_out = p.Dv % 8 == 0 && col0 % 8 == 0 && reinterpret_cast<uintptr_t>(a.buf16) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(a.buf) % 16 == 0;
    auto chunk_at = [&](int64_t m) { return chunk_of(p, a.reverse ? p.N - 1 - m : m, bh); };
    // X's rows and Y's columns [col0, col0 + COLS) of the m-th chunk visited, as stored, and its decays
    // (per key: b_L of the tile's rows, zeros past Dk; scalar: b_L), into buffer m % 3.
    auto issue = [&](int64_t m, int tid) {
        const Chunk c = chunk_at(m);
        stage_raw(Xs(m), L.ldX, a.X + (c.bh * p.T + c.t0) * p.Dk, c.valid, p.Dk, row0, kChunk, L.Dkp, tid);
        stage_raw(Ys(m), L.ldY, a.Y + (c.bh * p.T + c.t0) * p.Dv, c.valid, p.Dv, col0, kChunk, COLS, tid);
        if (decayed) {
            float* D = Ds(m);
            const int64_t last = c.bh * p.T + c.t0 + c.valid - 1;
            const int n = p.per_key ? L.Dkp : 1;
            for (int d = tid; d < n; d += kThreads) {
                if (!p.per_key) {
                    copy4(D, p.bcum + last);
                } else if (d < nrows) {
                    copy4(D + d, p.bcum + last * p.Dk + row0 + d);
                } else {
                    D[d] = 0.f;
                }
            }
        }
        copy_commit();
    };
    typename Blk::template PerThread<ScanRowB<U>> rowb;
    auto preload = [&](int64_t m, int tid) {
        if (!row_scaled || m >= p.N) return;
        const Chunk c = chunk_at(m);
        ScanRowB<U>& rb = rowb.at(tid);
        const float* b = p.bcum + c.bh * p.T + c.t0;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int r = (tid + u * kThreads) / csegs;
            rb.b[u] = r < c.valid ? b[r] : 0.f;
        }
        rb.bl = b[c.valid - 1];
    };
    typename Blk::template PerWarp<ScanAcc<COLS>> accs;
    // pair j of warp w: rows m0 (-1: none), columns n0 of the block's tile
    auto pair_m0 = [&](int w, int j) { return w + kWarps * j < pairs ? (w + kWarps * j) / cp * 16 : -1; };
    auto pair_n0 = [&](int w) { return w % cp * 32; };
    // Lane l's share of a staged pair in 16-byte pieces, full sectors per store: rows h + l / 4 (h = 0, 8),
    // 8 columns from 8 (l % 4) (bfloat16 out, and the start and end states); rows h + l / 8 (h = 0, 4, 8,
    // 12), 4 columns from 4 (l % 8) (float32 out).
    auto lanes8 = [&](int w, auto&& f) {  // f(tid, r, e0) twice per lane
        blk.lanes(w, [&](int tid) {
            for (int h = 0; h < 16; h += 8) f(tid, h + (tid % 32) / 4, (tid % 4) * 8);
        });
    };
    auto lanes4 = [&](int w, auto&& f) {  // f(r, e0) four times per lane
        blk.lanes(w, [&](int tid) {
            for (int h = 0; h < 16; h += 4) f(h + (tid % 32) / 8, (tid % 8) * 4);
        });
    };

    // f(j, m0, n0, T) for each pair j of warp w's state (rows m0, columns n0, its staging pair T)
    auto each_pair = [&](int w, auto&& f) {
        const int n0 = pair_n0(w);
        float* T = stage(w);
#pragma unroll
        for (int j = 0; j < NP; ++j) {
            const int m0 = pair_m0(w, j);
            if (m0 >= 0) f(j, m0, n0, T);
        }
    };

    // The start state (zeros, or a.start) and the first two chunks' copies.
    blk.warps_free([&](int w) {
        blk.lanes(w, [&](int tid) {
            issue(0, tid);
            if (p.N > 1) issue(1, tid);
            preload(0, tid);
        });
        each_pair(w, [&](int j, int m0, int n0, float* T) {
            if (a.start == nullptr) {
                acc_zero(accs.at(w).acc[2 * j]);
                acc_zero(accs.at(w).acc[2 * j + 1]);
                return;
            }
            lanes8(w, [&](int, int r, int e0) {
                const int64_t d = m0 + r, e = n0 + e0;
                const float* src = a.start + bh * per + (row0 + d) * p.Dv + col0 + e;
                float x[8];
#pragma unroll
                for (int i = 0; i < 8; ++i) x[i] = d < nrows && e + i < ncols ? src[i] : 0.f;
                store8(T + r * kStageLd + e0, x);
            });
            blk.syncwarp();
            acc_load(accs.at(w).acc[2 * j], T, kStageLd);
            acc_load(accs.at(w).acc[2 * j + 1], T + 16, kStageLd);
            blk.syncwarp();  // before the next pair overwrites T
        });
    });
    for (int64_t m = 0; m < p.N; ++m) {
        const Chunk c = chunk_at(m);
        // This thread's copies of chunk m (issued two chunks ago), Y's rows scaled (a scalar decay); the
        // barrier publishes them, and every warp is past chunk m - 1's products, whose buffers the next
        // step's copies reuse.
        blk.threads([&](int tid) {
            if (m + 1 < p.N) {
                copy_wait_prior();  // all but the group of chunk m + 1
            } else {
                copy_wait();
            }
            if (row_scaled) {
                const ScanRowB<U>& rb = rowb.at(tid);
                float sc[U];
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    const int r = (tid + u * kThreads) / csegs;
                    sc[u] = r < c.valid ? exp_f(a.s == Scale::ExpB ? rb.b[u] : rb.bl - rb.b[u]) : 1.f;
                }
                scale_own_rows<U>(Ys(m), L.ldY, COLS, tid, sc);  // U = X^T diag(scale) Y
            }
        });
        // The copies of chunk m + 2 and the scales of chunk m + 1 start; the state out; S = decay S + X^T Y.
        blk.warps_free([&](int w) {
            blk.lanes(w, [&](int tid) {
                if (m + 2 < p.N) issue(m + 2, tid);
                preload(m + 1, tid);
            });
            ScanAcc<COLS>& A = accs.at(w);
            const float* D = Ds(m);
            const float decay = decayed && !p.per_key ? exp_f(D[0]) : 1.f;
            const int64_t slot = (bh * p.N + c.n) * per + row0 * p.Dv + col0;
            const int n0 = pair_n0(w);
            float* T = stage(w);
            int m0s[NP];
#pragma unroll
            for (int j = 0; j < NP; ++j) {
                const int m0 = m0s[j] = pair_m0(w, j);
                if (m0 < 0) continue;
                acc_store(T, A.acc[2 * j], kStageLd);
                acc_store(T + 16, A.acc[2 * j + 1], kStageLd);
                blk.syncwarp();
                if (a.buf != nullptr) {
                    lanes4(w, [&](int r, int e0) {
                        const int64_t d = m0 + r, e = n0 + e0;
                        const float* x = T + r * kStageLd + e0;
                        if (d >= nrows) return;
                        float* o = a.buf + slot + d * p.Dv + e;
                        if (vec_out && e + 4 <= ncols) {
                            *reinterpret_cast<float4*>(o) = *reinterpret_cast<const float4*>(x);
                        } else {
                            for (int i = 0; i < 4 && e + i < ncols; ++i) o[i] = x[i];
                        }
                    });
                    if (decayed && p.per_key) blk.syncwarp();  // the float32 out reads T before it is decayed
                }
                lanes8(w, [&](int, int r, int e0) {
                    const int64_t d = m0 + r, e = n0 + e0;
                    float x[8];
                    load8(T + r * kStageLd + e0, x);
                    if (d < nrows) {
                        bf16* o = a.buf16 + slot + d * p.Dv + e;
                        if (vec_out && e + 8 <= ncols) {
                            store8(o, x);
                        } else {
                            for (int i = 0; i < 8 && e + i < ncols; ++i) o[i] = from_float<bf16>(x[i]);
                        }
                    }
                    if (decayed && p.per_key) {  // row d by exp(b_Ld)
                        const float dd = exp_f(D[d]);
#pragma unroll
                        for (int i = 0; i < 8; ++i) x[i] *= dd;
                        store8(T + r * kStageLd + e0, x);
                    }
                });
                if (decayed && p.per_key) {
                    blk.syncwarp();
                    acc_load(A.acc[2 * j], T, kStageLd);
                    acc_load(A.acc[2 * j + 1], T + 16, kStageLd);
                } else if (decayed) {
                    acc_scale(A.acc[2 * j], decay);  // S *= exp(b_L), every element alike
                    acc_scale(A.acc[2 * j + 1], decay);
                }
                blk.syncwarp();  // before the next pair overwrites T
            }
            mma_state_pairs(A.acc, m0s, Xs(m), L.ldX, Ys(m), L.ldY, n0);
        });
    }
    if (a.end == nullptr) return;
    blk.warps_free([&](int w) {
        each_pair(w, [&](int j, int m0, int n0, float* T) {
            acc_store(T, accs.at(w).acc[2 * j], kStageLd);
            acc_store(T + 16, accs.at(w).acc[2 * j + 1], kStageLd);
            blk.syncwarp();
            lanes8(w, [&](int, int r, int e0) {
                const int64_t d = m0 + r, e = n0 + e0;
                float x[8];
                load8(T + r * kStageLd + e0, x);
                for (int i = 0; i < 8; ++i)
                    if (d < nrows && e + i < ncols) a.end[bh * per + (row0 + d) * p.Dv + col0 + e + i] = x[i];
            });
            blk.syncwarp();
        });
    });
}

// ---------------------------------------------------------------------------------------------------------
// The per-key scans' operands.
// The per-key cumsum (chunk_linear.cuh's cumsum_key_thread) 8 keys per thread where the head dim allows
// (with p.bcum_ready, the backward pass's, only the decayed operands from the saved cumulative decays):
// one thread per (batch x head, chunk, 8 keys), 16- and 32-byte loads and stores, 4 rows of loads in flight
// before their stores. One key per thread, with 2-byte loads and stores of q, k and their decayed copies,
// had taken 0.30-0.57 ms at B 8, H 16, T 2048, Dk 128 (the cumsum alone, 0.08-0.10 ms).
WB_HD bool cumsum_key8(const Params& p) {
    auto al = [](const void* x) { return reinterpret_cast<uintptr_t>(x) % 16 == 0; };
    return p.Dk % 8 == 0 && al(p.g) && al(p.bcum) && al(p.k) && al(p.q) && al(p.kg16) && al(p.qg16);
}
WB_HD int64_t cumsum_key_threads(const Params& p) { return p.B * p.H * p.N * (cumsum_key8(p) ? p.Dk / 8 : p.Dk); }

WB_HD void cumsum_key8_thread(const Params& p, int64_t idx) {
    const int64_t segs = p.Dk / 8;
    if (idx >= p.B * p.H * p.N * segs) return;
    const int64_t d0 = (idx % segs) * 8, rest = idx / segs;
    const Chunk c = chunk_of(p, rest % p.N, rest / p.N);
    const int64_t at = (c.bh * p.T + c.t0) * p.Dk + d0;
    constexpr int R = 4;
    auto row = [&](int r) { return at + int64_t(r < c.valid ? r : c.valid - 1) * p.Dk; };  // rows past: the last
    float acc[8] = {};
    if (p.bcum_ready) load8(p.bcum + at + (c.valid - 1) * p.Dk, acc);  // b_L
    for (int r0 = 0; r0 < c.valid && !p.bcum_ready; r0 += R) {
        float g[R][8];
#pragma unroll
        for (int r = 0; r < R; ++r) load8(p.g + row(r0 + r), g[r]);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (r0 + r >= c.valid) break;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[e] += g[r][e];
            store8(p.bcum + at + (r0 + r) * p.Dk, acc);
        }
    }
    // dst = src * exp(b_L - b) (last_minus) or src * exp(b), in bfloat16; b re-read (this thread's stores)
    auto scaled = [&](const void* src, void* dst, bool last_minus) {
        const auto* x = static_cast<const bf16*>(src);
        auto* y = static_cast<bf16*>(dst);
        for (int r0 = 0; r0 < c.valid; r0 += R) {
            float v[R][8], b[R][8];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                load8(x + row(r0 + r), v[r]);
                load8(p.bcum + row(r0 + r), b[r]);
            }
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (r0 + r >= c.valid) break;
#pragma unroll
                for (int e = 0; e < 8; ++e) v[r][e] *= exp_f(last_minus ? acc[e] - b[r][e] : b[r][e]);
                store8(y + at + (r0 + r) * p.Dk, v[r]);
            }
        }
    };
    if (p.kg16 != nullptr) scaled(p.k, p.kg16, true);
    if (p.qg16 != nullptr) scaled(p.q, p.qg16, false);
}

WB_HD void cumsum_key_any(const Params& p, int64_t idx) {
    if (cumsum_key8(p)) {
        cumsum_key8_thread(p, idx);
    } else {
        cumsum_key_thread(p, idx);
    }
}

#undef WB_HD

}  // namespace chunk_linear
}  // namespace wb
