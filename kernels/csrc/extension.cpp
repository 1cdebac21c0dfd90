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
#include <ATen/cuda/Sleep.h>
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

#include "ext_common.h"
#include "selective_scan.h"
#include "short_conv.h"


namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Bumped whenever an exported signature or what it accepts changes (5: per-key g in wb_chunk_linear;
// 6: wb_chunk_linear_fits; 7: short_conv's w and bias in x's dtype, wb_gpu_sleep);
// cuda_ext.rs refuses a library with another version.
constexpr int32_t kAbiVersion = 7;

using wb::ext::f32_or_undefined;
using wb::ext::guarded;
using wb::ext::present;

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

at::Tensor short_conv_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, int64_t act) {
    at::Tensor y = at::empty_like(x);
    if (x.numel() == 0) return y;
    sc::Params p;
    p.x = x.data_ptr();
    p.w = w.data_ptr();
    p.bias = present(bias) ? bias.data_ptr() : nullptr;
    p.y = y.data_ptr();
    p.B = x.size(0);
    p.T = x.size(1);
    p.C = x.size(2);
    const sc::DType dt = short_conv_dtype(x);
    const sc::Plan plan = sc::forward_plan(dt, p.B, p.T, p.C, aligned16(p.x) && aligned16(p.y));
    p.chunk = plan.chunk;
    const char* err = sc::forward(p, plan, dt, int(w.size(1)), act == 1,
                                  c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
    TORCH_CHECK(err == nullptr, "short_conv forward kernel: ", err);
    return y;
}

// Returns {dx, dw [C, K], dbias [C] (undefined without a bias)}, all in x's dtype.
std::vector<at::Tensor> short_conv_backward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                            const at::Tensor& gy, int64_t act) {
    const int64_t K = w.size(1);
    at::Tensor gx = at::empty_like(x);
    at::Tensor dw = at::empty_like(w);
    at::Tensor dbias = present(bias) ? at::empty_like(bias) : at::Tensor();
    if (x.numel() == 0) {
        return {gx.zero_(), dw.zero_(), dbias.defined() ? dbias.zero_() : dbias};
    }
    sc::Params p;
    p.x = x.data_ptr();
    p.w = w.data_ptr();
    p.bias = dbias.defined() ? bias.data_ptr() : nullptr;
    p.gy = gy.data_ptr();
    p.gx = gx.data_ptr();
    p.dw = dw.data_ptr();
    p.dbias = dbias.defined() ? dbias.data_ptr() : nullptr;
    p.B = x.size(0);
    p.T = x.size(1);
    p.C = x.size(2);
    const sc::DType dt = short_conv_dtype(x);
    const sc::Plan plan =
        sc::backward_plan(dt, p.B, p.T, p.C, aligned16(p.x) && aligned16(p.gy) && aligned16(p.gx));
    p.chunk = plan.chunk;
    // Every row is written by exactly one block, so no zero fill is needed.
    at::Tensor partial = at::empty({plan.partial_rows, K + 1, p.C}, x.options().dtype(at::kFloat));
    p.partial = partial.data_ptr<float>();
    p.partial_rows = plan.partial_rows;
    const char* err = sc::backward(p, plan, dt, int(K), act == 1,
                                   c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
    TORCH_CHECK(err == nullptr, "short_conv backward kernel: ", err);
    return {gx, dw, dbias};
}

// "No bias" travels through the autograd function as an empty (0-element) tensor (see ext_common.h's
// `present`). w and bias are read in x's dtype (short_conv_check), so nothing is converted.
struct ShortConvFunction : public torch::autograd::Function<ShortConvFunction> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                              int64_t act) {
        const at::Tensor wc = w.contiguous();
        const at::Tensor bc = bias.contiguous();
        ctx->save_for_backward({x, wc, bc});
        ctx->saved_data["act"] = act;
        return short_conv_forward(x, wc, bc, act);
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const variable_list saved = ctx->get_saved_variables();
        const at::Tensor& x = saved[0];
        const at::Tensor& w = saved[1];
        const at::Tensor& bias = saved[2];
        const int64_t act = ctx->saved_data["act"].toInt();
        const c10::cuda::CUDAGuard guard(x.device());
        const at::Tensor gy = grads[0].to(x.scalar_type()).contiguous();
        std::vector<at::Tensor> g = short_conv_backward(x, w, bias, gy, act);
        return {g[0], g[1], g[2], at::Tensor()};
    }
};

std::atomic<int64_t> g_calls{0};

// ---------------------------------------------------------------------------------------------------------
// Mamba's selective scan.
namespace ss = wb::selective_scan;

