// Host emulation of the tensor-core long convolution (long_conv_tc.cuh): runs its per-thread code (pack,
// unpack: phase 1 of every thread of a block, the barrier, phase 2) and its per-warp code (the Toeplitz
// products and dk, with the 32 lanes of a warp in one call and mma.m16n8k16 / ldmatrix emulated from the PTX
// fragment layouts) on the CPU, through the whole pipeline of ext_long_conv.cpp, forward and backward,
// against the float64 direct convolution: y, w, du, dk, dD and dgate. bfloat16 only (the path's dtype).
//
// Every buffer a kernel must fill starts as NaN, so an element that no thread writes fails the check.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "../long_conv_tc_pack.cuh"
#include "emulate.h"
#include "long_conv_ref.h"

using namespace wb::long_conv;
using bf16 = __nv_bfloat16;
using wb::from_float;
using wb::to_float;

namespace {

// tc_conv_kernel's block (c, g), its warps one after another (they only share read-only staging).
template <bool ANTI>
void conv_block(const Params& p, int64_t c, int64_t g) {
    const int64_t row = (g * p.C + c) * p.Tp;
    std::vector<uint4> xs(p.Tp + tc::kGroupPad);
    std::vector<uint32_t> kp(p.Tp + tc::kKpLen);
    tc::stage_rows(xs.data(), static_cast<const uint4*>(ANTI ? p.et : p.ut) + row, p.Tp, 0, tc::kGroupPad, 0, 1);
    tc::stage_pairs<ANTI>(kp.data(), p.kf + c * p.T, p.T, p.Tp, 0, 1);
    const int n = int(p.Tp / 16), windows = (n + tc::kP - 1) / tc::kP;
    for (int warp = 0; warp < tc::kConvWarps; ++warp)
        for (int i = 0;; ++i) {
            const int w = tc::snake_window(i, warp, tc::kConvWarps, windows);
            if (w == -2) break;
            if (w >= 0)
                tc::conv_window<32, ANTI>(reinterpret_cast<const uint16_t*>(xs.data()), kp.data(),
                                          static_cast<uint32_t*>(p.zt) + row * 4, n, w * tc::kP, 0);
        }
}

// tc_dk_kernel's block (c, g); false (and why) if the warps' snake order took a window other than once.
bool dk_block(const Params& p, int64_t c, int64_t g, char* why) {
    const int64_t row = (g * p.C + c) * p.Tp;
    const int pad = tc::kGroupPad;
    std::vector<uint4> es(p.Tp + pad), us(p.Tp + 2 * pad);
    std::vector<float> dks(p.Tp, 0.0f);
    tc::stage_rows(es.data(), static_cast<const uint4*>(p.et) + row, p.Tp, 0, pad, 0, 1);
    tc::stage_rows(us.data(), static_cast<const uint4*>(p.ut) + row, p.Tp, pad, pad, 0, 1);
    const int n = int(p.Tp / 16), windows = (n + tc::kP - 1) / tc::kP, warps = tc_dk_warps(p.Tp);
    std::vector<int> seen(windows, 0);
    for (int warp = 0; warp < warps; ++warp)
        for (int i = 0;; ++i) {
            const int w = tc::snake_window(i, warp, warps, windows);
            if (w == -2) break;
            if (w < 0) continue;
            ++seen[w];
            tc::dk_window<32>(reinterpret_cast<const uint16_t*>(es.data()),
                              reinterpret_cast<const uint16_t*>(us.data() + pad), dks.data(), n, p.T, w * tc::kP, 0);
        }
    for (int64_t l = 0; l < p.T; ++l) p.dk_part[(g * p.C + c) * p.T + l] = dks[l];
    for (int w = 0; w < windows; ++w)
        if (seen[w] != 1) {
            std::snprintf(why, 256, "dk window %d of %d taken %d times", w, windows, seen[w]);
            return false;
        }
    return true;
}

bool run_case(const Case& c, std::mt19937& rng) {
    const int64_t B = c.B, T_ = c.T, C = c.C, G = tc_groups(B), Tp = tc_padded(T_);
    const Problem pr = random_problem<bf16>(c, rng);
    const Result want = reference(c, pr);

    const float nan = std::numeric_limits<float>::quiet_NaN();
    Tensors<bf16> x(c, pr);
    std::vector<float> kf(pr.k.begin(), pr.k.end());
    // the packed rows as bfloat16 bits, NaN-filled (0xffff)
    std::vector<uint16_t> ut(G * C * Tp * 8, 0xffff), et(G * C * Tp * 8, 0xffff), zt(G * C * Tp * 8, 0xffff);
    std::vector<float> dk_part(G * C * T_, nan);

    Params p;
    x.fill(c, p);
    p.G = G;
    p.Tp = Tp;
    p.kf = kf.data();
    p.ut = ut.data();
    p.et = et.data();
    p.zt = zt.data();
    p.dk_part = dk_part.data();
    static tc::PackTile tile;
    static tc::ZTile ztile;
    char why[256] = {0};
    bool ok = true;
    auto packed_written = [&](const char* what, const std::vector<uint16_t>& v) {
        for (size_t i = 0; i < v.size(); ++i)
            if (v[i] == 0xffff) {
                std::snprintf(why, 256, "%s[%zu] was never written", what, i);
                return false;
            }
        return true;
    };

    // forward: pack, causal product, unpack
    tile_grid(
        tc::x_tiles_t(Tp), tc::x_tiles_c(C), G,
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) { tc::forward_pack_load<bf16>(p, tile, tx, ty, bx, by, bz); },
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) { tc::pack_store(p, tile, p.ut, tx, ty, bx, by, bz); });
    ok = ok && packed_written("ut (forward)", ut);
    for (int64_t g = 0; g < G; ++g)
        for (int64_t ch = 0; ch < C; ++ch) conv_block<false>(p, ch, g);
    ok = ok && packed_written("zt (forward)", zt);
    tile_grid(
        tc::x_tiles_t(T_), tc::x_tiles_c(C), G,
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) { tc::unpack_load(p, ztile, tx, ty, bx, by, bz); },
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
            tc::forward_unpack_store<bf16>(p, ztile, tx, ty, bx, by, bz);
        });

    // backward (from the forward's ut, as ext_long_conv.cpp: u itself is not read): pack (e, dgate),
    // anti-causal product, unpack, dk
    p.u = nullptr;
    std::fill(zt.begin(), zt.end(), 0xffff);
    tile_grid(
        tc::x_tiles_t(Tp), tc::x_tiles_c(C), G,
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) { tc::backward_pack_load<bf16>(p, tile, tx, ty, bx, by, bz); },
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) { tc::pack_store(p, tile, p.et, tx, ty, bx, by, bz); });
    ok = ok && packed_written("et", et);
    for (int64_t g = 0; g < G; ++g)
        for (int64_t ch = 0; ch < C; ++ch) conv_block<true>(p, ch, g);
    ok = ok && packed_written("zt (backward)", zt);
    tile_grid(
        tc::x_tiles_t(T_), tc::x_tiles_c(C), G,
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) { tc::unpack_load(p, ztile, tx, ty, bx, by, bz); },
        [&](int tx, int ty, int64_t bx, int64_t by, int64_t bz) {
            tc::backward_unpack_store<bf16>(p, ztile, tx, ty, bx, by, bz);
        });
    for (int64_t g = 0; g < G; ++g)
        for (int64_t ch = 0; ch < C; ++ch) ok = dk_block(p, ch, g, why) && ok;
    ok = ok && all_written("dk partials", dk_part, why);

    Result got;
    got.dk.assign(C * T_, 0.0);
    for (int64_t g = 0; g < G; ++g)
        for (int64_t i = 0; i < C * T_; ++i) got.dk[i] += dk_part[g * C * T_ + i];
    // dD is dk's lag 0 (ext_long_conv.cpp)
    got.dD.assign(C, 0.0);
    if (c.skip)
        for (int64_t ch = 0; ch < C; ++ch) got.dD[ch] = got.dk[ch * T_];
    // bfloat16 operands (u, e exact or rounded once, the filter rounded once: 2^-9 relative per product),
    // float32 sums, the products' outputs rounded to bfloat16 and each output once more: 1e-2 of the largest
    // reference value, as the FFT path's test.
    const double tol = 1e-2;
    ok = ok && outputs_close(c, x, want, tol, why) && close("dk", got.dk, want.dk, tol, why) &&
         close("dD", got.dD, want.dD, tol, why);
    if (!ok) {
        std::printf("FAIL bfloat16 B=%lld T=%lld C=%lld gate=%d D=%d strided=%d: %s\n", (long long)B, (long long)T_,
                    (long long)C, int(c.gate), int(c.skip), int(c.strided), why);
    }
    return ok;
}

}  // namespace

