// Mamba's selective scan: the per-thread work of the CUDA kernels (see selective_scan.h for the math, the
// shapes and the work split).
//
// Written once for the GPU and the CPU: every function takes a `Ctx` that provides the only things threads
// share (lane shuffles inside a warp, the block barrier, adds into shared memory). selective_scan.cu passes
// one built on the CUDA intrinsics; tests/emulate_selective_scan.cu passes one that runs every thread of a
// block as a CPU thread, so this exact code is checked against a float64 reference without a GPU.
//
// Rules that make that possible and keep the GPU code fast:
//   - control flow is uniform across the block: loops run over time (the same for every thread), and a
//     thread whose channel or state index is out of range computes on zeros and stores nothing, so every
//     lane reaches every shuffle and barrier;
//   - register arrays are indexed with compile-time constants only (fully unrolled loops).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "dtype.cuh"
#include "selective_scan.h"
#include "selective_scan_stage.cuh"

namespace wb {
namespace selective_scan {

using ::wb::from_float;  // dtype.cuh
using ::wb::to_float;


constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// 2^v: one MUFU instruction on the GPU (relative error about 2^-22); A is pre-scaled by log2(e), so
// exp(dt A) costs one multiply and this. Results below the smallest normal float flush to 0.
__host__ __device__ __forceinline__ float exp2_fast(float v) {
#if defined(__CUDA_ARCH__)
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
#else
    return std::exp2(v);
#endif
}

// Sums over the G lanes of a channel group (G divides 32; groups are aligned in the warp) of L per-step
// values at once, as a reduce-scatter: each round over lane bit O either halves the values a lane holds
// (it keeps one half, adds the partner's copy of that half) or, once a lane holds one value, is a plain
// butterfly. That is G/2 + G/4 + ... shuffles for L steps (8 for G = 16, L = 8) where one butterfly per
// step would take L * log2(G) (32); on the GPU shuffles, not exponentials, would otherwise bound the N <= 16
// kernels. On return v[0 .. spread(G, L)) hold the group's totals of steps `first + i`.
// Steps per sub-chunk: the backward pass keeps L states and decays per owned state in registers, so a thread
// that owns 4 states takes 4 steps at a time, one that owns 1 takes 8.
template <int NPL>
struct Len {
    static constexpr int sub = NPL == 1 ? 8 : 4;
    static constexpr int subs = kChunk / sub;
};

__host__ __device__ constexpr int spread(int G, int L) { return L >= G ? L / G : 1; }

template <int M, int O>
struct ReduceScatter {
    template <class Ctx, int L>
    __host__ __device__ __forceinline__ static void run(Ctx& ctx, int lane, float (&v)[L], int& first) {
        if constexpr (O >= 1) {
            if constexpr (M > 1) {
                constexpr int H = M / 2;
                const bool upper = (lane & O) != 0;
#pragma unroll
                for (int i = 0; i < H; ++i) {
                    const float keep = upper ? v[i + H] : v[i];
                    const float send = upper ? v[i] : v[i + H];
                    v[i] = keep + ctx.shfl_xor(send, O);
                }
                if (upper) first += H;
                ReduceScatter<H, O / 2>::run(ctx, lane, v, first);
            } else {
                v[0] += ctx.shfl_xor(v[0], O);
                ReduceScatter<1, O / 2>::run(ctx, lane, v, first);
            }
        }
    }
};

// Returns `first`; the lanes that hold the same totals (they differ only in the butterfly bits) are
// told apart by `writer`.
template <int G, int L, class Ctx>
__host__ __device__ __forceinline__ int group_reduce_scatter(Ctx& ctx, int lane, float (&v)[L]) {
    int first = 0;
    ReduceScatter<L, G / 2>::run(ctx, lane, v, first);
    return first;
}

template <int G, int L>
__host__ __device__ __forceinline__ bool writer(int lane) {
    return L >= G || (lane & (G / L - 1)) == 0;
}

// Shared memory of the backward pass, in floats: the sub-chunk start states [subs][NPL][THREADS], then the
// warps' sums over their channels of dB and dC for one sub-chunk, [bufs][warps][sub][G * NPL][2]. Two
// buffers when both fit the 48 KiB of static shared memory (one barrier per sub-chunk: a buffer is written
// again only two sub-chunks later, after every thread has passed the barrier that follows its reads), else
// one (a second barrier guards it).
template <int G, int NPL, int THREADS>
struct BwdSmem {
    static_assert(THREADS % 32 == 0 && G < 32, "whole warps, several channels per warp");
    static constexpr int warps = THREADS / 32;
    static constexpr int sub = Len<NPL>::subs * NPL * THREADS;
    static constexpr int wbuf = warps * Len<NPL>::sub * G * NPL * 2;
    static constexpr int bufs = (sub + 2 * wbuf) * 4 <= 48 * 1024 ? 2 : 1;
    static constexpr int total = sub + bufs * wbuf;
};

// The sum over the channels of a warp (lanes that differ in bits G .. 16) of one (dB, dC) pair, as a
// reduce-scatter: on the first channel bit, lanes with it clear keep dB and lanes with it set keep dC
// (adding the partner's copy), then plain butterflies over the remaining channel bits. 1 shuffle per pair
// for G = 16 (two channels per warp), 3 for G = 4. This replaced float atomicAdd into shared memory, which
// sm_90 compiles to a compare-and-swap loop (ATOMS.CAST.SPIN) that the block's channels contended for.
template <int G, class Ctx>
__host__ __device__ __forceinline__ float warp_channel_sum(Ctx& ctx, int lane32, float vb, float vc) {
    const bool upper = (lane32 & G) != 0;
    float v = (upper ? vc : vb) + ctx.shfl_xor(upper ? vb : vc, G);
#pragma unroll
    for (int off = 2 * G; off < 32; off *= 2) v += ctx.shfl_xor(v, off);
    return v;
}

// Which channel and states a thread owns.
template <int G, int NPL, int THREADS>
struct Owner {
    int lane;
    int64_t d;
    bool dv;  // channel in range
    int64_t n[NPL];
    bool nv[NPL];  // channel and state in range
    __host__ __device__ __forceinline__ Owner(const Params& p, int tid, int64_t tile) {
        lane = tid % G;
        d = tile * (THREADS / G) + tid / G;
        dv = d < p.D;
#pragma unroll
        for (int k = 0; k < NPL; ++k) {
            n[k] = int64_t(lane) * NPL + k;  // a lane's states are consecutive: one vector load (load_states)
            nv[k] = dv && n[k] < p.N;
        }
    }
};

// The float whose bits are u (a bfloat16's bits shifted or masked into the top half: that bfloat16's value).
__host__ __device__ __forceinline__ float bits_float(unsigned u) {
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

// An element loaded now and converted to float later: float32 as it is, bfloat16 as its bits zero-extended
// into 32 (one register each). A bfloat16 converted right at its load, or kept in bfloat16 arrays (which the
// compiler packs two to a register with a PRMT), put an instruction that waits for the load between it
// and the next load, so a thread's loads were issued one round trip at a time: the bfloat16 kernels ran
// 2.5-3.7x slower than the float32 ones (profile-selective-scan, BENCHMARKS.md).
// RO: on the GPU through the read-only path (__ldg): the inputs do not change during a launch, and loads
// the compiler knows cannot alias the shared-memory stores may be issued ahead of them.
template <typename T>
struct Raw {
    using type = float;
    template <bool RO = true>
    __host__ __device__ __forceinline__ static float load(const T* ptr, bool valid) {
#if defined(__CUDA_ARCH__)
        if constexpr (RO) {
            return valid ? __ldg(ptr) : 0.0f;
        } else {
            return valid ? *ptr : 0.0f;
        }
#else
        return valid ? *ptr : 0.0f;
#endif
    }
    __host__ __device__ __forceinline__ static float value(float r) { return r; }
};
template <>
struct Raw<__nv_bfloat16> {
    using type = unsigned;
    template <bool RO = true>
    __host__ __device__ __forceinline__ static unsigned load(const __nv_bfloat16* ptr, bool valid) {
        const unsigned short* q = reinterpret_cast<const unsigned short*>(ptr);
#if defined(__CUDA_ARCH__)
        if constexpr (RO) {
            return valid ? unsigned(__ldg(q)) : 0u;
        } else {
            return valid ? unsigned(*q) : 0u;
        }
#else
        return valid ? unsigned(*q) : 0u;
#endif
    }
    __host__ __device__ __forceinline__ static float value(unsigned r) { return bits_float(r << 16); }
};

// A load that reads nothing when !valid (the pointer may then be out of range), as a float. Measured on the
// H200 (BENCHMARKS.md): RO made the kernels with one state per thread 18-20% faster, but the backward pass
// with four 6% slower (the hoisted loads' registers spill at the 128-register budget), so the backward
// passes RO = (NPL == 1).
template <bool RO, typename T>
__host__ __device__ __forceinline__ float ld(const T* ptr, bool valid) {
    return Raw<T>::value(Raw<T>::template load<RO>(ptr, valid));
}

// A lane's NPL consecutive states of B_t or C_t at ptr (0 where not valid, or !tv). VEC (NPL = 4, N a
// multiple of 4, 16-byte aligned bases, so a lane's 4 states are valid together and aligned): one 16-byte
// (float32) or 8-byte (bfloat16, unpacked by a shift or a mask) load for the 4; else one load per state.
template <bool VEC, bool RO, typename T, int NPL>
__host__ __device__ __forceinline__ void load_states(const T* ptr, const bool (&nv)[NPL], bool tv, float (&v)[NPL]) {
    if constexpr (VEC && NPL == 4) {
        using W = std::conditional_t<sizeof(T) == 4, uint4, uint2>;
        W w{};
        if (nv[0] && tv) {
#if defined(__CUDA_ARCH__)
            w = *reinterpret_cast<const W*>(ptr);
#else
            memcpy(&w, ptr, sizeof(W));
#endif
        }
        if constexpr (sizeof(T) == 4) {
            v[0] = bits_float(w.x), v[1] = bits_float(w.y), v[2] = bits_float(w.z), v[3] = bits_float(w.w);
        } else {  // little-endian: the lower half is the earlier state
            v[0] = bits_float(w.x << 16), v[1] = bits_float(w.x & 0xffff0000u);
            v[2] = bits_float(w.y << 16), v[3] = bits_float(w.y & 0xffff0000u);
        }
    } else {
#pragma unroll
        for (int k = 0; k < NPL; ++k) v[k] = ld<RO>(ptr + k, nv[k] && tv);
    }
}

// Whether the backward pass takes VEC loads (load_states).
__host__ __device__ inline bool states_vec(const Params& p, int NPL) {
    auto al = [](const void* x) { return reinterpret_cast<uintptr_t>(x) % 16 == 0; };
    return NPL == 4 && p.N % 4 == 0 && al(p.Bm) && al(p.Cm);
}

// Every loop walks pointers forward or back by one step (D elements for x, dt, dy; N for B, C) instead of
// forming `t * D + d` products: the first version spent about 5 of every 6 instructions of its inner loop on
// 64-bit index arithmetic and re-read parameters, and ran 30x above its floor.

// The one-pass forward's staging of one chunk (stage_chunk), in T elements: x, dt of the block's THREADS / G
// channels ([2][kChunk][C]), then B and C rows ([2][kChunk][NP]).
template <int G, int NPL, int THREADS>
struct FwdStage {
    static constexpr int C = THREADS / G;
    static constexpr int NP = G * NPL;
    static constexpr int rows = 2 * kChunk * C;  // offset of the rows
    static constexpr int total = rows + 2 * kChunk * NP;
};

template <typename T, int G, int NPL, int THREADS, class Ctx>
__host__ __device__ __forceinline__ void forward_thread(const Params& p, Ctx& ctx, T* stage, int tid, int64_t tile,
                                                        int64_t b) {
    constexpr int kSub = Len<NPL>::sub;
    using SG = FwdStage<G, NPL, THREADS>;
    constexpr int CS = SG::C, NP = SG::NP;
    const Owner<G, NPL, THREADS> o(p, tid, tile);
    const int64_t D = p.D, N = p.N, T_ = p.T;
    // the inputs are read from the chunk's staging (stage_chunk: x, dt; B, C rows), pointers walked per step
    const T* xp = stage + tid / G;
    const T* dtp = xp + kChunk * CS;
    const T* bp = stage + SG::rows + o.n[0];  // state lane * NPL + k at bp[k]
    const T* cp = bp + kChunk * NP;
    T* yp = static_cast<T*>(p.y) + b * T_ * D + o.d;
    // advances by D * N per chunk; null when no gradient will be asked for (inference writes no checkpoints)
    float* ck = p.ckpt != nullptr ? p.ckpt + (b * p.nchunks * D + o.d) * N + o.n[0] : nullptr;

    float A2[NPL], h[NPL];
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
        A2[k] = o.nv[k] ? p.A[o.d * N + o.n[k]] * kLog2e : 0.0f;
        h[k] = (o.nv[k] && p.h0 != nullptr) ? p.h0[(b * D + o.d) * N + o.n[k]] : 0.0f;
    }
    // the skip term D x, added by one lane per channel
    const float Dl = (o.dv && o.lane == 0 && p.Dskip != nullptr) ? p.Dskip[o.d] : 0.0f;
    const bool wr = writer<G, kSub>(o.lane) && o.dv;

    for (int64_t t0 = 0; t0 < T_; t0 += kSub) {
        const int steps = T_ - t0 < kSub ? int(T_ - t0) : kSub;
        if (t0 % kChunk == 0) {
            if (ck != nullptr) {
#pragma unroll
                for (int k = 0; k < NPL; ++k)
                    if (o.nv[k]) ck[k] = h[k];
                ck += D * N;
            }
            // stage the chunk (the barrier before: every read of the previous one is done); 2 words in flight
            // for one state per thread (its 64-register budget spilled with 8)
            constexpr int kWords = NPL == 1 ? 2 : (sizeof(T) == 2 ? 4 : 8);
            ctx.sync();
            stage_chunk<T, CS, NP, THREADS, kWords>(p, static_cast<const T*>(p.x), static_cast<const T*>(p.dt),
                                                    static_cast<const T*>(p.Bm), static_cast<const T*>(p.Cm), b,
                                                    t0 / kChunk, tile * CS, tid, stage, stage + SG::rows);
            ctx.sync();
            xp = stage + tid / G;
            dtp = xp + kChunk * CS;
            bp = stage + SG::rows + o.n[0];
            cp = bp + kChunk * NP;
        }
        // Loads of the whole sub-chunk first (x and dt; B and C too for several states per thread), kept as
        // Raw and converted where used. Preloading B and C made four states per thread 1.1x (float32) and
        // 3.6x (bfloat16) faster, one state per thread 8% slower (BENCHMARKS.md).
        using R = Raw<T>;
        constexpr bool kPre = NPL > 1;
        constexpr int kPreSteps = kPre ? kSub : 1;
        typename R::type xr[kSub], dr[kSub], br[kPreSteps][NPL], cr[kPreSteps][NPL];
#pragma unroll
        for (int i = 0; i < kSub; ++i) {
            xr[i] = R::template load<false>(xp, o.dv && i < steps);
            dr[i] = R::template load<false>(dtp, o.dv && i < steps);
            xp += CS;
            dtp += CS;
            if constexpr (kPre) {
#pragma unroll
                for (int k = 0; k < NPL; ++k) {
                    br[i][k] = R::template load<false>(bp + k, o.nv[k] && i < steps);
                    cr[i][k] = R::template load<false>(cp + k, o.nv[k] && i < steps);
                }
                bp += NP;
                cp += NP;
            }
        }
        // Steps past T have x = dt = 0: the decay is 1 and the input 0, so the state does not change.
        float part[kSub];
#pragma unroll
        for (int i = 0; i < kSub; ++i) {
            const float xs = R::value(xr[i]), dts = R::value(dr[i]);
            const float u = dts * xs;
            float acc = Dl * xs;
#pragma unroll
            for (int k = 0; k < NPL; ++k) {
                const float bn = kPre ? R::value(br[kPre ? i : 0][k]) : ld<false>(bp + k, o.nv[k] && i < steps);
                const float cn = kPre ? R::value(cr[kPre ? i : 0][k]) : ld<false>(cp + k, o.nv[k] && i < steps);
                h[k] = fmaf(exp2_fast(dts * A2[k]), h[k], u * bn);
                acc = fmaf(h[k], cn, acc);
            }
            if constexpr (!kPre) {
                bp += NP;
                cp += NP;
            }
            part[i] = acc;
        }
        const int first = group_reduce_scatter<G, kSub>(ctx, o.lane, part);
#pragma unroll
        for (int i = 0; i < spread(G, kSub); ++i)
            if (wr && first + i < steps) yp[(t0 + first + i) * D] = from_float<T>(part[i]);
    }
    float* hT = p.hT + (b * D + o.d) * N;
#pragma unroll
    for (int k = 0; k < NPL; ++k)
        if (o.nv[k]) hT[o.n[k]] = h[k];
}

// SEG: the segmented backward (selective_scan.h): only chunk `seg`, from the adjoint the combine pass left
// in seg_g; dA and dD as that chunk's partial rows; dh0 is the combine's.
// VEC: a lane's B_t and C_t states as one vector load (load_states; the launcher's states_vec()).
template <typename T, int G, int NPL, int THREADS, bool SEG = false, bool VEC = false, class Ctx>
__host__ __device__ __forceinline__ void backward_thread(const Params& p, Ctx& ctx, float* smem, int tid,
                                                         int64_t tile, int64_t b, int64_t seg = 0) {
    using S = BwdSmem<G, NPL, THREADS>;
    constexpr int kSub = Len<NPL>::sub, kSubs = Len<NPL>::subs;
    constexpr int NP = G * NPL;  // state slots per channel (>= N)
    constexpr bool kRO = NPL == 1;  // see ld
    const Owner<G, NPL, THREADS> o(p, tid, tile);
    const int64_t D = p.D, N = p.N, T_ = p.T;
    const T* x0 = static_cast<const T*>(p.x) + b * T_ * D + o.d;
    const T* dt0 = static_cast<const T*>(p.dt) + b * T_ * D + o.d;
    const T* gy0 = static_cast<const T*>(p.gy) + b * T_ * D + o.d;
    const T* b0 = static_cast<const T*>(p.Bm) + b * T_ * N + o.n[0];
    const T* c0 = static_cast<const T*>(p.Cm) + b * T_ * N + o.n[0];
    T* dx0 = static_cast<T*>(p.dx) + b * T_ * D + o.d;
    T* ddt0 = static_cast<T*>(p.ddt) + b * T_ * D + o.d;
    float* dBp = p.dB_part + (tile * p.B + b) * T_ * N;
    float* dCp = p.dC_part + (tile * p.B + b) * T_ * N;
    float* sub = smem + tid;  // [kSubs][NPL][THREADS]: this thread's column
    // [bufs][warps][kSub][NP][2]: this warp's sums over its channels of (dB, dC) per step and state slot,
    // written by the lanes that hold them after warp_channel_sum (lane32 < 2G)
    float* wsum = smem + S::sub;
    const int lane32 = tid % 32, warp = tid / 32;
    const bool wsum_writer = lane32 < 2 * G;
    // the slot of state (lane32 % G) * NPL + k: (lane32 % G) * NPL * 2 + k * 2 + (dC ? 1 : 0)
    const int wsum_slot = (lane32 % G) * NPL * 2 + ((lane32 & G) != 0 ? 1 : 0);
    int buf = 0;

    // Only A log2(e) is kept (registers are the backward pass's limit): sum_n A G a h = ln(2) sum_n A2 G a h.
    float A2[NPL], g[NPL], dA[NPL], h[NPL];
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
        A2[k] = o.nv[k] ? p.A[o.d * N + o.n[k]] * kLog2e : 0.0f;
        // g holds exp(dt_{t+1} A) ⊙ G_{t+1} on entry to step t; at t = T - 1 that is dL/dh_T.
        if constexpr (SEG) {
            g[k] = o.nv[k] ? p.seg_g[((b * p.nchunks + seg) * D + o.d) * N + o.n[k]] : 0.0f;
        } else {
            g[k] = (o.nv[k] && p.ghT != nullptr) ? p.ghT[(b * D + o.d) * N + o.n[k]] : 0.0f;
        }
        dA[k] = 0.0f;
        h[k] = 0.0f;
    }
    const float Dl = (o.dv && o.lane == 0 && p.Dskip != nullptr) ? p.Dskip[o.d] : 0.0f;
    const bool first_lane = o.lane == 0;
    const bool wr = writer<G, kSub>(o.lane) && o.dv;
    float dD = 0.0f;

