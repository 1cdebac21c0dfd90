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
