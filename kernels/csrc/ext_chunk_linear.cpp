// The torch side of the chunked linear attention with a scalar or per-key decay (chunk_linear.h): its autograd function
// and the C entry points wb_chunk_linear and wb_chunk_linear_calls, with the conventions of extension.cpp
// (tensors as at::Tensor*, errors as a malloc'd message, no C++ exception ever crosses into Rust). Kept apart
// from extension.cpp so that each glue file stays small.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "chunk_linear.h"
#include "ext_common.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using wb::ext::f32_or_undefined;
using wb::ext::guarded;
using wb::ext::present;

namespace cl = wb::chunk_linear;

void chunk_linear_check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                        const at::Tensor& s0) {
    TORCH_CHECK(q.defined() && q.is_cuda() && q.dim() == 4 && q.is_contiguous(),
                "chunk_linear: q must be a contiguous CUDA [B, H, T, Dk] tensor");
    TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16,
                "chunk_linear: q must be float32 or bfloat16, got ", q.scalar_type());
    const int64_t B = q.size(0), H = q.size(1), T = q.size(2), Dk = q.size(3);
    TORCH_CHECK(B >= 1 && H >= 1 && T >= 1 && B * H <= 65535 && Dk >= 1 && Dk <= cl::kMaxDim,
                "chunk_linear: bad q shape ", q.sizes());
    const bool per_key = present(g) && g.dim() == 4;
    TORCH_CHECK(v.defined() && v.dim() == 4 && cl::fits(Dk, v.size(3), per_key),
                "chunk_linear: v must be [B, H, T, Dv] with 1 <= Dv <= 128 (per-key decays: up to 256 where the "
                "blocks fit in shared memory), got ", v.sizes(), " with Dk = ", Dk);
    const int64_t Dv = v.size(3);
    // g and s0 may also be float32 with bfloat16 q, k, v (as under autocast)
    auto same = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape, bool or_f32) {
        TORCH_CHECK(t.sizes() == shape, "chunk_linear: ", name, " must be ", shape, ", got ", t.sizes());
        const bool dtype_ok = t.scalar_type() == q.scalar_type() || (or_f32 && t.scalar_type() == at::kFloat);
        TORCH_CHECK(t.device() == q.device() && dtype_ok && t.is_contiguous(), "chunk_linear: ", name,
                    " must be contiguous, on q's device, with q's dtype", or_f32 ? " or float32" : "");
    };
    same(k, "k", {B, H, T, Dk}, false);
    same(v, "v", {B, H, T, Dv}, false);
    if (present(g) && g.dim() == 4) {
        TORCH_CHECK(q.scalar_type() == at::kBFloat16, "chunk_linear: per-key decays g [B, H, T, Dk] need bfloat16 q, k, v");
        same(g, "g", {B, H, T, Dk}, true);
    } else if (present(g)) {
        same(g, "g", {B, H, T}, true);
    }
    if (present(s0)) same(s0, "s0", {B, H, Dk, Dv}, true);
}

cl::Params chunk_linear_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    cl::Params p;
    p.q = q.data_ptr();
    p.k = k.data_ptr();
    p.v = v.data_ptr();
    p.B = q.size(0);
    p.H = q.size(1);
    p.T = q.size(2);
    p.Dk = q.size(3);
    p.Dv = v.size(3);
    p.N = cl::nchunks(p.T);
    return p;
}

cl::DType cl_dtype(const at::Tensor& q) { return q.scalar_type() == at::kFloat ? cl::DType::F32 : cl::DType::BF16; }

// The final state's dtype: q's, or float32 when a float32 decay or initial state comes with bfloat16 q
// (torch's type promotion of the state's inputs).
at::ScalarType cl_state_dtype(const at::Tensor& q, const at::Tensor& g, const at::Tensor& s0) {
    const bool f32 = (present(g) && g.scalar_type() == at::kFloat) || (present(s0) && s0.scalar_type() == at::kFloat);
    return f32 ? at::kFloat : q.scalar_type();
}

