// The torch side of the long convolution (long_conv.h): the autograd function that runs, for bfloat16 up to
// kTcMaxT steps, the tensor-core Toeplitz products of long_conv_tc.cu (pack, product, unpack; dk as a GEMM),
// and otherwise our pack, spectral and unpack kernels around libtorch's cuFFT transforms (whose plans
// libtorch caches); and its C
// entry point wb_long_conv, with the conventions of extension.cpp (tensors as at::Tensor*, errors as a
// malloc'd message, no C++ exception ever crosses into Rust). Kept apart from extension.cpp so that the
// kernels' glue files stay small.
//
// Normalisation: the filter's spectrum carries the 1/N (rfft with norm "forward"), so the inverse transforms
// run with norm "forward" too, which libtorch applies as no scaling: no separate scaling pass over [B, C, N].
//
// What the backward pass needs: u, k, D, gate (inputs) and, when gated, w = conv + D u in u's dtype (for
// dgate = dy * w). Saving w costs 2 or 4 bytes per element, what libtorch's own autograd keeps for the
// gate's product; recomputing it would cost a spectral product, an inverse FFT of [B, C, N] and a transpose.
// The spectrum of u is recomputed (pack + rfft) rather than kept: it would cost 8 bytes per element. The
// tensor-core path keeps the forward's packed u (ut, bfloat16 [G, C, Tp, 8]) in place of u: as many bytes,
// and the backward pass need not pack u again.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ext_common.h"
#include "long_conv.h"


namespace {

namespace lc = wb::long_conv;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using wb::ext::guarded;
using wb::ext::present;


// u and the gate are read at b * stride(0) + t * stride(1) + c: any batch and time strides will do.
bool channels_contiguous(const at::Tensor& t) { return t.dim() == 3 && (t.stride(2) == 1 || t.size(2) == 1); }

lc::DType dtype_of(const at::Tensor& u) { return u.scalar_type() == at::kFloat ? lc::DType::F32 : lc::DType::BF16; }

void check(const at::Tensor& u, const at::Tensor& k, const at::Tensor& D, const at::Tensor& gate) {
    TORCH_CHECK(u.defined() && u.is_cuda() && u.dim() == 3 && channels_contiguous(u),
                "long_conv: u must be a CUDA [B, T, C] tensor with contiguous channels");
    TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kBFloat16,
                "long_conv: u must be float32 or bfloat16, got ", u.scalar_type());
    const int64_t B = u.size(0), T = u.size(1), C = u.size(2);
    TORCH_CHECK(B >= 1 && T >= 1 && C >= 1 && B <= 65535 && lc::tiles(C) <= 65535, "long_conv: bad u shape ",
                u.sizes());
    auto floating = [&](const at::Tensor& t) {
        return t.device() == u.device() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16);
    };
    TORCH_CHECK(k.defined() && k.dim() == 2 && k.size(0) == C && k.size(1) >= T && floating(k),
                "long_conv: k must be a float32 or bfloat16 [C, L >= T] tensor on u's device with C = ", C,
                ", T = ", T, ", got ", k.sizes());
    if (present(D)) {
        TORCH_CHECK(D.dim() == 1 && D.size(0) == C && floating(D),
                    "long_conv: D must be a float32 or bfloat16 [C] tensor on u's device, got ", D.sizes());
    }
    if (present(gate)) {
        TORCH_CHECK(gate.sizes() == u.sizes() && gate.device() == u.device() &&
                        gate.scalar_type() == u.scalar_type() && channels_contiguous(gate),
                    "long_conv: gate must be shaped like u, on u's device, in u's dtype, with contiguous channels");
    }
}

// rfft(k[:, :T] zero-padded to N) / N: [C, F] complex64.
at::Tensor filter_spectrum(const at::Tensor& k, int64_t T, int64_t N) {
    return at::fft_rfft(k.narrow(1, 0, T).to(at::kFloat), N, 1, "forward").contiguous();
}

float2* spectrum(const at::Tensor& t) {
    TORCH_CHECK(t.scalar_type() == at::kComplexFloat && t.is_contiguous(), "long_conv: unexpected FFT output");
    return reinterpret_cast<float2*>(t.data_ptr<c10::complex<float>>());
}

