// Hyena's long convolution on tensor cores, for bfloat16 inputs: per channel c and group of 8 batch rows the
// causal convolution is a product of the lower-triangular Toeplitz matrix of the filter with the [T, 8] block
// of inputs, which is exactly the shape of mma.m16n8k16 (M = 16 output steps, N = 8 batch rows, K = 16 input
// steps). O(T^2) multiply-adds instead of the FFT's O(T log T), but at tensor-core rates and with no
// transform, padding or spectrum in memory: up to a few thousand steps it is the faster algorithm
// (BENCHMARKS.md). The filter and the inputs are rounded to bfloat16, every sum is float32, and a product's
// output is rounded to bfloat16 once (as a bfloat16 matmul's) before the skip and the gate.
//
// Layouts (long_conv.h): ut, et, zt [G, C, Tp, 8] bfloat16 (time-major, the 8 batch rows of a group
// contiguous: 16 bytes per step). Pack and unpack are tiled transposes between [B, T, C] and
// that layout (8 steps x 128 channels x 8 rows per block, two phases with a barrier between them).
//
// The products (tc_conv, tc_dk): one block per (channel, group), the channel's operands staged whole in
// shared memory (with zero rows around them), then each warp takes windows of kP output tiles (snake order,
// for balance: a window's work grows or shrinks linearly with its position), keeps their accumulators in
// registers and walks the input tiles in groups of kP. The A operand of a Toeplitz tile needs no
// construction: for lane (g, q) = (lane / 4, lane % 4) the four registers of tile A_D[i][j] = k[16 D + i - j]
// are
//     {Q(2D), Q(2D + 1), Q(2D - 1), Q(2D)},   Q(x) = (k[8x + o], k[8x + o - 1]) as bfloat16x2, o = g - 2q,
// so the kP x kP products of a group (tiles D0 - kP + 1 .. D0 + kP - 1) need 4 kP - 1 words of the pair table
// `kp` (which holds (k[m], k[m - 1]) for every m) and kP B operands (ldmatrix.x4.trans, two tiles each), all loaded
// before the products, whose register indices are then compile-time. The transposed tile (du, anti-causal)
// is {Q'(2D), Q'(2D - 1), Q'(2D + 1), Q'(2D)} with Q'(x) = (k[8x - o], k[8x - o + 1]), from a second table.
// dk is a GEMM too: S_D[i][j] = sum over tiles t and rows b of e[16t + i][b] u[16(t - D) + j][b], K = (2 tiles
// x 8 rows), then dk[16 D + i - j] += S_D[i][j], summed along the diagonals by warp shuffles
// (one shared atomic per diagonal; per element, the first version's atomics took 2/3 of dk's time).
//
// Written once for the GPU and the CPU: the warp-level functions take L, the lanes one call holds (1 on the
// GPU, lane = the thread's; 32 in tests/emulate_long_conv_tc.cu, which emulates mma and ldmatrix for the
// whole warp from the PTX fragment layouts). Pack and unpack (per-thread code like long_conv.cuh's) are in
// long_conv_tc_pack.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.cuh"
#include "long_conv.h"