// Float32 workspaces of one call (chunk_linear.h); every element is written before it is read.
// The bfloat16 path keeps no scores (it recomputes them), reads its chunk states in bfloat16 (states16) and
// writes float32 ones only in the backward pass (`backward`), for the log-decay gradient.
struct ChunkLinearWork {
    at::Tensor g32, s032, bcum, states, scores, states16, kg16, qg16, scores16;
    // `saved`, `saved_bcum`: the forward pass's per-key masked scores and cumulative log-decays (backward),
    // else allocated here (forward).
    ChunkLinearWork(cl::Params& p, const at::Tensor& q, const at::Tensor& g, const at::Tensor& s0, bool backward,
                    const at::Tensor& saved = at::Tensor(), const at::Tensor& saved_bcum = at::Tensor()) {
        const auto f32 = q.options().dtype(at::kFloat);
        const bool f32_path = cl_dtype(q) == cl::DType::F32;
        g32 = f32_or_undefined(g);
        s032 = f32_or_undefined(s0);
        p.per_key = g32.defined() && g32.dim() == 4;
        bcum = !g32.defined()          ? at::Tensor()
               : saved_bcum.defined() ? saved_bcum
               : p.per_key            ? at::empty({p.B, p.H, p.T, p.Dk}, f32)
                                      : at::empty({p.B, p.H, p.T}, f32);
        p.bcum_ready = saved_bcum.defined();
        const std::vector<int64_t> state_shape{p.B, p.H, p.N, p.Dk, p.Dv}, none{0};
        states = at::empty(f32_path ? state_shape : none, f32);
        scores = at::empty(f32_path ? std::vector<int64_t>{p.B, p.H, p.N, cl::kChunk, cl::kChunk} : none, f32);
        states16 = f32_path ? at::Tensor() : at::empty({p.B, p.H, p.N, p.Dk, p.Dv}, q.options());
        p.states16 = f32_path ? nullptr : states16.data_ptr();
        if (p.per_key) {  // the scans' decayed X (chunk_linear.h): k * exp(b_L - b), and q * exp(b) to go back
            kg16 = at::empty({p.B, p.H, p.T, p.Dk}, q.options());
            p.kg16 = kg16.data_ptr();
            if (backward) {
                qg16 = at::empty_like(kg16);
                p.qg16 = qg16.data_ptr();
            }
            // the O mix's masked scores, which the backward pass's dV reads (saved for it)
            scores16 = saved.defined() ? saved : at::empty({p.B, p.H, p.N, cl::kChunk, cl::kChunk}, q.options());
            p.scores16 = scores16.data_ptr();
        }
        p.g = g32.defined() ? g32.data_ptr<float>() : nullptr;
        p.s0 = s032.defined() ? s032.data_ptr<float>() : nullptr;
        p.bcum = bcum.defined() ? bcum.data_ptr<float>() : nullptr;
        p.states = states.data_ptr<float>();
        p.scores = scores.data_ptr<float>();
    }
};

