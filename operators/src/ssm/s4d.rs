//! S4D (Gu, Gupta, Goel & Ré 2022, "On the Parameterization and Initialization of Diagonal State Space
//! Models", arXiv 2206.11893): a diagonal, time-invariant SSM per channel, as the paper's standalone S4D
//! block (`s4d.py` in the state-spaces repository).
//!
//! ```text
//! y   = SSM(u) + D ⊙ u                     u: [B, T, d] (H = d channels, no input projection)
//!       SSM: per channel, N/2 complex modes A_n = -exp(log_a_real_n) + i a_imag_n, dt = exp(log_dt),
//!       ZOH: h_t = exp(dt A) h_{t-1} + u_t,  y_t = 2 Re(C' h_t),  C' = C (exp(dt A) - 1) / A   (kernels::s4d)
//! y   = GELU(y)
//! out = GLU(out_proj(y))                   out_proj: d -> 2d with bias (the block's 1x1 conv + GLU)
//! ```
//! `d_state` is N as in the S4D code: N/2 complex modes per channel (the conjugate half is implied by the
//! 2 Re), i.e. N real state elements per channel. The parallel form is the convolution with the kernel K
//! computed in closed form (direct for T <= 32, FFT beyond); `step` runs the complex recurrence, its state
//! stored as real and imaginary tensors.
//!
//! Accounting (N = d_state, n = the power of two >= 2T):
//! - params: d (log_dt) + d N (C: N/2 complex) + d N (log_a_real, a_imag) + d (D) + 2d^2 + 2d (out_proj)
//! - FLOPs per token: 4d^2 (out_proj) + d * conv(T) / T, conv(T) = 2 T^2 for T <= 32, else
//!   5 n log2 n + 6 (n/2 + 1) (radix-2 real FFTs of u and of the product, and the complex product; building
//!   K and its FFT depends on the parameters only and is not counted)
//! - state: d N (N/2 complex numbers per channel)
//!
//! Init (S4D-Lin, the paper's section 4): A_n = -1/2 + i π n, log_dt ~ U[log dt_min, log dt_max], C complex
//! standard normal (each part N(0, 1/2)), D ~ N(0, 1); log_dt, log_a_real and a_imag are never decayed (the
//! S4D code gives them weight decay 0), C and D are (as there).

use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, Linear, DECAY, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use crate::ssm::mamba::{default_dt_max, default_dt_min};
use crate::ssm::{check_at_least, check_dt_range};
use kernels::s4d::{conv_flops, s4d, s4d_step, S4dParams};
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// `s4d` parameters (YAML: `s4d: {d_state: 64}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S4dSpec {
    /// N: real state elements per channel (N/2 complex modes); even.
    #[serde(default = "default_d_state")]
    pub d_state: i64,
    /// Smallest initial dt.
    #[serde(default = "default_dt_min")]
    pub dt_min: f64,
    /// Largest initial dt.
    #[serde(default = "default_dt_max")]
    pub dt_max: f64,
}

/// 64, as the S4D code (32 complex modes).
pub fn default_d_state() -> i64 {
    64
}

impl Default for S4dSpec {
    fn default() -> Self {
        S4dSpec { d_state: default_d_state(), dt_min: default_dt_min(), dt_max: default_dt_max() }
    }
}

impl MixerSpec for S4dSpec {
    const NAME: &'static str = "s4d";
    const FAMILY: Family = Family::Ssm;
    const DESCRIPTION: &'static str =
        "S4D: diagonal time-invariant complex SSM per channel (S4D-Lin init, ZOH), FFT convolution, GELU and GLU output";
    const PARAMS: crate::registry::ParamTable = &[
        ("d_state", "int", "N real state elements per channel: N/2 complex modes (even)"),
        ("dt_min", "float", "smallest initial dt (log-uniform init)"),
        ("dt_max", "float", "largest initial dt (log-uniform init)"),
    ];
    const FLOPS_FORMULA: &'static str = "4*d^2 + d*conv(T)/T, conv(T) = 2T^2 for T <= 32, \
         else 5 n log2 n + 6(n/2 + 1) with n = the power of two >= 2T";
    const STATE_FORMULA: &'static str = "d*N";

    fn check(&self, _d_model: i64) -> Result<(), (String, String)> {
        check_at_least("d_state", self.d_state, 2)?;
        if self.d_state % 2 != 0 {
            return Err(("d_state".into(), format!("must be even (N/2 complex modes), got {}", self.d_state)));
        }
        check_dt_range(self.dt_min, self.dt_max)
    }

    fn params(&self, d: i64) -> i64 {
        d + 2 * d * self.d_state + d + Linear::params(d, 2 * d, true)
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let t = seq_len.max(1);
        (4 * d * d) as f64 + conv_flops(1, t, d) / t as f64
    }

    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        d * self.d_state
    }

    fn output_params() -> &'static [&'static str] {
        &["out_proj.weight", "out_proj.bias"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(S4d::new(p, self, ctx)))
    }
}

