// Host emulation of the chunked linear-attention kernels: runs chunk_linear.cuh's launch sequence and
// per-thread code on the CPU (each per-chunk block: every thread's load step, the barrier, every thread's
// compute step) and checks the output, the final state and the gradients of q, k, v, the log-decays and the
// initial state against a float64 reference (the per-token recurrence and its hand-written reverse pass).
// The log-decay gradient is formed here from dq and dk exactly as extension.cpp's glue forms it. Built by
// kernels/build.rs with the `cuda` feature and run by `host_emulation_of_the_cuda_kernels` (cuda_ext.rs).
//
// Float32 inputs run the float32 path (chunk_linear.cuh), bfloat16 inputs the tensor-core path
// (chunk_linear_tc.cuh) over emulate.h's wmma shim, each warp-collective step once per warp.
//
// Outputs, workspaces and shared memory start as NaN, so an element no thread writes (or a read of shared
// memory no step wrote) fails the check.
// The block code calls this file's host-only executor from __host__ __device__ functions; that is fine on
// the CPU, which is the only place it runs.
#pragma nv_diag_suppress 20011
#pragma nv_diag_suppress 20014

#define WB_EMULATE_WMMA
#include "emulate.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "../chunk_linear_pk.cuh"

using namespace wb::chunk_linear;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// The scan's tile, {0, 0} for the launcher's own choice (which at these small B * H is 64 rows and 32
// columns: the bfloat16 cases run again with every row and 64 columns, the large-batch tile).
ScanTile g_scan_tile{0, 0};

// The executor of chunk_linear_tc.cuh's blocks on the CPU: a step runs for every thread (or once per warp)
// before the next begins, which is what the GPU's barrier between steps guarantees.
struct HostBlock {
    template <class F>
    void threads(F&& f) {
        for (int tid = 0; tid < kThreads; ++tid) f(tid);
    }
    template <class F>
    void warps(F&& f) {
        for (int w = 0; w < kWarps; ++w) f(w);
    }
    // (no barrier after a warps_free step on the GPU: running it in order is one of its legal schedules)
    template <class F>
    void warps_free(F&& f) {
        for (int w = 0; w < kWarps; ++w) f(w);
    }
    template <class F>
    void lanes(int w, F&& f) {
        for (int l = 0; l < 32; ++l) f(w * 32 + l);
    }
    void syncwarp() {}
    template <class S>
    struct PerWarp {
        S s[kWarps];
        S& at(int w) { return s[w]; }
    };
    template <class S>
    struct PerThread {
        S s[kThreads];
        S& at(int t) { return s[t]; }
    };
};

// Shared memory of one tensor-core block: 128-byte aligned, every byte 0xff (NaN as float and bfloat16).
struct HostSmem {
    std::vector<unsigned char> raw;
    unsigned char* fresh(int64_t bytes) {
        raw.assign(size_t(bytes + 128), 0xff);
        const uintptr_t at = (reinterpret_cast<uintptr_t>(raw.data()) + 127) / 128 * 128;
        return reinterpret_cast<unsigned char*>(at);
    }
};

// The launcher of the launch sequences (chunk_linear.cuh's and chunk_linear_tc.cuh's), on the CPU.
struct HostLaunch {
    const Params& p;
    std::vector<float> smem;
    HostSmem tc_smem;

