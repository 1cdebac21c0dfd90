//! The delta rule of DeltaNet (Schlag et al. 2021; parallelised by Yang et al. 2024, arXiv 2406.06484) and
//! its gated form, Gated DeltaNet (Yang et al. 2024, arXiv 2412.06464).
//!
//! ```text
//! S_t = a_t (I - β_t k_t k_t^T) S_{t-1} + β_t k_t v_t^T     S: [Dk, Dv] per head (the papers' S^T)
//! o_t = S_t^T q_t                                            a_t = exp(log_decay_t), 1 without decay
//! ```
//! Shapes: q, k `[B, H, T, Dk]`, v `[B, H, T, Dv]`, β and log_decay `[B, H, T]`, state `[B, H, Dk, Dv]`.
//! `Reference` is that recurrence, token by token. `Auto` is the chunked WY/UT form (Yang et al. 2024,
//! section 3): inside a chunk of L tokens, with g_i = sum_{j<=i} log a_j and Γ_ij = exp(g_i - g_j),
//! ```text
//! A   = strictly_lower(diag(β) (K K^T ⊙ Γ))                       [L, L]
//! [W | U0] = (I + A)^{-1} [diag(β e^g) K | diag(β) V]             one unit-triangular solve (the UT transform)
//! U   = U0 - W S                                                   the new values, given the entering state S
//! O   = (Q ⊙ e^g) S + (lower(Q K^T ⊙ Γ)) U                         lower() keeps the diagonal
//! S  <- e^{g_L} S + (K ⊙ e^{g_L - g})^T U                          one step per chunk
//! ```
//! All exponents are <= 0, so the form is stable in any dtype. Everything but the carry runs for all chunks
//! at once.
//!
//! FLOPs, counted for the chunked form (both paths record [`delta_rule_flops`]): per chunk and head, with
//! L = min(chunk, T) and the sequence padded to a multiple of L: `2 L^2 Dk` for K K^T, `L (L-1) (Dk+Dv)` for
//! the triangular solve (forward substitution), `2 L^2 Dk` for Q K^T, `3 * 2 L Dk Dv` for W S, (Q e^g) S and
//! K^T U, `2 L^2 Dv` for the intra-chunk output (dense, masked), and `2 Dk Dv` for the carry.

use crate::flop_count;
use crate::selective_scan::pad_time;
use crate::ssd::chunk_len;
use crate::KernelPath;
use tch::{Kind, Tensor};

/// FLOPs of the chunked form for `b` sequences of `t` tokens and `h` heads of widths `dk`, `dv`.
pub fn delta_rule_flops(b: i64, h: i64, t: i64, dk: i64, dv: i64, chunk: i64) -> f64 {
    let l = chunk_len(chunk, t);
    let nc = (t + l - 1) / l;
    let per_chunk = 4 * l * l * dk + l * (l - 1) * (dk + dv) + 6 * l * dk * dv + 2 * l * l * dv + 2 * dk * dv;
    (b * h * nc * per_chunk) as f64
}

/// The (gated) delta rule over a sequence; see the module note. Returns `(o [B, H, T, Dv], S_T [B, H, Dk, Dv])`.
#[allow(clippy::too_many_arguments)]
pub fn delta_rule(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    beta: &Tensor,
    log_decay: Option<&Tensor>,
    initial_state: Option<&Tensor>,
    chunk: i64,
    path: KernelPath,
) -> (Tensor, Tensor) {
    let (b, h, t, dk) = q.size4().expect("delta_rule: q must be [B, H, T, Dk]");
    let dv = v.size()[3];
    assert_eq!(beta.size(), [b, h, t], "delta_rule: beta must be [B, H, T]");
    match path {
        KernelPath::Reference => {
            flop_count::record(delta_rule_flops(b, h, t, dk, dv, chunk));
            let mut s = initial_state
                .map_or_else(|| Tensor::zeros([b, h, dk, dv], (q.kind(), q.device())), |s| s.shallow_clone());
            let decays = log_decay.map(|g| g.unbind(2));
            let mut outs = Vec::with_capacity(t as usize);
            let (qs, ks, vs, betas) = (q.unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2));
            for i in 0..t as usize {
                let decay = decays.as_ref().map(|d| &d[i]);
                let (o, s_next) = delta_rule_step(&qs[i], &ks[i], &vs[i], &betas[i], decay, &s);
                s = s_next;
                outs.push(o);
            }
            (Tensor::stack(&outs, 2), s)
        }
        KernelPath::Auto => chunked(q, k, v, beta, log_decay, initial_state, chunk),
    }
}

