//! The state-space dual (SSD) of Mamba-2 (Dao & Gu 2024, arXiv 2405.21060): a linear recurrence with one
//! scalar decay per head and input/output projections B, C shared by the heads (ngroups = 1).
//!
//! ```text
//! h_t = exp(log_a_t) h_{t-1} + x_t B_t^T        h: [B, H, P, N] per head;  log_a: [B, T, H] (= dt_t A_h <= 0)
//! y_t = h_t C_t                                 x, y: [B, T, H, P] (x already multiplied by dt);  B, C: [B, T, N]
//! ```
//! `Reference` is that recurrence, token by token. `Auto` is the chunked form (the paper's Listing 1, "SSD
//! minimal"): with chunks of L tokens and g_i = sum_{j<=i} log_a_j inside a chunk,
//! ```text
//! intra:  Y_c   = ((C_c B_c^T) ⊙ Γ) X_c,   Γ_ij = exp(g_i - g_j) for j <= i, else 0      [L, L] per head
//! states: S_c   = (X_c ⊙ exp(g_L - g))^T B_c                                             [P, N] per head
//! carry:  H_c   = exp(g_L) H_{c-1} + S_c     (one step per chunk)
//! inter:  Y_c  += exp(g) ⊙ (C_c H_{c-1}^T)
//! ```
//! Every exponent is <= 0, so it is stable in any dtype. This is the scalar-decay special case of chunked
//! gated linear attention (`chunk_linear`, which generalises it to per-channel decays and separate keys
//! per head). On CUDA the `Auto` path runs that kernel (csrc/chunk_linear.cu) where it applies, with SSD's
//! tensors as its operands ([`kernel`]); the chunked form below otherwise.
//!
//! FLOPs, counted for the chunked form (both paths record the same count, [`ssd_flops`]): per chunk and
//! head, with L = min(chunk, T), the sequence padded to a multiple of L: `2 L^2 N / H` for `C B^T` (computed
//! once for all heads), `2 L^2 P` for the dense intra-chunk product (the causal mask is applied, not
//! skipped), `2 L P N` each for the chunk state and the inter-chunk output, and `2 P N` for the carry.

use crate::chunk_linear::Decay;
use crate::flop_count;
use crate::selective_scan::pad_time;
use crate::KernelPath;
use tch::{Kind, Tensor};

/// Chunk length actually used at sequence length `t`: `min(chunk, t)`.
pub fn chunk_len(chunk: i64, t: i64) -> i64 {
    chunk.clamp(1, t.max(1))
}

/// FLOPs of the chunked form for `b` sequences of `t` tokens, `h` heads of width `p`, state size `n`.
pub fn ssd_flops(b: i64, t: i64, h: i64, p: i64, n: i64, chunk: i64) -> f64 {
    let l = chunk_len(chunk, t);
    let nc = (t + l - 1) / l;
    let per_chunk = 2 * l * l * n + h * (2 * l * l * p + 4 * l * p * n + 2 * p * n);
    (b * nc * per_chunk) as f64
}

/// SSD over a sequence; see the module note. Returns `(y [B, T, H, P], h_T [B, H, P, N])`.
pub fn ssd(
    x: &Tensor,
    log_a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    initial_state: Option<&Tensor>,
    chunk: i64,
    path: KernelPath,
) -> (Tensor, Tensor) {
    let (bs, t, h, p) = x.size4().expect("ssd: x must be [B, T, H, P]");
    let n = b.size()[2];
    assert_eq!(log_a.size(), [bs, t, h], "ssd: log_a must be [B, T, H]");
    match path {
        KernelPath::Reference => {
            flop_count::record(ssd_flops(bs, t, h, p, n, chunk));
            let mut state = initial_state
                .map_or_else(|| Tensor::zeros([bs, h, p, n], (x.kind(), x.device())), |s| s.shallow_clone());
            let mut ys = Vec::with_capacity(t as usize);
            for (((x, la), b), c) in x.unbind(1).iter().zip(log_a.unbind(1)).zip(b.unbind(1)).zip(c.unbind(1)) {
                let (y, s) = ssd_step(x, &la, &b, &c, &state);
                state = s;
                ys.push(y);
            }
            (Tensor::stack(&ys, 1), state)
        }
        KernelPath::Auto => {
            if crate::cuda_ext::resolve(path) == KernelPath::Auto && x.device().is_cuda() {
                if let Some(r) = kernel(x, log_a, b, c, initial_state) {
                    flop_count::record(ssd_flops(bs, t, h, p, n, chunk));
                    return r;
                }
            }
            chunked(x, log_a, b, c, initial_state, chunk)
        }
    }
}