lc::Params params(const at::Tensor& u, const at::Tensor& D32, const at::Tensor& gate) {
    lc::Params p;
    p.B = u.size(0);
    p.T = u.size(1);
    p.C = u.size(2);
    p.N = lc::fft_size(p.T);
    p.inv_n = 1.0f / float(p.N);
    p.u = u.data_ptr();
    p.su_b = u.stride(0);
    p.su_t = u.stride(1);
    p.gate = present(gate) ? gate.data_ptr() : nullptr;
    p.sg_b = present(gate) ? gate.stride(0) : 0;
    p.sg_t = present(gate) ? gate.stride(1) : 0;
    p.D = D32.defined() ? D32.data_ptr<float>() : nullptr;
    return p;
}

void ok(const char* err, const char* what) { TORCH_CHECK(err == nullptr, "long_conv ", what, " kernel: ", err); }

// The algorithm: the tensor-core Toeplitz products (long_conv_tc.cuh) for bfloat16 u up to kTcMaxT steps,
// cuFFT otherwise; WORKBENCH_LONG_CONV_FFT=1 forces cuFFT (for comparisons).
bool use_tensor_cores(const at::Tensor& u) {
    const char* force_fft = std::getenv("WORKBENCH_LONG_CONV_FFT");
    if (force_fft != nullptr && std::strcmp(force_fft, "1") == 0) return false;
    return u.scalar_type() == at::kBFloat16 && lc::tc_padded(u.size(1)) <= lc::kTcMaxT;
}

// The tensor-core path's shape fields and its filter (the first T taps, float32 [C, T]).
at::Tensor tc_setup(lc::Params& p, const at::Tensor& k) {
    p.G = lc::tc_groups(p.B);
    p.Tp = lc::tc_padded(p.T);
    at::Tensor kf = k.narrow(1, 0, p.T).to(at::kFloat).contiguous();
    p.kf = kf.data_ptr<float>();
    return kf;
}

// A [G, C, Tp, 8] bfloat16 buffer of the tensor-core path on like's device.
at::Tensor tc_rows(const lc::Params& p, const at::Tensor& like) {
    return at::empty({p.G, p.C, p.Tp, 8}, like.options().dtype(at::kBFloat16));
}

// y (and w) by the tensor-core path; returns the packed u (ut), which the backward pass reads.
at::Tensor tc_forward(lc::Params& p, const at::Tensor& u, const at::Tensor& k, cudaStream_t stream) {
    const at::Tensor kf = tc_setup(p, k);
    at::Tensor ut = tc_rows(p, u), zt = tc_rows(p, u);
    p.ut = ut.data_ptr();
    p.zt = zt.data_ptr();
    ok(lc::tc_forward_pack(p, stream), "tensor-core forward pack");
    ok(lc::tc_conv(p, false, stream), "tensor-core forward product");
    ok(lc::tc_forward_unpack(p, stream), "tensor-core forward unpack");
    return ut;
}

// du, dgate and dk [C, T] by the tensor-core path, from the forward's packed u. (dD is dk's lag 0.)
at::Tensor tc_backward(lc::Params& p, const at::Tensor& ut, const at::Tensor& k, cudaStream_t stream) {
    const at::Tensor kf = tc_setup(p, k);
    TORCH_CHECK(ut.defined() && ut.sizes() == at::IntArrayRef({p.G, p.C, p.Tp, 8}),
                "long_conv backward: the forward pass's packed u is missing");
    const at::Tensor et = tc_rows(p, ut);
    p.u = nullptr;  // read from ut only
    p.ut = ut.data_ptr();
    p.et = et.data_ptr();
    ok(lc::tc_backward_pack(p, stream), "tensor-core backward pack");
    {
        const at::Tensor zt = tc_rows(p, ut);
        p.zt = zt.data_ptr();
        ok(lc::tc_conv(p, true, stream), "tensor-core backward product");
        ok(lc::tc_backward_unpack(p, stream), "tensor-core backward unpack");
    }
    at::Tensor dk_part = at::empty({p.G, p.C, p.T}, ut.options().dtype(at::kFloat));
    p.dk_part = dk_part.data_ptr<float>();
    ok(lc::tc_dk(p, stream), "tensor-core dk");
    return p.G == 1 ? dk_part.select(0, 0) : dk_part.sum(0);
}