namespace wb {
namespace long_conv {
namespace tc {

#define WB_TC_HD __host__ __device__ __forceinline__

constexpr int kP = 8;  // output tiles per warp window (conv) or lag tiles (dk)
constexpr int kConvWarps = 8;
constexpr int kDkPairs = 4;  // dk: pairs of e tiles per group
constexpr int kKpOff = 128;  // the pair table: kp[m + kKpOff] for m in [-kKpOff, Tp + kKpLen - kKpOff)
constexpr int kKpLen = 256;
constexpr int kGroupPad = int(kTcPad);  // zero rows staged after (and for dk's u, before) a channel's Tp rows

// bfloat16 bits, round to nearest even (cuda_bf16's conversion, on either side).
WB_TC_HD uint32_t bf16_bits(float v) {
    const __nv_bfloat16_raw r = __nv_bfloat16(__float2bfloat16_rn(v));
    return r.x;
}
WB_TC_HD float bits_to_float(uint32_t bits16) {
    __nv_bfloat16_raw r;
    r.x = static_cast<unsigned short>(bits16);
    return __bfloat162float(__nv_bfloat16(r));
}
WB_TC_HD uint32_t swap_halves(uint32_t v) { return (v >> 16) | (v << 16); }

// ---------------------------------------------------------------------------------------------------------
// Warp primitives: the GPU instruction for L = 1, the whole warp's emulation for L = 32.

#if !defined(__CUDA_ARCH__)
// d[lane] += A B for the 32 lanes' fragments (PTX ISA, mma.m16n8k16 .bf16: a0..a3 = (row g, cols 2q, 2q+1),
// (g + 8, 2q..), (g, 2q + 8..), (g + 8, 2q + 8..); b0, b1 = (rows 2q, 2q+1; col g), (rows 2q + 8, 2q + 9; col
// g); d0..d3 = (g, 2q), (g, 2q + 1), (g + 8, 2q), (g + 8, 2q + 1); the lower half of a register first).
inline void mma_host(float* const* d, const uint32_t (*a)[4], const uint32_t (*b)[2]) {
    float A[16][16], Bm[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, q = lane & 3;
        for (int h = 0; h < 2; ++h) {
            const int sh = 16 * h;
            A[g][2 * q + h] = bits_to_float(a[lane][0] >> sh);
            A[g + 8][2 * q + h] = bits_to_float(a[lane][1] >> sh);
            A[g][2 * q + 8 + h] = bits_to_float(a[lane][2] >> sh);
            A[g + 8][2 * q + 8 + h] = bits_to_float(a[lane][3] >> sh);
            Bm[2 * q + h][g] = bits_to_float(b[lane][0] >> sh);
            Bm[2 * q + 8 + h][g] = bits_to_float(b[lane][1] >> sh);
        }
    }
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, q = lane & 3;
        for (int r = 0; r < 4; ++r) {
            const int row = g + (r >= 2 ? 8 : 0), col = 2 * q + (r & 1);
            float s = 0.0f;
            for (int kk = 0; kk < 16; ++kk) s += A[row][kk] * Bm[kk][col];
            d[lane][r] += s;
        }
    }
}
#endif

// One m16n8k16 product for the warp: lane l's operands a[l], b[l], accumulators d[l].
template <int L>
WB_TC_HD void mma(float* const* d, const uint32_t (*a)[4], const uint32_t (*b)[2]) {
#if defined(__CUDA_ARCH__)
    float* c = d[0];
    // not volatile: the products only depend on their operands, so the compiler may interleave them
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0][0]), "r"(a[0][1]), "r"(a[0][2]), "r"(a[0][3]), "r"(b[0][0]), "r"(b[0][1]));
#else
    mma_host(d, a, b);
#endif
}

// The B operand of 16 steps x 8 rows stored time-major (16 bytes per step) at `rows`: lane (g, q) gets
// (rows[2q][g], rows[2q + 1][g]) and (rows[2q + 8][g], rows[2q + 9][g]).
WB_TC_HD void load_b(uint32_t (&b)[2], const uint16_t* rows, int lane) {
#if defined(__CUDA_ARCH__)
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(rows + (lane & 15) * 8));
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(b[0]), "=r"(b[1])
                 : "r"(s));
#else
    const int g = lane >> 2, q = lane & 3;
    b[0] = uint32_t(rows[(2 * q) * 8 + g]) | uint32_t(rows[(2 * q + 1) * 8 + g]) << 16;
    b[1] = uint32_t(rows[(2 * q + 8) * 8 + g]) | uint32_t(rows[(2 * q + 9) * 8 + g]) << 16;
#endif
}

#if defined(__CUDA_ARCH__)
// ldmatrix.x4 (.trans when TRANS) with this lane's row address `row`.
template <bool TRANS>
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t* row) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
    if (TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(s));
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(s));
    }
}
#endif

// The B operands of two consecutive 16-step tiles at `rows` (32 rows of 16 bytes), one ldmatrix.x4.trans:
// b[0..1] as load_b of rows 0..15, b[2..3] of rows 16..31.
WB_TC_HD void load_b2(uint32_t (&b)[4], const uint16_t* rows, int lane) {
#if defined(__CUDA_ARCH__)
    ldsm_x4<true>(b, rows + lane * 8);
#else
    uint32_t lo[2], hi[2];
    load_b(lo, rows, lane);
    load_b(hi, rows + 16 * 8, lane);
    b[0] = lo[0], b[1] = lo[1], b[2] = hi[0], b[3] = hi[1];
#endif
}

// Four 8 x 8 matrices of bfloat16 from 32 consecutive rows of 16 bytes at `rows` (matrix m: rows 8m .. 8m + 7),
// untransposed: lane (g, q) gets the word of row 8m + g, columns 2q and 2q + 1, of each (ldmatrix.x4). With
// rows = 16 steps x 8 batch rows it gives mma's A operand of a 16-step row block over two tiles (dk's e).
WB_TC_HD void load_x4(uint32_t (&r)[4], const uint16_t* rows, int lane) {
#if defined(__CUDA_ARCH__)
    ldsm_x4<false>(r, rows + lane * 8);
#else
    const uint32_t* w = reinterpret_cast<const uint32_t*>(rows);
    for (int m = 0; m < 4; ++m) r[m] = w[(8 * m + (lane >> 2)) * 4 + (lane & 3)];
#endif
}