void selective_scan_check(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& Bm,
                          const at::Tensor& Cm, const at::Tensor& Dskip, const at::Tensor& h0) {
    TORCH_CHECK(x.defined() && x.is_cuda() && x.dim() == 3 && x.is_contiguous(),
                "selective_scan: x must be a contiguous CUDA [B, T, D] tensor");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
                "selective_scan: x must be float32 or bfloat16, got ", x.scalar_type());
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2);
    TORCH_CHECK(B >= 1 && T >= 1 && D >= 1 && B <= 65535, "selective_scan: bad x shape ", x.sizes());
    TORCH_CHECK(A.defined() && A.dim() == 2 && A.size(0) == D && A.size(1) >= 1 && A.size(1) <= ss::kMaxState,
                "selective_scan: A must be [D, N] with D = ", D, " and 1 <= N <= 64, got ", A.sizes());
    const int64_t N = A.size(1);
    // A, D and h0 are read as float32 whatever their dtype: x's or float32 (autocast's parameters).
    auto same = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape, bool f32_ok) {
        TORCH_CHECK(t.sizes() == shape, "selective_scan: ", name, " must be ", shape, ", got ", t.sizes());
        const bool dtype_ok = t.scalar_type() == x.scalar_type() || (f32_ok && t.scalar_type() == at::kFloat);
        TORCH_CHECK(t.device() == x.device() && dtype_ok && t.is_contiguous(), "selective_scan: ", name,
                    " must be contiguous, on x's device, with x's dtype", f32_ok ? " or float32" : "");
    };
    same(dt, "dt", {B, T, D}, false);
    same(A, "A", {D, N}, true);
    same(Bm, "B", {B, T, N}, false);
    same(Cm, "C", {B, T, N}, false);
    if (present(Dskip)) same(Dskip, "D", {D}, true);
    if (present(h0)) same(h0, "h0", {B, D, N}, true);
}

ss::Params selective_scan_params(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A32,
                                 const at::Tensor& Bm, const at::Tensor& Cm, const at::Tensor& D32) {
    ss::Params p = ss::plan(x.size(0), x.size(1), x.size(2), A32.size(1));
    p.x = x.data_ptr();
    p.dt = dt.data_ptr();
    p.A = A32.data_ptr<float>();
    p.Bm = Bm.data_ptr();
    p.Cm = Cm.data_ptr();
    p.Dskip = D32.defined() ? D32.data_ptr<float>() : nullptr;
    return p;
}

ss::DType ss_dtype(const at::Tensor& x) { return x.scalar_type() == at::kFloat ? ss::DType::F32 : ss::DType::BF16; }

