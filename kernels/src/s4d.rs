//! The diagonal state-space layer S4D (Gu, Gupta, Goel & Ré 2022, "On the Parameterization and
//! Initialization of Diagonal State Space Models", arXiv 2206.11893): per channel, N2 complex modes with
//! zero-order-hold discretisation, B folded into C, and the conjugate modes folded into a factor 2 Re.
//!
//! ```text
//! A  = -exp(log_a_real) + i a_imag                 [H, N2]     dt = exp(log_dt)  [H]
//! dA = exp(dt A),  C' = C (dA - 1) / A            (ZOH)        C: [H, N2, 2] (real, imaginary)
//! h_t = dA ⊙ h_{t-1} + u_t                         h: [B, H, N2] complex (two real tensors)
//! y_t = 2 Re(sum_n C'_n h_{t,n})                   u, y: [B, T, H]
//! ```
//! Parallel form: the convolution `y = K * u` with the kernel in closed form, `K_l = 2 Re(sum_n C'_n dA_n^l)`
//! (a Vandermonde product), plus the initial state's response `2 Re(sum_n C'_n dA_n^{t+1} h0_n)` when given.
//! `Reference` is the recurrence, token by token. `Auto` convolves directly (a causal Toeplitz matmul) up to
//! [`DIRECT_MAX_LEN`] tokens and by FFT beyond (zero-padded to n = the power of two >= 2T). The direct form
//! is exactly causal; the FFT form is causal up to rounding (~1e-16 relative in float64).
//!
//! FLOPs (both paths record what `Auto` does, [`s4d_flops`]), per channel and sequence: direct `2 T^2`
//! (the dense Toeplitz product); FFT `5 n log2 n + 6 (n/2 + 1)`: the radix-2 count `2.5 n log2 n` for each
//! real FFT (forward of u, inverse of the product) and 6 per complex product. Building K and its FFT depend
//! on the parameters only (once per forward, whatever the batch) and are not counted. The initial-state
//! response and the final state add `4 T N2` each when requested (two real matmuls).
//! The crossover of the two counts is at T ≈ 32, hence [`DIRECT_MAX_LEN`].

use crate::flop_count;
use crate::KernelPath;
use tch::{Kind, Tensor};

/// Longest sequence convolved directly; longer ones use the FFT.
pub const DIRECT_MAX_LEN: i64 = 32;

/// FFT length for a causal convolution of `t` tokens: the power of two >= 2t.
pub fn fft_len(t: i64) -> i64 {
    (2 * t.max(1) as u64).next_power_of_two() as i64
}

/// FLOPs of the convolution over `b` sequences of `t` tokens and `h` channels (module note).
pub fn conv_flops(b: i64, t: i64, h: i64) -> f64 {
    let per_channel = if t <= DIRECT_MAX_LEN {
        2.0 * (t * t) as f64
    } else {
        let n = fft_len(t) as f64;
        5.0 * n * n.log2() + 6.0 * (n / 2.0 + 1.0)
    };
    (b * h) as f64 * per_channel
}

/// The SSM's parameters; see the module note for shapes.
pub struct S4dParams<'a> {
    pub log_dt: &'a Tensor,
    pub log_a_real: &'a Tensor,
    pub a_imag: &'a Tensor,
    pub c: &'a Tensor,
}

/// The discretised modes, each `[H, N2]`: `dt A` and `C' = C (exp(dt A) - 1) / A`.
struct Modes {
    dta_re: Tensor,
    dta_im: Tensor,
    cp_re: Tensor,
    cp_im: Tensor,
}

fn discretise(p: &S4dParams) -> Modes {
    let dt = p.log_dt.exp().unsqueeze(-1); // [H, 1]
    let (a_re, a_im) = (-p.log_a_real.exp(), p.a_imag.shallow_clone()); // [H, N2]
    let (dta_re, dta_im) = (&a_re * &dt, &a_im * &dt);
    let mag = dta_re.exp();
    // z = (exp(dt A) - 1) / A
    let (num_re, num_im) = (&mag * dta_im.cos() - 1.0, &mag * dta_im.sin());
    let den = a_re.square() + a_im.square();
    let z_re = (&num_re * &a_re + &num_im * &a_im) / &den;
    let z_im = (&num_im * &a_re - &num_re * &a_im) / &den;
    let (c_re, c_im) = (p.c.select(-1, 0), p.c.select(-1, 1));
    let cp_re = &c_re * &z_re - &c_im * &z_im;
    let cp_im = &c_re * &z_im + &c_im * &z_re;
    Modes { dta_re, dta_im, cp_re, cp_im }
}