    template <class Load, class Compute>
    void blocks(int64_t floats, Load load, Compute compute) {
        smem.assign(size_t(floats), kNaN);
        for (int64_t bh = 0; bh < p.B * p.H; ++bh)
            for (int64_t n = 0; n < p.N; ++n) {
                const Chunk c = chunk_of(p, n, bh);
                for (int tid = 0; tid < kThreads; ++tid) load(c, tid);
                for (int tid = 0; tid < kThreads; ++tid) compute(c, tid);
            }
    }
    void cumsum() {
        if (p.g == nullptr) return;
        if (p.per_key) {
            for (int64_t i = 0; i < cumsum_key_threads(p) + 7; ++i) cumsum_key_any(p, i);
            return;
        }
        for (int64_t i = 0; i < p.B * p.H * p.N + 7; ++i) cumsum_thread(p, i);  // extra ids must do nothing
    }
    void gdot() {
        for (int64_t i = 0; i < p.B * p.H * p.N * p.Dk * 32 + 64; ++i) gdot_thread(p, i);
    }
    void dg_key() {
        for (int64_t i = 0; i < p.B * p.H * p.N * p.Dk + 7; ++i) dg_key_thread(p, i);
    }
    void pass(float* buf, const float* start, float* end, bool reverse) {
        for (int64_t i = 0; i < p.B * p.H * p.Dk * p.Dv + 7; ++i) pass_thread(p, buf, start, end, reverse, i);
    }
    template <typename T>
    void scores(const void* X, const void* Y, int64_t D, float* out) {
        blocks(
            smem_scores(D),
            [&](const Chunk& c, int tid) {
                scores_load(p, c, static_cast<const T*>(X), static_cast<const T*>(Y), D, smem.data(), tid);
            },
            [&](const Chunk& c, int tid) { scores_compute(p, c, D, out, smem.data(), tid); });
    }
    template <typename T>
    void update(const void* X, Scale s, const void* Y, float* out) {
        blocks(
            smem_update(p.Dk, p.Dv),
            [&](const Chunk& c, int tid) {
                update_load(p, c, static_cast<const T*>(X), s, static_cast<const T*>(Y), smem.data(), tid);
            },
            [&](const Chunk& c, int tid) { update_compute(p, c, out, smem.data(), tid); });
    }
    template <int COLS>
    void scan_cols(const ScanArgs& a, int rows) {
        for (int64_t bh = 0; bh < p.B * p.H; ++bh)
            for (int64_t col0 = 0; col0 < p.Dv; col0 += COLS) {
                HostBlock blk;
                for (int64_t row0 = 0; row0 < p.Dk; row0 += rows)
                    scan_block<COLS>(blk, p, a, bh, row0, rows, col0, tc_smem.fresh(scan_smem(p.Dk, COLS, rows).bytes));
            }
    }
    void scan(const ScanArgs& a) {
        const ScanTile t = g_scan_tile.rows != 0 ? g_scan_tile : scan_tile(p.B * p.H, p.Dk, p.Dv);
        t.cols == 64 ? scan_cols<64>(a, t.rows) : scan_cols<32>(a, t.rows);
    }
    template <typename TO>
    void mix(const MixTc& m, TO* out) {
        for (int64_t bh = 0; bh < p.B * p.H; ++bh)
            for (int64_t n = 0; n < p.N; ++n) {
                HostBlock blk;
                mix_block(blk, p, chunk_of(p, n, bh), m, out, tc_smem.fresh(mix_smem(m.D1, m.D2, m.ht).bytes));
            }
    }
    void mix_pk(const MixPk& m, __nv_bfloat16* out) {
        for (int64_t bh = 0; bh < p.B * p.H; ++bh)
            for (int64_t n = 0; n < p.N; ++n) {
                HostBlock blk;
                mix_pk_block(blk, p, chunk_of(p, n, bh), m, out, tc_smem.fresh(pk_smem(p, m).bytes));
            }
    }
    template <typename T, typename TO>
    void rowmix(const RowMix& m, const void* Z, const void* R, TO* out) {
        blocks(
            smem_rowmix(m.D1, m.D2),
            [&](const Chunk& c, int tid) {
                rowmix_load(p, c, m, static_cast<const T*>(Z), static_cast<const T*>(R), smem.data(), tid);
            },
            [&](const Chunk& c, int tid) { rowmix_compute(p, c, m, out, smem.data(), tid); });
    }
};

struct Case {
    int64_t B, H, T, Dk, Dv;
    // 0: none, 1: mild (log a in [-0.5, 0)), 2: strong (log a in [-30, -5]); per key also 3: medium
    // ([-2.5, 0): a sub-chunk decays its keys by up to ~37 units, the tensor-core diagonal tiles' widest
    // factors) and 4: mixed ([-5.5, 0): some chunks past kDiagMaxExp take the exact diagonal sums, some not)
    int decay;
    bool s0, dsT;
    bool per_key = false;  // one log-decay per key (g [B, H, T, Dk]; bfloat16 only)
};

