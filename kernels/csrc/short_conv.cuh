// Short causal depthwise convolution: the per-thread work of the CUDA kernels, written as __host__ __device__
// functions so that tests/emulate_short_conv.cu can run exactly this code on the CPU, thread by thread and
// block by block, against a float64 reference (no GPU needed).
//
// One thread owns `vec` adjacent channels of one batch row and a chunk of time steps; the K taps, the bias
// and the last K-1 inputs (and, backward, the last K-1 output gradients) stay in registers as it walks
// forward in time. Every register array is indexed with compile-time constants only (unrolled loops).
// Its inputs arrive through a ring of shared-memory slots that only this thread uses: cp.async copies
// kFwdStages - 1 (kBwdStages - 1) steps ahead of the step being computed, so a thread has that many loads in
// flight at no register cost (batches of 4 or 2 loads into registers had moved 1.2-1.6 TB/s in bfloat16, of
// the H200's 4.3: BENCHMARKS.md).
//
// Backward, with z the pre-activation and g = dL/dz = gy * act'(z) (z recomputed, never stored):
//   dx[u]   = sum_j w[j] * g[u + (K-1) - j]          (an anti-causal convolution of g)
//   dw[j]  += g[s] * x[s - (K-1) + j]                 (summed over b, s: per thread, then per block, then
//   dbias  += g[s]                                     over the partial rows by the finishing kernel)
// A thread owning [t0, t1) walks s over [t0 - (K-1), t1 + K - 1): the steps before t0 only fill the input
// history (to recompute z), and it needs g up to t1 + K - 2 for dx[t1 - 1]. The halo steps (s >= t1) feed
// dx only, not dw/dbias.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "dtype.cuh"
#include "short_conv.h"

namespace wb {
namespace short_conv {

using ::wb::from_float;  // dtype.cuh
using ::wb::to_float;


__host__ __device__ __forceinline__ float sigmoid(float z) {
#if defined(__CUDA_ARCH__)
    // 1 / (1 + 2^(-z log2 e)) with the approximate exponential and reciprocal (2 ulp each), subnormals
    // flushed: 4 instructions where __expf and a division take 7-10. exp(+large) = inf gives 1 / inf = 0
    // and exp(-large) = 0 gives 1, as they should.
    float e, r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(z * -1.4426950408889634f));
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + e));
    return r;
#else
    return 1.0f / (1.0f + std::exp(-z));
#endif
}

// `VEC` elements as one aligned access: 16 bytes for 8 bf16 or 4 float, 8 bytes for 4 bf16 or 2 float.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
    T v[VEC];
};

// The machine word of a BYTES-wide access (one vector load or store instruction on the GPU).
template <int BYTES>
struct Word;
template <>
struct Word<16> {
    using type = uint4;
};
template <>
struct Word<8> {
    using type = uint2;
};
template <>
struct Word<4> {
    using type = unsigned;
};
template <>
struct Word<2> {
    using type = unsigned short;
};

// Elements <-> their word, through memcpy (register moves on the GPU: element structs like __nv_bfloat16
// would otherwise be copied one by one, as 8 two-byte accesses instead of one 16-byte access).
template <typename T, int VEC>
__host__ __device__ __forceinline__ void unpack_word(const typename Word<sizeof(T) * VEC>::type& w,
                                                     float (&out)[VEC]) {
    T e[VEC];
    memcpy(e, &w, sizeof(e));
#pragma unroll
    for (int v = 0; v < VEC; ++v) out[v] = to_float(e[v]);
}

template <typename T, int VEC>
__host__ __device__ __forceinline__ void store(T* p, const float (&in)[VEC]) {
    T e[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) e[v] = from_float<T>(in[v]);
    typename Word<sizeof(T) * VEC>::type w;
    memcpy(&w, e, sizeof(e));
    *reinterpret_cast<typename Word<sizeof(T) * VEC>::type*>(p) = w;
}

template <int VEC>
__host__ __device__ __forceinline__ void zero(float (&a)[VEC]) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) a[v] = 0.0f;
}

template <int VEC>
__host__ __device__ __forceinline__ void copy(float (&dst)[VEC], const float (&src)[VEC]) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) dst[v] = src[v];
}

// Register arrays need at least one element even when K = 1 leaves no history.
template <int K>
struct Hist {
    static constexpr int n = K > 1 ? K - 1 : 1;
};

