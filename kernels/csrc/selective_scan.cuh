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

#include "selective_scan.h"

namespace wb {
namespace selective_scan {

__host__ __device__ __forceinline__ float to_f(float v) { return v; }
__host__ __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__host__ __device__ __forceinline__ T from_f(float v);
template <>
__host__ __device__ __forceinline__ float from_f<float>(float v) {
    return v;
}
template <>
__host__ __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

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

// Sums over the G lanes of a channel group (G divides 32; groups are aligned in the warp) of kSub per-step
// values at once, as a reduce-scatter: each round over lane bit O either halves the values a lane holds
// (it keeps one half, adds the partner's copy of that half) or, once a lane holds one value, is a plain
// butterfly. That is G/2 + G/4 + ... shuffles for kSub steps (8 for G = 16) where one butterfly per step
// would take kSub * log2(G) (32); on the GPU shuffles, not exponentials, would otherwise bound the N <= 16
// kernels. On return v[0 .. kSpread) hold the group's totals of steps `first + i`.
constexpr int spread(int G) { return kSub >= G ? kSub / G : 1; }

template <int M, int O>
struct ReduceScatter {
    template <class Ctx>
    __host__ __device__ __forceinline__ static void run(Ctx& ctx, int lane, float (&v)[kSub], int& first) {
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
template <int G, class Ctx>
__host__ __device__ __forceinline__ int group_reduce_scatter(Ctx& ctx, int lane, float (&v)[kSub]) {
    int first = 0;
    ReduceScatter<kSub, G / 2>::run(ctx, lane, v, first);
    return first;
}

template <int G>
__host__ __device__ __forceinline__ bool writer(int lane) {
    return kSub >= G || (lane & (G / kSub - 1)) == 0;
}

// Shared memory of the backward pass, in floats: the sub-chunk start states [kSubs][NPL][THREADS] and the
// per-step sums over the block's channels of dB and dC, [kSub][G * NPL][2].
template <int G, int NPL, int THREADS>
struct BwdSmem {
    static constexpr int sub = kSubs * NPL * THREADS;
    static constexpr int dbc = kSub * G * NPL * 2;
    static constexpr int total = sub + dbc;
};

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
            n[k] = int64_t(k) * G + lane;
            nv[k] = dv && n[k] < p.N;
        }
    }
};

template <typename T>
__host__ __device__ __forceinline__ float load_or_zero(const T* base, int64_t i, bool valid) {
    return valid ? to_f(base[i]) : 0.0f;
}

template <typename T, int G, int NPL, int THREADS, class Ctx>
__host__ __device__ __forceinline__ void forward_thread(const Params& p, Ctx& ctx, int tid, int64_t tile,
                                                        int64_t b) {
    const Owner<G, NPL, THREADS> o(p, tid, tile);
    const int64_t D = p.D, N = p.N, T_ = p.T;
    const T* x = static_cast<const T*>(p.x) + b * T_ * D;
    const T* dt = static_cast<const T*>(p.dt) + b * T_ * D;
    const T* Bm = static_cast<const T*>(p.Bm) + b * T_ * N;
    const T* Cm = static_cast<const T*>(p.Cm) + b * T_ * N;
    T* y = static_cast<T*>(p.y) + b * T_ * D;

    float A2[NPL], h[NPL];
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
        A2[k] = o.nv[k] ? p.A[o.d * N + o.n[k]] * kLog2e : 0.0f;
        h[k] = (o.nv[k] && p.h0 != nullptr) ? p.h0[(b * D + o.d) * N + o.n[k]] : 0.0f;
    }
    const float Dd = (o.dv && p.Dskip != nullptr) ? p.Dskip[o.d] : 0.0f;

    for (int64_t t0 = 0; t0 < T_; t0 += kSub) {
        if (t0 % kChunk == 0) {
            float* ck = p.ckpt + ((b * p.nchunks + t0 / kChunk) * D + o.d) * N;
#pragma unroll
            for (int k = 0; k < NPL; ++k)
                if (o.nv[k]) ck[o.n[k]] = h[k];
        }
        // Loads of the whole sub-chunk first: several independent loads in flight per thread.
        float xs[kSub], dts[kSub];
#pragma unroll
        for (int i = 0; i < kSub; ++i) {
            const bool tv = t0 + i < T_;
            xs[i] = load_or_zero(x, (t0 + i) * D + o.d, o.dv && tv);
            dts[i] = load_or_zero(dt, (t0 + i) * D + o.d, o.dv && tv);
        }
        // Steps past T have x = dt = 0: the decay is 1 and the input 0, so the state does not change.
        float part[kSub];
#pragma unroll
        for (int i = 0; i < kSub; ++i) {
            const int64_t t = t0 + i;
            const bool tv = t < T_;
            const float u = dts[i] * xs[i];
            float acc = o.lane == 0 ? Dd * xs[i] : 0.0f;  // the skip term, added once per channel
#pragma unroll
            for (int k = 0; k < NPL; ++k) {
                const float bn = load_or_zero(Bm, t * N + o.n[k], o.nv[k] && tv);
                const float cn = load_or_zero(Cm, t * N + o.n[k], o.nv[k] && tv);
                h[k] = fmaf(exp2_fast(dts[i] * A2[k]), h[k], u * bn);
                acc = fmaf(h[k], cn, acc);
            }
            part[i] = acc;
        }
        const int first = group_reduce_scatter<G>(ctx, o.lane, part);
#pragma unroll
        for (int i = 0; i < spread(G); ++i) {
            const int64_t t = t0 + first + i;
            if (writer<G>(o.lane) && o.dv && t < T_) y[t * D + o.d] = from_f<T>(part[i]);
        }
    }
    float* hT = p.hT + (b * D + o.d) * N;
#pragma unroll
    for (int k = 0; k < NPL; ++k)
        if (o.nv[k]) hT[o.n[k]] = h[k];
}

