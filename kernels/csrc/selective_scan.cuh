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

// Sum over the G lanes of this thread's channel group (G divides 32; groups are aligned in the warp).
template <int G, class Ctx>
__host__ __device__ __forceinline__ float group_sum(Ctx& ctx, float v) {
#pragma unroll
    for (int off = G / 2; off >= 1; off /= 2) v += ctx.shfl_xor(v, off);
    return v;
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
#pragma unroll
        for (int i = 0; i < kSub; ++i) {
            const int64_t t = t0 + i;
            if (t < T_) {  // uniform across the block
                const float u = dts[i] * xs[i];
                float part = 0.0f;
#pragma unroll
                for (int k = 0; k < NPL; ++k) {
                    const float bn = load_or_zero(Bm, t * N + o.n[k], o.nv[k]);
                    const float cn = load_or_zero(Cm, t * N + o.n[k], o.nv[k]);
                    h[k] = fmaf(exp2_fast(dts[i] * A2[k]), h[k], u * bn);
                    part = fmaf(h[k], cn, part);
                }
                part = group_sum<G>(ctx, part);
                if (o.lane == 0 && o.dv) y[t * D + o.d] = from_f<T>(fmaf(Dd, xs[i], part));
            }
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
#pragma unroll
            for (int i = kSub - 1; i >= 0; --i) {
                const int64_t t = ts + i;
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
                    s1 = group_sum<G>(ctx, s1);
                    s2 = group_sum<G>(ctx, s2);
                    if (o.lane == 0 && o.dv) {
                        dx[t * D + o.d] = from_f<T>(fmaf(dtt, s1, Dd * gyt));
                        ddt[t * D + o.d] = from_f<T>(fmaf(xt, s1, s2 * kLn2));
                        dD = fmaf(gyt, xt, dD);
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
