// Chunked linear attention with a scalar decay, tensor-core path: the building blocks of
// chunk_linear_tc.cuh's kernels (wmma tile products from shared memory, accumulator moves, cp.async copies
// from global to shared memory and the staging of a chunk's rows). Written for the GPU and the CPU: in the
// host emulation (WB_EMULATE_WMMA, tests/emulate.h) `wmma` is the host shim and a copy is a memcpy.
#pragma once

#include <mma.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "chunk_linear.cuh"

namespace wb {
namespace chunk_linear {

#if defined(WB_EMULATE_WMMA) && !defined(__CUDA_ARCH__)
namespace wmma = ::emu::wmma;
#else
namespace wmma = ::nvcuda::wmma;
#endif

#define WB_HD __host__ __device__ __forceinline__

using bf16 = __nv_bfloat16;
constexpr int kWarps = kThreads / 32;

WB_HD int pad16(int64_t d) { return int((d + 15) / 16 * 16); }
WB_HD int64_t align128(int64_t bytes) { return (bytes + 127) / 128 * 128; }

using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// A 16 x 16 bfloat16 operand fragment from shared memory, by one ldmatrix.x4 (.trans for A col-major and B
// row-major). NVCC emits wmma's own loads without the .shared state space, which ptxas compiles to four
// generic 32-bit loads per lane, plus a transpose per register (MOVM) for the transposed layouts: every
// product of these kernels had loaded its operands that way. The four 8 x 8 matrices go to the fragment's
// four registers in the order wmma's loads fill them on sm_90 (read from their SASS: A row-major rows 0-7 /
// 8-15 of columns 0-7, then of columns 8-15; B col-major columns 0-7 of rows 0-7 / 8-15, then columns 8-15),
// which is the mma.m16n8k16 operand layout the HMMA instructions take. On the CPU, the wmma shim's load.
template <class Use, class Layout, class E>
WB_HD void load_frag(wmma::fragment<Use, 16, 16, 16, E, Layout>& f, const E* p, int ld) {
#if defined(__CUDA_ARCH__)
    constexpr bool row = std::is_same<Layout, wmma::row_major>::value;
    constexpr bool trans = std::is_same<Use, wmma::matrix_a>::value != row;
    const int l = int(threadIdx.x) % 32, j = l / 8, r = l % 8;
    // lane l gives row r of matrix j: stored rows 8 (j % 2) + r (row-major) or 8 (j / 2) + r (col-major)
    const E* at = row ? p + ((j % 2) * 8 + r) * ld + (j / 2) * 8 : p + ((j / 2) * 8 + r) * ld + (j % 2) * 8;
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(at));
    unsigned* x = reinterpret_cast<unsigned*>(&f.x[0]);
    if (trans) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(x[0]), "=r"(x[1]), "=r"(x[2]), "=r"(x[3])
                     : "r"(s));
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(x[0]), "=r"(x[1]), "=r"(x[2]), "=r"(x[3])
                     : "r"(s));
    }
#else
    wmma::load_matrix_sync(f, p, unsigned(ld));
#endif
}

