// What every file of the C ABI shares (extension.cpp, ext_long_conv.cpp, train_ops.cpp): errors leave as a
// malloc'd message that the caller frees with wb_free_string, and no C++ exception ever crosses into Rust.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#define WB_EXPORT extern "C" __attribute__((visibility("default")))

namespace wb {
namespace ext {

// A malloc'd copy of `s` (null if out of memory).
inline char* message(const std::string& s) {
    char* m = static_cast<char*>(std::malloc(s.size() + 1));
    if (m != nullptr) std::memcpy(m, s.c_str(), s.size() + 1);
    return m;
}

// Runs `f`; null on success, else the exception's message.
template <typename F>
char* guarded(F&& f) {
    try {
        f();
        return nullptr;
    } catch (const c10::Error& e) {
        return message(e.what_without_backtrace());
    } catch (const std::exception& e) {
        return message(e.what());
    } catch (...) {
        return message("unknown C++ exception");
    }
}

// "Absent" optional inputs (no bias, no D, no gate, no initial state) travel through the autograd functions
// as empty tensors: libtorch's custom Function records device and layout of every tensor input, which fails
// for an undefined one.
inline bool present(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

// A present tensor as contiguous float32; an undefined tensor otherwise.
inline at::Tensor f32_or_undefined(const at::Tensor& t) {
    return present(t) ? t.to(at::kFloat).contiguous() : at::Tensor();
}

}  // namespace ext
}  // namespace wb