    for (int64_t c = SEG ? seg : p.nchunks - 1; c >= (SEG ? seg : 0); --c) {
        const int64_t tc = c * kChunk;
        const float* ck = p.ckpt + ((b * p.nchunks + c) * D + o.d) * N + o.n[0];
#pragma unroll
        for (int k = 0; k < NPL; ++k) h[k] = o.nv[k] ? ck[k] : 0.0f;
        // Level 1: the state at the start of every sub-chunk, from the chunk's checkpoint.
        {
            const T* xq = x0 + tc * D;
            const T* dq = dt0 + tc * D;
            const T* bq = b0 + tc * N;
            for (int s = 0; s < kSubs; ++s) {
#pragma unroll
                for (int k = 0; k < NPL; ++k) sub[(s * NPL + k) * THREADS] = h[k];
                if (s == kSubs - 1) break;  // the last sub-chunk's end state is not needed
                const int64_t ts = tc + s * kSub;
                const int steps = T_ - ts < kSub ? (T_ > ts ? int(T_ - ts) : 0) : kSub;
#pragma unroll
                for (int i = 0; i < kSub; ++i) {
                    const float xt = ld<kRO>(xq, o.dv && i < steps);
                    const float dtt = ld<kRO>(dq, o.dv && i < steps);
                    const float u = dtt * xt;
                    float bv[NPL];
                    load_states<VEC, kRO>(bq, o.nv, i < steps, bv);
#pragma unroll
                    for (int k = 0; k < NPL; ++k) h[k] = fmaf(exp2_fast(dtt * A2[k]), h[k], u * bv[k]);
                    xq += D;
                    dq += D;
                    bq += N;
                }
            }
        }
        // Level 2, sub-chunks last first: recompute kSub states, then run the adjoint back through them.
        for (int s = kSubs - 1; s >= 0; --s) {
            const int64_t ts = tc + s * kSub;
            if (ts >= T_) continue;  // uniform
            const int steps = T_ - ts < kSub ? int(T_ - ts) : kSub;
            const T* xq = x0 + ts * D;
            const T* dq = dt0 + ts * D;
            const T* bq = b0 + ts * N;
            float hp[kSub][NPL], av[kSub][NPL];  // h_{t-1} and exp(dt_t A) for t = ts + i
#pragma unroll
            for (int k = 0; k < NPL; ++k) h[k] = sub[(s * NPL + k) * THREADS];
#pragma unroll
            for (int i = 0; i < kSub; ++i) {
                const float xt = ld<kRO>(xq, o.dv && i < steps);
                const float dtt = ld<kRO>(dq, o.dv && i < steps);
                const float u = dtt * xt;
                float bv[NPL];
                load_states<VEC, kRO>(bq, o.nv, i < steps, bv);
#pragma unroll
                for (int k = 0; k < NPL; ++k) {
                    av[i][k] = exp2_fast(dtt * A2[k]);
                    hp[i][k] = h[k];
                    h[k] = fmaf(av[i][k], h[k], u * bv[k]);
                }
                if (i + 1 < kSub) {  // stop on the last step: the reverse walk starts there
                    xq += D;
                    dq += D;
                    bq += N;
                }
            }
            // Per step, this lane's parts of dx = dt sum_n G B + D gy and ddt = x sum_n G B + sum_n A G a h_{t-1}
            // (A = ln(2) A2), summed over the group after the sub-chunk. The walk is backwards in time.
            const T* gq = gy0 + (ts + kSub - 1) * D;
            const T* cq = c0 + (ts + kSub - 1) * N;
            float dxv[kSub], ddtv[kSub];
#pragma unroll
            for (int i = kSub - 1; i >= 0; --i) {
                const bool tv = i < steps;
                const float xt = ld<kRO>(xq, o.dv && tv);
                const float dtt = ld<kRO>(dq, o.dv && tv);
                const float gyt = ld<kRO>(gq, o.dv && tv);
                const float u = dtt * xt;
                float s1 = 0.0f, s2 = 0.0f;  // sum_n G B, sum_n A2 G a h_{t-1}
                float bv[NPL], cv[NPL];
                load_states<VEC, kRO>(bq, o.nv, tv, bv);
                load_states<VEC, kRO>(cq, o.nv, tv, cv);
#pragma unroll
                for (int k = 0; k < NPL; ++k) {
                    const float bn = bv[k];
                    const float cn = cv[k];
                    const float Gk = fmaf(gyt, cn, g[k]);  // dL/dh_t (0 past T)
                    const float ht = fmaf(av[i][k], hp[i][k], u * bn);
                    const float q = Gk * av[i][k] * hp[i][k];
                    s1 = fmaf(Gk, bn, s1);
                    s2 = fmaf(A2[k], q, s2);
                    dA[k] = fmaf(dtt, q, dA[k]);
                    // past T: Gk = g (the decay there is 1) and everything else adds 0
                    g[k] = av[i][k] * Gk;
                    // dB_t[n] and dC_t[n], summed over the warp's channels. Every lane takes part: past T,
                    // for a state n >= N or a channel d >= D, u, gy and h are 0 and add exact zeros.
                    const float wv = warp_channel_sum<G>(ctx, lane32, Gk * u, gyt * ht);
                    if (wsum_writer)
                        wsum[((buf * S::warps + warp) * kSub + i) * NP * 2 + k * 2 + wsum_slot] = wv;
                }
                dxv[i] = fmaf(dtt, s1, Dl * gyt);
                ddtv[i] = fmaf(xt, s1, s2 * kLn2);
                dD = fmaf(first_lane ? gyt : 0.0f, xt, dD);
                xq -= D;
                dq -= D;
                gq -= D;
                bq -= N;
                cq -= N;
            }
            {
                const int first = group_reduce_scatter<G, kSub>(ctx, o.lane, dxv);
                group_reduce_scatter<G, kSub>(ctx, o.lane, ddtv);
#pragma unroll
                for (int i = 0; i < spread(G, kSub); ++i) {
                    if (wr && first + i < steps) {
                        dx0[(ts + first + i) * D] = from_float<T>(dxv[i]);
                        ddt0[(ts + first + i) * D] = from_float<T>(ddtv[i]);
                    }
                }
            }
            // This block's sums over its channels of dB and dC for the sub-chunk: the warps' sums added up,
            // one partial row per step (consecutive entries, consecutive states: coalesced stores).
            ctx.sync();
            const float* wb = wsum + buf * S::wbuf;
            for (int e = tid; e < 2 * kSub * NP; e += THREADS) {
                const int which = e / (kSub * NP), i = (e / NP) % kSub, n = e % NP;
                float acc = 0.0f;
#pragma unroll
                for (int w = 0; w < S::warps; ++w) acc += wb[((w * kSub + i) * NP + n) * 2 + which];
                if (i < steps && n < N) (which == 0 ? dBp : dCp)[(ts + i) * N + n] = acc;
            }
            if constexpr (S::bufs == 2) {
                buf ^= 1;
            } else {
                ctx.sync();
            }
        }
    }
    // After step 0, g = exp(dt_0 A) ⊙ G_0 = dL/dh0.
    const int64_t row = SEG ? b * p.nchunks + seg : b;  // this thread's partial row of dA and dD
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
        if (o.nv[k]) {
            if (!SEG) p.dh0[(b * D + o.d) * N + o.n[k]] = g[k];
            p.dA_part[(row * D + o.d) * N + o.n[k]] = dA[k];
        }
    }
    if (first_lane && o.dv) p.dD_part[row * D + o.d] = dD;
}

}  // namespace selective_scan
}  // namespace wb