template <typename T>
double round_to(double x) {
    return double(to_float(from_float<T>(float(x))));
}

// Reference in float64: forward recurrence, then its reverse pass for the loss
// sum(wo * o) + sum(wS * S_T). Layout as in chunk_linear.h.
struct Ref {
    std::vector<double> o, sT, dq, dk, dv, dg, ds0;
};

Ref reference(const Case& cs, const std::vector<double>& q, const std::vector<double>& k,
              const std::vector<double>& v, const std::vector<double>& g, const std::vector<double>& s0,
              const std::vector<double>& wo, const std::vector<double>& wS) {
    const int64_t T = cs.T, Dk = cs.Dk, Dv = cs.Dv, per = Dk * Dv;
    Ref r;
    r.o.assign(size_t(cs.B * cs.H * T * Dv), 0);
    r.sT.assign(size_t(cs.B * cs.H * per), 0);
    r.dq.assign(size_t(cs.B * cs.H * T * Dk), 0);
    r.dk = r.dq;
    r.dv = r.o;
    r.dg.assign(size_t(cs.B * cs.H * T * (cs.per_key ? Dk : 1)), 0);
    r.ds0 = r.sT;
    for (int64_t bh = 0; bh < cs.B * cs.H; ++bh) {
        std::vector<double> S(size_t((T + 1) * per), 0);  // S[t + 1] = state after step t; S[0] = s0
        for (int64_t e = 0; e < per; ++e) S[e] = cs.s0 ? s0[bh * per + e] : 0;
        auto at = [&](int64_t t) { return bh * T + t; };
        // the decay of key d at step t
        auto decay = [&](int64_t t, int64_t d) {
            return !cs.decay ? 1.0 : std::exp(cs.per_key ? g[at(t) * Dk + d] : g[at(t)]);
        };
        for (int64_t t = 0; t < T; ++t) {
            for (int64_t d = 0; d < Dk; ++d) {
                const double a = decay(t, d);
                for (int64_t e = 0; e < Dv; ++e)
                    S[(t + 1) * per + d * Dv + e] = a * S[t * per + d * Dv + e] + k[at(t) * Dk + d] * v[at(t) * Dv + e];
            }
            for (int64_t e = 0; e < Dv; ++e) {
                double acc = 0;
                for (int64_t d = 0; d < Dk; ++d) acc += q[at(t) * Dk + d] * S[(t + 1) * per + d * Dv + e];
                r.o[at(t) * Dv + e] = acc;
            }
        }
        for (int64_t e = 0; e < per; ++e) r.sT[bh * per + e] = S[T * per + e];
        std::vector<double> G(static_cast<size_t>(per), 0.0);
        for (int64_t e = 0; e < per; ++e) G[e] = cs.dsT ? wS[bh * per + e] : 0;
        for (int64_t t = T - 1; t >= 0; --t) {
            const double* St = &S[(t + 1) * per];
            const double* Sp = &S[t * per];
            for (int64_t d = 0; d < Dk; ++d)
                for (int64_t e = 0; e < Dv; ++e) G[d * Dv + e] += q[at(t) * Dk + d] * wo[at(t) * Dv + e];
            for (int64_t d = 0; d < Dk; ++d) {
                double dq = 0, dk = 0;
                for (int64_t e = 0; e < Dv; ++e) {
                    dq += wo[at(t) * Dv + e] * St[d * Dv + e];
                    dk += G[d * Dv + e] * v[at(t) * Dv + e];
                }
                r.dq[at(t) * Dk + d] = dq;
                r.dk[at(t) * Dk + d] = dk;
            }
            for (int64_t e = 0; e < Dv; ++e) {
                double dv = 0;
                for (int64_t d = 0; d < Dk; ++d) dv += k[at(t) * Dk + d] * G[d * Dv + e];
                r.dv[at(t) * Dv + e] = dv;
            }
            if (cs.per_key) {
                for (int64_t d = 0; d < Dk; ++d) {
                    const double a = decay(t, d);
                    double da = 0;
                    for (int64_t e = 0; e < Dv; ++e) da += G[d * Dv + e] * Sp[d * Dv + e];
                    r.dg[at(t) * Dk + d] = a * da;
                    for (int64_t e = 0; e < Dv; ++e) G[d * Dv + e] *= a;
                }
            } else {
                const double a = decay(t, 0);
                double da = 0;
                for (int64_t e = 0; e < per; ++e) da += G[e] * Sp[e];
                r.dg[at(t)] = a * da;
                for (int64_t e = 0; e < per; ++e) G[e] *= a;
            }
        }
        for (int64_t e = 0; e < per; ++e) r.ds0[bh * per + e] = G[e];
    }
    return r;
}