struct LongConvFunction : public torch::autograd::Function<LongConvFunction> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& k, const at::Tensor& D,
                              const at::Tensor& gate, bool need_grad) {
        const at::Tensor D32 = present(D) ? D.to(at::kFloat).contiguous() : at::Tensor();
        lc::Params p = params(u, D32, gate);
        const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(u.device().index()).stream();
        const lc::DType dt = dtype_of(u);
        const bool tc = use_tensor_cores(u);
        // outputs are contiguous whatever the strides of u
        at::Tensor y = at::empty(u.sizes(), u.options());
        at::Tensor w = need_grad && present(gate) ? at::empty(u.sizes(), u.options()) : at::Tensor();
        p.y = y.data_ptr();
        p.w = w.defined() ? w.data_ptr() : nullptr;
        // w (and the tensor-core path's ut) are intermediates, not inputs or outputs: kept as saved data; so
        // is the algorithm. The tensor-core backward pass reads ut, not u: in u's place it keeps a one-element
        // stand-in with u's shape, dtype and device.
        ctx->saved_data["w"] = w;
        ctx->saved_data["tc"] = tc;
        if (tc) {
            const at::Tensor ut = tc_forward(p, u, k, stream);
            ctx->saved_data["ut"] = need_grad ? ut : at::Tensor();
            ctx->save_for_backward({at::empty({1, 1, 1}, u.options()).expand(u.sizes()), k, D, gate});
            return y;
        }
        ctx->save_for_backward({u, k, D, gate});
        const at::Tensor K = filter_spectrum(k, p.T, p.N);
        p.K = spectrum(K);

        at::Tensor xu = at::empty({p.B, p.C, p.N}, u.options().dtype(at::kFloat));
        p.xu = xu.data_ptr<float>();
        ok(lc::forward_pack(p, dt, stream), "forward pack");
        at::Tensor X = at::fft_rfft(xu, p.N, -1, "backward").contiguous();  // [B, C, F], unnormalised
        xu.reset();
        p.X = spectrum(X);
        ok(lc::forward_spectral(p, stream), "forward spectral");
        const at::Tensor z = at::fft_irfft(X, p.N, -1, "forward");  // [B, C, N]
        X.reset();
        TORCH_CHECK(z.is_contiguous() && z.scalar_type() == at::kFloat, "long_conv: unexpected irfft output");
        p.z = z.data_ptr<float>();
        ok(lc::forward_unpack(p, dt, stream), "forward unpack");
        return y;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const variable_list s = ctx->get_saved_variables();
        const at::Tensor &u = s[0], &k = s[1], &D = s[2], &gate = s[3];
        const at::Tensor w = ctx->saved_data["w"].toTensor();
        TORCH_CHECK(!present(gate) || w.defined(), "long_conv backward: the forward pass ran without gradients");
        const c10::cuda::CUDAGuard guard(u.device());
        const at::Tensor D32 = present(D) ? D.to(at::kFloat).contiguous() : at::Tensor();
        lc::Params p = params(u, D32, gate);
        const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(u.device().index()).stream();
        const lc::DType dt = dtype_of(u);
        const auto f32 = u.options().dtype(at::kFloat);
        const at::Tensor dy =
            grads[0].defined() ? grads[0].to(u.scalar_type()).contiguous() : at::zeros(u.sizes(), u.options());
        p.dy = dy.data_ptr();
        p.w = w.defined() ? w.data_ptr() : nullptr;
        at::Tensor dgate = present(gate) ? at::empty(u.sizes(), u.options()) : at::Tensor();
        p.dgate = dgate.defined() ? dgate.data_ptr() : nullptr;
        at::Tensor du = at::empty(u.sizes(), u.options());
        p.du = du.data_ptr();
        at::Tensor dk;
        at::Tensor dD_part;
        if (ctx->saved_data["tc"].toBool()) {
            dk = tc_backward(p, ctx->saved_data["ut"].toTensor(), k, stream);
            // y = gate (k * u + D u): D is the filter's tap 0 again, so its gradient is dk's lag 0.
            dD_part = present(D) ? dk.narrow(1, 0, 1).t() : at::Tensor();
        } else {
            dD_part = present(D) ? at::empty({p.B * lc::tiles(p.T), p.C}, f32) : at::Tensor();
            p.dD_part = dD_part.defined() ? dD_part.data_ptr<float>() : nullptr;
            dk = fft_backward(p, dt, u, k, stream);
        }
        if (k.size(1) > p.T) dk = at::constant_pad_nd(dk, {0, k.size(1) - p.T});
        return {du,
                dk.to(k.scalar_type()).contiguous(),
                present(D) ? dD_part.sum(0).to(D.scalar_type()) : at::Tensor(),
                dgate,
                at::Tensor()};
    }

    // du and dgate (p's outputs), dD's partial sums, and dk [C, T] by cuFFT and the kernels around it.
    static at::Tensor fft_backward(lc::Params& p, lc::DType dt, const at::Tensor& u, const at::Tensor& k,
                                   cudaStream_t stream) {
        const auto f32 = u.options().dtype(at::kFloat);
        const at::Tensor K = filter_spectrum(k, p.T, p.N);
        p.K = spectrum(K);

        // u and e = dy * gate packed side by side, so one batched rfft transforms both.
        // Every row of dD's partials is written by exactly one block (long_conv.cuh), so no zero fill.
        at::Tensor xs = at::empty({2, p.B, p.C, p.N}, f32);
        p.xu = xs.select(0, 0).data_ptr<float>();
        p.xe = xs.select(0, 1).data_ptr<float>();
        ok(lc::backward_pack(p, dt, stream), "backward pack");
        at::Tensor S = at::fft_rfft(xs, p.N, -1, "backward").contiguous();  // [2, B, C, F]
        xs.reset();
        p.xu = p.xe = nullptr;
        at::Tensor dK = at::empty({p.C, lc::bins(p.N)}, f32.dtype(at::kComplexFloat));
        p.U = spectrum(S);
        p.E = p.U + p.B * p.C * lc::bins(p.N);
        p.dK = spectrum(dK);
        ok(lc::backward_spectral(p, stream), "backward spectral");
        const at::Tensor zdu = at::fft_irfft(S.select(0, 1), p.N, -1, "forward");  // [B, C, N]
        S.reset();
        TORCH_CHECK(zdu.is_contiguous() && zdu.scalar_type() == at::kFloat, "long_conv: unexpected irfft output");
        p.z = zdu.data_ptr<float>();
        ok(lc::backward_unpack(p, dt, stream), "backward unpack");
        // dk = the first T lags of irfft(dK) (dK carries the 1/N).
        return at::fft_irfft(dK, p.N, -1, "forward").narrow(1, 0, p.T);
    }
};