impl Modes {
    /// `dA^e = exp(e dt A)` for the exponents `e [L]`: `(re, im)`, each `[H, N2, L]`.
    fn powers(&self, e: &Tensor) -> (Tensor, Tensor) {
        let mag = (self.dta_re.unsqueeze(-1) * e).exp();
        let phase = self.dta_im.unsqueeze(-1) * e;
        (&mag * phase.cos(), &mag * phase.sin())
    }

    /// `dA = exp(dt A)`: `(re, im)`, each `[H, N2]`.
    fn decay(&self) -> (Tensor, Tensor) {
        let mag = self.dta_re.exp();
        (&mag * self.dta_im.cos(), &mag * self.dta_im.sin())
    }
}

/// The convolution kernel `K [H, T]` (module note).
pub fn s4d_kernel(p: &S4dParams, t: i64) -> Tensor {
    let m = discretise(p);
    let (w_re, w_im) = m.powers(&Tensor::arange(t, (p.c.kind(), p.c.device()))); // [H, N2, T]
    (m.cp_re.unsqueeze(1).matmul(&w_re) - m.cp_im.unsqueeze(1).matmul(&w_im)).squeeze_dim(1) * 2.0
}

/// S4D over a sequence `u [B, T, H]` from `initial_state` (`(re, im)`, each `[B, H, N2]`; zero when absent).
/// Returns `y [B, T, H]` and, when `final_state`, the state after the last token.
pub fn s4d(
    u: &Tensor,
    p: &S4dParams,
    initial_state: Option<(&Tensor, &Tensor)>,
    final_state: bool,
    path: KernelPath,
) -> (Tensor, Option<(Tensor, Tensor)>) {
    let (b, t, h) = u.size3().expect("s4d: u must be [B, T, H]");
    let n2 = p.a_imag.size()[1];
    let state_flops = (b * h * 4 * t * n2) as f64;
    match path {
        KernelPath::Reference => {
            flop_count::record(
                conv_flops(b, t, h)
                    + if initial_state.is_some() { state_flops } else { 0.0 }
                    + if final_state { state_flops } else { 0.0 },
            );
            let m = discretise(p);
            let (da_re, da_im) = m.decay();
            let zeros = || Tensor::zeros([b, h, n2], (u.kind(), u.device()));
            let (mut hr, mut hi) =
                initial_state.map_or_else(|| (zeros(), zeros()), |(r, i)| (r.shallow_clone(), i.shallow_clone()));
            let mut ys = Vec::with_capacity(t as usize);
            for ut in u.unbind(1) {
                let (y, r, i) = step_core(&ut, &hr, &hi, &da_re, &da_im, &m.cp_re, &m.cp_im);
                (hr, hi) = (r, i);
                ys.push(y);
            }
            (Tensor::stack(&ys, 1), final_state.then_some((hr, hi)))
        }
        KernelPath::Auto => parallel(u, p, initial_state, final_state),
    }
}

