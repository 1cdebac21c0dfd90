// Host emulation of the selective-scan kernels: runs the exact per-thread code of selective_scan.cuh on the
// CPU, every thread of a block as a CPU thread (warp shuffles and the block barrier emulated with a shared
// array and a barrier), and checks the output, the final state and every gradient against a float64
// reference. No GPU needed. Built by kernels/build.rs with the `cuda` feature and run by the
// `host_emulation_of_the_cuda_kernels` test in kernels/src/cuda_ext.rs.
//
// Every output element starts as NaN, so an element no thread writes fails the check.
// The per-thread code calls this file's host-only context from __host__ __device__ functions; that is
// fine on the CPU, which is the only place it runs.
#pragma nv_diag_suppress 20014

#include <algorithm>
#include <condition_variable>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "../selective_scan.cuh"
#include "../selective_scan_twopass.cuh"
#include "emulate.h"

using namespace wb::selective_scan;

namespace {

// One emulated block: a reusable barrier and double-buffered shuffle slots.
struct BlockEmu {
    explicit BlockEmu(int n) : threads(n) {
        slots[0].assign(n, 0.0f);
        slots[1].assign(n, 0.0f);
    }
    void barrier() {
        std::unique_lock<std::mutex> lock(m);
        const int64_t my_gen = gen;
        if (++count == threads) {
            count = 0;
            ++gen;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return gen != my_gen; });
        }
    }
    int threads;
    std::mutex m;
    std::condition_variable cv;
    int count = 0;
    int64_t gen = 0;
    std::vector<float> slots[2];
};

// A shuffle writes this lane's value, waits for every lane, reads the partner's. Alternating buffers make
// one barrier per shuffle enough: a buffer is written again only after the next barrier, when every lane
// has read it.
struct HostCtx {
    BlockEmu* blk;
    int tid;
    int parity = 0;
    float shfl_xor(float v, int off) {
        std::vector<float>& s = blk->slots[parity];
        parity ^= 1;
        s[tid] = v;
        blk->barrier();
        return s[tid ^ off];
    }
    void sync() { blk->barrier(); }
};

struct Case {
    int64_t B, T, D, N;
    bool skip, h0, ghT;
};

struct Problem {
    std::vector<double> x, dt, A, Bm, Cm, Dskip, h0, gy, ghT;  // exactly representable in the tested dtype
};

struct Result {
    std::vector<double> y, hT, dx, ddt, dA, dB, dC, dD, dh0;
    bool inference_mismatch = false;  // the forward pass without checkpoints gave other outputs
    std::vector<double> y1, hT1;  // N <= 16: the one-pass forward's outputs
};

Result reference(const Case& c, const Problem& pr) {
    const int64_t B = c.B, T = c.T, D = c.D, N = c.N;
    Result r;
    r.y.assign(B * T * D, 0.0);
    r.hT.assign(B * D * N, 0.0);
    r.dx.assign(B * T * D, 0.0);
    r.ddt.assign(B * T * D, 0.0);
    r.dA.assign(D * N, 0.0);
    r.dB.assign(B * T * N, 0.0);
    r.dC.assign(B * T * N, 0.0);
    r.dD.assign(D, 0.0);
    r.dh0.assign(B * D * N, 0.0);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t d = 0; d < D; ++d) {
            const double Dd = c.skip ? pr.Dskip[d] : 0.0;
            std::vector<double> hs((T + 1) * N), as(T * N);  // hs[t + 1] = h_t, hs[0] = h0
            for (int64_t n = 0; n < N; ++n) hs[n] = c.h0 ? pr.h0[(b * D + d) * N + n] : 0.0;
            for (int64_t t = 0; t < T; ++t) {
                const double xt = pr.x[(b * T + t) * D + d], dtt = pr.dt[(b * T + t) * D + d];
                double yt = Dd * xt;
                for (int64_t n = 0; n < N; ++n) {
                    const double a = std::exp(dtt * pr.A[d * N + n]);
                    as[t * N + n] = a;
                    const double h = a * hs[t * N + n] + dtt * xt * pr.Bm[(b * T + t) * N + n];
                    hs[(t + 1) * N + n] = h;
                    yt += h * pr.Cm[(b * T + t) * N + n];
                }
                r.y[(b * T + t) * D + d] = yt;
            }
            for (int64_t n = 0; n < N; ++n) r.hT[(b * D + d) * N + n] = hs[T * N + n];
            std::vector<double> g(N);  // exp(dt_{t+1} A) G_{t+1}
            for (int64_t n = 0; n < N; ++n) g[n] = c.ghT ? pr.ghT[(b * D + d) * N + n] : 0.0;
            for (int64_t t = T - 1; t >= 0; --t) {
                const double xt = pr.x[(b * T + t) * D + d], dtt = pr.dt[(b * T + t) * D + d];
                const double gyt = pr.gy[(b * T + t) * D + d];
                double dx = Dd * gyt, ddt = 0.0;
                for (int64_t n = 0; n < N; ++n) {
                    const double bn = pr.Bm[(b * T + t) * N + n], cn = pr.Cm[(b * T + t) * N + n];
                    const double G = g[n] + gyt * cn, a = as[t * N + n], hp = hs[t * N + n];
                    r.dC[(b * T + t) * N + n] += gyt * hs[(t + 1) * N + n];
                    r.dB[(b * T + t) * N + n] += G * dtt * xt;
                    dx += G * dtt * bn;
                    ddt += G * (pr.A[d * N + n] * a * hp + xt * bn);
                    r.dA[d * N + n] += G * dtt * a * hp;
                    g[n] = a * G;
                }
                r.dx[(b * T + t) * D + d] = dx;
                r.ddt[(b * T + t) * D + d] = ddt;
                r.dD[d] += gyt * xt;
            }
            for (int64_t n = 0; n < N; ++n) r.dh0[(b * D + d) * N + n] = g[n];
        }
    if (!c.skip) r.dD.assign(D, 0.0);
    return r;
}