// Outputs {o [B, H, T, Dv] in q's dtype, S_T [B, H, Dk, Dv] in cl_state_dtype}; g and s0 travel as empty
// tensors when absent.
// The backward pass recomputes the chunk states and scores; only per-key decays save their masked scores
// and cumulative log-decays.
struct ChunkLinearFunction : public torch::autograd::Function<ChunkLinearFunction> {
    static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& g, const at::Tensor& s0) {
        cl::Params p = chunk_linear_params(q, k, v);
        ChunkLinearWork w(p, q, g, s0, false);
        at::Tensor o = at::empty_like(v);
        at::Tensor sT = at::empty({p.B, p.H, p.Dk, p.Dv}, q.options().dtype(at::kFloat));
        p.o = o.data_ptr();
        p.sT = sT.data_ptr<float>();
        const char* err = cl::forward(p, cl_dtype(q), c10::cuda::getCurrentCUDAStream(q.device().index()).stream());
        TORCH_CHECK(err == nullptr, "chunk_linear forward kernel: ", err);
        // (with per-key decays also their masked scores and cumulative log-decays: dV's scores, recomputed,
        // had been half of that mix's time, and the cumsum a tenth of the backward pass)
        const at::Tensor none = at::empty({0}, q.options());
        ctx->save_for_backward({q, k, v, g, s0, w.scores16.defined() ? w.scores16 : none, p.per_key ? w.bcum : none});
        return {o, sT.to(cl_state_dtype(q, g, s0))};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const variable_list s = ctx->get_saved_variables();
        const at::Tensor &q = s[0], &k = s[1], &v = s[2], &g = s[3], &s0 = s[4], &scores16 = s[5], &bcum = s[6];
        const c10::cuda::CUDAGuard guard(q.device());
        cl::Params p = chunk_linear_params(q, k, v);
        ChunkLinearWork w(p, q, g, s0, true, scores16.numel() > 0 ? scores16 : at::Tensor(),
                          bcum.numel() > 0 ? bcum : at::Tensor());
        const auto f32 = q.options().dtype(at::kFloat);
        const at::Tensor dout = grads[0].defined() ? grads[0].to(q.scalar_type()).contiguous() : at::zeros_like(v);
        const at::Tensor dsT = grads[1].defined() ? grads[1].to(at::kFloat).contiguous() : at::Tensor();
        at::Tensor sT = at::empty({p.B, p.H, p.Dk, p.Dv}, f32);
        // (the bfloat16 path keeps G in bfloat16 only)
        at::Tensor gstates = w.states16.defined() ? at::empty({0}, f32) : at::empty_like(w.states);
        at::Tensor pscores = at::empty_like(w.scores);
        at::Tensor gstates16 = w.states16.defined() ? at::empty_like(w.states16) : at::Tensor();
        p.gstates16 = gstates16.defined() ? gstates16.data_ptr() : nullptr;
        // The bfloat16 path writes dQ, dK, dV in q's dtype, and the rows' q . dq and k . dk (float32) for dg.
        const bool f32_path = cl_dtype(q) == cl::DType::F32;
        const auto gopts = f32_path ? f32 : q.options();
        at::Tensor dq = at::empty({p.B, p.H, p.T, p.Dk}, gopts), dk = at::empty_like(dq);
        at::Tensor dv = at::empty({p.B, p.H, p.T, p.Dv}, gopts);
        at::Tensor qdq, kdk;
        at::Tensor dgk, gdot_rows;
        if (!f32_path) {
            gdot_rows = at::empty({p.B, p.H, p.N, p.Dk}, f32);  // <G(n), S_end(n)> per row (chunk_linear.h)
            p.gdot = gdot_rows.data_ptr<float>();
        }
        if (p.per_key) {
            qdq = at::empty({p.B, p.H, p.T, p.Dk}, f32);  // q * dq and k * dk elementwise
            kdk = at::empty_like(qdq);
            dgk = at::empty_like(qdq);
            p.qdq = qdq.data_ptr<float>();
            p.kdk = kdk.data_ptr<float>();
            p.dgk = dgk.data_ptr<float>();
        } else if (!f32_path) {
            qdq = at::empty({p.B, p.H, p.T}, f32);
            kdk = at::empty_like(qdq);
            p.qdq = qdq.data_ptr<float>();
            p.kdk = kdk.data_ptr<float>();
        }
        at::Tensor ds0 = at::empty({p.B, p.H, p.Dk, p.Dv}, f32);
        p.sT = sT.data_ptr<float>();
        p.dout = dout.data_ptr();
        p.dsT = dsT.defined() ? dsT.data_ptr<float>() : nullptr;
        p.gstates = gstates.data_ptr<float>();
        p.pscores = pscores.data_ptr<float>();
        p.dq = f32_path ? dq.data_ptr<float>() : nullptr;
        p.dk = f32_path ? dk.data_ptr<float>() : nullptr;
        p.dq16 = f32_path ? nullptr : dq.data_ptr();
        p.dk16 = f32_path ? nullptr : dk.data_ptr();
        p.dv = f32_path ? dv.data_ptr<float>() : nullptr;
        p.dv16 = f32_path ? nullptr : dv.data_ptr();
        p.ds0 = ds0.data_ptr<float>();
        const char* err = cl::backward(p, cl_dtype(q), c10::cuda::getCurrentCUDAStream(q.device().index()).stream());
        TORCH_CHECK(err == nullptr, "chunk_linear backward kernel: ", err);
        at::Tensor dg;
        if (p.per_key) {
            dg = dgk.to(g.scalar_type());  // the kernel's own (chunk_linear.cuh's dg_key_thread)
        } else if (present(g)) {
            // dg_t = sum over later steps s >= t of its chunk of (q_s . dq_s - k_s . dk_s), plus <G(n), S_end(n)>
            // (chunk_linear.h); S_end(n) is S_start(n + 1), or S_T for the last chunk.
            const int64_t pad = p.N * cl::kChunk - p.T;
            at::Tensor r = f32_path ? (q * dq).sum(-1) - (k * dk).sum(-1) : qdq - kdk;  // [B, H, T]
            r = at::constant_pad_nd(r, {0, pad}).view({p.B, p.H, p.N, cl::kChunk});
            at::Tensor rc = r.flip(-1).cumsum(-1).flip(-1);
            // The bfloat16 path's G is the bfloat16 one its dK, dV products used: <G(n), S_end(n)> then cancels
            // their share of k . dk to float32 rounding (under strong decay dg is far smaller than either). The
            // bfloat16 path's kernels formed it per row (gdot_rows); the float32 path's is formed here.
            at::Tensor gdot;  // [B, H, N]
            if (gdot_rows.defined()) {
                gdot = gdot_rows.sum(-1);
            } else {
                gdot = at::empty({p.B, p.H, p.N}, f32);
                if (p.N > 1) {
                    const int64_t m = p.N - 1;
                    gdot.narrow(2, 0, m).copy_((gstates.narrow(2, 0, m) * w.states.narrow(2, 1, m)).sum({-2, -1}));
                }
                gdot.narrow(2, p.N - 1, 1).copy_((gstates.narrow(2, p.N - 1, 1) * sT.unsqueeze(2)).sum({-2, -1}));
            }
            dg = (rc + gdot.unsqueeze(-1)).view({p.B, p.H, p.N * cl::kChunk}).narrow(2, 0, p.T).to(g.scalar_type());
        }
        return {dq.to(q.scalar_type()),
                dk.to(k.scalar_type()),
                dv.to(v.scalar_type()),
                dg,
                present(s0) ? ds0.to(s0.scalar_type()) : at::Tensor()};
    }
};