// max |got - want| / max(max |want|, 1); NaN anywhere counts as infinite.
template <typename V>
double rel_err(const V& got, const std::vector<double>& want) {
    double scale = 1, err = 0;
    for (double w : want) scale = std::max(scale, std::fabs(w));
    for (size_t i = 0; i < want.size(); ++i) {
        const double d = std::fabs(double(got[i]) - want[i]);
        if (!(d == d)) return std::numeric_limits<double>::infinity();
        err = std::max(err, d);
    }
    return err / scale;
}

template <typename E>
int run_case(std::mt19937& rng, const Case& cs, const char* dtype, double tol, double dg_tol) {
    std::normal_distribution<double> nd(0, 1);
    const double lo = cs.decay == 2 ? -30.0 : cs.decay == 3 ? -2.5 : cs.decay == 4 ? -5.5 : -0.5,
                 hi = cs.decay == 2 ? -5.0 : -1e-3;
    std::uniform_real_distribution<double> ud(lo, hi);
    const int64_t BH = cs.B * cs.H, T = cs.T, Dk = cs.Dk, Dv = cs.Dv, per = Dk * Dv, N = nchunks(T);
    auto fill = [&](int64_t n, bool in_t) {
        std::vector<double> x(static_cast<size_t>(n));
        for (auto& e : x) e = in_t ? round_to<E>(nd(rng)) : double(float(nd(rng)));
        return x;
    };
    const auto q = fill(BH * T * Dk, true), k = fill(BH * T * Dk, true), v = fill(BH * T * Dv, true);
    const auto wo = fill(BH * T * Dv, true);
    const auto s0 = fill(BH * per, false), wS = fill(BH * per, false);
    std::vector<double> g(static_cast<size_t>(BH * T * (cs.per_key ? Dk : 1)));
    for (auto& e : g) e = double(float(ud(rng)));
    const Ref ref = reference(cs, q, k, v, g, s0, wo, wS);

    auto as_t = [](const std::vector<double>& x) {
        std::vector<E> y(x.size());
        for (size_t i = 0; i < x.size(); ++i) y[i] = from_float<E>(float(x[i]));
        return y;
    };
    auto as_f = [](const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); };
    const auto qt = as_t(q), kt = as_t(k), vt = as_t(v), wot = as_t(wo);
    const auto gf = as_f(g), s0f = as_f(s0), wSf = as_f(wS);
    std::vector<E> o(size_t(BH * T * Dv), from_float<E>(kNaN));
    std::vector<float> sT(size_t(BH * per), kNaN), bcum(g.size(), kNaN);
    std::vector<float> states(size_t(BH * N * per), kNaN), gstates(states.size(), kNaN);
    std::vector<float> scores(size_t(BH * N * kChunk * kChunk), kNaN), pscores(scores.size(), kNaN);
    std::vector<float> dq(size_t(BH * T * Dk), kNaN), dk(dq.size(), kNaN), dv(size_t(BH * T * Dv), kNaN);
    std::vector<float> ds0(size_t(BH * per), kNaN), sT2(sT.size(), kNaN);
    std::vector<E> states16(states.size(), from_float<E>(kNaN)), gstates16(states.size(), from_float<E>(kNaN));
    std::vector<E> kg16(size_t(cs.per_key ? BH * T * Dk : 0), from_float<E>(kNaN)), qg16(kg16.size(), from_float<E>(kNaN));
    std::vector<E> scores16(size_t(cs.per_key ? BH * N * kChunk * kChunk : 0), from_float<E>(kNaN));

    Params p;
    p.q = qt.data();
    p.k = kt.data();
    p.v = vt.data();
    p.g = cs.decay ? gf.data() : nullptr;
    p.per_key = cs.per_key;
    p.s0 = cs.s0 ? s0f.data() : nullptr;
    p.o = o.data();
    p.sT = sT.data();
    p.bcum = cs.decay ? bcum.data() : nullptr;
    p.states = states.data();
    p.scores = scores.data();
    p.states16 = states16.data();
    p.gstates16 = gstates16.data();
    p.kg16 = cs.per_key ? kg16.data() : nullptr;  // (the forward pass needs no qg16)
    p.scores16 = cs.per_key ? scores16.data() : nullptr;  // written by the forward pass, read by dV
    p.B = cs.B;
    p.H = cs.H;
    p.T = T;
    p.Dk = Dk;
    p.Dv = Dv;
    p.N = N;
    {
        HostLaunch l{p, {}, {}};
        if constexpr (std::is_same<E, float>::value) {
            run_forward<E>(l, p);
        } else {
            if (cs.per_key) {
                run_forward_pk(l, p);
            } else {
                run_forward_tc(l, p);
            }
        }
    }
    Params pb = p;
    pb.sT = sT2.data();
    pb.dout = wot.data();
    pb.dsT = cs.dsT ? wSf.data() : nullptr;
    pb.gstates = gstates.data();
    pb.pscores = pscores.data();
    pb.dq = dq.data();
    pb.dk = dk.data();
    pb.dv = dv.data();
    // the bfloat16 path's dQ, dK, dV and row dots q . dq, k . dk
    std::vector<E> dq16(dq.size(), from_float<E>(kNaN)), dk16(dk.size(), from_float<E>(kNaN)), dv16(dv.size(), from_float<E>(kNaN));
    std::vector<float> qdq(size_t(BH * T * (cs.per_key ? Dk : 1)), kNaN), kdk(qdq.size(), kNaN);
    pb.dq16 = dq16.data();
    pb.dk16 = dk16.data();
    pb.dv16 = dv16.data();
    pb.qdq = qdq.data();
    pb.kdk = kdk.data();
    pb.ds0 = ds0.data();
    std::vector<float> dgk(cs.per_key ? g.size() : 0, kNaN);
    pb.dgk = dgk.data();
    pb.qg16 = cs.per_key ? qg16.data() : nullptr;
    pb.bcum_ready = cs.per_key;  // as the torch glue: the forward pass's per-key bcum is saved
    std::vector<float> gdot(size_t(BH * N * Dk), kNaN);
    pb.gdot = gdot.data();
    states.assign(states.size(), kNaN);  // the backward pass recomputes them
    states16.assign(states16.size(), from_float<E>(kNaN));
    scores.assign(scores.size(), kNaN);
    {
        HostLaunch l{pb, {}, {}};
        if constexpr (std::is_same<E, float>::value) {
            run_backward<E>(l, pb);
        } else {
            if (cs.per_key) {
                run_backward_pk(l, pb);
            } else {
                run_backward_tc(l, pb);
            }
        }
    }
    // The glue's dg: within-chunk reverse cumsum of (q . dq - k . dk), plus <G(n), S_end(n)> per chunk. The
    // tensor-core path gives the row dots itself (from float32 dq, dk) and G in bfloat16, as extension.cpp
    // takes them.
    constexpr bool f32 = std::is_same<E, float>::value;
    std::vector<double> dg(g.size(), 0);
    // Per key, the kernel's own dg (dg_key_thread: the same per row d of the state).
    for (size_t i = 0; cs.per_key && i < dg.size(); ++i) dg[i] = dgk[i];
    for (int64_t bh = 0; !cs.per_key && bh < BH; ++bh)
        for (int64_t n = 0; n < N; ++n) {
            double gs = 0;
            if (f32) {
                for (int64_t e = 0; e < per; ++e) {
                    const double send = n + 1 < N ? states[(bh * N + n + 1) * per + e] : sT2[bh * per + e];
                    gs += gstates[size_t((bh * N + n) * per + e)] * send;
                }
            } else {  // the kernel's rows of <G(n), S_end(n)>, summed as the glue sums them
                for (int64_t d = 0; d < Dk; ++d) gs += gdot[size_t((bh * N + n) * Dk + d)];
            }
            double acc = gs;
            for (int64_t t = std::min(T, (n + 1) * kChunk) - 1; t >= n * kChunk; --t) {
                const int64_t at = bh * T + t;
                if (f32) {
                    for (int64_t d = 0; d < Dk; ++d)
                        acc += q[at * Dk + d] * dq[at * Dk + d] - k[at * Dk + d] * dk[at * Dk + d];
                } else {
                    acc += double(qdq[at]) - double(kdk[at]);
                }
                dg[at] = acc;
            }
        }

    auto as_float = [](const std::vector<E>& x) {
        std::vector<float> f(x.size());
        for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]);
        return f;
    };
    const std::vector<float> of = as_float(o);
    struct Check {
        const char* name;
        double err;
    };
    std::vector<Check> checks = {{"o", rel_err(of, ref.o)},     {"sT", rel_err(sT, ref.sT)},
                                 {"sT (bwd)", rel_err(sT2, ref.sT)}, {"dq", f32 ? rel_err(dq, ref.dq) : rel_err(as_float(dq16), ref.dq)},
                                 {"dk", f32 ? rel_err(dk, ref.dk) : rel_err(as_float(dk16), ref.dk)},   {"dv", f32 ? rel_err(dv, ref.dv) : rel_err(as_float(dv16), ref.dv)},
                                 {"ds0", rel_err(ds0, ref.ds0)}};
    // dg = q . dq - k . dk summed: a difference of terms much larger than dg itself under strong decay (the
    // diagonal terms q_i . k_i dO_i . v_i cancel exactly; so do <G(n), S_end(n)> and the last rows' share of
    // k . dk), so rounding of those terms shows at its size relative to dg: float32 arithmetic at 1e-4 of the
    // scale. The bfloat16 path forms both sides from the same bfloat16 G, so the cancellation is float32's
    // and dg meets the bfloat16 bound (with G in float32 for <G, S_end> it measured up to 9e-2 here).
    if (cs.decay) checks.push_back({"dg", rel_err(dg, ref.dg) * tol / dg_tol});
    int failures = 0;
    double worst = 0;
    for (const Check& c : checks) {
        worst = std::max(worst, c.err);
        if (!(c.err <= tol)) {
            std::printf("FAIL %s%s B=%lld H=%lld T=%lld Dk=%lld Dv=%lld decay=%d s0=%d dsT=%d: %s error %.3g > %.3g\n",
                        dtype, cs.per_key ? " per-key" : "", (long long)cs.B, (long long)cs.H, (long long)T, (long long)Dk, (long long)Dv,
                        cs.decay, cs.s0, cs.dsT, c.name, c.err, tol);
            ++failures;
        }
    }
    std::printf("%s %s%s B=%lld H=%lld T=%lld Dk=%lld Dv=%lld decay=%d s0=%d dsT=%d: worst %.2e\n",
                failures ? "FAIL" : "ok  ", dtype, cs.per_key ? " per-key" : "", (long long)cs.B, (long long)cs.H, (long long)T, (long long)Dk,
                (long long)Dv, cs.decay, cs.s0, cs.dsT, worst);
    return failures;
}

}  // namespace