// One launch of a channel-per-thread pass (selective_scan_twopass.cuh) as the GPU runs it: per block (batch
// row, segment, tile of kTwoPassThreads channels) every thread stages its share of the segment, then (the
// barrier) every thread walks it. The staging starts as NaN, so a walk that reads what was not staged fails.
template <typename T, Pass PASS>
void run_pass(const Params& p) {
    auto st = std::make_unique<SegStage<T>>();
    for (int64_t b = 0; b < p.B; ++b)
        for (int64_t s = 0; s < segments(p.T); ++s)
            for (int64_t d0 = 0; d0 < p.D; d0 += kTwoPassThreads) {
                std::fill_n(&st->ch[0][0][0], 2 * kChunk * kTwoPassThreads, from_float<T>(NAN));
                std::fill_n(&st->row[0][0][0], 2 * kChunk * kTwoPassStates, from_float<T>(NAN));
                for (int tid = 0; tid < kTwoPassThreads; ++tid)
                    stage_thread<T>(p, sources<T, PASS>(p), b, s, d0, tid, *st);
                for (int tid = 0; tid < kTwoPassThreads; ++tid)
                    rows_vec(p) ? walk_thread<T, true, PASS>(p, *st, b, s, d0, tid)
                                : walk_thread<T, false, PASS>(p, *st, b, s, d0, tid);
            }
}

// The forward pass as the launcher runs it: for N <= 16 the two-pass forward (selective_scan_twopass.cuh:
// every local thread, then every combine thread, then every output thread, as three launches), else the
// one-pass kernel block by block (also for N <= 16 with two_pass = false: the launcher's path without the
// workspaces). `p` must carry the two-pass workspaces.
template <typename T, int G, int NPL, int THREADS>
void run_forward(const Params& p, bool two_pass = true) {
    if (two_pass && p.N <= kTwoPassStates) {
        run_pass<T, Pass::Local>(p);
        for (int64_t b = 0; b < p.B; ++b)
            for (int64_t d = 0; d < p.D; ++d)
                for (int64_t n = 0; n < p.N; ++n) combine_thread(p, b, d, n);
        run_pass<T, Pass::Output>(p);
        return;
    }
    for (int64_t b = 0; b < p.B; ++b)
        for (int64_t tile = 0; tile < p.tiles; ++tile) {
            BlockEmu blk(THREADS);
            std::vector<T> stage(FwdStage<G, NPL, THREADS>::total, from_float<T>(NAN));
            std::vector<std::thread> threads;
            for (int tid = 0; tid < THREADS; ++tid)
                threads.emplace_back([&, tid] {
                    HostCtx ctx{&blk, tid};
                    forward_thread<T, G, NPL, THREADS>(p, ctx, stage.data(), tid, tile, b);
                });
            for (auto& t : threads) t.join();
        }
}