template <typename T, int K, int VEC>
__host__ __device__ __forceinline__ void load_taps(const Params& p, int64_t c0, float (&w)[K][VEC],
                                                   float (&bias)[VEC]) {
    const T* pw = static_cast<const T*>(p.w);
    const T* pb = static_cast<const T*>(p.bias);
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
#pragma unroll
        for (int j = 0; j < K; ++j) w[j][v] = to_float(pw[(c0 + v) * K + j]);
        bias[v] = pb != nullptr ? to_float(pb[c0 + v]) : 0.0f;
    }
}

// z = bias + sum_j w[j] x[t - (K-1) + j]; hist[j] = x[t - (K-1) + j] for j < K-1, xt = x[t].
template <int K, int VEC>
__host__ __device__ __forceinline__ void preact(const float (&w)[K][VEC], const float (&bias)[VEC],
                                                const float (&hist)[Hist<K>::n][VEC], const float (&xt)[VEC],
                                                float (&z)[VEC]) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
        float acc = bias[v];
#pragma unroll
        for (int j = 0; j < K - 1; ++j) acc = fmaf(w[j][v], hist[j][v], acc);
        z[v] = fmaf(w[K - 1][v], xt[v], acc);
    }
}

// Slide a window of the last K-1 values by one step, `now` entering at the end.
template <int K, int VEC>
__host__ __device__ __forceinline__ void slide(float (&hist)[Hist<K>::n][VEC], const float (&now)[VEC]) {
    if (K > 1) {
#pragma unroll
        for (int j = 0; j + 1 < K - 1; ++j) copy(hist[j], hist[j + 1]);
        copy(hist[Hist<K>::n - 1], now);
    }
}

// Ring slots per thread: up to kStages - 1 steps in flight (one slot is being read while the others fill).
// The forward pass copies one tensor per step, the backward pass two. Tools may override them to measure.
#ifndef WB_SHORT_CONV_FWD_STAGES
#define WB_SHORT_CONV_FWD_STAGES 8
#endif
#ifndef WB_SHORT_CONV_BWD_STAGES
#define WB_SHORT_CONV_BWD_STAGES 8
#endif
constexpr int kFwdStages = WB_SHORT_CONV_FWD_STAGES;
constexpr int kBwdStages = WB_SHORT_CONV_BWD_STAGES;

// BYTES from global to shared memory (`dst`: a 32-bit shared-memory address on the GPU, a pointer on the
// CPU). 16, 8 and 4 bytes go by cp.async (in flight until copy_wait_pending); 2 bytes (one bfloat16: the
// unvectorised fallback) by a plain load and store, which waits for the load. A plain copy on the CPU.
#if defined(__CUDA_ARCH__)
using SharedAddr = unsigned;
#else
using SharedAddr = unsigned char*;
#endif
template <int BYTES>
__host__ __device__ __forceinline__ void copy_async(SharedAddr dst, const void* src) {
#if defined(__CUDA_ARCH__)
    if constexpr (BYTES == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
    } else if constexpr (BYTES == 8 || BYTES == 4) {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(dst), "l"(src), "n"(BYTES) : "memory");
    } else {
        static_assert(BYTES == 2, "copy_async: 2, 4, 8 or 16 bytes");
        const unsigned short v = *static_cast<const unsigned short*>(src);
        asm volatile("st.shared.u16 [%0], %1;\n" ::"r"(dst), "h"(v) : "memory");
    }
#else
    std::memcpy(dst, src, BYTES);
#endif
}

// Closes this thread's current group of copies (one group per step, empty or not, so counts stay uniform).
__host__ __device__ __forceinline__ void copy_commit() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's groups are still in flight.
template <int N>
__host__ __device__ __forceinline__ void copy_wait_pending() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// One thread's ring: slot i of tensor m at byte (m * STAGES + i) * kSlot from the thread's first slot, the
// threads of a block side by side (consecutive threads, consecutive words: conflict-free). On the GPU the
// ring is addressed by its 32-bit shared-memory address, so no slot costs a generic-to-shared conversion.
// The copy for step s + STAGES - 1 goes into the slot read at step s - 1, whose values the thread has
// already used, so a slot is never overwritten while it is being read.
template <typename T, int VEC, int STAGES>
struct Ring {
    static constexpr int kBytes = int(sizeof(T)) * VEC;
    static constexpr int kSlot = kThreads * kBytes;  // bytes between a thread's consecutive slots
    static constexpr int kTensor = STAGES * kSlot;  // bytes between the rings of two tensors
    using W = typename Word<kBytes>::type;
    SharedAddr base;