// acc += sum_{k < K} A(m0 + ., k) B(k, n0 + .), operands bfloat16 in shared memory: A(m, k) = a[m * lda + k]
// (row_major) or a[k * lda + m] (col_major); B(k, n) = b[k * ldb + n] (row_major) or b[n * ldb + k].
template <class LA, class LB>
WB_HD void mma_k(FragC& acc, const bf16* a, int lda, const bf16* b, int ldb, int m0, int n0, int K) {
    constexpr bool ar = std::is_same<LA, wmma::row_major>::value;
    constexpr bool br = std::is_same<LB, wmma::row_major>::value;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LA> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LB> fb;
    for (int k = 0; k < K; k += 16) {
        load_frag(fa, ar ? a + m0 * lda + k : a + k * lda + m0, lda);
        load_frag(fb, br ? b + k * ldb + n0 : b + n0 * ldb + k, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
    }
}

// Column strips: acc[r] += A(m0 + 16 r, :) B(:, n0) over k < K for RB row tiles, one B fragment per k step
// shared by the RB products, whose accumulators are independent (RB chains of tensor-core ops in flight
// instead of one). Layouts as for mma_k.
template <int RB, class LA, class LB>
WB_HD void mma_k_strip(FragC (&acc)[RB], const bf16* a, int lda, const bf16* b, int ldb, int m0, int n0, int K) {
    constexpr bool ar = std::is_same<LA, wmma::row_major>::value;
    constexpr bool br = std::is_same<LB, wmma::row_major>::value;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LA> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LB> fb;
    for (int k = 0; k < K; k += 16) {
        load_frag(fb, br ? b + k * ldb + n0 : b + n0 * ldb + k, ldb);
#pragma unroll
        for (int r = 0; r < RB; ++r) {
            const int m = m0 + 16 * r;
            load_frag(fa, ar ? a + m * lda + k : a + k * lda + m, lda);
            wmma::mma_sync(acc[r], fa, fb, acc[r]);
        }
    }
}

// acc[r] += M(m0 + 16 r, :) Z(:, n0) over the chunk for a column strip, M [C][C] read as stored or
// transposed (`mt`: col-major), Z [C][ldz] row-major: the chunk mixes' product of their scores with a chunk
// operand.
template <int RB>
WB_HD void mma_scores_strip(FragC (&acc)[RB], const bf16* M, int ldm, bool mt, const bf16* Z, int ldz, int m0, int n0) {
    if (mt) {
        mma_k_strip<RB, wmma::col_major, wmma::row_major>(acc, M, ldm, Z, ldz, m0, n0, kChunk);
    } else {
        mma_k_strip<RB, wmma::row_major, wmma::row_major>(acc, M, ldm, Z, ldz, m0, n0, kChunk);
    }
}

// A warp step over the [C, 16 ct] output as column strips of RB row tiles (RB = 4, 2 or 1: the most that
// still gives every warp work): body(acc, m0, n0) accumulates FragC acc[RB] for rows m0 + 16 r, columns
// n0, and stores them.
template <int RB, class F>
WB_HD void strips_rb(int w, int ct, F&& body) {
    const int units = ct * (kChunk / 16 / RB);
    for (int u = w; u < units; u += kWarps) {
        FragC acc[RB];
#pragma unroll
        for (int r = 0; r < RB; ++r) wmma::fill_fragment(acc[r], 0.f);
        body(acc, (u / ct) * 16 * RB, (u % ct) * 16);
    }
}
template <class F>
WB_HD void strips(int w, int ct, F&& body) {
    if (ct >= kWarps) {
        strips_rb<4>(w, ct, body);
    } else if (ct >= kWarps / 2) {
        strips_rb<2>(w, ct, body);
    } else {
        strips_rb<1>(w, ct, body);
    }
}

// Accumulator loads, stores and zeroing, as templates: the steps' lambdas are compiled for the host too,
// where only a template's body is left unchecked until it is instantiated.
template <class F>
WB_HD void acc_zero(F& acc) {
    wmma::fill_fragment(acc, 0.f);
}
template <class F>
WB_HD void acc_load(F& acc, const float* p, int ld) {
    wmma::load_matrix_sync(acc, p, unsigned(ld), wmma::mem_row_major);
}
// Every element of an accumulator times v (a uniform scale needs no knowledge of the fragment's layout).
template <class F>
WB_HD void acc_scale(F& acc, float v) {
    for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= v;
}
template <class F>
WB_HD void acc_store(float* p, const F& acc, int ld) {
    wmma::store_matrix_sync(p, acc, unsigned(ld), wmma::mem_row_major);
}

// Eight bfloat16 values as one 16-byte word.
union Pack8 {
    uint4 u;
    bf16 h[8];
};

// Eight consecutive values (16-byte aligned bfloat16, or 32-byte float32 as two 16-byte halves) to and from
// float32 registers: the per-key mixes' elementwise steps work on 8 keys at a time.
WB_HD void load8(const bf16* s, float (&f)[8]) {
    Pack8 v;
    v.u = *reinterpret_cast<const uint4*>(s);
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = to_float(v.h[i]);
}
WB_HD void load8(const float* s, float (&f)[8]) {
    const float4 a = *reinterpret_cast<const float4*>(s), b = *reinterpret_cast<const float4*>(s + 4);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
WB_HD void store8(bf16* d, const float (&f)[8]) {
    Pack8 v;
#pragma unroll
    for (int i = 0; i < 8; ++i) v.h[i] = from_float<bf16>(f[i]);
    *reinterpret_cast<uint4*>(d) = v.u;
}
WB_HD void store8(float* d, const float (&f)[8]) {
    *reinterpret_cast<float4*>(d) = make_float4(f[0], f[1], f[2], f[3]);
    *reinterpret_cast<float4*>(d + 4) = make_float4(f[4], f[5], f[6], f[7]);
}

// 16 bytes from global to shared memory without a register round trip (cp.async: many in flight per
// thread, no wait until copy_wait()); a plain copy on the CPU.
WB_HD void copy16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__)
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src));
#else
    if (reinterpret_cast<uintptr_t>(dst) % 16 != 0 || reinterpret_cast<uintptr_t>(src) % 16 != 0) {
        std::fprintf(stderr, "copy16: misaligned %p <- %p (cp.async needs 16 bytes)\n", dst, src);
        std::abort();
    }
    std::memcpy(dst, src, 16);