// 8-row half h of four consecutive 16-step tiles j .. j + 3 at `tiles` (one ldmatrix.x4 whose matrix m is rows
// 16 (j + m) + 8h .. + 7): lane (g, q) gets the word of row 16 (j + m) + 8h + g, columns 2q, 2q + 1, in r[m].
WB_TC_HD void load_halves(uint32_t (&r)[4], const uint16_t* tiles, int j, int h, int lane) {
#if defined(__CUDA_ARCH__)
    ldsm_x4<false>(r, tiles + (16 * (j + lane / 8) + 8 * h + lane % 8) * 8);
#else
    const uint32_t* w = reinterpret_cast<const uint32_t*>(tiles);
    for (int m = 0; m < 4; ++m) r[m] = w[(16 * (j + m) + 8 * h + (lane >> 2)) * 4 + (lane & 3)];
#endif
}

// out[l] = in[l + delta] for every lane whose l + delta < 32, else in[l] (__shfl_down_sync).
template <int L, int N>
WB_TC_HD void shfl_down_all(float (&out)[L][N], const float (&in)[L][N], int delta, int lane0) {
#if defined(__CUDA_ARCH__)
#pragma unroll
    for (int k = 0; k < N; ++k) out[0][k] = __shfl_down_sync(0xffffffffu, in[0][k], delta);
#else
    for (int l = 0; l < L; ++l)
        for (int k = 0; k < N; ++k) out[l][k] = lane0 + l + delta < 32 ? in[l + delta][k] : in[l][k];
#endif
}

WB_TC_HD void smem_add(float* at, float v) {
#if defined(__CUDA_ARCH__)
    atomicAdd(at, v);
#else
    *at += v;
#endif
}

// The i-th window of a warp among `warps`, snake order; -1 past the last of `windows`.
WB_TC_HD int snake_window(int i, int warp, int warps, int windows) {
    const int idx = i * warps + (i % 2 == 0 ? warp : warps - 1 - warp);
    return i * warps >= windows ? -2 : (idx < windows ? idx : -1);
}

// ---------------------------------------------------------------------------------------------------------
// Staging: a channel's rows of ut or et between zero rows, and the filter's pair table.

// Rows [-before, Tp + after) of a channel to dst: src's Tp rows of 16 bytes, zero outside.
WB_TC_HD void stage_rows(uint4* dst, const uint4* src, int64_t Tp, int before, int after, int tid, int threads) {
    for (int64_t i = tid; i < before + Tp + after; i += threads) {
        const int64_t t = i - before;
        dst[i] = (t >= 0 && t < Tp) ? src[t] : make_uint4(0u, 0u, 0u, 0u);
    }
}

// Causal: kp[m + kKpOff] = (k[m], k[m - 1]); anti-causal: (k[m], k[m + 1]); for m in [-kKpOff, Tp + kKpLen -
// kKpOff), k[j] = 0 outside [0, T): every word a group of tiles reads, without bounds checks.
template <bool ANTI>
WB_TC_HD void stage_pairs(uint32_t* kp, const float* kc, int64_t T, int64_t Tp, int tid, int threads) {
    for (int64_t i = tid; i < Tp + kKpLen; i += threads) {
        const int64_t m = i - kKpOff, m2 = ANTI ? m + 1 : m - 1;
        const uint32_t lo = (m >= 0 && m < T) ? bf16_bits(kc[m]) : 0u;
        const uint32_t hi = (m2 >= 0 && m2 < T) ? bf16_bits(kc[m2]) : 0u;
        kp[i] = lo | hi << 16;
    }
}