    __host__ __device__ __forceinline__ Ring(void* block_ring, int tid) {
#if defined(__CUDA_ARCH__)
        base = unsigned(__cvta_generic_to_shared(block_ring)) + unsigned(tid * kBytes);
#else
        base = static_cast<unsigned char*>(block_ring) + tid * kBytes;
#endif
    }

    // `off`: a slot's byte offset, (m * STAGES + i) * kSlot.
    __host__ __device__ __forceinline__ void fetch(int off, const T* src) const {
        copy_async<kBytes>(base + off, src);
    }

    __host__ __device__ __forceinline__ void read(int off, float (&out)[VEC]) const {
        W w;
#if defined(__CUDA_ARCH__)
        const unsigned a = base + unsigned(off);
        if constexpr (kBytes == 16) {
            asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                         : "=r"(w.x), "=r"(w.y), "=r"(w.z), "=r"(w.w)
                         : "r"(a)
                         : "memory");
        } else if constexpr (kBytes == 8) {
            asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(w.x), "=r"(w.y) : "r"(a) : "memory");
        } else if constexpr (kBytes == 4) {
            asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(w) : "r"(a) : "memory");
        } else {
            asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(w) : "r"(a) : "memory");
        }
#else
        std::memcpy(&w, base + off, sizeof(w));
#endif
        unpack_word<T, VEC>(w, out);
    }

    // The slot after `off` within one tensor's ring.
    __host__ __device__ __forceinline__ static int next(int off) { return off + kSlot == kTensor ? 0 : off + kSlot; }
};

template <typename T, int K, int VEC, bool SILU>
__host__ __device__ __forceinline__ void forward_thread(const Params& p, int tx, int ty, int64_t bx, int64_t by,
                                                        int64_t bz, void* block_ring) {
    constexpr int S = kFwdStages;
    using R = Ring<T, VEC, S>;
    const int64_t c0 = (bx * kThreadsX + tx) * VEC;
    const int64_t t0 = (by * kThreadsY + ty) * p.chunk;
    if (c0 >= p.C || t0 >= p.T) return;
    const int64_t t1 = t0 + p.chunk < p.T ? t0 + p.chunk : p.T;
    const int64_t ts = t0 - (K - 1) > 0 ? t0 - (K - 1) : 0;  // the first step read: history for z[t0]
    const int n = int(t1 - ts), nh = int(t0 - ts);  // steps walked; the first nh are history only
    const int64_t C = p.C;
    const T* xf = static_cast<const T*>(p.x) + (bz * p.T + ts) * C + c0;  // the next step to fetch
    T* yp = static_cast<T*>(p.y) + (bz * p.T + t0) * C + c0;
    const R ring(block_ring, ty * kThreadsX + tx);

    float w[K][VEC], bias[VEC];
    load_taps<T, K, VEC>(p, c0, w, bias);
    float hist[Hist<K>::n][VEC];  // x[s - (K-1) + j]; zeros before t = 0
#pragma unroll
    for (int j = 0; j < Hist<K>::n; ++j) zero(hist[j]);

#pragma unroll
    for (int i = 0; i < S - 1; ++i) {
        if (i < n) ring.fetch(i * R::kSlot, xf);
        xf += C;
        copy_commit();
    }
    int cur = 0, refill = (S - 1) * R::kSlot;
    for (int k = 0; k < n; ++k) {
        if (k + S - 1 < n) ring.fetch(refill, xf);
        xf += C;
        copy_commit();
        copy_wait_pending<S - 1>();  // step k's group is complete
        float xt[VEC];
        ring.read(cur, xt);
        if (k >= nh) {
            float z[VEC];
            preact<K, VEC>(w, bias, hist, xt, z);
            if (SILU) {
#pragma unroll
                for (int v = 0; v < VEC; ++v) z[v] = z[v] * sigmoid(z[v]);
            }
            store<T, VEC>(yp, z);
            yp += C;
        }
        slide<K, VEC>(hist, xt);
        refill = cur;
        cur = R::next(cur);
    }
}