fn parallel(
    u: &Tensor,
    p: &S4dParams,
    initial_state: Option<(&Tensor, &Tensor)>,
    final_state: bool,
) -> (Tensor, Option<(Tensor, Tensor)>) {
    let (b, t, h) = u.size3().expect("s4d: u must be [B, T, H]");
    let k = s4d_kernel(p, t); // [H, T]
    let uh = u.permute([2, 1, 0]); // [H, T, B]
    let conv = if t <= DIRECT_MAX_LEN {
        // Causal Toeplitz matrix: M[h, i, j] = K[h, i - j] for j <= i, else 0.
        let i = Tensor::arange(t, (Kind::Int64, u.device()));
        let lag = i.unsqueeze(1) - i.unsqueeze(0); // [T, T]
        let causal = lag.ge(0).to_kind(u.kind());
        let m = k.index_select(1, &lag.clamp_min(0).flatten(0, -1)).view([h, t, t]) * causal;
        flop_count::matmul(&m, &uh) // [H, T, B]
    } else {
        let n = fft_len(t);
        flop_count::record(conv_flops(b, t, h));
        let uf = uh.fft_rfft(n, 1, "backward"); // [H, n/2 + 1, B]
        let kf = k.fft_rfft(n, 1, "backward").unsqueeze(-1); // [H, n/2 + 1, 1]
        (uf * kf).fft_irfft(n, 1, "backward").narrow(1, 0, t) // [H, T, B]
    };
    let m = discretise(p);
    let (cp_re, cp_im) = (&m.cp_re, &m.cp_im);
    let y = match initial_state {
        // y_t += 2 Re(sum_n (C' h0)_n dA_n^{t+1})
        Some((h0r, h0i)) => {
            let e = Tensor::arange_start(1, t + 1, (u.kind(), u.device()));
            let (w_re, w_im) = m.powers(&e); // [H, N2, T]
            let (z_re, z_im) = (cp_re * h0r - cp_im * h0i, cp_re * h0i + cp_im * h0r); // [B, H, N2]
            let resp =
                flop_count::matmul(&z_re.transpose(0, 1), &w_re) - flop_count::matmul(&z_im.transpose(0, 1), &w_im); // [H, B, T]
            conv + resp.transpose(1, 2) * 2.0
        }
        None => conv,
    };
    let state = final_state.then(|| {
        // h_T = dA^T h0 + sum_s dA^{T-1-s} u_s
        let e = Tensor::arange(t, (u.kind(), u.device())).flip([0]);
        let (w_re, w_im) = m.powers(&e); // [H, N2, T]
        let ub = u.permute([2, 0, 1]); // [H, B, T]
        let mut hr = flop_count::matmul(&ub, &w_re.transpose(1, 2)).transpose(0, 1); // [B, H, N2]
        let mut hi = flop_count::matmul(&ub, &w_im.transpose(1, 2)).transpose(0, 1);
        if let Some((h0r, h0i)) = initial_state {
            let te = Tensor::from(t as f64).to_kind(u.kind()).to_device(u.device()).unsqueeze(0);
            let (pr, pi) = m.powers(&te); // dA^T: [H, N2, 1]
            let (pr, pi) = (pr.squeeze_dim(-1), pi.squeeze_dim(-1));
            hr = hr + &pr * h0r - &pi * h0i;
            hi = hi + &pr * h0i + &pi * h0r;
        }
        (hr, hi)
    });
    (y.permute([2, 1, 0]), state) // [B, T, H]
}

fn step_core(
    u: &Tensor,
    hr: &Tensor,
    hi: &Tensor,
    da_re: &Tensor,
    da_im: &Tensor,
    cp_re: &Tensor,
    cp_im: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let r = da_re * hr - da_im * hi + u.unsqueeze(-1); // [B, H, N2]
    let i = da_re * hi + da_im * hr;
    let y = ((&r * cp_re - &i * cp_im).sum_dim_intlist(-1, false, u.kind())) * 2.0; // [B, H]
    (y, r, i)
}