// seg: the backward pass segmented (selective_scan.h; N <= 16, as the glue runs it), else one block per
// channel tile walking all of T.
template <typename T, int G, int NPL, int THREADS>
Result emulate(const Case& c, const Problem& pr, bool seg) {
    const int64_t B = c.B, T_ = c.T, D = c.D, N = c.N;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto to_t = [](const std::vector<double>& v) {
        std::vector<T> o(v.size());
        for (size_t i = 0; i < v.size(); ++i) o[i] = from_float<T>(float(v[i]));
        return o;
    };
    auto to_f32 = [](const std::vector<double>& v) {
        std::vector<float> o(v.size());
        for (size_t i = 0; i < v.size(); ++i) o[i] = float(v[i]);
        return o;
    };
    std::vector<T> x = to_t(pr.x), dt = to_t(pr.dt), Bm = to_t(pr.Bm), Cm = to_t(pr.Cm), gy = to_t(pr.gy);
    std::vector<float> A = to_f32(pr.A), Dskip = to_f32(pr.Dskip), h0 = to_f32(pr.h0), ghT = to_f32(pr.ghT);
    std::vector<T> y(B * T_ * D, from_float<T>(nan)), dx(B * T_ * D, from_float<T>(nan)), ddt(B * T_ * D, from_float<T>(nan));
    Params p = plan(B, T_, D, N, THREADS);
    const int64_t rows = seg ? B * p.nchunks : B;  // partial rows of dA and dD
    std::vector<float> hT(B * D * N, nan), ckpt(B * p.nchunks * D * N, nan), dA(rows * D * N, nan), dD(rows * D, nan),
        dBp(p.tiles * B * T_ * N, nan), dCp(p.tiles * B * T_ * N, nan), dh0(B * D * N, nan);
    p.x = x.data();
    p.dt = dt.data();
    p.A = A.data();
    p.Bm = Bm.data();
    p.Cm = Cm.data();
    p.Dskip = c.skip ? Dskip.data() : nullptr;
    p.h0 = c.h0 ? h0.data() : nullptr;
    p.y = y.data();
    p.hT = hT.data();
    p.ckpt = ckpt.data();
    p.gy = gy.data();
    p.ghT = c.ghT ? ghT.data() : nullptr;
    p.dx = dx.data();
    p.ddt = ddt.data();
    p.dA_part = dA.data();
    p.dD_part = dD.data();
    p.dB_part = dBp.data();
    p.dC_part = dCp.data();
    p.dh0 = dh0.data();

    // the two-pass forward's workspaces (N <= 16)
    std::vector<float> seg_h(B * p.nchunks * D * N, nan), seg_dt(B * p.nchunks * D, nan);
    p.seg_h = seg_h.data();
    p.seg_dt = seg_dt.data();
    run_forward<T, G, NPL, THREADS>(p);
    // Inference gives the same outputs bit for bit: no checkpoints for the one-pass forward, fresh scratch
    // ones (as the glue allocates them) for the two-pass one.
    std::vector<T> y_inf(B * T_ * D, from_float<T>(nan));
    std::vector<float> hT_inf(B * D * N, nan), ckpt_inf(ckpt.size(), nan), seg_h_inf(seg_h.size(), nan),
        seg_dt_inf(seg_dt.size(), nan);
    {
        Params q = p;
        q.ckpt = N <= kTwoPassStates ? ckpt_inf.data() : nullptr;
        q.seg_h = seg_h_inf.data();
        q.seg_dt = seg_dt_inf.data();
        q.y = y_inf.data();
        q.hT = hT_inf.data();
        run_forward<T, G, NPL, THREADS>(q);
    }
    // N <= 16: the one-pass forward too (its own outputs and checkpoints), checked against the reference.
    std::vector<T> y1(B * T_ * D, from_float<T>(nan));
    std::vector<float> hT1(B * D * N, nan), ckpt1(ckpt.size(), nan);
    if (N <= kTwoPassStates) {
        Params q = p;
        q.y = y1.data();
        q.hT = hT1.data();
        q.ckpt = ckpt1.data();
        run_forward<T, G, NPL, THREADS>(q, false);
    }
    // The backward pass runs after the whole forward pass, as on the GPU (it reads every checkpoint).
    // Segmented: every local reverse thread, every combine thread, then the chunks' blocks (three launches).
    std::vector<float> seg_g(B * p.nchunks * D * N, nan);
    if (seg) {
        p.seg_g = seg_g.data();  // seg_dt: the forward's buffer, rewritten
        run_pass<T, Pass::BwdLocal>(p);
        for (int64_t b = 0; b < B; ++b)
            for (int64_t d = 0; d < D; ++d)
                for (int64_t n = 0; n < N; ++n) bwd_combine_thread(p, b, d, n);
    }
    for (int64_t b = 0; b < B; ++b)
        for (int64_t tile = 0; tile < p.tiles; ++tile)
            for (int64_t s = 0; s < (seg ? p.nchunks : 1); ++s) {
                BlockEmu blk(THREADS);
                std::vector<float> smem(BwdSmem<G, NPL, THREADS>::total, nan);
                std::vector<std::thread> threads;
                for (int tid = 0; tid < THREADS; ++tid)
                    threads.emplace_back([&, tid] {
                        HostCtx ctx{&blk, tid};
                        const bool vec = states_vec(p, NPL);  // as the launcher picks
                        if (seg && vec) {
                            backward_thread<T, G, NPL, THREADS, true, true>(p, ctx, smem.data(), tid, tile, b, s);
                        } else if (seg) {
                            backward_thread<T, G, NPL, THREADS, true, false>(p, ctx, smem.data(), tid, tile, b, s);
                        } else if (vec) {
                            backward_thread<T, G, NPL, THREADS, false, true>(p, ctx, smem.data(), tid, tile, b);
                        } else {
                            backward_thread<T, G, NPL, THREADS>(p, ctx, smem.data(), tid, tile, b);
                        }
                    });
                for (auto& t : threads) t.join();
            }

    Result r;
    for (size_t i = 0; i < y.size(); ++i)
        if (!(to_float(y_inf[i]) == to_float(y[i]))) r.inference_mismatch = true;
    for (size_t i = 0; i < hT.size(); ++i)
        if (!(hT_inf[i] == hT[i])) r.inference_mismatch = true;
    auto back = [](const std::vector<T>& v) {
        std::vector<double> o(v.size());
        for (size_t i = 0; i < v.size(); ++i) o[i] = double(to_float(v[i]));
        return o;
    };
    r.y = back(y);
    if (N <= kTwoPassStates) {
        r.y1 = back(y1);
        r.hT1.assign(hT1.begin(), hT1.end());
    }
    r.dx = back(dx);
    r.ddt = back(ddt);
    r.hT.assign(hT.begin(), hT.end());
    r.dh0.assign(dh0.begin(), dh0.end());
    r.dA.assign(D * N, 0.0);
    r.dD.assign(D, 0.0);
    for (int64_t row = 0; row < rows; ++row) {
        for (int64_t i = 0; i < D * N; ++i) r.dA[i] += dA[row * D * N + i];
        for (int64_t i = 0; i < D; ++i) r.dD[i] += dD[row * D + i];
    }
    r.dB.assign(B * T_ * N, 0.0);
    r.dC.assign(B * T_ * N, 0.0);
    for (int64_t tile = 0; tile < p.tiles; ++tile)
        for (int64_t i = 0; i < B * T_ * N; ++i) {
            r.dB[i] += dBp[tile * B * T_ * N + i];
            r.dC[i] += dCp[tile * B * T_ * N + i];
        }
    if (!c.skip) r.dD.assign(D, 0.0);
    return r;
}

