// Mamba's selective scan, forward pass for N <= 16 in two passes over time: one
// thread per channel with all of its states in registers, and time split into segments of kChunk steps so
// that B x D x (T / kChunk) threads run at once. Written as __host__ __device__ per-thread functions, like
// selective_scan.cuh, so tests/emulate_selective_scan.cu runs this exact code on the CPU.
//
// Why: the one-pass forward gave each state of a channel its own lane (16 lanes per channel), so 16 lanes
// load the same x and dt and a step costs tens of instructions for one multiply-add of state. Here a thread
// owns a channel: x and dt are one coalesced load per warp and step, B_t and C_t are the same address for
// every thread of a warp (a broadcast), and a state-step is a multiply, an exp2, a multiply and a multiply-add.
//
//   local   (B, segments, channels): h = 0 through the segment; its end state seg_h and the segment's sum of
//           dt, seg_dt (the segment's decay of state n is exp(A_n seg_dt): a product of exps)
//   combine (B, D, N): h_start(0) = h0; h_start(s + 1) = exp(A_n seg_dt(s)) h_start(s) + seg_h(s); the
//           starts are the backward pass's checkpoints (ckpt, every kChunk steps), the last end is h_T
//   output  (B, segments, channels): from h_start(s) through the segment again, writing y
//
// Each state-step is done twice (local and output), two exp2 where the one-pass forward does one, yet both
// passes together issue a fraction of its instructions: kernels alone (profile-selective-scan, H200, B 8,
// T 2048, N 16), D 1024 0.632 -> 0.403 ms in bf16 and 0.50 -> 0.403 in f32; D 1536 bf16 0.886 -> 0.566.
// A block stages its segment's inputs in shared memory first (SegStage below): D 1024 bf16 0.323 -> 0.247 ms,
// f32 0.356 -> 0.283.
#pragma once

#include "selective_scan.cuh"