/// One token: `u [B, H]`, state `(re, im)` each `[B, H, N2]` -> `(y [B, H], new state)`.
pub fn s4d_step(u: &Tensor, p: &S4dParams, state: (&Tensor, &Tensor)) -> (Tensor, (Tensor, Tensor)) {
    let m = discretise(p);
    let (da_re, da_im) = m.decay();
    let (y, r, i) = step_core(u, state.0, state.1, &da_re, &da_im, &m.cp_re, &m.cp_im);
    (y, (r, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selective_scan::max_err;
    use tch::Device;

    /// S4D-Lin parameters at random dt; u; an initial state.
    fn inputs(t: i64, h: i64, n2: i64) -> Vec<Tensor> {
        let opts = (Kind::Double, Device::Cpu);
        let log_dt = Tensor::rand([h], opts) * (0.1f64.ln() - 0.001f64.ln()) + 0.001f64.ln();
        let log_a_real = Tensor::full([h, n2], 0.5f64.ln(), opts);
        let a_imag = (Tensor::arange(n2, opts) * std::f64::consts::PI).repeat([h, 1]);
        let c = Tensor::randn([h, n2, 2], opts);
        let u = Tensor::randn([2, t, h], opts);
        let (h0r, h0i) = (Tensor::randn([2, h, n2], opts), Tensor::randn([2, h, n2], opts));
        [u, log_dt, log_a_real, a_imag, c, h0r, h0i].into_iter().map(|x| x.set_requires_grad(true)).collect()
    }

    fn run(v: &[Tensor], with_h0: bool, path: KernelPath) -> (Tensor, Tensor, Tensor) {
        let p = S4dParams { log_dt: &v[1], log_a_real: &v[2], a_imag: &v[3], c: &v[4] };
        let (y, s) = s4d(&v[0], &p, with_h0.then_some((&v[5], &v[6])), true, path);
        let (r, i) = s.unwrap();
        (y, r, i)
    }

    fn loss(v: &[Tensor], with_h0: bool, path: KernelPath) -> Tensor {
        let (y, r, i) = run(v, with_h0, path);
        let w = Tensor::arange(y.numel() as i64, (Kind::Double, Device::Cpu)).view(y.size().as_slice()).cos();
        (y * w).sum(Kind::Double) + r.square().sum(Kind::Double) - (i * 0.3).sum(Kind::Double)
    }

    #[test]
    fn convolution_matches_the_recurrence_outputs_states_and_gradients() {
        tch::manual_seed(0);
        // Direct (T <= 32) and FFT (T > 32) convolutions, with and without an initial state.
        for (t, h, n2) in [(1, 2, 3), (7, 3, 4), (32, 2, 2), (33, 2, 3), (70, 1, 5)] {
            for with_h0 in [false, true] {
                let v = inputs(t, h, n2);
                let (ya, ra, ia) = run(&v, with_h0, KernelPath::Auto);
                let (yr, rr, ir) = run(&v, with_h0, KernelPath::Reference);
                let case = format!("t={t} h0={with_h0}");
                assert!(max_err(&ya, &yr) < 1e-10, "{case}: outputs {}", max_err(&ya, &yr));
                assert!(max_err(&ra, &rr) < 1e-10 && max_err(&ia, &ir) < 1e-10, "{case}: final state");
                let inputs: Vec<&Tensor> = v.iter().take(if with_h0 { 7 } else { 5 }).collect();
                let ga = Tensor::run_backward(&[loss(&v, with_h0, KernelPath::Auto)], &inputs, false, false);
                let gr = Tensor::run_backward(&[loss(&v, with_h0, KernelPath::Reference)], &inputs, false, false);
                for (i, (a, r)) in ga.iter().zip(&gr).enumerate() {
                    assert!(max_err(a, r) < 1e-9, "{case}: gradient of input {i}: {}", max_err(a, r));
                }
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences_of_the_recurrence() {
        tch::manual_seed(1);
        let v = inputs(5, 2, 2);
        let inputs: Vec<&Tensor> = v.iter().collect();
        let grads = Tensor::run_backward(&[loss(&v, true, KernelPath::Auto)], &inputs, false, false);
        let eps = 1e-6;
        for (i, g) in grads.iter().enumerate() {
            for j in 0..v[i].numel() as i64 {
                let shifted = |d: f64| {
                    let w: Vec<Tensor> = v.iter().map(|t| t.detach().copy()).collect();
                    let _ = w[i].view(-1).get(j).g_add_scalar_(d);
                    loss(&w, true, KernelPath::Reference).double_value(&[])
                };
                let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
                let ad = g.reshape(-1).double_value(&[j]);
                assert!((fd - ad).abs() < 1e-6 * (1.0 + fd.abs()), "input {i}[{j}]: autograd {ad} vs fd {fd}");
            }
        }
    }

    #[test]
    fn both_paths_record_the_same_count() {
        for t in [5, 40] {
            let v = inputs(t, 3, 2);
            let p = S4dParams { log_dt: &v[1], log_a_real: &v[2], a_imag: &v[3], c: &v[4] };
            for path in [KernelPath::Auto, KernelPath::Reference] {
                let counter = flop_count::Counter::start();
                let _ = tch::no_grad(|| s4d(&v[0], &p, None, false, path));
                assert_eq!(counter.total(), conv_flops(2, t, 3), "t={t} {path:?}");
            }
        }
    }
}