template <typename T>
double round_to(double v) {
    return double(to_float(from_float<T>(float(v))));
}

template <typename T, int G, int NPL, int THREADS>
bool run_case(const Case& c, std::mt19937& rng, const char* dtype, bool seg) {
    std::normal_distribution<double> normal(0.0, 1.0);
    Problem pr;
    auto fill = [&](std::vector<double>& v, size_t n, auto f) {
        v.resize(n);
        for (auto& e : v) e = f();
    };
    const int64_t B = c.B, L = c.T, D = c.D, N = c.N;
    fill(pr.x, B * L * D, [&] { return round_to<T>(normal(rng)); });
    // dt > 0 as after softplus, spread so that some decays are near 1 and some near 0
    fill(pr.dt, B * L * D, [&] { return round_to<T>(std::log1p(std::exp(normal(rng) - 1.0))); });
    fill(pr.A, D * N, [&] { return double(float(-std::exp(normal(rng)))); });
    fill(pr.Bm, B * L * N, [&] { return round_to<T>(normal(rng)); });
    fill(pr.Cm, B * L * N, [&] { return round_to<T>(normal(rng)); });
    fill(pr.Dskip, D, [&] { return double(float(normal(rng))); });
    fill(pr.h0, B * D * N, [&] { return double(float(normal(rng))); });
    fill(pr.gy, B * L * D, [&] { return round_to<T>(normal(rng)); });
    fill(pr.ghT, B * D * N, [&] { return double(float(normal(rng))); });
    const Result want = reference(c, pr);
    const Result got = emulate<T, G, NPL, THREADS>(c, pr, seg);
    // float32: the only differences are summation order and exp2 (exact here); bfloat16: outputs and input
    // gradients are rounded to bfloat16 once (2^-9 relative) from float32 arithmetic. Gradients the kernel
    // returns in float32 (dA, dB, dC, dD, dh0, the final state) get the float32 tolerance in both cases.
    const double tol = sizeof(T) == 4 ? 2e-5 : 1e-2, tol32 = 2e-5;
    char why[256] = {0};
    if (got.inference_mismatch) std::snprintf(why, sizeof why, "the forward pass without checkpoints differs");
    const bool ok = !got.inference_mismatch && close("y", got.y, want.y, tol, why) && close("hT", got.hT, want.hT, tol32, why) &&
                    close("dx", got.dx, want.dx, tol, why) && close("ddt", got.ddt, want.ddt, tol, why) &&
                    close("dA", got.dA, want.dA, tol32, why) && close("dB", got.dB, want.dB, tol32, why) &&
                    close("dC", got.dC, want.dC, tol32, why) && close("dD", got.dD, want.dD, tol32, why) &&
                    close("dh0", got.dh0, want.dh0, tol32, why) &&
                    (got.y1.empty() || (close("y (one-pass)", got.y1, want.y, tol, why) &&
                                        close("hT (one-pass)", got.hT1, want.hT, tol32, why)));
    if (!ok) {
        std::printf("FAIL %s G=%d NPL=%d threads=%d%s B=%lld T=%lld D=%lld N=%lld skip=%d h0=%d ghT=%d: %s\n", dtype,
                    G, NPL, THREADS, seg ? " segmented" : "", (long long)c.B, (long long)c.T, (long long)D, (long long)N,
                    int(c.skip), int(c.h0), int(c.ghT), why);
    }
    return ok;
}