/// SSD on the chunked linear-attention kernel (see [`as_linear_attention`]); `None` where that kernel does
/// not take the arguments (its dispatch rules: [`crate::chunk_linear`]'s Auto path, e.g. float32 unless
/// WORKBENCH_CHUNK_LINEAR_KERNEL=1).
fn kernel(
    x: &Tensor,
    log_a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    initial_state: Option<&Tensor>,
) -> Option<(Tensor, Tensor)> {
    as_linear_attention(x, log_a, b, c, initial_state, |q, k, v, g, s0| {
        crate::chunk_linear::cuda_kernel(q, k, v, Decay::Scalar(g), s0)
    })
}

/// SSD as chunked linear attention with a scalar decay: per head the state h^T [N, P] is its S [Dk, Dv],
/// with keys B_t and queries C_t (shared by the heads: broadcast [B, H, T, N]), values x_t [B, H, T, P] and
/// the log-decay log_a_t [B, H, T]; its o_t = C_t S_t is y_t. `run(q, k, v, g, s0) -> (o, S_T)` computes
/// the linear attention; the result is mapped back to `(y [B, T, H, P], h_T [B, H, P, N])`.
fn as_linear_attention(
    x: &Tensor,
    log_a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    initial_state: Option<&Tensor>,
    run: impl FnOnce(&Tensor, &Tensor, &Tensor, &Tensor, Option<&Tensor>) -> Option<(Tensor, Tensor)>,
) -> Option<(Tensor, Tensor)> {
    let (bs, t, h, _) = x.size4().ok()?;
    let n = b.size()[2];
    let heads = |m: &Tensor| m.unsqueeze(1).expand([bs, h, t, n], false); // [B, H, T, N]
    let v = x.permute([0, 2, 1, 3]); // [B, H, T, P]
    let g = log_a.permute([0, 2, 1]); // [B, H, T]
    let s0 = initial_state.map(|s| s.transpose(-1, -2)); // [B, H, N, P]
    let (o, s) = run(&heads(c), &heads(b), &v, &g, s0.as_ref())?;
    Some((o.permute([0, 2, 1, 3]), s.transpose(-1, -2)))
}

/// One token: `x [B, H, P]`, `log_a [B, H]`, `b, c [B, N]`, `state [B, H, P, N]` -> `(y [B, H, P], new state)`.
pub fn ssd_step(x: &Tensor, log_a: &Tensor, b: &Tensor, c: &Tensor, state: &Tensor) -> (Tensor, Tensor) {
    let decay = log_a.exp().unsqueeze(-1).unsqueeze(-1); // [B, H, 1, 1]
    let state = state * decay + x.unsqueeze(-1) * b.unsqueeze(1).unsqueeze(1); // [B, H, P, N]
    let y = state.matmul(&c.unsqueeze(1).unsqueeze(-1)).squeeze_dim(-1); // [B, H, P]
    (y, state)
}