int main() {
    std::mt19937 rng(4321);
    // T = 1, T below / at / past one chunk and not a multiple of it, small, odd and full head dims, Dk != Dv,
    // no decay / mild / strong, with and without s0 and the final state's gradient.
    const Case cases[] = {
        {1, 1, 1, 1, 1, 1, true, true},    {2, 1, 1, 5, 3, 0, false, false}, {1, 2, 7, 3, 5, 1, true, false},
        {1, 1, 64, 4, 4, 2, false, true},  {1, 2, 65, 8, 6, 1, true, true},  {2, 1, 130, 5, 7, 0, true, true},
        {1, 1, 150, 33, 17, 2, true, true}, {1, 1, 129, 64, 64, 1, false, true},
        {1, 1, 100, 128, 128, 1, true, true}, {1, 1, 70, 96, 128, 2, false, false},
        {2, 2, 192, 16, 48, 1, true, true},  {1, 1, 200, 128, 64, 2, true, true},
        {1, 2, 90, 40, 100, 1, true, true},  // (with 64 columns per scan block: two tiles, the second partial)
    };
    int failures = 0;
    // Tolerances on max error / max(max |reference|, 1): float32 arithmetic on inputs exactly representable
    // in the dtype; bfloat16 adds the output's one rounding (2^-9).
    for (const Case& c : cases) failures += run_case<float>(rng, c, "float32", 2e-5, 1e-4);
    for (const Case& c : cases) failures += run_case<__nv_bfloat16>(rng, c, "bfloat16", 8e-3, 8e-3);
    // Per-key decays (bfloat16 only): T = 1, past one chunk with a partial last one, odd and full head dims,
    // mild and strong decays (the strong ones would overflow any one-matmul factorisation of a sub-chunk).
    const Case per_key[] = {
        {1, 1, 1, 1, 1, 1, true, true, true},     {1, 2, 7, 3, 5, 1, true, false, true},
        {1, 1, 64, 4, 4, 2, false, true, true},   {1, 2, 65, 8, 6, 1, true, true, true},
        {1, 1, 150, 33, 17, 2, true, true, true}, {1, 1, 100, 128, 128, 1, true, true, true},
        {1, 1, 70, 96, 128, 2, false, false, true}, {2, 1, 130, 64, 40, 1, true, true, true},
        // value widths past 128 where the blocks fit (GLA's Dk = 96, Dv = 192; Dk = 64, Dv = 256)
        {1, 1, 100, 96, 192, 1, true, true, true}, {1, 1, 70, 64, 256, 2, true, true, true},
        // decays near the diagonal tiles' bound, below it and on both sides of it
        {1, 2, 200, 64, 64, 3, true, true, true}, {2, 1, 256, 32, 48, 4, true, true, true},
    };
    if (!pk_fits(96, 192) || !pk_fits(64, 256) || pk_fits(128, 256)) {
        std::printf("FAIL pk_fits: (96, 192) %d, (64, 256) %d, (128, 256) %d\n", pk_fits(96, 192), pk_fits(64, 256),
                    pk_fits(128, 256));
        ++failures;
    }
    for (const Case& c : per_key) failures += run_case<__nv_bfloat16>(rng, c, "bfloat16", 8e-3, 8e-3);
    // scan_tile's choices at the measured shapes (BENCHMARKS.md, session 5): fewest waves of 264 blocks, then
    // the least work per block. The 8 x 16 benchmark shapes keep every row; GLA's training shape (8 x 4 heads,
    // Dk 96, Dv 192) takes every row and 32 columns (192 blocks, one wave) rather than rows of 64 (384, two).
    const struct {
        int64_t BH, Dk, Dv;
        ScanTile want;
    } tiles[] = {{128, 128, 128, {kMaxDim, 64}}, {128, 64, 64, {kMaxDim, 32}}, {32, 96, 192, {kMaxDim, 32}},
                 {32, 96, 96, {64, 32}}, {1, 128, 128, {64, 32}}, {256, 128, 128, {kMaxDim, 64}}};
    for (const auto& t : tiles) {
        const ScanTile got = scan_tile(t.BH, t.Dk, t.Dv);
        if (got.rows != t.want.rows || got.cols != t.want.cols) {
            std::printf("FAIL scan_tile(BH %lld, Dk %lld, Dv %lld) = rows %d cols %d, want rows %d cols %d\n",
                        (long long)t.BH, (long long)t.Dk, (long long)t.Dv, got.rows, got.cols, t.want.rows, t.want.cols);
            ++failures;
        }
    }
    g_scan_tile = ScanTile{kMaxDim, 64};
    std::printf("scan tiles of every row and 64 columns:\n");
    for (const Case& c : cases)
        if (c.Dv > 32) failures += run_case<__nv_bfloat16>(rng, c, "bfloat16", 8e-3, 8e-3);
    for (const Case& c : per_key)
        if (c.Dv > 32) failures += run_case<__nv_bfloat16>(rng, c, "bfloat16", 8e-3, 8e-3);
    std::printf(failures == 0 ? "all passed\n" : "%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