namespace wb {
namespace selective_scan {

__host__ __device__ inline int64_t segments(int64_t T) { return (T + kChunk - 1) / kChunk; }  // = nchunks(T)

// Whether the walks read B_t and C_t as 16-byte vectors (VEC below): rows of N == 16 states (staged rows
// are 16-byte aligned). Else one load per state, past N none.
__host__ __device__ inline bool rows_vec(const Params& p) { return p.N == kTwoPassStates; }

// v = the row of N states at ptr (a staged row, SegStage), as floats (0 past N). VEC: 16-byte loads (4 for
// float32, 2 for bfloat16, whose 8 values a word holds are unpacked by a shift or a mask), where one load per
// state had issued 16 loads per row and step.
template <typename T, bool VEC>
__host__ __device__ __forceinline__ void load_row(const T* ptr, int64_t N, float (&v)[kTwoPassStates]) {
    if constexpr (VEC) {
        constexpr int kWords = kTwoPassStates * int(sizeof(T)) / 16;
        uint4 w[kWords];
#pragma unroll
        for (int i = 0; i < kWords; ++i) w[i] = reinterpret_cast<const uint4*>(ptr)[i];
#pragma unroll
        for (int i = 0; i < kWords; ++i) {
            const unsigned c[4] = {w[i].x, w[i].y, w[i].z, w[i].w};
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                if constexpr (sizeof(T) == 4) {
                    v[4 * i + j] = bits_float(c[j]);
                } else {  // little-endian: the lower half is the earlier element
                    v[8 * i + 2 * j] = bits_float(c[j] << 16);
                    v[8 * i + 2 * j + 1] = bits_float(c[j] & 0xffff0000u);
                }
            }
        }
    } else {
#pragma unroll
        for (int n = 0; n < kTwoPassStates; ++n) v[n] = ld<false>(ptr + n, n < N);
    }
}

// A block's segment staged in shared memory before its walks: a walk is a chain of kChunk dependent steps,
// and each step's loads from global memory (x, dt, B_t, C_t) had cost a thread a full memory round trip
// per step (2-2.5x the issue time of the passes; the exponentials were not the limit: a build without
// them ran as fast). The block now loads its whole segment at once, one round trip, and the walks read
// shared memory. Two per-channel inputs (ch: x and dt, or dt and dy) for the block's kTwoPassThreads
// channels and two per-step rows of B or C (row, kTwoPassStates apart, 16-byte aligned: VEC reads them as
// vectors whatever the global alignment), for the segment's steps (fewer in a last, short segment).
template <typename T>
struct alignas(16) SegStage {
    T ch[2][kChunk][kTwoPassThreads];
    T row[2][kChunk][kTwoPassStates];
};

// Which inputs a pass stages: per-channel arrays c0, c1 ([B, T, D]) and rows r0, r1 ([B, T, N]; r1 may be
// null).
template <typename T>
struct SegSources {
    const T *c0, *c1, *r0, *r1;
};

// Thread `tid`'s share of staging segment `seg` of batch row b for channels d0 .. d0 + kTwoPassThreads
// (stage_chunk).
template <typename T>
__host__ __device__ __forceinline__ void stage_thread(const Params& p, const SegSources<T>& src, int64_t b,
                                                      int64_t seg, int64_t d0, int tid, SegStage<T>& st) {
    stage_chunk<T, kTwoPassThreads, kTwoPassStates, kTwoPassThreads>(p, src.c0, src.c1, src.r0, src.r1, b, seg, d0, tid,
                                                                      &st.ch[0][0][0], &st.row[0][0][0]);
}

// Runs the recurrence through segment `seg` of channel d (the block's thread `tid`, inputs staged in st:
// x, dt; B, C) from h (in/out); Y: also write y.
template <typename T, bool Y, bool VEC>
__host__ __device__ __forceinline__ void segment_walk(const Params& p, const SegStage<T>& st, int64_t b,
                                                      int64_t seg, int64_t d, int tid,
                                                      const float (&A2)[kTwoPassStates], float (&h)[kTwoPassStates],
                                                      float& sdt) {
    const int64_t D = p.D, N = p.N, T_ = p.T;
    const int64_t t0 = seg * kChunk, steps = (t0 + kChunk < T_ ? t0 + kChunk : T_) - t0;
    T* yp = Y ? static_cast<T*>(p.y) + (b * T_ + t0) * D + d : nullptr;
    const float Dl = (Y && p.Dskip != nullptr) ? p.Dskip[d] : 0.0f;
    for (int64_t s = 0; s < steps; ++s) {
        const float xv = ld<false>(&st.ch[0][s][tid], true), dv = ld<false>(&st.ch[1][s][tid], true);
        float bv[kTwoPassStates], cv[kTwoPassStates];
        load_row<T, VEC>(&st.row[0][s][0], N, bv);
        if (Y) load_row<T, VEC>(&st.row[1][s][0], N, cv);
        const float u = dv * xv;
        sdt += dv;
        float acc = Dl * xv;
#pragma unroll
        for (int n = 0; n < kTwoPassStates; ++n) {
            h[n] = fmaf(exp2_fast(dv * A2[n]), h[n], u * bv[n]);
            if (Y) acc = fmaf(h[n], cv[n], acc);
        }
        if (Y) {
            *yp = from_float<T>(acc);
            yp += D;
        }
    }
}

__host__ __device__ __forceinline__ void load_a2(const Params& p, int64_t d, float (&A2)[kTwoPassStates]) {
#pragma unroll
    for (int n = 0; n < kTwoPassStates; ++n) A2[n] = n < p.N ? p.A[d * p.N + n] * kLog2e : 0.0f;
}

// Pass 1: the segment's end state from zero, and its sum of dt.
template <typename T, bool VEC = false>
__host__ __device__ __forceinline__ void local_thread(const Params& p, const SegStage<T>& st, int64_t b, int64_t seg,
                                                      int64_t d0, int tid) {
    const int64_t d = d0 + tid;
    if (d >= p.D) return;
    float A2[kTwoPassStates], h[kTwoPassStates];
    load_a2(p, d, A2);
#pragma unroll
    for (int n = 0; n < kTwoPassStates; ++n) h[n] = 0.0f;
    float sdt = 0.0f;
    segment_walk<T, false, VEC>(p, st, b, seg, d, tid, A2, h, sdt);
    const int64_t P = segments(p.T);
    float* out = p.seg_h + ((b * P + seg) * p.D + d) * p.N;
#pragma unroll
    for (int n = 0; n < kTwoPassStates; ++n)
        if (n < p.N) out[n] = h[n];
    p.seg_dt[(b * P + seg) * p.D + d] = sdt;
}

// The combines walk segments one after another, one state per thread: their loads go out kCombineBatch
// segments at a time, ahead of the stores (the backward combine stores over what it reads, so the compiler
// could not move a load above an earlier store: one load round trip per segment had made it 0.5 ms of the
// mamba preset's 1.9 ms backward pass).
constexpr int kCombineBatch = 8;

// e[j], loc[j] = segment s's sum of dt and local value (at v + s * stride), s = s0 + j, or from the end
// (s = P - 1 - s0 - j) when `reverse`; nothing past the segments.
__host__ __device__ __forceinline__ void combine_loads(const float* v, const float* sd, int64_t stride, int64_t D,
                                                       int64_t s0, int64_t P, float (&e)[kCombineBatch],
                                                       float (&loc)[kCombineBatch], bool reverse = false) {
#pragma unroll
    for (int j = 0; j < kCombineBatch; ++j) {
        const int64_t s = reverse ? P - 1 - s0 - j : s0 + j;
        const bool in = s0 + j < P;
        e[j] = in ? sd[s * D] : 0.0f;
        loc[j] = in ? v[s * stride] : 0.0f;
    }
}

// The starts of every segment of state n of channel d (the checkpoints), and h_T.
__host__ __device__ __forceinline__ void combine_thread(const Params& p, int64_t b, int64_t d, int64_t n) {
    if (d >= p.D || n >= p.N) return;
    const int64_t P = segments(p.T);
    const float A2 = p.A[d * p.N + n] * kLog2e;
    float h = p.h0 != nullptr ? p.h0[(b * p.D + d) * p.N + n] : 0.0f;
    const int64_t stride = p.D * p.N;  // between segments
    const float* sh = p.seg_h + (b * P * p.D + d) * p.N + n;
    const float* sd = p.seg_dt + b * P * p.D + d;
    float* ck = p.ckpt + (b * P * p.D + d) * p.N + n;
    for (int64_t s0 = 0; s0 < P; s0 += kCombineBatch) {
        float e[kCombineBatch], loc[kCombineBatch];
        combine_loads(sh, sd, stride, p.D, s0, P, e, loc);
#pragma unroll
        for (int j = 0; j < kCombineBatch; ++j) {
            if (s0 + j >= P) break;
            ck[(s0 + j) * stride] = h;
            h = fmaf(exp2_fast(A2 * e[j]), h, loc[j]);
        }
    }
    p.hT[(b * p.D + d) * p.N + n] = h;
}

// Pass 2: y through the segment from its start.
template <typename T, bool VEC = false>
__host__ __device__ __forceinline__ void output_thread(const Params& p, const SegStage<T>& st, int64_t b, int64_t seg,
                                                       int64_t d0, int tid) {
    const int64_t d = d0 + tid;
    if (d >= p.D) return;
    float A2[kTwoPassStates], h[kTwoPassStates];
    load_a2(p, d, A2);
    const int64_t P = segments(p.T);
    const float* start = p.ckpt + ((b * P + seg) * p.D + d) * p.N;
#pragma unroll
    for (int n = 0; n < kTwoPassStates; ++n) h[n] = n < p.N ? start[n] : 0.0f;
    float sdt = 0.0f;
    segment_walk<T, true, VEC>(p, st, b, seg, d, tid, A2, h, sdt);
}

// The segmented backward's first two passes (selective_scan.h; the third is backward_thread with SEG).
// With g the adjoint carried into a step (g = exp(dt_{t+1} A) ⊙ G_{t+1} on entry to step t), a segment's
// walk is linear in the g it starts from: g_out = g_local + exp(A sum dt) ⊙ g_in, g_local from g_in = 0.
//   bwd_local   (B, segments, channels): g_local and the segment's sum of dt
//   bwd_combine (B, D, N): from dL/dh_T backwards over segments, the g entering each segment's last step
//               (written over g_local), and dL/dh0 = the g after step 0

// Pass 1: g_local of segment `seg` of channel d, and its sum of dt (inputs staged in st: dt, dy; C).
template <typename T, bool VEC = false>
__host__ __device__ __forceinline__ void bwd_local_thread(const Params& p, const SegStage<T>& st, int64_t b,
                                                          int64_t seg, int64_t d0, int tid) {
    const int64_t d = d0 + tid;
    if (d >= p.D) return;
    const int64_t D = p.D, N = p.N, T_ = p.T;
    const int64_t t0 = seg * kChunk, steps = (t0 + kChunk < T_ ? t0 + kChunk : T_) - t0;
    float A2[kTwoPassStates], g[kTwoPassStates];
    load_a2(p, d, A2);
#pragma unroll
    for (int n = 0; n < kTwoPassStates; ++n) g[n] = 0.0f;
    float sdt = 0.0f;
    for (int64_t s = steps - 1; s >= 0; --s) {
        const float dv = ld<false>(&st.ch[0][s][tid], true), gv = ld<false>(&st.ch[1][s][tid], true);
        float cv[kTwoPassStates];
        load_row<T, VEC>(&st.row[0][s][0], N, cv);
        sdt += dv;
#pragma unroll
        for (int n = 0; n < kTwoPassStates; ++n) g[n] = exp2_fast(dv * A2[n]) * fmaf(gv, cv[n], g[n]);
    }
    const int64_t P = segments(T_);
    float* out = p.seg_g + ((b * P + seg) * D + d) * N;
#pragma unroll
    for (int n = 0; n < kTwoPassStates; ++n)
        if (n < N) out[n] = g[n];
    p.seg_dt[(b * P + seg) * D + d] = sdt;
}

// The three channel-per-thread passes, and what each stages.
enum class Pass { Local, Output, BwdLocal };

template <typename T, Pass PASS>
__host__ __device__ __forceinline__ SegSources<T> sources(const Params& p) {
    const T *x = static_cast<const T*>(p.x), *dt = static_cast<const T*>(p.dt), *gy = static_cast<const T*>(p.gy);
    const T *bm = static_cast<const T*>(p.Bm), *cm = static_cast<const T*>(p.Cm);
    if constexpr (PASS == Pass::Local) return {x, dt, bm, nullptr};
    if constexpr (PASS == Pass::Output) return {x, dt, bm, cm};
    return {dt, gy, cm, nullptr};
}

// A thread's walk of pass PASS once the block has staged its segment.
template <typename T, bool VEC, Pass PASS>
__host__ __device__ __forceinline__ void walk_thread(const Params& p, const SegStage<T>& st, int64_t b, int64_t seg,
                                                     int64_t d0, int tid) {
    if constexpr (PASS == Pass::Local) {
        local_thread<T, VEC>(p, st, b, seg, d0, tid);
    } else if constexpr (PASS == Pass::Output) {
        output_thread<T, VEC>(p, st, b, seg, d0, tid);
    } else {
        bwd_local_thread<T, VEC>(p, st, b, seg, d0, tid);
    }
}

// Pass 2, per state: the g entering each segment (over its g_local) and dL/dh0.
__host__ __device__ __forceinline__ void bwd_combine_thread(const Params& p, int64_t b, int64_t d, int64_t n) {
    if (d >= p.D || n >= p.N) return;
    const int64_t P = segments(p.T);
    const float A2 = p.A[d * p.N + n] * kLog2e;
    float g = p.ghT != nullptr ? p.ghT[(b * p.D + d) * p.N + n] : 0.0f;
    const int64_t stride = p.D * p.N;
    float* sg = p.seg_g + (b * P * p.D + d) * p.N + n;
    const float* sd = p.seg_dt + b * P * p.D + d;
    // batches from the last segment down: e[j], loc[j] are segment P - 1 - (s0 + j)'s, read before this
    // batch's stores over seg_g
    for (int64_t s0 = 0; s0 < P; s0 += kCombineBatch) {
        float e[kCombineBatch], loc[kCombineBatch];
        combine_loads(sg, sd, stride, p.D, s0, P, e, loc, true);
#pragma unroll
        for (int j = 0; j < kCombineBatch; ++j) {
            if (s0 + j >= P) break;
            sg[(P - 1 - s0 - j) * stride] = g;
            g = fmaf(exp2_fast(A2 * e[j]), g, loc[j]);
        }
    }
    p.dh0[(b * p.D + d) * p.N + n] = g;
}

}  // namespace selective_scan
}  // namespace wb