/// The built mixer.
#[derive(Debug)]
pub struct S4d {
    /// `[H]`
    log_dt: Tensor,
    /// `[H, N/2]`
    log_a_real: Tensor,
    /// `[H, N/2]`
    a_imag: Tensor,
    /// `[H, N/2, 2]`: real and imaginary parts.
    c: Tensor,
    /// `[H]`
    d: Tensor,
    out_proj: Linear,
    path: KernelPath,
}

impl S4d {
    pub fn new(p: &Path, spec: &S4dSpec, ctx: &BuildCtx) -> S4d {
        let (h, n2) = (ctx.d_model, spec.d_state / 2);
        let (lo, hi) = (spec.dt_min.ln(), spec.dt_max.ln());
        let a_imag = (Tensor::arange(n2, (Kind::Double, p.device())) * std::f64::consts::PI).repeat([h, 1]);
        let ssm = p.set_group(NO_DECAY);
        S4d {
            log_dt: ssm.var("log_dt", &[h], Init::Uniform { lo, up: hi }),
            log_a_real: ssm.var("log_a_real", &[h, n2], Init::Const(0.5f64.ln())),
            a_imag: ssm.var_copy("a_imag", &a_imag),
            c: p.set_group(DECAY).var("c", &[h, n2, 2], Init::Randn { mean: 0.0, stdev: 0.5f64.sqrt() }),
            d: p.set_group(DECAY).var("d", &[h], Init::Randn { mean: 0.0, stdev: 1.0 }),
            out_proj: Linear::new(&(p / "out_proj"), h, 2 * h, residual_std(ctx.n_blocks), true),
            path: ctx.kernel_path,
        }
    }

    fn params(&self) -> S4dParams<'_> {
        S4dParams { log_dt: &self.log_dt, log_a_real: &self.log_a_real, a_imag: &self.a_imag, c: &self.c }
    }

    /// `y [..., d]` (SSM output plus skip) -> GELU -> out_proj -> GLU.
    fn out(&self, y: &Tensor) -> Tensor {
        self.out_proj.forward(&y.gelu("none")).glu(-1)
    }
}

impl SequenceMixer for S4d {
    fn forward(&self, u: &Tensor) -> Tensor {
        let (y, _) = s4d(u, &self.params(), None, false, self.path); // [B, T, d]
        self.out(&(y + u * &self.d))
    }

    /// The complex state `[B, H, N/2]` as real and imaginary parts, zero.
    fn init_state(&self, batch: i64) -> State {
        let zeros =
            || Tensor::zeros([batch, self.a_imag.size()[0], self.a_imag.size()[1]], (self.d.kind(), self.d.device()));
        State { tensors: vec![zeros(), zeros()], position: 0 }
    }

    fn step(&self, u: &Tensor, state: &mut State) -> Tensor {
        let (y, (re, im)) = s4d_step(u, &self.params(), (&state.tensors[0], &state.tensors[1]));
        state.tensors = vec![re, im];
        state.position += 1;
        self.out(&(y + u * &self.d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LayerSpec;
    use crate::ssm::testing::{build, input_gradient_matches_finite_differences, param, D};

    #[test]
    fn init_is_s4d_lin() {
        tch::manual_seed(0);
        let spec = S4dSpec::default();
        let (vs, _m) = build(&LayerSpec::S4d(spec.clone()), KernelPath::Auto);
        let a_re = -param(&vs, "log_a_real").exp();
        assert!((a_re + 0.5).abs().max().double_value(&[]) < 1e-6, "Re A = -1/2");
        let expect =
            (Tensor::arange(spec.d_state / 2, (Kind::Double, tch::Device::Cpu)) * std::f64::consts::PI).repeat([D, 1]);
        assert!((param(&vs, "a_imag") - expect).abs().max().double_value(&[]) < 1e-4, "Im A = pi n");
        let dt = param(&vs, "log_dt").exp();
        let (lo, hi) = (dt.min().double_value(&[]), dt.max().double_value(&[]));
        assert!(lo >= spec.dt_min * (1.0 - 1e-5) && hi <= spec.dt_max * (1.0 + 1e-5), "dt in [{lo}, {hi}]");
    }

    #[test]
    fn gradient_of_the_convolution_matches_finite_differences_of_the_recurrence() {
        input_gradient_matches_finite_differences(&LayerSpec::S4d(S4dSpec { d_state: 8, ..S4dSpec::default() }));
    }

    #[test]
    fn fft_path_matches_the_recurrence_at_long_sequences() {
        tch::manual_seed(1);
        let spec = LayerSpec::S4d(S4dSpec::default());
        let (vs, fast) = build(&spec, KernelPath::Auto);
        let (mut vs_ref, reference) = build(&spec, KernelPath::Reference);
        vs_ref.copy(&vs).unwrap();
        let x = Tensor::randn([2, 80, D], (Kind::Double, tch::Device::Cpu));
        let err = (fast.forward(&x) - reference.forward(&x)).abs().max().double_value(&[]);
        assert!(err < 1e-10, "FFT vs recurrence: {err}");
    }

    #[test]
    fn d_state_must_be_even() {
        assert_eq!(S4dSpec { d_state: 7, ..S4dSpec::default() }.check(16).unwrap_err().0, "d_state");
    }
}
