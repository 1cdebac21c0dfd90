// What the host emulation tests share: the comparison of an emulated kernel's result with its float64
// reference. (build.rs keys each test program's cache entry on this folder's headers too.)
#pragma once

#include <cmath>
#include <cstdio>
#include <vector>

// max |a - r| <= tol * max(max |r|, 1), and no NaN (an element no thread wrote).
inline bool close(const char* what, const std::vector<double>& a, const std::vector<double>& r, double tol,
                  char* why) {
    double err = 0.0, scale = 1.0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (std::isnan(a[i])) {
            std::snprintf(why, 256, "%s[%zu] was never written", what, i);
            return false;
        }
        err = std::fmax(err, std::fabs(a[i] - r[i]));
        scale = std::fmax(scale, std::fabs(r[i]));
    }
    if (err > tol * scale) {
        std::snprintf(why, 256, "%s: max abs error %.3g > %.3g (tol %.1g x scale %.3g)", what, err, tol * scale, tol,
                      scale);
        return false;
    }
    return true;
}

// ---------------------------------------------------------------------------------------------------------
// A host shim of the part of nvcuda::wmma the chunked linear-attention kernels use (16x16x16 bfloat16
// fragments, float32 accumulators). A fragment is a plain row-major 16 x 16 array of its logical matrix
// (a: [m][k], b: [k][n], accumulator: [m][n]); one call does the whole warp's work, so the emulation calls
// a warp-collective step once per warp. Loads and stores check wmma's alignment rules (pointer on 32 bytes,
// ldm a multiple of 16 bytes), which the GPU would not report.
#include <cstdint>
#include <cstdlib>
#include <type_traits>

namespace emu {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static constexpr int num_elements = 256;
    float x[256];
};

inline void check_ptr(const void* p, unsigned ldm, unsigned elem) {
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * elem) % 16 != 0) {
        std::fprintf(stderr, "wmma shim: misaligned pointer %p or ldm %u\n", p, ldm);
        std::abort();
    }
}

template <class Use, class T, class L>
void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float v) {
    for (float& e : f.x) e = v;
}

template <class Use, class T, class L, class S>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const S* p, unsigned ldm) {
    check_ptr(p, ldm, sizeof(S));
    // Logical element (r, c) is a's (m, k) or b's (k, n): at p[r * ldm + c] row-major, p[c * ldm + r]
    // col-major, for either operand.
    constexpr bool row = std::is_same<L, row_major>::value;
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = float(row ? p[r * ldm + c] : p[c * ldm + r]);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm,
                             layout_t l) {
    check_ptr(p, ldm, 4);
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t l) {
    check_ptr(p, ldm, 4);
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * 16 + c];
}

template <class T, class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
    float out[256];
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n) {
            float acc = c.x[m * 16 + n];
            for (int k = 0; k < 16; ++k) acc += a.x[m * 16 + k] * b.x[k * 16 + n];
            out[m * 16 + n] = acc;
        }
    for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}

}  // namespace wmma
}  // namespace emu