#endif
}

// 4 bytes from global to shared memory, as copy16 (cp.async.ca: the 4-byte form), waited for alike.
WB_HD void copy4(void* dst, const void* src) {
#if defined(__CUDA_ARCH__)
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(src));
#else
    std::memcpy(dst, src, 4);
#endif
}

// Waits for this thread's copy16s (the step's barrier then publishes them to the block).
WB_HD void copy_wait() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_all;\n" ::);
#endif
}

// Closes this thread's group of copy16s; copy_wait_prior() waits for every group but the last one closed.
WB_HD void copy_commit() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
WB_HD void copy_wait_prior() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group 1;\n" ::);
#endif
}

// Whether 8-column segments of rows of D bfloat16 values starting at col0 are 16-byte aligned.
WB_HD bool rows_vec8(const void* base, int64_t D, int64_t col0) {
    return D % 8 == 0 && col0 % 8 == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0;
}

// Stages dst[r][e] = M[r][col0 + e] for r < rows_p, e < W (multiples of 16 and 8) of a row-major bfloat16
// matrix M with `rows` valid rows of D columns; zeros past them. Whole 16-byte segments go by copy16.
// A thread's segments walk (row, segment) by a fixed step of kThreads segments, so that only the first
// takes a division (W is a runtime width: a division per segment had cost more than its copy's issue).
struct SegWalk {
    int r, s, dr, ds, segs;
    WB_HD SegWalk(int tid, int segs_) : r(tid / segs_), s(tid % segs_), dr(kThreads / segs_), ds(kThreads % segs_), segs(segs_) {}
    WB_HD void next() {
        r += dr;
        s += ds;
        if (s >= segs) {
            s -= segs;
            ++r;
        }
    }
};

WB_HD void stage_raw(bf16* dst, int ld, const bf16* M, int64_t rows, int64_t D, int64_t col0, int rows_p, int W,
                     int tid) {
    const bool vec = rows_vec8(M, D, col0);
    for (SegWalk sw(tid, W / 8); sw.r < rows_p; sw.next()) {
        const int r = sw.r, e0 = sw.s * 8;
        bf16* d = dst + r * ld + e0;
        const bf16* src = M + r * D + col0 + e0;
        if (vec && r < rows && col0 + e0 + 8 <= D) {
            copy16(d, src);
        } else {
            Pack8 v;
#pragma unroll
            for (int i = 0; i < 8; ++i) v.h[i] = from_float<bf16>(r < rows && col0 + e0 + i < D ? to_float(src[i]) : 0.f);
            *reinterpret_cast<uint4*>(d) = v.u;
        }
    }
}

// Stages dst[r][e] = M[min(r, rows - 1)][e] for r < rows_p, e < W (a multiple of 4) of a row-major float32
// matrix with `rows` >= 1 valid rows of D columns (rows past them repeat the last: the per-key decays' b_L),
// zeros past column D. Whole 16-byte segments go by copy16.
WB_HD void stage_f32_rows(float* dst, int ld, const float* M, int64_t rows, int64_t D, int rows_p, int W, int tid) {
    const bool vec = D % 4 == 0 && reinterpret_cast<uintptr_t>(M) % 16 == 0;
    for (SegWalk sw(tid, W / 4); sw.r < rows_p; sw.next()) {
        const int r = sw.r, e0 = sw.s * 4;
        float* d = dst + r * ld + e0;
        const float* src = M + (r < rows ? r : rows - 1) * D + e0;
        if (vec && e0 + 4 <= D) {
            copy16(d, src);
        } else {
            for (int i = 0; i < 4; ++i) d[i] = e0 + i < D ? src[i] : 0.f;
        }
    }
}

// The chunk's rows of a [B, H, T, D] tensor: stage_raw of rows [0, C), `valid` of them real.
WB_HD void stage_rows_raw(const Params& p, const Chunk& c, bf16* dst, int ld, const bf16* src, int64_t D, int W,
                          int tid) {
    stage_raw(dst, ld, src + (c.bh * p.T + c.t0) * D, c.valid, D, 0, kChunk, W, tid);
}

#undef WB_HD

}  // namespace chunk_linear
}  // namespace wb