int main() {
    std::mt19937 rng(8765);
    // T = 1, T not a multiple of 16 (padding) or of the 32-step pack tile, more tiles than one window or group
    // (kP = 8 tiles: T > 128), more windows than warps (T = 2100: 132 tiles, 17 windows), a partial batch group
    // and two or three groups (B = 3, 9, 17), channels not a multiple of 4 (scalar accesses) and more than one
    // 128-channel pack tile with 8-byte accesses (C = 132, 260; strided cases stay scalar: rows C + 3 apart),
    // and T = 3001, whose dk blocks take 16 warps (tc_dk_warps).
    const int64_t shapes[][3] = {{1, 1, 1},    {3, 1, 2},  {2, 17, 3},   {8, 16, 5},  {9, 37, 4},
                                 {3, 100, 33}, {17, 129, 2}, {2, 300, 3},  {1, 600, 1}, {1, 2100, 1},
                                 {1, 3001, 1}, {2, 50, 132}, {9, 20, 260}};
    int failures = 0, cases = 0;
    for (const auto& s : shapes)
        for (int flags = 0; flags < 8; ++flags) {
            if (s[1] > 300 && flags != 7 && flags != 0) continue;  // the long cases once with everything, once bare
            const Case c{s[0], s[1], s[2], (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0};
            failures += run_case(c, rng) ? 0 : 1;
            ++cases;
        }
    // The pair tables' words: (k[m], k[m - 1]) causal, (k[m], k[m + 1]) anti-causal, halves in mma's order, zero
    // outside the filter.
    {
        const float k[3] = {1.0f, 2.0f, 3.0f};
        std::vector<uint32_t> kp(16 + tc::kKpLen), kq(16 + tc::kKpLen);
        tc::stage_pairs<false>(kp.data(), k, 3, 16, 0, 1);
        tc::stage_pairs<true>(kq.data(), k, 3, 16, 0, 1);
        const uint32_t* a = kp.data() + tc::kKpOff;
        const uint32_t* b = kq.data() + tc::kKpOff;
        auto w = [](float lo, float hi) { return tc::bf16_bits(lo) | tc::bf16_bits(hi) << 16; };
        if (a[1] != w(2.0f, 1.0f) || a[0] != w(1.0f, 0.0f) || a[-1] != 0u || a[4] != 0u || a[3] != w(0.0f, 3.0f) ||
            b[0] != w(1.0f, 2.0f) || b[-1] != w(0.0f, 1.0f) || b[2] != w(3.0f, 0.0f) || b[3] != 0u) {
            std::printf("FAIL pair tables\n");
            ++failures;
        }
        ++cases;
    }
    std::printf("bfloat16 (tensor cores): %d cases, %d failures\n", cases, failures);
    std::printf(failures == 0 ? "all passed\n" : "%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