// Fills acc[j] (j < K) with this thread's share of dw[c, j] and acc[K] with its share of dbias[c], and
// writes gx for the steps it owns. Ring tensor 0 is x, 1 is gy.
template <typename T, int K, int VEC, bool SILU>
__host__ __device__ __forceinline__ void backward_thread(const Params& p, int tx, int ty, int64_t bx, int64_t by,
                                                         int64_t bz, void* block_ring, float (&acc)[K + 1][VEC]) {
    constexpr int S = kBwdStages;
    using R = Ring<T, VEC, S>;
#pragma unroll
    for (int j = 0; j <= K; ++j) zero(acc[j]);
    const int64_t c0 = (bx * kThreadsX + tx) * VEC;
    const int64_t t0 = (by * kThreadsY + ty) * p.chunk;
    if (c0 >= p.C || t0 >= p.T) return;
    const int64_t C = p.C;
    const int64_t t1 = t0 + p.chunk < p.T ? t0 + p.chunk : p.T;
    const int64_t ts = t0 - (K - 1) > 0 ? t0 - (K - 1) : 0;  // x history for z[t0]
    const int64_t s_end = t1 + K - 1;  // dx[u] is complete at s = u + K - 1
    const int64_t s_load = s_end < p.T ? s_end : p.T;  // inputs exist up to p.T - 1; g is 0 beyond
    // Steps walked, k = s - ts: [0, nh) history (x only), [nh, no) owned (dw, dbias), [0, nl) with inputs;
    // dx[s - (K-1)] is written from k = nh + K - 1 on.
    const int n = int(s_end - ts), nh = int(t0 - ts), no = int(t1 - ts), nl = int(s_load - ts);
    const int64_t first = (bz * p.T + ts) * C + c0;
    const T* xf = static_cast<const T*>(p.x) + first;  // the next step to fetch
    const T* gf = static_cast<const T*>(p.gy) + first;
    T* gxp = static_cast<T*>(p.gx) + (bz * p.T + t0) * C + c0;
    const R ring(block_ring, ty * kThreadsX + tx);
    auto fetch = [&](int off, int k) {
        if (k < nl) {
            ring.fetch(off, xf);
            if (k >= nh) ring.fetch(off + R::kTensor, gf);
        }
        xf += C;
        gf += C;
        copy_commit();
    };

    float w[K][VEC], bias[VEC];
    load_taps<T, K, VEC>(p, c0, w, bias);
    float hist[Hist<K>::n][VEC];  // x[s - (K-1) + j]; zeros before t = 0
    float ghist[Hist<K>::n][VEC];  // g[s - (K-1) + j]; steps before t0 never reach an owned dx
#pragma unroll
    for (int j = 0; j < Hist<K>::n; ++j) {
        zero(hist[j]);
        zero(ghist[j]);
    }

#pragma unroll
    for (int i = 0; i < S - 1; ++i) fetch(i * R::kSlot, i);
    int cur = 0, refill = (S - 1) * R::kSlot;
#pragma unroll 2  // 198 -> 180 instructions per step (bf16, K 4, SiLU): fewer moves of the register windows
    for (int k = 0; k < n; ++k) {
        fetch(refill, k + S - 1);
        copy_wait_pending<S - 1>();  // step k's group is complete
        float xt[VEC], g[VEC];
        if (k < nl) {
            ring.read(cur, xt);
        } else {
            zero(xt);
        }
        if (k >= nh && k < nl) {
            float gt[VEC];
            ring.read(cur + R::kTensor, gt);
            if (SILU) {
                float z[VEC];
                preact<K, VEC>(w, bias, hist, xt, z);
#pragma unroll
                for (int v = 0; v < VEC; ++v) {
                    const float sg = sigmoid(z[v]);
                    g[v] = gt[v] * (sg * (1.0f + z[v] * (1.0f - sg)));
                }
            } else {
                copy(g, gt);
            }
        } else {
            zero(g);  // history steps (they never reach an owned dx) and steps past the end
        }
        if (k >= nh && k < no) {
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
#pragma unroll
                for (int j = 0; j < K - 1; ++j) acc[j][v] = fmaf(g[v], hist[j][v], acc[j][v]);
                acc[K - 1][v] = fmaf(g[v], xt[v], acc[K - 1][v]);
                acc[K][v] += g[v];
            }
        }
        if (k >= nh + K - 1) {
            // dx[s - (K-1)] = sum_j w[j] g[s - j]: g[s] is g, g[s - j] is ghist[K-1-j] for j >= 1.
            float dx[VEC];
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
                float a = w[0][v] * g[v];
#pragma unroll
                for (int j = 1; j < K; ++j) a = fmaf(w[j][v], ghist[K - 1 - j][v], a);
                dx[v] = a;
            }
            store<T, VEC>(gxp, dx);
            gxp += C;
        }
        slide<K, VEC>(hist, xt);
        slide<K, VEC>(ghist, g);
        refill = cur;
        cur = R::next(cur);
    }
}