// ---------------------------------------------------------------------------------------------------------
// The convolution of one window: output tiles i0 .. i0 + kP - 1 (those < n stored) of one channel and group,
//   causal (ANTI = false): z_i = sum_{s <= i} A_{i - s} x_s      anti-causal: z_i = sum_{s >= i} A_{s - i}^T x_s
// over groups of kP input tiles s0 .. s0 + kP - 1: the group's kP x kP products need tiles D in
// [D0 - kP + 1, D0 + kP - 1] (D0 = |i0 - s0|), i.e. the 4 kP - 1 words Q(2 (D0 - kP + 1) - 1 + r), and kP B
// operands, all loaded before the products, whose register indices are then compile-time: no moves.
// `xs` the staged input (bfloat16 bits, kGroupPad zero rows after Tp), `kp` the pair table, `zc` the channel's
// [Tp][8] output rows as bfloat16 pairs (4 words per step; the sums rounded once, as a bfloat16 matmul's).
template <int L, bool ANTI>
WB_TC_HD void conv_window(const uint16_t* xs, const uint32_t* kp, uint32_t* zc, int n, int i0, int lane0) {
    constexpr int R = 4 * kP - 1;
    float acc[L][kP][4];
    for (int l = 0; l < L; ++l)
#pragma unroll
        for (int p = 0; p < kP; ++p)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[l][p][e] = 0.0f;
    // causal: groups s0 = 0, kP, ..., i0 (D0 = i0 - s0); anti-causal: s0 = i0, i0 + kP, ... < n (D0 = s0 - i0)
    const int groups = ANTI ? (n - i0 + kP - 1) / kP : i0 / kP + 1;
    for (int gi = 0; gi < groups; ++gi) {
        const int s0 = ANTI ? i0 + gi * kP : gi * kP, D0 = ANTI ? s0 - i0 : i0 - s0;
        uint32_t q[L][R];
        uint32_t b[L][kP][2];
        for (int l = 0; l < L; ++l) {
            const int lane = lane0 + l, o = (lane >> 2) - 2 * (lane & 3);
            // Q(x) = kp[8x + o] (causal), Q'(x) = kp[8x - o] (anti-causal; the table holds (k[m], k[m + 1]))
            const uint32_t* base = kp + kKpOff + 8 * (2 * (D0 - kP + 1) - 1) + (ANTI ? -o : o);
#pragma unroll
            for (int r = 0; r < R; ++r) q[l][r] = base[8 * r];
#pragma unroll
            for (int j = 0; j < kP; j += 2) {
                uint32_t r[4];
                load_b2(r, xs + int64_t(s0 + j) * 16 * 8, lane);
                b[l][j][0] = r[0], b[l][j][1] = r[1], b[l][j + 1][0] = r[2], b[l][j + 1][1] = r[3];
            }
        }
        // j outer, p inner: consecutive products go to different accumulators (a chain of products into one
        // accumulator waits out the mma latency at every step).
#pragma unroll
        for (int j = 0; j < kP; ++j)
#pragma unroll
            for (int p = 0; p < kP; ++p) {
                // tile D = D0 + (p - j) causal, D0 + (j - p) anti-causal; c: the index of Q(2 D)
                constexpr int zero = 2 * (kP - 1) + 1;
                const int c = zero + 2 * (ANTI ? j - p : p - j);
                uint32_t a[L][4];
                float* d[L];
                uint32_t bj[L][2];
                for (int l = 0; l < L; ++l) {
                    a[l][0] = q[l][c];
                    a[l][1] = ANTI ? q[l][c - 1] : q[l][c + 1];
                    a[l][2] = ANTI ? q[l][c + 1] : q[l][c - 1];
                    a[l][3] = q[l][c];
                    bj[l][0] = b[l][j][0];
                    bj[l][1] = b[l][j][1];
                    d[l] = acc[l][p];
                }
                mma<L>(d, a, bj);
            }
    }
    for (int l = 0; l < L; ++l) {
        const int lane = lane0 + l, g = lane >> 2, qq = lane & 3;
#pragma unroll
        for (int p = 0; p < kP; ++p) {
            if (i0 + p >= n) break;
            // steps 16 (i0 + p) + g and + 8, rows 2 qq, 2 qq + 1: a warp's stores are 256 contiguous bytes
            uint32_t* row = zc + (int64_t(16) * (i0 + p) + g) * 4 + qq;
            row[0] = bf16_bits(acc[l][p][0]) | bf16_bits(acc[l][p][1]) << 16;
            row[32] = bf16_bits(acc[l][p][2]) | bf16_bits(acc[l][p][3]) << 16;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// dk of one window of lag tiles D0 .. D0 + kP - 1: es, us the staged e and u (bfloat16 bits; es with
// kGroupPad zero rows after Tp, us with kGroupPad zero rows before and after), dks the channel's float32 sums
// [Tp] in shared memory. Over groups of kDkPairs pairs of e tiles
// (tau, tau + 1), tau = D0, D0 + 2, ...: the group's u tiles tau - D for every tau and D of the window, 2
// kDkPairs + kP - 1 of them (two 8-row halves each), loaded once before the group's products.
template <int L>
WB_TC_HD void dk_window(const uint16_t* es, const uint16_t* us, float* dks, int n, int64_t T, int D0, int lane0) {
    constexpr int NP = kDkPairs, NU = 2 * NP + kP - 1, NUL = (NU + 3) / 4 * 4;
    static_assert(NUL - NU <= kGroupPad / 16 - kP, "the last u tiles loaded must lie in the zero pad");
    float acc[L][kP][2][4];
    for (int l = 0; l < L; ++l)
#pragma unroll
        for (int p = 0; p < kP; ++p)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[l][p][h][e] = 0.0f;
    for (int tau0 = D0; tau0 < n; tau0 += 2 * NP) {
        uint32_t a[L][NP][4];
        // u[h][j]: 8-row half h of u tile tau0 - D0 - kP + 1 + j, h-major so that a product's two B registers
        // (tiles j and j + 1) are neighbours; NU rounded up to whole ldmatrix.x4 loads (the pad covers it)
        uint32_t u[L][2][NUL];
        const uint16_t* e0 = es + int64_t(16) * tau0 * 8;
        const uint16_t* u0 = us + int64_t(16) * (tau0 - D0 - kP + 1) * 8;
        for (int l = 0; l < L; ++l) {
            const int lane = lane0 + l;
            // pair m: e tiles tau0 + 2m, + 1 (rows 32 m .. 32 m + 31): mma's A operand, one ldmatrix.x4
#pragma unroll
            for (int m = 0; m < NP; ++m) load_x4(a[l][m], e0 + 32 * m * 8, lane);
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int j = 0; j < NUL; j += 4) load_halves(*reinterpret_cast<uint32_t(*)[4]>(&u[l][h][j]), u0, j, h, lane);
        }
#pragma unroll
        for (int m = 0; m < NP; ++m)
#pragma unroll
            for (int p = 0; p < kP; ++p)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    // pair (tau0 + 2m, + 1) and lag tile D0 + p: u tiles tau0 + 2m - D0 - p and the next
                    const int j = 2 * m + kP - 1 - p;
                    uint32_t am[L][4], bj[L][2];
                    float* d[L];
                    for (int l = 0; l < L; ++l) {
#pragma unroll
                        for (int r = 0; r < 4; ++r) am[l][r] = a[l][m][r];
                        bj[l][0] = u[l][h][j];
                        bj[l][1] = u[l][h][j + 1];
                        d[l] = acc[l][p][h];
                    }
                    mma<L>(d, am, bj);
                }
    }
    // S_D[i][j] adds to dk[16 D + i - j]. Lane (g, q) holds i = g, g + 8 and j = 8h + 2q + e, i.e. for
    // s = g - 2q three diagonals per e: s - e (h 0 row g, h 1 row g + 8), s - e + 8 (h 0 row g + 8) and
    // s - e - 8 (h 1 row g). Lanes with the same s, (g, q), (g + 2, q + 1), ... lie 9 apart: two shuffle
    // rounds sum each chain into its first lane (q == 0 or g < 2), which adds its 6 sums with shared atomics
    // (distinct addresses in a warp; a neighbouring window's warp may add to the same lags at either end).
    for (int p = 0; p < kP; ++p) {
        float v[L][6], r[L][6];
        for (int l = 0; l < L; ++l)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                v[l][e] = acc[l][p][0][e] + acc[l][p][1][2 + e];  // diagonal s - e
                v[l][2 + e] = acc[l][p][0][2 + e];  // s - e + 8
                v[l][4 + e] = acc[l][p][1][e];  // s - e - 8
            }
        shfl_down_all<L, 6>(r, v, 9, lane0);
        for (int l = 0; l < L; ++l) {
            const int lane = lane0 + l, g = lane >> 2, qq = lane & 3;
            if (qq <= 2 && g <= 5)
#pragma unroll
                for (int k = 0; k < 6; ++k) v[l][k] += r[l][k];
        }
        shfl_down_all<L, 6>(r, v, 18, lane0);
        for (int l = 0; l < L; ++l) {
            const int lane = lane0 + l, g = lane >> 2, qq = lane & 3;
            if (qq <= 1 && g <= 3)
#pragma unroll
                for (int k = 0; k < 6; ++k) v[l][k] += r[l][k];
            if (qq != 0 && g >= 2) continue;  // not the first lane of its chain
            const int64_t base = int64_t(16) * (D0 + p) + g - 2 * qq;
#pragma unroll
            for (int k = 0; k < 6; ++k) {
                const int64_t lag = base - (k & 1) + (k >= 4 ? -8 : k >= 2 ? 8 : 0);
                if (lag >= 0 && lag < T) smem_add(dks + lag, v[l][k]);
            }
        }
    }
}

}  // namespace tc
}  // namespace long_conv
}  // namespace wb
