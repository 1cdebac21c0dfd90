// Host emulation of the FFT long convolution: runs the exact per-thread code of long_conv.cuh on the CPU,
// block by block and thread by thread (phase 1 of every thread of a block, the barrier, then phase 2),
// with a naive DFT in place of cuFFT that follows libtorch's conventions (rfft unnormalised, the filter's
// spectrum scaled by 1/N, irfft unnormalised = norm "forward", imaginary parts of the DC and Nyquist bins
// ignored). The whole pipeline of ext_long_conv.cpp, forward and backward, is checked against a float64
// direct convolution: y, the saved pre-gate value w, du, dk, dD and dgate. No GPU needed.
//
// Every buffer a kernel must fill starts as NaN (the packed buffers' zero padding included), so an element
// that no thread writes fails the check.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "../long_conv.cuh"
#include "emulate.h"
#include "long_conv_ref.h"

using namespace wb::long_conv;

namespace {

// Real DFT of `rows` rows of length N (float32 in, complex64 out), unnormalised, times `scale`.
void rfft(const float* x, float2* X, int64_t rows, int64_t N, double scale) {
    const int64_t F = bins(N);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t f = 0; f < F; ++f) {
            double re = 0.0, im = 0.0;
            for (int64_t n = 0; n < N; ++n) {
                const double th = -2.0 * M_PI * double((f * n) % N) / double(N);
                re += x[r * N + n] * std::cos(th);
                im += x[r * N + n] * std::sin(th);
            }
            X[r * F + f] = make_float2(float(re * scale), float(im * scale));
        }
}

// Inverse real DFT without the 1/N (libtorch's irfft with norm "forward"), Hermitian extension of F bins.
void irfft(const float2* X, float* x, int64_t rows, int64_t N) {
    const int64_t F = bins(N);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t n = 0; n < N; ++n) {
            double v = X[r * F].x + X[r * F + N / 2].x * ((n % 2 == 0) ? 1.0 : -1.0);
            for (int64_t f = 1; f < N / 2; ++f) {
                const double th = 2.0 * M_PI * double((f * n) % N) / double(N);
                v += 2.0 * (X[r * F + f].x * std::cos(th) - X[r * F + f].y * std::sin(th));
            }
            x[r * N + n] = float(v);
        }
}

