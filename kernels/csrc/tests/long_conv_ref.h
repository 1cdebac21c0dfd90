// The float64 reference of Hyena's gated long convolution and its gradients, shared by the host emulations
// of the FFT path (emulate_long_conv.cu) and the tensor-core path (emulate_long_conv_tc.cu).
#pragma once

#include <cstdint>
#include <vector>

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

}  // namespace