/// One token: `q, k [B, H, Dk]`, `v [B, H, Dv]`, `beta, log_decay [B, H]`, `state [B, H, Dk, Dv]` ->
/// `(o [B, H, Dv], new state)`.
pub fn delta_rule_step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    beta: &Tensor,
    log_decay: Option<&Tensor>,
    state: &Tensor,
) -> (Tensor, Tensor) {
    let s = match log_decay {
        Some(g) => state * g.exp().unsqueeze(-1).unsqueeze(-1), // a_t S_{t-1}
        None => state.shallow_clone(),
    };
    let old = k.unsqueeze(-2).matmul(&s).squeeze_dim(-2); // k^T (a S): [B, H, Dv]
    let u = (v - old) * beta.unsqueeze(-1); // β (v - k^T a S)
    let s = s + k.unsqueeze(-1) * u.unsqueeze(-2); // a S + k u^T
    let o = q.unsqueeze(-2).matmul(&s).squeeze_dim(-2); // S^T q
    (o, s)
}

fn chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    beta: &Tensor,
    log_decay: Option<&Tensor>,
    initial_state: Option<&Tensor>,
    chunk: i64,
) -> (Tensor, Tensor) {
    let (b, h, t, dk) = q.size4().expect("delta_rule: q must be [B, H, T, Dk]");
    let dv = v.size()[3];
    let l = chunk_len(chunk, t);
    let nc = (t + l - 1) / l;
    let pad = nc * l - t;
    // Pad along time (dim 2) with zeros: k = 0 and β = 0 leave the state unchanged, no decay there.
    let time_pad = |x: &Tensor| pad_time(&x.transpose(1, 2), pad).transpose(1, 2);
    let split = |x: &Tensor, d: i64| time_pad(x).reshape([b, h, nc, l, d]); // [B, H, nc, L, d]
    let (qc, kc, vc) = (split(q, dk), split(k, dk), split(v, dv));
    let betac = time_pad(beta).reshape([b, h, nc, l, 1]);
    let g = match log_decay {
        Some(g) => time_pad(g).reshape([b, h, nc, l]).cumsum(-1, g.kind()),
        None => Tensor::zeros([b, h, nc, l], (q.kind(), q.device())),
    };
    let lower = Tensor::ones([l, l], (Kind::Bool, q.device())).tril(0);
    let seg = (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(&lower.logical_not(), f64::NEG_INFINITY);
    let gamma = seg.exp(); // [B, H, nc, L, L], zero above the diagonal
    let eg = g.exp().unsqueeze(-1); // [B, H, nc, L, 1]
                                    // The UT transform: one unit-lower-triangular solve for W and U0 together.
    let kk = flop_count::matmul(&kc, &kc.transpose(-1, -2)); // [B, H, nc, L, L]
    let a = (kk * &gamma * &betac).tril(-1);
    let rhs = Tensor::cat(&[&kc * &betac * &eg, &vc * &betac], -1); // [B, H, nc, L, Dk + Dv]
    let sol = a.linalg_solve_triangular(&rhs, false, true, true);
    flop_count::record((b * h * nc * l * (l - 1) * (dk + dv)) as f64);
    let (w, u0) = (sol.narrow(-1, 0, dk), sol.narrow(-1, dk, dv));
    let qk = flop_count::matmul(&qc, &kc.transpose(-1, -2)) * &gamma; // [B, H, nc, L, L], lower incl. diagonal
    let q_decayed = &qc * &eg; // [B, H, nc, L, Dk]
    let g_last = g.narrow(-1, l - 1, 1); // [B, H, nc, 1]
    let k_to_end = &kc * (&g_last - &g).exp().unsqueeze(-1); // [B, H, nc, L, Dk]
    let chunk_decay = g_last.exp().unsqueeze(-1); // [B, H, nc, 1, 1]
    let mut s =
        initial_state.map_or_else(|| Tensor::zeros([b, h, dk, dv], (q.kind(), q.device())), |s| s.shallow_clone());
    let mut outs = Vec::with_capacity(nc as usize);
    let per_chunk = |x: &Tensor| x.unbind(2);
    let (w, u0, qk, q_decayed, k_to_end, chunk_decay) = (
        per_chunk(&w),
        per_chunk(&u0),
        per_chunk(&qk),
        per_chunk(&q_decayed),
        per_chunk(&k_to_end),
        per_chunk(&chunk_decay),
    );
    for c in 0..nc as usize {
        let u = &u0[c] - flop_count::matmul(&w[c], &s); // [B, H, L, Dv]
        outs.push(flop_count::matmul(&q_decayed[c], &s) + flop_count::matmul(&qk[c], &u));
        s = flop_count::matmul(&k_to_end[c].transpose(-1, -2), &u) + &s * &chunk_decay[c];
    }
    flop_count::record((2 * b * h * nc * dk * dv) as f64);
    let o = Tensor::stack(&outs, 2).reshape([b, h, nc * l, dv]).narrow(2, 0, t); // [B, H, T, Dv]
    (o, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selective_scan::max_err;
    use tch::Device;

    /// q, k (L2-normalised, as DeltaNet uses them), v, β, log decay, initial state.
    fn inputs(t: i64, h: i64, dk: i64, dv: i64) -> Vec<Tensor> {
        let opts = (Kind::Double, Device::Cpu);
        let unit = |x: Tensor| &x / x.square().sum_dim_intlist(-1, true, Kind::Double).sqrt();
        let q = unit(Tensor::randn([2, h, t, dk], opts));
        let k = unit(Tensor::randn([2, h, t, dk], opts));
        let v = Tensor::randn([2, h, t, dv], opts);
        let beta = Tensor::rand([2, h, t], opts);
        let log_decay = -Tensor::rand([2, h, t], opts) * 0.5;
        let s0 = Tensor::randn([2, h, dk, dv], opts);
        [q, k, v, beta, log_decay, s0].into_iter().map(|x| x.set_requires_grad(true)).collect()
    }

    fn loss(v: &[Tensor], gated: bool, chunk: i64, path: KernelPath) -> Tensor {
        let decay = gated.then_some(&v[4]);
        let (o, s) = delta_rule(&v[0], &v[1], &v[2], &v[3], decay, Some(&v[5]), chunk, path);
        let w = Tensor::arange(o.numel() as i64, (Kind::Double, Device::Cpu)).view(o.size().as_slice()).sin();
        (o * w).sum(Kind::Double) + s.square().sum(Kind::Double)
    }

    #[test]
    fn chunked_matches_the_recurrence_outputs_states_and_gradients() {
        tch::manual_seed(0);
        for gated in [false, true] {
            for (t, h, dk, dv, chunk) in
                [(1, 2, 3, 4, 4), (7, 3, 5, 2, 3), (16, 2, 4, 3, 4), (10, 1, 3, 5, 64), (9, 2, 3, 3, 1)]
            {
                let v = inputs(t, h, dk, dv);
                let decay = gated.then_some(&v[4]);
                let (oa, sa) = delta_rule(&v[0], &v[1], &v[2], &v[3], decay, Some(&v[5]), chunk, KernelPath::Auto);
                let (or, sr) = delta_rule(&v[0], &v[1], &v[2], &v[3], decay, Some(&v[5]), chunk, KernelPath::Reference);
                let case = format!("gated={gated} t={t} dk={dk} dv={dv} chunk={chunk}");
                assert!(max_err(&oa, &or) < 1e-10, "{case}: outputs");
                assert!(max_err(&sa, &sr) < 1e-10, "{case}: final state");
                let inputs: Vec<&Tensor> = if gated {
                    v.iter().collect()
                } else {
                    v.iter().enumerate().filter(|(i, _)| *i != 4).map(|(_, x)| x).collect()
                };
                let ga = Tensor::run_backward(&[loss(&v, gated, chunk, KernelPath::Auto)], &inputs, false, false);
                let gr = Tensor::run_backward(&[loss(&v, gated, chunk, KernelPath::Reference)], &inputs, false, false);
                for (i, (a, r)) in ga.iter().zip(&gr).enumerate() {
                    assert!(max_err(a, r) < 1e-10, "{case}: gradient of input {i}");
                }
            }
        }
    }

    #[test]
    fn chunked_gradient_matches_finite_differences_of_the_recurrence() {
        tch::manual_seed(1);
        let v = inputs(5, 1, 2, 3);
        let inputs: Vec<&Tensor> = v.iter().collect();
        let grads = Tensor::run_backward(&[loss(&v, true, 2, KernelPath::Auto)], &inputs, false, false);
        let eps = 1e-6;
        for (i, g) in grads.iter().enumerate() {
            for j in 0..v[i].numel() as i64 {
                let shifted = |d: f64| {
                    let w: Vec<Tensor> = v.iter().map(|t| t.detach().copy()).collect();
                    let _ = w[i].view(-1).get(j).g_add_scalar_(d);
                    loss(&w, true, 2, KernelPath::Reference).double_value(&[])
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
            let _ = tch::no_grad(|| delta_rule(&v[0], &v[1], &v[2], &v[3], Some(&v[4]), None, 3, path));
            assert_eq!(counter.total(), delta_rule_flops(2, 2, 7, 3, 4, 3), "{path:?}");
        }
    }
}