template <typename T, int G, int NPL, int THREADS, class Ctx>
__host__ __device__ __forceinline__ void backward_thread(const Params& p, Ctx& ctx, float* smem, int tid,
                                                         int64_t tile, int64_t b) {
    using S = BwdSmem<G, NPL, THREADS>;
    constexpr int NP = G * NPL;  // state slots per channel (>= N)
    const Owner<G, NPL, THREADS> o(p, tid, tile);
    const int64_t D = p.D, N = p.N, T_ = p.T;
    const T* x = static_cast<const T*>(p.x) + b * T_ * D;
    const T* dt = static_cast<const T*>(p.dt) + b * T_ * D;
    const T* Bm = static_cast<const T*>(p.Bm) + b * T_ * N;
    const T* Cm = static_cast<const T*>(p.Cm) + b * T_ * N;
    const T* gy = static_cast<const T*>(p.gy) + b * T_ * D;
    T* dx = static_cast<T*>(p.dx) + b * T_ * D;
    T* ddt = static_cast<T*>(p.ddt) + b * T_ * D;
    float* sub = smem;  // [kSubs][NPL][THREADS]
    float* dbc = smem + S::sub;  // [kSub][NP][2]

    for (int i = tid; i < S::dbc; i += THREADS) dbc[i] = 0.0f;
    ctx.sync();

    // Only A log2(e) is kept (registers are the backward pass's limit): sum_n A G a h = ln(2) sum_n A2 G a h.
    float A2[NPL], g[NPL], dA[NPL], h[NPL];
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
        A2[k] = o.nv[k] ? p.A[o.d * N + o.n[k]] * kLog2e : 0.0f;
        // g holds exp(dt_{t+1} A) ⊙ G_{t+1} on entry to step t; at t = T - 1 that is dL/dh_T.
        g[k] = (o.nv[k] && p.ghT != nullptr) ? p.ghT[(b * D + o.d) * N + o.n[k]] : 0.0f;
        dA[k] = 0.0f;
        h[k] = 0.0f;
    }
    const float Dd = (o.dv && p.Dskip != nullptr) ? p.Dskip[o.d] : 0.0f;
    float dD = 0.0f;

    for (int64_t c = p.nchunks - 1; c >= 0; --c) {
        const int64_t tc = c * kChunk;
        const float* ck = p.ckpt + ((b * p.nchunks + c) * D + o.d) * N;
#pragma unroll
        for (int k = 0; k < NPL; ++k) h[k] = o.nv[k] ? ck[o.n[k]] : 0.0f;
        // Level 1: the state at the start of every sub-chunk, from the chunk's checkpoint.
        for (int s = 0; s < kSubs; ++s) {
#pragma unroll
            for (int k = 0; k < NPL; ++k) sub[(s * NPL + k) * THREADS + tid] = h[k];
            if (s == kSubs - 1) break;  // the last sub-chunk's end state is not needed
#pragma unroll
            for (int i = 0; i < kSub; ++i) {
                const int64_t t = tc + s * kSub + i;
                if (t < T_) {
                    const float xt = load_or_zero(x, t * D + o.d, o.dv);
                    const float dtt = load_or_zero(dt, t * D + o.d, o.dv);
#pragma unroll
                    for (int k = 0; k < NPL; ++k) {
                        const float bn = load_or_zero(Bm, t * N + o.n[k], o.nv[k]);
                        h[k] = fmaf(exp2_fast(dtt * A2[k]), h[k], dtt * xt * bn);
                    }
                }
            }
        }
        // Level 2, sub-chunks last first: recompute kSub states, then run the adjoint back through them.
        for (int s = kSubs - 1; s >= 0; --s) {
            const int64_t ts = tc + s * kSub;
            if (ts >= T_) continue;  // uniform
            float hp[kSub][NPL], av[kSub][NPL];  // h_{t-1} and exp(dt_t A) for t = ts + i
#pragma unroll
            for (int k = 0; k < NPL; ++k) h[k] = sub[(s * NPL + k) * THREADS + tid];
#pragma unroll
            for (int i = 0; i < kSub; ++i) {
                const int64_t t = ts + i;
                const bool tv = t < T_;
                const float xt = load_or_zero(x, t * D + o.d, o.dv && tv);
                const float dtt = load_or_zero(dt, t * D + o.d, o.dv && tv);
#pragma unroll
                for (int k = 0; k < NPL; ++k) {
                    const float bn = load_or_zero(Bm, t * N + o.n[k], o.nv[k] && tv);
                    av[i][k] = exp2_fast(dtt * A2[k]);
                    hp[i][k] = h[k];
                    h[k] = fmaf(av[i][k], h[k], dtt * xt * bn);
                }
            }
            // Per step, this lane's parts of dx = dt sum_n G B + D gy and ddt = x sum_n G B + sum_n A G a h_{t-1}
            // (A = ln(2) A2), summed over the group after the sub-chunk.
            float dxv[kSub], ddtv[kSub];
#pragma unroll
            for (int i = kSub - 1; i >= 0; --i) {
                const int64_t t = ts + i;
                dxv[i] = 0.0f;
                ddtv[i] = 0.0f;
                if (t < T_) {  // uniform
                    const float xt = load_or_zero(x, t * D + o.d, o.dv);
                    const float dtt = load_or_zero(dt, t * D + o.d, o.dv);
                    const float gyt = load_or_zero(gy, t * D + o.d, o.dv);
                    const float u = dtt * xt;
                    float s1 = 0.0f, s2 = 0.0f;  // sum_n G B, sum_n A2 G a h_{t-1}
#pragma unroll
                    for (int k = 0; k < NPL; ++k) {
                        const float bn = load_or_zero(Bm, t * N + o.n[k], o.nv[k]);
                        const float cn = load_or_zero(Cm, t * N + o.n[k], o.nv[k]);
                        const float Gk = fmaf(gyt, cn, g[k]);  // dL/dh_t
                        const float ht = fmaf(av[i][k], hp[i][k], u * bn);
                        const float q = Gk * av[i][k] * hp[i][k];
                        s1 = fmaf(Gk, bn, s1);
                        s2 = fmaf(A2[k], q, s2);
                        dA[k] = fmaf(dtt, q, dA[k]);
                        g[k] = av[i][k] * Gk;
                        if (o.nv[k]) {
                            ctx.smem_add(&dbc[(i * NP + o.n[k]) * 2 + 0], Gk * u);  // dB_t[n]
                            ctx.smem_add(&dbc[(i * NP + o.n[k]) * 2 + 1], gyt * ht);  // dC_t[n]
                        }
                    }
                    const bool first_lane = o.lane == 0;
                    dxv[i] = fmaf(dtt, s1, first_lane ? Dd * gyt : 0.0f);
                    ddtv[i] = fmaf(xt, s1, s2 * kLn2);
                    if (first_lane) dD = fmaf(gyt, xt, dD);
                }
            }
            {
                const int first = group_reduce_scatter<G>(ctx, o.lane, dxv);
                group_reduce_scatter<G>(ctx, o.lane, ddtv);
#pragma unroll
                for (int i = 0; i < spread(G); ++i) {
                    const int64_t t = ts + first + i;
                    if (writer<G>(o.lane) && o.dv && t < T_) {
                        dx[t * D + o.d] = from_f<T>(dxv[i]);
                        ddt[t * D + o.d] = from_f<T>(ddtv[i]);
                    }
                }
            }
            // This block's sums over its channels of dB and dC for the sub-chunk: one partial row per step.
            ctx.sync();
            float* dBp = p.dB_part + (tile * p.B + b) * T_ * N;
            float* dCp = p.dC_part + (tile * p.B + b) * T_ * N;
            for (int idx = tid; idx < kSub * NP; idx += THREADS) {
                const int i = idx / NP;
                const int n = idx % NP;
                const int64_t t = ts + i;
                if (t < T_ && n < N) {
                    dBp[t * N + n] = dbc[idx * 2 + 0];
                    dCp[t * N + n] = dbc[idx * 2 + 1];
                }
                dbc[idx * 2 + 0] = 0.0f;
                dbc[idx * 2 + 1] = 0.0f;
            }
            ctx.sync();
        }
    }
    // After step 0, g = exp(dt_0 A) ⊙ G_0 = dL/dh0.
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
        if (o.nv[k]) {
            p.dh0[(b * D + o.d) * N + o.n[k]] = g[k];
            p.dA_part[(b * D + o.d) * N + o.n[k]] = dA[k];
        }
    }
    if (o.lane == 0 && o.dv) p.dD_part[b * D + o.d] = dD;
}

}  // namespace selective_scan
}  // namespace wb