fn chunked(
    x: &Tensor,
    log_a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    initial_state: Option<&Tensor>,
    chunk: i64,
) -> (Tensor, Tensor) {
    let (bs, t, h, p) = x.size4().expect("ssd: x must be [B, T, H, P]");
    let n = b.size()[2];
    let l = chunk_len(chunk, t);
    let nc = (t + l - 1) / l;
    let pad = nc * l - t;
    // Padding positions carry x = 0, B = C = 0 and no decay, so they change neither outputs nor state.
    let xc = pad_time(x, pad).view([bs, nc, l, h, p]).permute([0, 3, 1, 2, 4]); // [B, H, nc, L, P]
    let g = pad_time(log_a, pad).view([bs, nc, l, h]).permute([0, 3, 1, 2]).cumsum(-1, log_a.kind()); // [B, H, nc, L]
    let bc = pad_time(b, pad).view([bs, 1, nc, l, n]); // [B, 1, nc, L, N]
    let cc = pad_time(c, pad).view([bs, 1, nc, l, n]);
    // Γ_ij = exp(g_i - g_j) on and below the diagonal; the mask is applied before exp so nothing overflows.
    let causal = Tensor::ones([l, l], (Kind::Bool, x.device())).tril(0);
    let seg = (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(&causal.logical_not(), f64::NEG_INFINITY);
    let gamma = seg.exp(); // [B, H, nc, L, L]
    let scores = flop_count::matmul(&cc, &bc.transpose(-1, -2)); // [B, 1, nc, L, L]
    let y_intra = flop_count::matmul(&(scores * gamma), &xc); // [B, H, nc, L, P]
    let g_last = g.narrow(-1, l - 1, 1); // [B, H, nc, 1]
    let to_end = (&g_last - &g).exp().unsqueeze(-1); // [B, H, nc, L, 1]
    let states = flop_count::matmul(&(&xc * to_end).transpose(-1, -2), &bc); // [B, H, nc, P, N]
                                                                             // Carry across chunks: H_c = exp(g_L) H_{c-1} + S_c; `entering[c]` is the state before chunk c.
    let chunk_decay = g_last.exp().unsqueeze(-1); // [B, H, nc, 1, 1]
    let mut carry =
        initial_state.map_or_else(|| Tensor::zeros([bs, h, p, n], (x.kind(), x.device())), |s| s.shallow_clone());
    let mut entering = Vec::with_capacity(nc as usize);
    for (decay, s) in chunk_decay.unbind(2).iter().zip(states.unbind(2)) {
        entering.push(carry.shallow_clone());
        carry = s.addcmul(decay, &carry);
    }
    flop_count::record((2 * bs * nc * h * p * n) as f64);
    let entering = Tensor::stack(&entering, 2); // [B, H, nc, P, N]
    let y_inter = flop_count::matmul(&cc, &entering.transpose(-1, -2)) * g.exp().unsqueeze(-1); // [B, H, nc, L, P]
    let y = (y_intra + y_inter).permute([0, 2, 3, 1, 4]).reshape([bs, nc * l, h, p]).narrow(1, 0, t);
    (y, carry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selective_scan::max_err;
    use tch::Device;

    fn inputs(t: i64, h: i64, p: i64, n: i64) -> Vec<Tensor> {
        let opts = (Kind::Double, Device::Cpu);
        let x = Tensor::randn([2, t, h, p], opts);
        let log_a = -Tensor::rand([2, t, h], opts) * 0.7;
        let (b, c) = (Tensor::randn([2, t, n], opts), Tensor::randn([2, t, n], opts));
        let s0 = Tensor::randn([2, h, p, n], opts);
        [x, log_a, b, c, s0].into_iter().map(|v| v.set_requires_grad(true)).collect()
    }

    fn loss(v: &[Tensor], chunk: i64, path: KernelPath) -> Tensor {
        let (y, s) = ssd(&v[0], &v[1], &v[2], &v[3], Some(&v[4]), chunk, path);
        let w = Tensor::arange(y.numel() as i64, (Kind::Double, Device::Cpu)).view(y.size().as_slice()).cos();
        (y * w).sum(Kind::Double) + s.square().sum(Kind::Double)
    }

    /// The mapping the CUDA path uses (SSD as chunked linear attention), run here on chunk_linear's float64
    /// libtorch form: outputs, final state and every gradient equal SSD's own recurrence.
    #[test]
    fn as_linear_attention_matches_the_recurrence() {
        tch::manual_seed(1);
        for (t, h, p, n) in [(1, 2, 3, 4), (9, 3, 5, 2), (70, 2, 4, 6)] {
            let v = inputs(t, h, p, n);
            let run = |q: &Tensor, k: &Tensor, x: &Tensor, g: &Tensor, s0: Option<&Tensor>| {
                let chunk_linear = crate::chunk_linear::chunk_linear;
                Some(chunk_linear(q, k, x, Decay::Scalar(g), s0, 16, KernelPath::Auto))
            };
            let (ya, sa) = as_linear_attention(&v[0], &v[1], &v[2], &v[3], Some(&v[4]), run).expect("a [B, T, H, P] x");
            let (yr, sr) = ssd(&v[0], &v[1], &v[2], &v[3], Some(&v[4]), 16, KernelPath::Reference);
            assert!(max_err(&ya, &yr) < 1e-10, "t={t}: outputs");
            assert!(max_err(&sa, &sr) < 1e-10, "t={t}: final state");
            let w = Tensor::randn(ya.size(), (Kind::Double, Device::Cpu));
            let ga =
                Tensor::run_backward(&[(&ya * &w).sum(Kind::Double) + sa.square().sum(Kind::Double)], &v, false, false);
            let gr =
                Tensor::run_backward(&[(&yr * &w).sum(Kind::Double) + sr.square().sum(Kind::Double)], &v, false, false);
            for (i, (a, r)) in ga.iter().zip(&gr).enumerate() {
                assert!(max_err(a, r) < 1e-9, "t={t}: gradient of input {i}");
            }
        }
    }

    #[test]
    fn chunked_matches_the_recurrence_outputs_states_and_gradients() {
        tch::manual_seed(0);
        for (t, h, p, n, chunk) in
            [(1, 2, 3, 4, 4), (7, 3, 5, 2, 3), (16, 2, 1, 3, 4), (10, 1, 3, 5, 64), (9, 2, 2, 2, 1)]
        {
            let v = inputs(t, h, p, n);
            let (ya, sa) = ssd(&v[0], &v[1], &v[2], &v[3], Some(&v[4]), chunk, KernelPath::Auto);
            let (yr, sr) = ssd(&v[0], &v[1], &v[2], &v[3], Some(&v[4]), chunk, KernelPath::Reference);
            assert!(max_err(&ya, &yr) < 1e-10, "t={t} chunk={chunk}: outputs");
            assert!(max_err(&sa, &sr) < 1e-10, "t={t} chunk={chunk}: final state");
            let inputs: Vec<&Tensor> = v.iter().collect();
            let ga = Tensor::run_backward(&[loss(&v, chunk, KernelPath::Auto)], &inputs, false, false);
            let gr = Tensor::run_backward(&[loss(&v, chunk, KernelPath::Reference)], &inputs, false, false);
            for (i, (a, r)) in ga.iter().zip(&gr).enumerate() {
                assert!(max_err(a, r) < 1e-10, "t={t} chunk={chunk}: gradient of input {i}");
            }
        }
    }

    #[test]
    fn chunked_gradient_matches_finite_differences_of_the_recurrence() {
        tch::manual_seed(1);
        let v = inputs(5, 2, 2, 2);
        let inputs: Vec<&Tensor> = v.iter().collect();
        let grads = Tensor::run_backward(&[loss(&v, 2, KernelPath::Auto)], &inputs, false, false);
        let eps = 1e-6;
        for (i, g) in grads.iter().enumerate() {
            for j in 0..v[i].numel() as i64 {
                let shifted = |d: f64| {
                    let w: Vec<Tensor> = v.iter().map(|t| t.detach().copy()).collect();
                    let _ = w[i].view(-1).get(j).g_add_scalar_(d);
                    loss(&w, 2, KernelPath::Reference).double_value(&[])
                };
                let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
                let ad = g.reshape(-1).double_value(&[j]);
                assert!((fd - ad).abs() < 1e-6 * (1.0 + fd.abs()), "input {i}[{j}]: autograd {ad} vs fd {fd}");
            }
        }
    }

    #[test]
    fn both_paths_record_the_chunked_count() {
        let v = inputs(7, 2, 3, 4);
        for path in [KernelPath::Auto, KernelPath::Reference] {
            let counter = flop_count::Counter::start();
            let _ = tch::no_grad(|| ssd(&v[0], &v[1], &v[2], &v[3], None, 3, path));
            assert_eq!(counter.total(), ssd_flops(2, 7, 2, 3, 4, 3), "{path:?}");
        }
    }
}