// Runs a case with the kernel shape the launcher picks for its N, and a backward pass segmented as the glue
// runs it where N allows (seg = false: the one-block-per-tile walk, which the launcher takes without the
// workspaces).
template <typename T, int THREADS>
bool dispatch(const Case& c, std::mt19937& rng, const char* dtype, bool seg = true) {
    const Shape sh = pick_shape(c.N);
    seg = seg && segmentable(c.N, nchunks(c.T));
    if (sh.NPL == 1) return run_case<T, 4, 1, THREADS>(c, rng, dtype, seg);
    if (sh.G == 4) return run_case<T, 4, 4, THREADS>(c, rng, dtype, seg);
    return run_case<T, 16, 4, THREADS>(c, rng, dtype, seg);
}

template <typename T>
int run_all(std::mt19937& rng, const char* dtype) {
    // Awkward shapes: T = 1, T not a multiple of the sub-chunk (8) or chunk (32), T = one chunk exactly, T past
    // 8 chunks,
    // odd D that leaves part of a block idle, N from 1 to 64 including odd sizes (idle lanes).
    const Case cases[] = {
        {1, 1, 1, 1, true, false, false},    {2, 1, 3, 5, true, true, true},     {1, 7, 5, 3, false, true, false},
        {2, 32, 6, 16, true, false, true},   {1, 70, 9, 17, true, true, true},   {2, 41, 7, 64, false, false, true},
        {1, 100, 3, 64, true, true, false},  {3, 33, 21, 4, true, true, true},   {1, 9, 4, 2, false, false, false},
        {1, 65, 5, 13, true, true, true},
        // more segments than the combines' load batch (8): 10 and 19, the last batch partial
        {1, 300, 5, 16, true, true, true},   {2, 600, 3, 3, false, true, true},
        // D past the two-pass block (128): full tiles staged as 16-byte words, a last partial tile element
        // by element; T leaves a short last segment
        {2, 70, 136, 16, true, true, true},  {1, 45, 136, 7, true, false, true},
    };
    int failures = 0, n = 0;
    for (const Case& c : cases) {
        failures += dispatch<T, 64>(c, rng, dtype) ? 0 : 1;
        ++n;
        if (segmentable(c.N, nchunks(c.T))) {  // the unsegmented backward too
            failures += dispatch<T, 64>(c, rng, dtype, false) ? 0 : 1;
            ++n;
        }
    }
    // The GPU's block size once (many channels per block, one tile).
    failures += dispatch<T, kThreads>(Case{1, 37, 40, 16, true, true, true}, rng, dtype) ? 0 : 1;
    ++n;
    std::printf("%-8s %d cases, %d failures\n", dtype, n, failures);
    return failures;
}

}  // namespace

int main() {
    std::mt19937 rng(4321);
    int failures = run_all<float>(rng, "float32") + run_all<__nv_bfloat16>(rng, "bfloat16");
    std::printf(failures == 0 ? "all passed\n" : "%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
