// The torch side of libworkbench_kernels.so: autograd functions around the CUDA launchers, and the C ABI
// that kernels/src/cuda_ext.rs loads with dlopen.
//
// Conventions of the C ABI:
//   - tensors travel as `at::Tensor*` (a tch tensor's `as_ptr()` is one); a result is a new heap
//     `at::Tensor*` that Rust owns through `Tensor::from_ptr` (tch deletes it on drop);
//   - every function that can fail returns null on success or a malloc'd message (freed with
//     wb_free_string); no C++ exception ever crosses into Rust;
//   - the Rust side validates arguments first, with messages naming the argument and the expected shape;
//     the checks here are a second line of defence, never the only one.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "short_conv.h"

#define WB_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Bumped whenever an exported signature changes; cuda_ext.rs refuses a library with another version.
constexpr int32_t kAbiVersion = 1;

char* dup_message(const std::string& s) {
    char* m = static_cast<char*>(std::malloc(s.size() + 1));
    if (m != nullptr) std::memcpy(m, s.c_str(), s.size() + 1);
    return m;
}

template <typename F>
char* guarded(F&& f) {
    try {
        f();
        return nullptr;
    } catch (const c10::Error& e) {
        return dup_message(e.what_without_backtrace());
    } catch (const std::exception& e) {
        return dup_message(e.what());
    } catch (...) {
        return dup_message("unknown C++ exception");
    }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---------------------------------------------------------------------------------------------------------
// Short causal depthwise convolution.
namespace sc = wb::short_conv;

sc::DType short_conv_dtype(const at::Tensor& x) {
    if (x.scalar_type() == at::kFloat) return sc::DType::F32;
    TORCH_CHECK(x.scalar_type() == at::kBFloat16, "short_conv: x must be float32 or bfloat16, got ",
                x.scalar_type());
    return sc::DType::BF16;
}

void short_conv_check(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, int64_t act) {
    TORCH_CHECK(x.defined() && x.is_cuda(), "short_conv: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 3, "short_conv: x must be [B, T, C], got ", x.sizes());
    TORCH_CHECK(x.is_contiguous(), "short_conv: x must be contiguous");
    short_conv_dtype(x);
    const int64_t C = x.size(2);
    TORCH_CHECK(w.defined() && w.dim() == 2 && w.size(0) == C && w.size(1) >= 1 && w.size(1) <= sc::kMaxTaps,
                "short_conv: w must be [C, k] with C = ", C, " and 1 <= k <= 4, got ", w.sizes());
    TORCH_CHECK(w.device() == x.device() && w.scalar_type() == x.scalar_type(),
                "short_conv: w must be on x's device with x's dtype");
    if (bias.defined() && bias.numel() > 0) {
        TORCH_CHECK(bias.dim() == 1 && bias.size(0) == C, "short_conv: bias must be [C] with C = ", C, ", got ",
                    bias.sizes());
        TORCH_CHECK(bias.device() == x.device() && bias.scalar_type() == x.scalar_type(),
                    "short_conv: bias must be on x's device with x's dtype");
    }
    TORCH_CHECK(act == 0 || act == 1, "short_conv: act must be 0 (identity) or 1 (SiLU), got ", act);
    TORCH_CHECK(x.size(0) <= 65535, "short_conv: B must be at most 65535, got ", x.size(0));
}

at::Tensor short_conv_forward(const at::Tensor& x, const at::Tensor& w32, const at::Tensor& b32, int64_t act) {
    at::Tensor y = at::empty_like(x);
    if (x.numel() == 0) return y;
    sc::Params p;
    p.x = x.data_ptr();
    p.w = w32.data_ptr<float>();
    p.bias = b32.defined() ? b32.data_ptr<float>() : nullptr;
    p.y = y.data_ptr();
    p.B = x.size(0);
    p.T = x.size(1);
    p.C = x.size(2);
    const sc::DType dt = short_conv_dtype(x);
    const sc::Plan plan = sc::forward_plan(dt, p.B, p.T, p.C, aligned16(p.x) && aligned16(p.y));
    p.chunk = plan.chunk;
    const char* err = sc::forward(p, plan, dt, int(w32.size(1)), act == 1,
                                  c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
    TORCH_CHECK(err == nullptr, "short_conv forward kernel: ", err);
    return y;
}

// Returns {dx, dw [C, K] float32, dbias [C] float32}.
std::vector<at::Tensor> short_conv_backward(const at::Tensor& x, const at::Tensor& w32, const at::Tensor& b32,
                                            const at::Tensor& gy, int64_t act) {
    const int64_t K = w32.size(1);
    at::Tensor gx = at::empty_like(x);
    if (x.numel() == 0) {
        return {gx.zero_(), at::zeros_like(w32), at::zeros({x.size(2)}, w32.options())};
    }
    sc::Params p;
    p.x = x.data_ptr();
    p.w = w32.data_ptr<float>();
    p.bias = b32.defined() ? b32.data_ptr<float>() : nullptr;
    p.gy = gy.data_ptr();
    p.gx = gx.data_ptr();
    p.B = x.size(0);
    p.T = x.size(1);
    p.C = x.size(2);
    const sc::DType dt = short_conv_dtype(x);
    const sc::Plan plan =
        sc::backward_plan(dt, p.B, p.T, p.C, aligned16(p.x) && aligned16(p.gy) && aligned16(p.gx));
    p.chunk = plan.chunk;
    // Every row is written by exactly one block, so no zero fill is needed.
    at::Tensor partial = at::empty({plan.partial_rows, K + 1, p.C}, w32.options());
    p.partial = partial.data_ptr<float>();
    const char* err = sc::backward(p, plan, dt, int(K), act == 1,
                                   c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
    TORCH_CHECK(err == nullptr, "short_conv backward kernel: ", err);
    at::Tensor sums = partial.sum(0);  // [K + 1, C], float32
    return {gx, sums.narrow(0, 0, K).t().contiguous(), sums.select(0, K)};
}

// "No bias" travels through the autograd function as an empty (0-element) tensor: libtorch 2.11's custom
// Function records device and layout of every tensor input, which fails for an undefined tensor.
bool has_bias(const at::Tensor& bias) { return bias.defined() && bias.numel() > 0; }

struct ShortConvFunction : public torch::autograd::Function<ShortConvFunction> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                              int64_t act) {
        ctx->save_for_backward({x, w, bias});
        ctx->saved_data["act"] = act;
        const at::Tensor w32 = w.to(at::kFloat).contiguous();
        const at::Tensor b32 = has_bias(bias) ? bias.to(at::kFloat).contiguous() : at::Tensor();
        return short_conv_forward(x, w32, b32, act);
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const variable_list saved = ctx->get_saved_variables();
        const at::Tensor& x = saved[0];
        const at::Tensor& w = saved[1];
        const at::Tensor& bias = saved[2];
        const int64_t act = ctx->saved_data["act"].toInt();
        const c10::cuda::CUDAGuard guard(x.device());
        const at::Tensor gy = grads[0].to(x.scalar_type()).contiguous();
        const at::Tensor w32 = w.to(at::kFloat).contiguous();
        const at::Tensor b32 = has_bias(bias) ? bias.to(at::kFloat).contiguous() : at::Tensor();
        std::vector<at::Tensor> g = short_conv_backward(x, w32, b32, gy, act);
        at::Tensor dbias = has_bias(bias) ? g[2].to(bias.scalar_type()) : at::Tensor();
        return {g[0], g[1].to(w.scalar_type()), dbias, at::Tensor()};
    }
};

std::atomic<int64_t> g_calls{0};

// ---------------------------------------------------------------------------------------------------------
// Timing with CUDA events on the current stream (for the benchmarks).
struct Timer {
    cudaEvent_t start = nullptr;
    cudaEvent_t stop = nullptr;
};

void cuda_check(cudaError_t e, const char* what) {
    TORCH_CHECK(e == cudaSuccess, what, ": ", cudaGetErrorString(e));
}

}  // namespace

WB_EXPORT int32_t wb_abi_version() { return kAbiVersion; }

WB_EXPORT void wb_free_string(char* s) { std::free(s); }

// y = act(causal_depthwise_conv(x, w) + bias), differentiable in x, w and bias. bias may be null.
WB_EXPORT char* wb_short_conv(const at::Tensor* x, const at::Tensor* w, const at::Tensor* bias, int32_t act,
                              at::Tensor** out) {
    *out = nullptr;
    return guarded([&] {
        TORCH_CHECK(x != nullptr && w != nullptr, "short_conv: null tensor");
        const at::Tensor b = bias != nullptr ? *bias : at::empty({0}, x->options());
        short_conv_check(*x, *w, b, act);
        const c10::cuda::CUDAGuard guard(x->device());
        at::Tensor y = ShortConvFunction::apply(*x, *w, b, int64_t(act));
        g_calls.fetch_add(1);
        *out = new at::Tensor(std::move(y));
    });
}

// How many times wb_short_conv ran (tests check that dispatch reached the kernel).
WB_EXPORT int64_t wb_short_conv_calls() { return g_calls.load(); }

// Time steps per thread for the short-convolution kernels (0: automatic). Any value gives the same
// results; it only changes the launch shape (benchmarks sweep it).
WB_EXPORT void wb_short_conv_set_chunk(int64_t chunk) { sc::set_chunk_override(chunk); }

// The gradients of `outputs` with respect to `inputs` for output gradients `grad_outputs`
// (torch::autograd::grad: nothing accumulates into .grad). `out` receives n_inputs new tensors.
WB_EXPORT char* wb_grad(const at::Tensor* const* outputs, const at::Tensor* const* grad_outputs, int32_t n_outputs,
                        const at::Tensor* const* inputs, int32_t n_inputs, at::Tensor** out) {
    for (int32_t i = 0; i < n_inputs; ++i) out[i] = nullptr;
    return guarded([&] {
        variable_list outs, gouts, ins;
        for (int32_t i = 0; i < n_outputs; ++i) {
            outs.push_back(*outputs[i]);
            gouts.push_back(*grad_outputs[i]);
        }
        for (int32_t i = 0; i < n_inputs; ++i) ins.push_back(*inputs[i]);
        variable_list g = torch::autograd::grad(outs, ins, gouts, /*retain_graph=*/false, /*create_graph=*/false,
                                                /*allow_unused=*/true);
        for (int32_t i = 0; i < n_inputs; ++i) out[i] = new at::Tensor(std::move(g[i]));
    });
}

WB_EXPORT char* wb_timer_new(void** out) {
    *out = nullptr;
    return guarded([&] {
        auto* t = new Timer();
        if (cudaEventCreate(&t->start) != cudaSuccess || cudaEventCreate(&t->stop) != cudaSuccess) {
            const cudaError_t e = cudaGetLastError();
            if (t->start != nullptr) cudaEventDestroy(t->start);
            delete t;
            cuda_check(e, "cudaEventCreate");
        }
        *out = t;
    });
}

// which: 0 records the start event, 1 the stop event, on the current stream of the current device.
WB_EXPORT char* wb_timer_record(void* timer, int32_t which) {
    return guarded([&] {
        auto* t = static_cast<Timer*>(timer);
        cuda_check(cudaEventRecord(which == 0 ? t->start : t->stop, c10::cuda::getCurrentCUDAStream().stream()),
                   "cudaEventRecord");
    });
}

// Waits for the stop event; milliseconds between the two events.
WB_EXPORT char* wb_timer_elapsed_ms(void* timer, float* ms) {
    return guarded([&] {
        auto* t = static_cast<Timer*>(timer);
        cuda_check(cudaEventSynchronize(t->stop), "cudaEventSynchronize");
        cuda_check(cudaEventElapsedTime(ms, t->start, t->stop), "cudaEventElapsedTime");
    });
}

WB_EXPORT void wb_timer_free(void* timer) {
    auto* t = static_cast<Timer*>(timer);
    if (t == nullptr) return;
    cudaEventDestroy(t->start);
    cudaEventDestroy(t->stop);
    delete t;
}

WB_EXPORT char* wb_synchronize() {
    return guarded([] { c10::cuda::device_synchronize(); });
}