std::atomic<int64_t> g_chunk_linear_calls{0};

}  // namespace

// Chunked linear attention with a scalar or per-key decay (chunk_linear.h): o [B, H, T, Dv] in q's dtype and
// the final state S_T [B, H, Dk, Dv] (q's dtype, or float32 when g or s0 is float32 with bfloat16 q),
// differentiable in every input. g (log-decays [B, H, T], or [B, H, T, Dk] per key with bfloat16 q, k, v)
// and s0 may be null; with bfloat16 q, k, v they may be float32.
WB_EXPORT char* wb_chunk_linear(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v, const at::Tensor* g,
                                const at::Tensor* s0, at::Tensor** out_o, at::Tensor** out_s) {
    *out_o = nullptr;
    *out_s = nullptr;
    return guarded([&] {
        TORCH_CHECK(q != nullptr && k != nullptr && v != nullptr, "chunk_linear: null tensor");
        const at::Tensor none = at::empty({0}, q->options());
        const at::Tensor gg = g != nullptr ? *g : none;
        const at::Tensor ss = s0 != nullptr ? *s0 : none;
        chunk_linear_check(*q, *k, *v, gg, ss);
        const c10::cuda::CUDAGuard guard(q->device());
        variable_list r = ChunkLinearFunction::apply(*q, *k, *v, gg, ss);
        g_chunk_linear_calls.fetch_add(1);
        *out_o = new at::Tensor(std::move(r[0]));
        *out_s = new at::Tensor(std::move(r[1]));
    });
}

// Whether the kernels take head dims Dk, Dv (chunk_linear.h's fits): 1 or 0.
WB_EXPORT int32_t wb_chunk_linear_fits(int64_t Dk, int64_t Dv, int32_t per_key) {
    return cl::fits(Dk, Dv, per_key != 0) ? 1 : 0;
}

// How many times wb_chunk_linear ran (tests check that dispatch reached the kernel).
WB_EXPORT int64_t wb_chunk_linear_calls() { return g_chunk_linear_calls.load(); }
