// The float64 reference of Hyena's gated long convolution and its gradients, shared by the host emulations
// of the FFT path (emulate_long_conv.cu) and the tensor-core path (emulate_long_conv_tc.cu).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "../dtype.cuh"
#include "../long_conv.h"
#include "emulate.h"

namespace {

struct Case {
    int64_t B, T, C;
    bool gate, skip;
    bool strided;  // u and gate as slices of wider buffers (NaN between rows), as Hyena passes them
};

struct Problem {
    std::vector<double> u, gate, dy, k, D;  // values exactly representable in the tested dtype (k, D: float32)
};

struct Result {
    std::vector<double> y, w, du, dk, dD, dgate;
};

Result reference(const Case& c, const Problem& pr) {
    const int64_t B = c.B, T = c.T, C = c.C;
    Result r;
    r.y.assign(B * T * C, 0.0);
    r.w.assign(B * T * C, 0.0);
    r.du.assign(B * T * C, 0.0);
    r.dgate.assign(B * T * C, 0.0);
    r.dk.assign(C * T, 0.0);
    r.dD.assign(C, 0.0);
    std::vector<double> e(B * T * C);
    auto at = [&](int64_t b, int64_t t, int64_t ch) { return (b * T + t) * C + ch; };
    for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
            for (int64_t ch = 0; ch < C; ++ch) {
                double w = c.skip ? pr.D[ch] * pr.u[at(b, t, ch)] : 0.0;
                for (int64_t s = 0; s <= t; ++s) w += pr.k[ch * T + s] * pr.u[at(b, t - s, ch)];
                const int64_t i = at(b, t, ch);
                const double g = c.gate ? pr.gate[i] : 1.0;
                r.w[i] = w;
                r.y[i] = g * w;
                e[i] = pr.dy[i] * g;
                r.dgate[i] = c.gate ? pr.dy[i] * w : 0.0;
            }
    for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
            for (int64_t ch = 0; ch < C; ++ch) {
                const int64_t i = at(b, t, ch);
                double du = c.skip ? pr.D[ch] * e[i] : 0.0;
                for (int64_t s = 0; t + s < T; ++s) du += pr.k[ch * T + s] * e[at(b, t + s, ch)];
                r.du[i] = du;
                if (c.skip) r.dD[ch] += e[i] * pr.u[i];
                for (int64_t s = 0; s <= t; ++s) r.dk[ch * T + s] += e[i] * pr.u[at(b, t - s, ch)];
            }
    return r;
}

// Fresh random inputs: u, gate and dy N(0, 1) rounded to T (so the reference sees exactly the kernel's
// inputs), k N(0, 1/T) and D N(0, 1) in float32.
template <typename T>
Problem random_problem(const Case& c, std::mt19937& rng) {
    std::normal_distribution<double> normal(0.0, 1.0);
    Problem pr;
    for (auto* v : {&pr.u, &pr.gate, &pr.dy}) {
        v->resize(c.B * c.T * c.C);
        for (auto& x : *v) x = double(wb::to_float(wb::from_float<T>(float(normal(rng)))));
    }
    pr.k.resize(c.C * c.T);
    for (auto& x : pr.k) x = double(float(normal(rng) / std::sqrt(double(c.T))));
    pr.D.resize(c.C);
    for (auto& x : pr.D) x = double(float(normal(rng)));
    return pr;
}

// v [B, T, C] in T's dtype, contiguous, or (c.strided) with rows C + pad_t elements and batch rows pad_b
// elements apart, NaN in between, as Hyena slices u and gate out of one projection; sb, st its strides.
template <typename T>
std::vector<T> laid_out(const Case& c, const std::vector<double>& v, int64_t pad_t, int64_t pad_b, int64_t& sb,
                        int64_t& st) {
    st = c.C + (c.strided ? pad_t : 0);
    sb = c.T * st + (c.strided ? pad_b : 0);
    std::vector<T> r(c.B * sb, wb::from_float<T>(std::numeric_limits<float>::quiet_NaN()));
    for (int64_t b = 0; b < c.B; ++b)
        for (int64_t t = 0; t < c.T; ++t)
            for (int64_t ch = 0; ch < c.C; ++ch) r[b * sb + t * st + ch] = wb::from_float<T>(float(v[(b * c.T + t) * c.C + ch]));
    return r;
}

// The [B, T, C] tensors both paths read and write, in T's dtype: u and gate laid out as Hyena passes them
// (contiguous, or rows of C + 3 (gate: + 5) elements and batch rows 7 (gate: 2) elements apart), dy
// contiguous, the outputs NaN until a kernel writes them; `fill` points the shared Params fields at them.
template <typename T>
struct Tensors {
    std::vector<T> u, gate, dy, y, w, du, dgate;
    std::vector<float> D;
    int64_t su_b = 0, su_t = 0, sg_b = 0, sg_t = 0;