// Shared memory of a backward block: the ring while it walks, then (after a barrier) the stash of its
// partial sums. Bytes, rounded up to 16.
template <typename T, int K, int VEC>
__host__ __device__ constexpr int backward_smem_bytes() {
    constexpr int ring = 2 * Ring<T, VEC, kBwdStages>::kTensor;
    constexpr int stash = (K + 1) * VEC * kThreads * int(sizeof(float));
    return ((ring > stash ? ring : stash) + 15) / 16 * 16;
}

// Block reduction of the backward partial sums, in two steps separated by a barrier:
// stash (every thread writes its acc to shared memory), then reduce (thread (tx, ty) sums fields
// ty, ty + kThreadsY, ... over the block's kThreadsY time chunks and writes them to its partial row).
// Layout smem[f][ty][tx]: consecutive tx hit consecutive banks on both sides.
template <int K, int VEC>
__host__ __device__ __forceinline__ void stash(float* smem, int tx, int ty, const float (&acc)[K + 1][VEC]) {
#pragma unroll
    for (int j = 0; j <= K; ++j) {
#pragma unroll
        for (int v = 0; v < VEC; ++v) smem[(j * VEC + v) * kThreads + ty * kThreadsX + tx] = acc[j][v];
    }
}

template <int K, int VEC>
__host__ __device__ __forceinline__ void reduce(const Params& p, const float* smem, int tx, int ty, int64_t bx,
                                                int64_t by, int64_t bz, int64_t grid_y) {
    const int64_t c0 = (bx * kThreadsX + tx) * VEC;
    if (c0 >= p.C) return;
    const int64_t row = bz * grid_y + by;
    for (int f = ty; f < (K + 1) * VEC; f += kThreadsY) {
        float s = 0.0f;
#pragma unroll
        for (int y = 0; y < kThreadsY; ++y) s += smem[f * kThreads + y * kThreadsX + tx];
        const int j = f / VEC, v = f % VEC;
        p.partial[(row * (K + 1) + j) * p.C + c0 + v] = s;
    }
}


// The finishing kernel: dw[c, j] and dbias[c] are the sums of the partial rows. A block is kFinishX channels
// by kFinishY row slices: thread (tx, ty) sums rows ty, ty + kFinishY, ... of all K + 1 fields of channel
// bx * kFinishX + tx (K + 1 independent loads per row, so several are in flight), stashes them, and after a
// barrier thread (tx, ty) adds up field ty over the slices and writes it in x's dtype.
template <int K>
__host__ __device__ __forceinline__ void finish_stash(const Params& p, float* smem, int tx, int ty, int64_t bx) {
    const int64_t c = bx * kFinishX + tx;
    float s[K + 1];
#pragma unroll
    for (int j = 0; j <= K; ++j) s[j] = 0.0f;
    if (c < p.C) {
        for (int64_t r = ty; r < p.partial_rows; r += kFinishY) {
            const float* row = p.partial + r * (K + 1) * p.C + c;
#pragma unroll
            for (int j = 0; j <= K; ++j) s[j] += row[j * p.C];
        }
    }
#pragma unroll
    for (int j = 0; j <= K; ++j) smem[(j * kFinishY + ty) * kFinishX + tx] = s[j];
}

template <typename T, int K>
__host__ __device__ __forceinline__ void finish_write(const Params& p, const float* smem, int tx, int ty,
                                                      int64_t bx) {
    const int64_t c = bx * kFinishX + tx;
    if (c >= p.C || ty > K) return;
    float s = 0.0f;
    for (int y = 0; y < kFinishY; ++y) s += smem[(ty * kFinishY + y) * kFinishX + tx];
    if (ty < K) {
        static_cast<T*>(p.dw)[c * K + ty] = from_float<T>(s);
    } else if (p.dbias != nullptr) {
        static_cast<T*>(p.dbias)[c] = from_float<T>(s);
    }
}

}  // namespace short_conv
}  // namespace wb