template <typename T>
bool run_case(const Case& c, std::mt19937& rng, const char* dtype) {
    const int64_t B = c.B, T_ = c.T, C = c.C, N = fft_size(T_), F = bins(N);
    const Problem pr = random_problem<T>(c, rng);
    const Result want = reference(c, pr);

    const float nan = std::numeric_limits<float>::quiet_NaN();
    Tensors<T> x(c, pr);
    std::vector<float> kpad(C * N, 0.0f);
    for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t s = 0; s < T_; ++s) kpad[ch * N + s] = float(pr.k[ch * T_ + s]);
    std::vector<float> xu(B * C * N, nan), xe(B * C * N, nan), z(B * C * N), dD_part(B * tiles(T_) * C, nan);
    std::vector<float2> K(C * F), X(B * C * F), E(B * C * F), dK(C * F);
    rfft(kpad.data(), K.data(), C, N, 1.0 / double(N));

    Params p;
    x.fill(c, p);
    p.N = N;
    p.xu = xu.data();
    p.xe = xe.data();
    p.z = z.data();
    p.K = K.data();
    p.dK = dK.data();
    p.dD_part = c.skip ? dD_part.data() : nullptr;
    p.inv_n = 1.0f / float(N);
    float tile[kTile][kTile + 1], tile2[kTile][kTile + 1], red[kRows * kTile];

    // forward
    tile_grid(
        tiles(N), tiles(C), B, [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
            forward_pack_load<T>(p, tile, tx, ty, bx, by, bz);
        },
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) { forward_pack_store(p, tile, tx, ty, bx, by, bz); });
    char why[256] = {0};
    bool ok = all_written("xu (forward)", xu, why);
    rfft(xu.data(), X.data(), B * C, N, 1.0);
    p.X = X.data();
    for (int64_t i = 0; i < C * F; ++i) forward_spectral_thread(p, i);
    irfft(X.data(), z.data(), B * C, N);
    tile_grid(
        tiles(T_), tiles(C), B,
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) { unpack_load(p, tile, tx, ty, bx, by, bz); },
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
            forward_unpack_store<T>(p, tile, tx, ty, bx, by, bz);
        });

    // backward
    std::fill(xu.begin(), xu.end(), nan);
    tile_grid(
        tiles(N), tiles(C), B,
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
            backward_pack_load<T>(p, tile, tile2, red, tx, ty, bx, by, bz);
        },
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
            backward_pack_store(p, tile, tile2, red, tx, ty, bx, by, bz);
        });
    ok = ok && all_written("xu (backward)", xu, why) && all_written("xe", xe, why);
    if (c.skip) ok = ok && all_written("dD partials", dD_part, why);
    std::vector<float2> U(B * C * F);
    rfft(xu.data(), U.data(), B * C, N, 1.0);
    rfft(xe.data(), E.data(), B * C, N, 1.0);
    p.U = U.data();
    p.E = E.data();
    for (int64_t i = 0; i < C * F; ++i) backward_spectral_thread(p, i);
    irfft(E.data(), z.data(), B * C, N);
    p.xu = p.xe = nullptr;  // freed before the unpack by ext_long_conv.cpp
    tile_grid(
        tiles(T_), tiles(C), B,
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) { unpack_load(p, tile, tx, ty, bx, by, bz); },
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
            backward_unpack_store<T>(p, tile, tx, ty, bx, by, bz);
        });
    std::vector<float> dkfull(C * N);
    irfft(dK.data(), dkfull.data(), C, N);

    Result got;
    got.dk.resize(C * T_);
    for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t s = 0; s < T_; ++s) got.dk[ch * T_ + s] = dkfull[ch * N + s];
    got.dD.assign(C, 0.0);
    if (c.skip)
        for (int64_t row = 0; row < B * tiles(T_); ++row)
            for (int64_t ch = 0; ch < C; ++ch) got.dD[ch] += dD_part[row * C + ch];
    // float32: the transposes are exact and the DFT is float64, so only float32 rounding of the spectra and
    // the products remains; bfloat16: one rounding of each [B, T, C] output (2^-9 relative) plus margin.
    const double tol = sizeof(T) == 4 ? 1e-5 : 1e-2;
    ok = ok && outputs_close(c, x, want, tol, why) && close("dk", got.dk, want.dk, 1e-5, why) &&
         close("dD", got.dD, want.dD, 1e-5, why);
    if (!ok) {
        std::printf("FAIL %s B=%lld T=%lld C=%lld N=%lld gate=%d D=%d strided=%d: %s\n", dtype, (long long)B,
                    (long long)T_, (long long)C, (long long)N, int(c.gate), int(c.skip), int(c.strided), why);
    }
    return ok;
}

template <typename T>
int run_all(std::mt19937& rng, const char* dtype) {
    // Awkward shapes: T = 1, T and C not multiples of the 32-wide tile (and below it), T whose FFT length is
    // not 2T (37 -> 2 * 40, 97 -> 2 * 98), several batch rows (9 and 17: the spectral products' second and third
    // group of kBatchGroup rows, the last partial), channel tiles past the first.
    const int64_t shapes[][3] = {{1, 1, 1}, {2, 1, 3},  {1, 2, 5},  {2, 7, 3},  {3, 37, 13},
                                 {2, 64, 40}, {1, 97, 33}, {9, 20, 5}, {17, 5, 3}};
    int failures = 0, cases = 0;
    for (const auto& s : shapes)
        for (int flags = 0; flags < 8; ++flags) {
            const Case c{s[0], s[1], s[2], (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0};
            failures += run_case<T>(c, rng, dtype) ? 0 : 1;
            ++cases;
        }
    std::printf("%-8s: %d cases, %d failures\n", dtype, cases, failures);
    return failures;
}

}  // namespace

int main() {
    std::mt19937 rng(4321);
    int failures = run_all<float>(rng, "float32") + run_all<__nv_bfloat16>(rng, "bfloat16");
    // The FFT length: even, at least 2T, 2T at powers of two, 2,3,5,7-smooth halves.
    const int64_t sizes[][2] = {{1, 2}, {2, 4}, {11, 24}, {37, 80}, {2048, 4096}, {4096, 8192}, {4099, 8232}};
    for (const auto& s : sizes) {
        if (fft_size(s[0]) != s[1]) {
            std::printf("FAIL fft_size(%lld) = %lld, expected %lld\n", (long long)s[0], (long long)fft_size(s[0]),
                        (long long)s[1]);
            ++failures;
        }
    }
    std::printf(failures == 0 ? "all passed\n" : "%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
