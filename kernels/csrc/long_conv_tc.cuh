// Hyena's long convolution on tensor cores, for bfloat16 inputs: per channel c and group of 8 batch rows the
// causal convolution is a product of the lower-triangular Toeplitz matrix of the filter with the [T, 8] block
// of inputs, which is exactly the shape of mma.m16n8k16 (M = 16 output steps, N = 8 batch rows, K = 16 input
// steps). O(T^2) multiply-adds instead of the FFT's O(T log T), but at tensor-core rates and with no
// transform, padding or spectrum in memory: up to a few thousand steps it is the faster algorithm
// (BENCHMARKS.md). The filter and the inputs are rounded to bfloat16, every sum is float32.
//
// Layouts (long_conv.h): ut, et [G, C, Tp, 8] bfloat16 (time-major, the 8 batch rows of a group contiguous:
// 16 bytes per step), zt [G, C, Tp, 8] float32. Pack and unpack are tiled transposes between [B, T, C] and
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
// whole warp from the PTX fragment layouts). Pack and unpack are per-thread code like long_conv.cuh's.
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
constexpr int kDkWarps = 8;
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
// [Tp][8] output rows.
template <int L, bool ANTI>
WB_TC_HD void conv_window(const uint16_t* xs, const uint32_t* kp, float* zc, int n, int i0, int lane0) {
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
            float* row = zc + (int64_t(16) * (i0 + p) + g) * 8 + 2 * qq;
            *reinterpret_cast<float2*>(row) = make_float2(acc[l][p][0], acc[l][p][1]);
            *reinterpret_cast<float2*>(row + 64) = make_float2(acc[l][p][2], acc[l][p][3]);
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

// ---------------------------------------------------------------------------------------------------------
// Pack and unpack: blocks of kTile x kRows threads (tx, ty) over (time tile bx of kXT steps, channel tile by of
// kXC channels, group bz). Thread (tx, ty) reads and writes [B, T, C] at batch row 8 bz + ty and the 4
// channels 4 tx .. 4 tx + 3 of the tile (one 8-byte access where aligned): a warp covers 256 contiguous bytes
// of a row, which DRAM serves far better than the 64 bytes of a 32-channel tile (the first version's packs and
// unpacks took 1.8-2.7x the time of a copy of their bytes).
constexpr int kXT = 8;  // steps per pack/unpack block
constexpr int kXC = 4 * kTile;  // channels per pack/unpack block
constexpr int kPackRow = 66;  // bfloat16 per channel row of a pack tile: kXT x 8 and a pad (33 words: odd)
constexpr int kZB = 132, kZT = 8 * kZB + 4;  // unpack tile strides (floats): per row and per step

static_assert(kXT == 8, "tc_time_tiles (long_conv.h) counts 8-step tiles");
WB_TC_HD int64_t x_tiles_t(int64_t len) { return tc_time_tiles(len); }
WB_TC_HD int64_t x_tiles_c(int64_t C) { return (C + kXC - 1) / kXC; }

// 4 consecutive channels of a [B, T, C]-strided tensor: one 8-byte access when every offset keeps the
// alignment, else 4 scalar accesses; channels >= C read as 0 and are not written.
template <typename T>
WB_TC_HD bool quad_aligned(const void* base, int64_t sb, int64_t st, int64_t C) {
    return sizeof(T) == 2 && reinterpret_cast<uintptr_t>(base) % 8 == 0 && sb % 4 == 0 && st % 4 == 0 && C % 4 == 0;
}
template <typename T>
WB_TC_HD void load4(const T* x, int64_t off, int64_t c, int64_t C, bool vec, float (&v)[4]) {
    if (vec && c + 3 < C) {
        const uint2 w = *reinterpret_cast<const uint2*>(x + off);
        v[0] = bits_to_float(w.x & 0xffffu), v[1] = bits_to_float(w.x >> 16);
        v[2] = bits_to_float(w.y & 0xffffu), v[3] = bits_to_float(w.y >> 16);
        return;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = c + i < C ? to_float(x[off + i]) : 0.0f;
}
template <typename T>
WB_TC_HD void store4(T* x, int64_t off, int64_t c, int64_t C, bool vec, const float (&v)[4]) {
    if (vec && c + 3 < C) {
        *reinterpret_cast<uint2*>(x + off) =
            make_uint2(bf16_bits(v[0]) | bf16_bits(v[1]) << 16, bf16_bits(v[2]) | bf16_bits(v[3]) << 16);
        return;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
        if (c + i < C) x[off + i] = from_float<T>(v[i]);
}

// A pack tile: per channel kXT steps x 8 rows of bfloat16 bits, kPackRow apart.
using PackTile = uint16_t[kXC * kPackRow];

// Phase 2 of both packs: the tile's rows to the [G, C, Tp, 8] buffer, 16 bytes per step and channel (4 words
// from shared memory: the rows are only 4-byte aligned, which keeps phase 1's stores conflict-free).
WB_TC_HD void pack_store(const Params& p, const PackTile& tile, void* dst, int tx, int ty, int64_t bx, int64_t by,
                         int64_t bz) {
    uint4* out = static_cast<uint4*>(dst);
    const int tid = ty * kTile + tx;
    const uint32_t* w = reinterpret_cast<const uint32_t*>(tile);
#pragma unroll
    for (int k = 0; k < kXC * kXT / kThreads; ++k) {
        const int id = tid + k * kThreads, cc = id / kXT, tl = id % kXT;
        const int64_t c = by * kXC + cc, t = bx * kXT + tl;
        const uint32_t* r = w + (cc * kPackRow + tl * 8) / 2;
        if (c < p.C && t < p.Tp) out[(bz * p.C + c) * p.Tp + t] = make_uint4(r[0], r[1], r[2], r[3]);
    }
}

// Forward pack phase 1: row ty of the group, channels 4 tx.., steps of the tile.
template <typename T>
WB_TC_HD void forward_pack_load(const Params& p, PackTile& tile, int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
    const T* u = static_cast<const T*>(p.u);
    const int64_t c = by * kXC + 4 * tx, b = bz * 8 + ty;
    const bool vec = quad_aligned<T>(u, p.su_b, p.su_t, p.C);
#pragma unroll
    for (int tl = 0; tl < kXT; ++tl) {
        const int64_t t = bx * kXT + tl;
        float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (t < p.T && b < p.B) load4(u, b * p.su_b + t * p.su_t + c, c, p.C, vec, v);
#pragma unroll
        for (int i = 0; i < 4; ++i) tile[(4 * tx + i) * kPackRow + tl * 8 + ty] = uint16_t(bf16_bits(v[i]));
    }
}

// Backward pack phase 1: u and e = dy * gate into two tiles; dgate = dy * w stored; the thread's sums of
// e * u per channel into red[ty][4 tx + i] (for dD).
template <typename T>
WB_TC_HD void backward_pack_load(const Params& p, PackTile& tile_u, PackTile& tile_e, float* red, int tx, int ty,
                                 int64_t bx, int64_t by, int64_t bz) {
    const T* u = static_cast<const T*>(p.u);
    const T* dy = static_cast<const T*>(p.dy);
    const T* gate = static_cast<const T*>(p.gate);
    const int64_t c = by * kXC + 4 * tx, b = bz * 8 + ty;
    const bool vu = quad_aligned<T>(u, p.su_b, p.su_t, p.C), vd = quad_aligned<T>(dy, p.T * p.C, p.C, p.C);
    const bool vg = gate != nullptr && quad_aligned<T>(gate, p.sg_b, p.sg_t, p.C);
    const bool vw = p.w != nullptr && quad_aligned<T>(p.w, p.T * p.C, p.C, p.C);
    const bool vdg = p.dgate != nullptr && quad_aligned<T>(p.dgate, p.T * p.C, p.C, p.C);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int tl = 0; tl < kXT; ++tl) {
        const int64_t t = bx * kXT + tl;
        float xu[4] = {0.0f, 0.0f, 0.0f, 0.0f}, xe[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (t < p.T && b < p.B) {
            const int64_t idx = (b * p.T + t) * p.C + c;
            float g[4];
            load4(dy, idx, c, p.C, vd, g);
            load4(u, b * p.su_b + t * p.su_t + c, c, p.C, vu, xu);
            if (gate != nullptr) {
                float gt[4], w[4], dg[4];
                load4(gate, b * p.sg_b + t * p.sg_t + c, c, p.C, vg, gt);
                load4(static_cast<const T*>(p.w), idx, c, p.C, vw, w);
#pragma unroll
                for (int i = 0; i < 4; ++i) xe[i] = g[i] * gt[i], dg[i] = g[i] * w[i];
                store4(static_cast<T*>(p.dgate), idx, c, p.C, vdg, dg);
            } else {
#pragma unroll
                for (int i = 0; i < 4; ++i) xe[i] = g[i];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[i] = fmaf(xe[i], xu[i], acc[i]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            tile_u[(4 * tx + i) * kPackRow + tl * 8 + ty] = uint16_t(bf16_bits(xu[i]));
            tile_e[(4 * tx + i) * kPackRow + tl * 8 + ty] = uint16_t(bf16_bits(xe[i]));
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) red[ty * kXC + 4 * tx + i] = acc[i];
}

// Backward pack phase 2: both tiles stored, and the block's dD partial sums (one row per group and time
// tile of kXT steps).
WB_TC_HD void backward_pack_store(const Params& p, const PackTile& tile_u, const PackTile& tile_e, const float* red,
                                  int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
    pack_store(p, tile_u, p.ut, tx, ty, bx, by, bz);
    pack_store(p, tile_e, p.et, tx, ty, bx, by, bz);
    const int64_t tiles_t = x_tiles_t(p.T);
    if (p.dD_part == nullptr || bx >= tiles_t) return;
    for (int cc = ty * kTile + tx; cc < kXC; cc += kThreads) {
        const int64_t c = by * kXC + cc;
        if (c >= p.C) continue;
        float s = 0.0f;
        for (int j = 0; j < kRows; ++j) s += red[j * kXC + cc];
        p.dD_part[(bz * tiles_t + bx) * p.C + c] = s;
    }
}

// Unpack phase 1: zt's rows of kXC channels x kXT steps into tile[step][row][channel] (strides kZT, kZB), float4
// loads (16 lanes per channel's 256 bytes).
using ZTile = float[kXT * kZT];

WB_TC_HD void unpack_load(const Params& p, ZTile& tile, int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
    const int tid = ty * kTile + tx;
    const float4* z4 = reinterpret_cast<const float4*>(p.zt);
#pragma unroll
    for (int k = 0; k < kXC * kXT * 2 / kThreads; ++k) {
        const int f = tid + k * kThreads, cc = f / (2 * kXT), rem = f % (2 * kXT), tl = rem / 2, half = rem % 2;
        const int64_t c = by * kXC + cc, t = bx * kXT + tl;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (c < p.C && t < p.T) v = z4[((bz * p.C + c) * p.Tp + t) * 2 + half];
        float* o = tile + tl * kZT + 4 * half * kZB + cc;
        o[0] = v.x;
        o[kZB] = v.y;
        o[2 * kZB] = v.z;
        o[3 * kZB] = v.w;
    }
}

// Forward unpack phase 2: thread (channels 4 tx.., row ty of the group): w = z + D u, y = gate * w.
template <typename T>
WB_TC_HD void forward_unpack_store(const Params& p, const ZTile& tile, int tx, int ty, int64_t bx, int64_t by,
                                   int64_t bz) {
    const int64_t c = by * kXC + 4 * tx, b = bz * 8 + ty;
    if (c >= p.C || b >= p.B) return;
    const T* u = static_cast<const T*>(p.u);
    const T* gate = static_cast<const T*>(p.gate);
    const bool vu = quad_aligned<T>(u, p.su_b, p.su_t, p.C), vy = quad_aligned<T>(p.y, p.T * p.C, p.C, p.C);
    const bool vw = p.w != nullptr && quad_aligned<T>(p.w, p.T * p.C, p.C, p.C);
    const bool vg = gate != nullptr && quad_aligned<T>(gate, p.sg_b, p.sg_t, p.C);
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (p.D != nullptr)
#pragma unroll
        for (int i = 0; i < 4; ++i) d[i] = c + i < p.C ? p.D[c + i] : 0.0f;
#pragma unroll
    for (int tl = 0; tl < kXT; ++tl) {
        const int64_t t = bx * kXT + tl;
        if (t >= p.T) break;
        const int64_t idx = (b * p.T + t) * p.C + c;
        const float4 z = *reinterpret_cast<const float4*>(tile + tl * kZT + ty * kZB + 4 * tx);
        float w[4] = {z.x, z.y, z.z, z.w}, y[4];
        if (p.D != nullptr) {
            float uu[4];
            load4(u, b * p.su_b + t * p.su_t + c, c, p.C, vu, uu);
#pragma unroll
            for (int i = 0; i < 4; ++i) w[i] = fmaf(d[i], uu[i], w[i]);
        }
        if (p.w != nullptr) store4(static_cast<T*>(p.w), idx, c, p.C, vw, w);
        if (gate != nullptr) {
            float g[4];
            load4(gate, b * p.sg_b + t * p.sg_t + c, c, p.C, vg, g);
#pragma unroll
            for (int i = 0; i < 4; ++i) y[i] = g[i] * w[i];
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) y[i] = w[i];
        }
        store4(static_cast<T*>(p.y), idx, c, p.C, vy, y);
    }
}

// Backward unpack phase 2: du = z + D e, e = dy * gate recomputed.
template <typename T>
WB_TC_HD void backward_unpack_store(const Params& p, const ZTile& tile, int tx, int ty, int64_t bx, int64_t by,
                                    int64_t bz) {
    const int64_t c = by * kXC + 4 * tx, b = bz * 8 + ty;
    if (c >= p.C || b >= p.B) return;
    const T* dy = static_cast<const T*>(p.dy);
    const T* gate = static_cast<const T*>(p.gate);
    const bool vd = quad_aligned<T>(dy, p.T * p.C, p.C, p.C), vx = quad_aligned<T>(p.du, p.T * p.C, p.C, p.C);
    const bool vg = gate != nullptr && quad_aligned<T>(gate, p.sg_b, p.sg_t, p.C);
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (p.D != nullptr)
#pragma unroll
        for (int i = 0; i < 4; ++i) d[i] = c + i < p.C ? p.D[c + i] : 0.0f;
#pragma unroll
    for (int tl = 0; tl < kXT; ++tl) {
        const int64_t t = bx * kXT + tl;
        if (t >= p.T) break;
        const int64_t idx = (b * p.T + t) * p.C + c;
        const float4 z = *reinterpret_cast<const float4*>(tile + tl * kZT + ty * kZB + 4 * tx);
        float v[4] = {z.x, z.y, z.z, z.w};
        if (p.D != nullptr) {
            float g[4], gt[4] = {1.0f, 1.0f, 1.0f, 1.0f};
            load4(dy, idx, c, p.C, vd, g);
            if (gate != nullptr) load4(gate, b * p.sg_b + t * p.sg_t + c, c, p.C, vg, gt);
#pragma unroll
            for (int i = 0; i < 4; ++i) v[i] = fmaf(d[i], g[i] * gt[i], v[i]);
        }
        store4(static_cast<T*>(p.du), idx, c, p.C, vx, v);
    }
}

}  // namespace tc
}  // namespace long_conv
}  // namespace wb