std::atomic<int64_t> g_long_conv_calls{0};

}  // namespace

// y = gate * (causal_conv(u, k[:, :T]) + D u) (long_conv.h), differentiable in u, k, D and gate; D and gate
// may be null (no skip, no gate). y has u's dtype.
WB_EXPORT char* wb_long_conv(const at::Tensor* u, const at::Tensor* k, const at::Tensor* D, const at::Tensor* gate,
                             at::Tensor** out) {
    *out = nullptr;
    return guarded([&] {
        TORCH_CHECK(u != nullptr && k != nullptr, "long_conv: null tensor");
        const at::Tensor none = at::empty({0}, u->options());
        const at::Tensor d = D != nullptr ? *D : none;
        const at::Tensor g = gate != nullptr ? *gate : none;
        check(*u, *k, d, g);
        const c10::cuda::CUDAGuard guard(u->device());
        const bool need_grad = at::GradMode::is_enabled() &&
                               (u->requires_grad() || k->requires_grad() || d.requires_grad() || g.requires_grad());
        at::Tensor y = LongConvFunction::apply(*u, *k, d, g, need_grad);
        g_long_conv_calls.fetch_add(1);
        *out = new at::Tensor(std::move(y));
    });
}

// How many times wb_long_conv ran (tests check that dispatch reached the kernel).
WB_EXPORT int64_t wb_long_conv_calls() { return g_long_conv_calls.load(); }