    Tensors(const Case& c, const Problem& pr) : D(pr.D.begin(), pr.D.end()) {
        int64_t sd_b, sd_t;
        u = laid_out<T>(c, pr.u, 3, 7, su_b, su_t);
        gate = laid_out<T>(c, pr.gate, 5, 2, sg_b, sg_t);
        dy = laid_out<T>(Case{c.B, c.T, c.C, c.gate, c.skip, false}, pr.dy, 0, 0, sd_b, sd_t);
        const T nan = wb::from_float<T>(std::numeric_limits<float>::quiet_NaN());
        for (auto* v : {&y, &w, &du, &dgate}) v->assign(c.B * c.T * c.C, nan);
    }

    void fill(const Case& c, wb::long_conv::Params& p) {
        p.B = c.B;
        p.T = c.T;
        p.C = c.C;
        p.u = u.data();
        p.gate = c.gate ? gate.data() : nullptr;
        p.su_b = su_b;
        p.su_t = su_t;
        p.sg_b = sg_b;
        p.sg_t = sg_t;
        p.dy = dy.data();
        p.y = y.data();
        p.w = c.gate ? w.data() : nullptr;
        p.du = du.data();
        p.dgate = c.gate ? dgate.data() : nullptr;
        p.D = c.skip ? D.data() : nullptr;
    }
};

template <typename T>
std::vector<double> widen(const std::vector<T>& v) {
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = wb::to_float(v[i]);
    return r;
}

// y and du (and with a gate w and dgate) against the reference, tolerance `tol` (close() in emulate.h).
template <typename T>
bool outputs_close(const Case& c, const Tensors<T>& x, const Result& want, double tol, char* why) {
    bool ok = close("y", widen(x.y), want.y, tol, why) && close("du", widen(x.du), want.du, tol, why);
    if (c.gate) ok = ok && close("w", widen(x.w), want.w, tol, why) && close("dgate", widen(x.dgate), want.dgate, tol, why);
    return ok;
}

bool all_written(const char* what, const std::vector<float>& v, char* why) {
    for (size_t i = 0; i < v.size(); ++i)
        if (std::isnan(v[i])) {
            std::snprintf(why, 256, "%s[%zu] was never written", what, i);
            return false;
        }
    return true;
}

// Runs phase 1 of every thread (kTile x kRows) of each block of a pack/unpack grid, then phase 2: the
// barrier between them.
template <typename Load, typename Store>
void tile_grid(int64_t gx, int64_t gy, int64_t gz, Load load, Store store) {
    using wb::long_conv::kRows;
    using wb::long_conv::kTile;
    for (int64_t bz = 0; bz < gz; ++bz)
        for (int64_t by = 0; by < gy; ++by)
            for (int64_t bx = 0; bx < gx; ++bx) {
                for (int ty = 0; ty < kRows; ++ty)
                    for (int tx = 0; tx < kTile; ++tx) load(tx, ty, bx, by, bz);
                for (int ty = 0; ty < kRows; ++ty)
                    for (int tx = 0; tx < kTile; ++tx) store(tx, ty, bx, by, bz);
            }
}

}  // namespace
