// Host emulation of the short-convolution kernels: runs the exact per-thread code of short_conv.cuh on the
// CPU, block by block and thread by thread (with the barrier between the backward pass's stash and reduce
// steps), and checks outputs and every gradient against a float64 reference. No GPU needed: this catches
// indexing, halo and reduction mistakes before any device time is spent. Built by kernels/build.rs with the
// `cuda` feature and run by the `host_emulation_of_the_cuda_kernels` test in kernels/src/cuda_ext.rs.
//
// Every output element starts as NaN, so a step or channel that no thread writes fails the check.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "../short_conv.cuh"
#include "emulate.h"

using namespace wb::short_conv;

namespace {

struct Case {
    int64_t B, T, C;
    int K;
    bool silu, bias;
    int64_t chunk;  // 0: the automatic plan
};

struct Problem {
    std::vector<double> x, w, bias, gy;  // values exactly representable in the tested dtype
};

struct Result {
    std::vector<double> y, dx, dw, db;
};

double act(double z, bool silu) { return silu ? z / (1.0 + std::exp(-z)) : z; }
double dact(double z, bool silu) {
    if (!silu) return 1.0;
    const double s = 1.0 / (1.0 + std::exp(-z));
    return s * (1.0 + z * (1.0 - s));
}

Result reference(const Case& c, const Problem& pr) {
    const int64_t B = c.B, T = c.T, C = c.C;
    const int K = c.K;
    Result r;
    r.y.assign(B * T * C, 0.0);
    r.dx.assign(B * T * C, 0.0);
    r.dw.assign(C * K, 0.0);
    r.db.assign(C, 0.0);
    std::vector<double> g(B * T * C);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
            for (int64_t ch = 0; ch < C; ++ch) {
                double z = c.bias ? pr.bias[ch] : 0.0;
                for (int j = 0; j < K; ++j) {
                    const int64_t s = t - (K - 1) + j;
                    if (s >= 0) z += pr.w[ch * K + j] * pr.x[(b * T + s) * C + ch];
                }
                const int64_t i = (b * T + t) * C + ch;
                r.y[i] = act(z, c.silu);
                g[i] = pr.gy[i] * dact(z, c.silu);
            }
    for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
            for (int64_t ch = 0; ch < C; ++ch) {
                const double gi = g[(b * T + t) * C + ch];
                r.db[ch] += gi;
                for (int j = 0; j < K; ++j) {
                    const int64_t s = t - (K - 1) + j;  // y[t] reads x[s] with tap j
                    if (s >= 0) {
                        r.dw[ch * K + j] += gi * pr.x[(b * T + s) * C + ch];
                        r.dx[(b * T + s) * C + ch] += gi * pr.w[ch * K + j];
                    }
                }
            }
    if (!c.bias) r.db.assign(C, 0.0);
    return r;
}

template <typename T, int K, int VEC, bool SILU>
Result emulate(const Case& c, const Problem& pr) {
    const int64_t B = c.B, T_ = c.T, C = c.C;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<T> x(B * T_ * C), gy(B * T_ * C), y(B * T_ * C, from_float<T>(nan)), gx(B * T_ * C, from_float<T>(nan));
    for (size_t i = 0; i < x.size(); ++i) {
        x[i] = from_float<T>(float(pr.x[i]));
        gy[i] = from_float<T>(float(pr.gy[i]));
    }
    std::vector<T> w(C * K), bias(C), dw(C * K, from_float<T>(nan)), db(C, from_float<T>(nan));
    for (size_t i = 0; i < w.size(); ++i) w[i] = from_float<T>(float(pr.w[i]));
    for (int64_t i = 0; i < C; ++i) bias[i] = from_float<T>(float(pr.bias[i]));

    const Plan plan = make_plan(B, T_, C, VEC, 132, c.chunk);
    Params p;
    p.x = x.data();
    p.w = w.data();
    p.bias = c.bias ? bias.data() : nullptr;
    p.y = y.data();
    p.gy = gy.data();
    p.gx = gx.data();
    p.B = B;
    p.T = T_;
    p.C = C;
    p.chunk = plan.chunk;
    std::vector<float> partial(plan.partial_rows * (K + 1) * C, nan);
    p.partial = partial.data();
    p.partial_rows = plan.partial_rows;
    p.dw = dw.data();
    p.dbias = c.bias ? db.data() : nullptr;
    std::vector<float> smem((K + 1) * VEC * kThreads);
    // One block's rings (the threads of a block run one after another here, so the forward ring can be
    // reused; the backward ring is a separate buffer, as the GPU's is reused by the stash only after a barrier).
    std::vector<Pack<T, VEC>> fring(kFwdStages * kThreads), bring(2 * kBwdStages * kThreads);
    static_assert(sizeof(Pack<T, VEC>) * kFwdStages * kThreads == Ring<T, VEC, kFwdStages>::kTensor, "ring size");

    for (int64_t bz = 0; bz < plan.grid_z; ++bz)
        for (int64_t by = 0; by < plan.grid_y; ++by)
            for (int64_t bx = 0; bx < plan.grid_x; ++bx) {
                for (int ty = 0; ty < kThreadsY; ++ty)
                    for (int tx = 0; tx < kThreadsX; ++tx)
                        forward_thread<T, K, VEC, SILU>(p, tx, ty, bx, by, bz, fring.data());
                // backward: every thread up to the barrier, then every thread after it
                for (int ty = 0; ty < kThreadsY; ++ty)
                    for (int tx = 0; tx < kThreadsX; ++tx) {
                        float acc[K + 1][VEC];
                        backward_thread<T, K, VEC, SILU>(p, tx, ty, bx, by, bz, bring.data(), acc);
                        stash<K, VEC>(smem.data(), tx, ty, acc);
                    }
                for (int ty = 0; ty < kThreadsY; ++ty)
                    for (int tx = 0; tx < kThreadsX; ++tx) reduce<K, VEC>(p, smem.data(), tx, ty, bx, by, bz, plan.grid_y);
            }

    // The finishing kernel, block by block, with its barrier between the two steps.
    std::vector<float> fsmem((K + 1) * kFinishY * kFinishX);
    for (int64_t bx = 0; bx < (C + kFinishX - 1) / kFinishX; ++bx) {
        for (int ty = 0; ty < kFinishY; ++ty)
            for (int tx = 0; tx < kFinishX; ++tx) finish_stash<K>(p, fsmem.data(), tx, ty, bx);
        for (int ty = 0; ty < kFinishY; ++ty)
            for (int tx = 0; tx < kFinishX; ++tx) finish_write<T, K>(p, fsmem.data(), tx, ty, bx);
    }

    Result r;
    r.y.resize(y.size());
    r.dx.resize(gx.size());
    for (size_t i = 0; i < y.size(); ++i) {
        r.y[i] = to_float(y[i]);
        r.dx[i] = to_float(gx[i]);
    }
    r.dw.resize(dw.size());
    for (size_t i = 0; i < dw.size(); ++i) r.dw[i] = to_float(dw[i]);
    r.db.resize(db.size());
    for (size_t i = 0; i < db.size(); ++i) r.db[i] = c.bias ? double(to_float(db[i])) : 0.0;
    return r;
}

template <typename T>
double round_to(double v) {
    return double(to_float(from_float<T>(float(v))));
}

template <typename T, int K, int VEC, bool SILU>
bool run_case(const Case& c, std::mt19937& rng, const char* dtype) {
    std::normal_distribution<double> normal(0.0, 1.0);
    Problem pr;
    pr.x.resize(c.B * c.T * c.C);
    pr.gy.resize(pr.x.size());
    pr.w.resize(c.C * K);
    pr.bias.resize(c.C);
    for (auto& v : pr.x) v = round_to<T>(normal(rng));
    for (auto& v : pr.gy) v = round_to<T>(normal(rng));
    for (auto& v : pr.w) v = round_to<T>(normal(rng) / std::sqrt(double(K)));
    for (auto& v : pr.bias) v = round_to<T>(normal(rng));
    const Result want = reference(c, pr);
    const Result got = emulate<T, K, VEC, SILU>(c, pr);
    // float32: accumulation order only; bfloat16: one rounding of each output, dw and dbias included
    // (2^-9 relative), plus margin.
    const double tol = sizeof(T) == 4 ? 1e-5 : 1e-2;
    char why[256] = {0};
    const bool ok = close("y", got.y, want.y, tol, why) && close("dx", got.dx, want.dx, tol, why) &&
                    close("dw", got.dw, want.dw, tol, why) && close("dbias", got.db, want.db, tol, why);
    if (!ok) {
        std::printf("FAIL %s K=%d VEC=%d %s bias=%d B=%lld T=%lld C=%lld chunk=%lld: %s\n", dtype, K, VEC,
                    SILU ? "silu" : "identity", int(c.bias), (long long)c.B, (long long)c.T, (long long)c.C,
                    (long long)c.chunk, why);
    }
    return ok;
}

template <typename T, int K, int VEC>
int run_all(std::mt19937& rng, const char* dtype) {
    // Awkward shapes: T = 1, T not a multiple of the chunk or the unroll, chunks shorter than the halo,
    // channel counts that leave part of a warp idle; C is a multiple of VEC (the launcher's rule).
    const int64_t shapes[][3] = {{1, 1, 1}, {2, 1, 3}, {1, 2, 5}, {2, 7, 3}, {3, 37, 13}, {2, 64, 40}, {1, 300, 9}};
    const int64_t chunks[] = {0, 1, 2, 3, 5, 16, 64};
    int failures = 0, cases = 0;
    for (const auto& s : shapes) {
        const int64_t C = s[2] * VEC;
        for (int64_t chunk : chunks)
            for (int flags = 0; flags < 4; ++flags) {
                const Case c{s[0], s[1], C, K, (flags & 1) != 0, (flags & 2) != 0, chunk};
                const bool ok = c.silu ? run_case<T, K, VEC, true>(c, rng, dtype) : run_case<T, K, VEC, false>(c, rng, dtype);
                failures += ok ? 0 : 1;
                ++cases;
            }
    }
    std::printf("%-8s K=%d VEC=%d: %d cases, %d failures\n", dtype, K, VEC, cases, failures);
    return failures;
}

template <typename T, int VEC>
int run_taps(std::mt19937& rng, const char* dtype) {
    return run_all<T, 1, VEC>(rng, dtype) + run_all<T, 2, VEC>(rng, dtype) + run_all<T, 3, VEC>(rng, dtype) +
           run_all<T, 4, VEC>(rng, dtype);
}

}  // namespace

int main() {
    std::mt19937 rng(1234);
    int failures = 0;
    // The vector widths the launchers use: 1, 8-byte and 16-byte packs.
    failures += run_taps<float, 1>(rng, "float32");
    failures += run_taps<float, 2>(rng, "float32");
    failures += run_taps<float, 4>(rng, "float32");
    failures += run_taps<__nv_bfloat16, 1>(rng, "bfloat16");
    failures += run_taps<__nv_bfloat16, 4>(rng, "bfloat16");
    failures += run_taps<__nv_bfloat16, 8>(rng, "bfloat16");
    // The automatic plan at a training shape stays within the grid limits and covers T.
    const Plan big = make_plan(8, 4096, 2048, 8, 132, 0, kBwdMinChunk);
    if (big.grid_y > 65535 || big.grid_y * kThreadsY * big.chunk < 4096 || big.grid_x * kThreadsX * 8 < 2048) {
        std::printf("FAIL plan: grid (%lld, %lld, %lld) chunk %lld\n", (long long)big.grid_x, (long long)big.grid_y,
                    (long long)big.grid_z, (long long)big.chunk);
        ++failures;
    }
    std::printf(failures == 0 ? "all passed\n" : "%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