// Outputs {y [B, T, D], h_T [B, D, N]} in x's dtype; D and h0 travel as empty tensors when absent (see
// ext_common.h's `present` for why not as undefined ones).
struct SelectiveScanFunction : public torch::autograd::Function<SelectiveScanFunction> {
    static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                 const at::Tensor& Bm, const at::Tensor& Cm, const at::Tensor& Dskip,
                                 const at::Tensor& h0, bool need_grad) {
        const at::Tensor A32 = A.to(at::kFloat).contiguous();
        const at::Tensor D32 = f32_or_undefined(Dskip);
        const at::Tensor h032 = f32_or_undefined(h0);
        ss::Params p = selective_scan_params(x, dt, A32, Bm, Cm, D32);
        const auto f32 = x.options().dtype(at::kFloat);
        at::Tensor y = at::empty_like(x);
        at::Tensor hT = at::empty({p.B, p.D, p.N}, f32);
        // Checkpoints only when a backward pass can follow (inference saves their writes, T / 32 states),
        // except for the two-pass forward (N <= 16), whose second pass starts from them.
        const bool two_pass = p.N <= ss::kTwoPassStates;
        at::Tensor ckpt = need_grad || two_pass ? at::empty({p.B, p.nchunks, p.D, p.N}, f32) : at::Tensor();
        at::Tensor seg_h = two_pass ? at::empty({p.B, p.nchunks, p.D, p.N}, f32) : at::Tensor();
        at::Tensor seg_dt = two_pass ? at::empty({p.B, p.nchunks, p.D}, f32) : at::Tensor();
        p.h0 = h032.defined() ? h032.data_ptr<float>() : nullptr;
        p.y = y.data_ptr();
        p.hT = hT.data_ptr<float>();
        p.ckpt = ckpt.defined() ? ckpt.data_ptr<float>() : nullptr;
        p.seg_h = seg_h.defined() ? seg_h.data_ptr<float>() : nullptr;
        p.seg_dt = seg_dt.defined() ? seg_dt.data_ptr<float>() : nullptr;
        const char* err = ss::forward(p, ss_dtype(x), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
        TORCH_CHECK(err == nullptr, "selective_scan forward kernel: ", err);
        ctx->save_for_backward({x, dt, A, Bm, Cm, Dskip, h0});
        // The checkpoints are an intermediate, not an input or output: kept as saved data.
        ctx->saved_data["ckpt"] = ckpt;
        return {y, hT.to(x.scalar_type())};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const variable_list s = ctx->get_saved_variables();
        const at::Tensor &x = s[0], &dt = s[1], &A = s[2], &Bm = s[3], &Cm = s[4], &Dskip = s[5], &h0 = s[6];
        const at::Tensor ckpt = ctx->saved_data["ckpt"].toTensor();
        TORCH_CHECK(ckpt.defined(), "selective_scan backward: the forward pass ran without gradients");
        const c10::cuda::CUDAGuard guard(x.device());
        const at::Tensor A32 = A.to(at::kFloat).contiguous();
        const at::Tensor D32 = f32_or_undefined(Dskip);
        ss::Params p = selective_scan_params(x, dt, A32, Bm, Cm, D32);
        const at::Tensor gy = grads[0].defined() ? grads[0].to(x.scalar_type()).contiguous() : at::zeros_like(x);
        const at::Tensor ghT = grads[1].defined() ? grads[1].to(at::kFloat).contiguous() : at::Tensor();
        const auto f32 = x.options().dtype(at::kFloat);
        at::Tensor dx = at::empty_like(x), ddt = at::empty_like(x);
        // The segmented backward (N <= 16) and its workspaces; dA and dD then have a row per chunk.
        const bool seg = ss::segmentable(p.N, p.nchunks);
        at::Tensor seg_g = seg ? at::empty({p.B, p.nchunks, p.D, p.N}, f32) : at::Tensor();
        at::Tensor seg_dt = seg ? at::empty({p.B, p.nchunks, p.D}, f32) : at::Tensor();
        const int64_t rows = seg ? p.B * p.nchunks : p.B;
        // Every element of these is written by exactly one thread (selective_scan.cuh): no zero fill.
        at::Tensor dA = at::empty({rows, p.D, p.N}, f32), dD = at::empty({rows, p.D}, f32);
        at::Tensor dB = at::empty({p.tiles, p.B, p.T, p.N}, f32), dC = at::empty({p.tiles, p.B, p.T, p.N}, f32);
        at::Tensor dh0 = at::empty({p.B, p.D, p.N}, f32);
        p.ckpt = const_cast<float*>(ckpt.data_ptr<float>());
        p.gy = gy.data_ptr();
        p.ghT = ghT.defined() ? ghT.data_ptr<float>() : nullptr;
        p.dx = dx.data_ptr();
        p.ddt = ddt.data_ptr();
        p.dA_part = dA.data_ptr<float>();
        p.dD_part = dD.data_ptr<float>();
        p.dB_part = dB.data_ptr<float>();
        p.dC_part = dC.data_ptr<float>();
        p.dh0 = dh0.data_ptr<float>();
        p.seg_g = seg ? seg_g.data_ptr<float>() : nullptr;
        p.seg_dt = seg ? seg_dt.data_ptr<float>() : nullptr;
        const char* err = ss::backward(p, ss_dtype(x), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
        TORCH_CHECK(err == nullptr, "selective_scan backward kernel: ", err);
        return {dx,
                ddt,
                dA.sum(0).to(A.scalar_type()),
                dB.sum(0).to(Bm.scalar_type()),
                dC.sum(0).to(Cm.scalar_type()),
                present(Dskip) ? dD.sum(0).to(Dskip.scalar_type()) : at::Tensor(),
                present(h0) ? dh0.to(h0.scalar_type()) : at::Tensor(),
                at::Tensor()};
    }
};

std::atomic<int64_t> g_scan_calls{0};

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

// Mamba's selective scan (selective_scan.h): y [B, T, D] and the final state h_T [B, D, N], both in x's
// dtype, differentiable in every input. Dskip and h0 may be null.
WB_EXPORT char* wb_selective_scan(const at::Tensor* x, const at::Tensor* dt, const at::Tensor* A,
                                  const at::Tensor* Bm, const at::Tensor* Cm, const at::Tensor* Dskip,
                                  const at::Tensor* h0, at::Tensor** out_y, at::Tensor** out_h) {
    *out_y = nullptr;
    *out_h = nullptr;
    return guarded([&] {
        TORCH_CHECK(x != nullptr && dt != nullptr && A != nullptr && Bm != nullptr && Cm != nullptr,
                    "selective_scan: null tensor");
        const at::Tensor none = at::empty({0}, x->options());
        const at::Tensor d = Dskip != nullptr ? *Dskip : none;
        const at::Tensor h = h0 != nullptr ? *h0 : none;
        selective_scan_check(*x, *dt, *A, *Bm, *Cm, d, h);
        const c10::cuda::CUDAGuard guard(x->device());
        const bool need_grad = at::GradMode::is_enabled() &&
                               (x->requires_grad() || dt->requires_grad() || A->requires_grad() ||
                                Bm->requires_grad() || Cm->requires_grad() || d.requires_grad() || h.requires_grad());
        variable_list r = SelectiveScanFunction::apply(*x, *dt, *A, *Bm, *Cm, d, h, need_grad);
        g_scan_calls.fetch_add(1);
        *out_y = new at::Tensor(std::move(r[0]));
        *out_h = new at::Tensor(std::move(r[1]));
    });
}

// How many times wb_selective_scan ran (tests check that dispatch reached the kernel).
WB_EXPORT int64_t wb_selective_scan_calls() { return g_scan_calls.load(); }

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

// Enqueues a kernel on the current stream that spins for `cycles` clock cycles: benchmarks start their timer
// behind it, so the host can queue a whole call before the GPU reaches it (times without launch gaps).
WB_EXPORT char* wb_gpu_sleep(int64_t cycles) {
    return guarded([&] { at::cuda::sleep(cycles); });
}
