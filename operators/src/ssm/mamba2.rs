//! Mamba-2 (Dao & Gu 2024, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
//! Structured State Space Duality", arXiv 2405.21060): the SSD block (the paper's Figure 6, "parallel
//! Mamba block"), with one group of B, C shared by all heads.
//!
//! ```text
//! [z, xBC, dt] = in_proj(u)                     u: [B, T, d];  z: [B, T, E];  xBC: [B, T, E + 2N];  dt: [B, T, H]
//! [x, B, C] = SiLU(conv1d_k(xBC))               x: [B, T, H, P] (E = H P);  B, C: [B, T, N]
//! dt = softplus(dt + dt_bias);  A_h = -exp(A_log_h)                    [B, T, H], [H]
//! h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) B_t^T;  y_t = h_t C_t + D_h x_t     per head (kernels::ssd, chunked)
//! out = out_proj(RMSNorm(y ⊙ SiLU(z)))          the gated norm (norm after the gate, as the reference code)
//! ```
//! Accounting (E = expand*d, P = head_dim, H = E/P, N = d_state, K = d_conv, L = min(chunk, T),
//! Tp = T rounded up to a multiple of L):
//! - params: d(2E + 2N + H) (in) + K(E + 2N) + (E + 2N) (conv) + 3H (dt_bias, A_log, D) + E (norm) + Ed (out)
//! - FLOPs per token: 2d(2E + 2N + H) + 2K(E + 2N) + 2Ed + SSD(T)/T, where SSD counts the chunked form:
//!   (Tp/L) [2 L^2 N + H (2 L^2 P + 4 L P N + 2 P N)] (see kernels::ssd)
//! - state: (K-1)(E + 2N) (convolution) + E N (SSM: H heads of P x N)
//!
//! Init, as the reference code: A ~ U[1, 16] per head (A_log = log A), D = 1, dt bias = inverse softplus
//! of dt ~ log-uniform[dt_min, dt_max]; A_log, D and the dt bias never decay. Projections as everywhere in
//! this workbench (N(0, 0.02^2), out_proj scaled by depth).

use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, split_last, Linear, RmsNorm, INIT_STD, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use crate::ssm::mamba::{default_d_conv, default_dt_max, default_dt_min, default_expand};
use crate::ssm::{check_at_least, check_dt_range, dt_bias, ShortConv};
use kernels::short_conv::Activation;
use kernels::ssd::{ssd, ssd_flops, ssd_step};
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// `mamba2` parameters (YAML: `mamba2: {head_dim: 16, d_state: 64}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mamba2Spec {
    /// State size N per head channel (B and C width).
    #[serde(default = "default_d_state")]
    pub d_state: i64,
    /// Taps of the causal depthwise convolution over x, B, C.
    #[serde(default = "default_d_conv")]
    pub d_conv: i64,
    /// Inner width E as a multiple of d_model.
    #[serde(default = "default_expand")]
    pub expand: i64,
    /// Head width P; heads H = expand * d_model / P.
    #[serde(default = "default_head_dim")]
    pub head_dim: i64,
    /// Chunk length of the chunked SSD form.
    #[serde(default = "default_chunk")]
    pub chunk: i64,
    /// Smallest initial dt.
    #[serde(default = "default_dt_min")]
    pub dt_min: f64,
    /// Largest initial dt.
    #[serde(default = "default_dt_max")]
    pub dt_max: f64,
}

/// 64: the paper's ablations use N = 64 to 256 (code default 128); 64 keeps CPU sweeps cheap.
pub fn default_d_state() -> i64 {
    64
}
/// 16: the reference code uses 64, too wide for the d_model of 64-256 used in CPU sweeps.
pub fn default_head_dim() -> i64 {
    16
}
/// 64: long enough for matmul efficiency at the T of CPU sweeps (the reference code uses 256).
pub fn default_chunk() -> i64 {
    64
}

impl Default for Mamba2Spec {
    fn default() -> Self {
        Mamba2Spec {
            d_state: default_d_state(),
            d_conv: default_d_conv(),
            expand: default_expand(),
            head_dim: default_head_dim(),
            chunk: default_chunk(),
            dt_min: default_dt_min(),
            dt_max: default_dt_max(),
        }
    }
}

impl Mamba2Spec {
    /// `(E, H)`: inner width and heads.
    fn dims(&self, d: i64) -> (i64, i64) {
        let e = self.expand * d;
        (e, e / self.head_dim.max(1))
    }
}

impl MixerSpec for Mamba2Spec {
    const NAME: &'static str = "mamba2";
    const FAMILY: Family = Family::Ssm;
    const DESCRIPTION: &'static str =
        "Mamba-2: state-space duality (SSD) with a scalar decay per head, shared B and C, chunked; gated RMSNorm";
    const PARAMS: crate::registry::ParamTable = &[
        ("d_state", "int", "state size N per head channel (width of B and C)"),
        ("d_conv", "int", "taps of the causal depthwise convolution over x, B, C"),
        ("expand", "int", "inner width E as a multiple of d_model"),
        ("head_dim", "int", "head width P; heads = expand * d_model / head_dim"),
        ("chunk", "int", "chunk length L of the chunked SSD form"),
        ("dt_min", "float", "smallest initial dt (log-uniform init)"),
        ("dt_max", "float", "largest initial dt (log-uniform init)"),
    ];
    const FLOPS_FORMULA: &'static str =
        "2d(2E + 2N + H) + 2K(E + 2N) + 2E*d + (Tp/L)[2L^2 N + H(2L^2 P + 4LPN + 2PN)]/T, \
         E = expand*d, H = E/P, L = min(chunk, T), Tp = T rounded up to a multiple of L";
    const STATE_FORMULA: &'static str = "(K-1)*(E + 2N) + E*N";

    fn check(&self, d_model: i64) -> Result<(), (String, String)> {
        check_at_least("d_state", self.d_state, 1)?;
        check_at_least("d_conv", self.d_conv, 1)?;
        check_at_least("expand", self.expand, 1)?;
        check_at_least("head_dim", self.head_dim, 1)?;
        check_at_least("chunk", self.chunk, 1)?;
        let e = self.expand * d_model;
        if e % self.head_dim != 0 {
            let valid: Vec<String> = (1..=e.min(128)).filter(|p| e % p == 0).map(|p| p.to_string()).collect();
            return Err((
                "head_dim".into(),
                format!(
                    "must divide the inner width expand * d_model = {e}, got {}; valid: {}",
                    self.head_dim,
                    valid.join(", ")
                ),
            ));
        }
        check_dt_range(self.dt_min, self.dt_max)
    }

    fn params(&self, d: i64) -> i64 {
        let (e, h) = self.dims(d);
        let (n, k) = (self.d_state, self.d_conv);
        Linear::params(d, 2 * e + 2 * n + h, false)
            + ShortConv::params(e + 2 * n, k, true)
            + 3 * h
            + e
            + Linear::params(e, d, false)
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let (e, h) = self.dims(d);
        let (n, k, t) = (self.d_state, self.d_conv, seq_len.max(1));
        let dense = 2 * d * (2 * e + 2 * n + h) + 2 * k * (e + 2 * n) + 2 * e * d;
        dense as f64 + ssd_flops(1, t, h, self.head_dim, n, self.chunk) / t as f64
    }

    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        let e = self.expand * d;
        (self.d_conv - 1) * (e + 2 * self.d_state) + e * self.d_state
    }

    fn output_params() -> &'static [&'static str] {
        &["out_proj.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(Mamba2::new(p, self, ctx)))
    }
}

/// The built mixer.
#[derive(Debug)]
pub struct Mamba2 {
    in_proj: Linear,
    conv: ShortConv,
    dt_bias: Tensor,
    /// `[H]`, A = -exp(A_log).
    a_log: Tensor,
    /// `[H]`, the skip.
    d: Tensor,
    norm: RmsNorm,
    out_proj: Linear,
    e: i64,
    h: i64,
    p: i64,
    n: i64,
    chunk: i64,
    path: KernelPath,
}

impl Mamba2 {
    pub fn new(p: &Path, spec: &Mamba2Spec, ctx: &BuildCtx) -> Mamba2 {
        let d = ctx.d_model;
        let (e, h) = spec.dims(d);
        let n = spec.d_state;
        let a = Tensor::rand([h], (Kind::Double, p.device())) * 15.0 + 1.0; // A ~ U[1, 16]
        Mamba2 {
            in_proj: Linear::new(&(p / "in_proj"), d, 2 * e + 2 * n + h, INIT_STD, false),
            conv: ShortConv::new(&(p / "conv"), e + 2 * n, spec.d_conv, true, Activation::Silu),
            dt_bias: dt_bias(&(p / "dt"), h, spec.dt_min, spec.dt_max),
            a_log: p.set_group(NO_DECAY).var_copy("A_log", &a.log()),
            d: p.set_group(NO_DECAY).var("D", &[h], Init::Const(1.0)),
            norm: RmsNorm::new(&(p / "norm"), e, 1e-5),
            out_proj: Linear::new(&(p / "out_proj"), e, d, residual_std(ctx.n_blocks), false),
            e,
            h,
            p: spec.head_dim,
            n,
            chunk: spec.chunk,
            path: ctx.kernel_path,
        }
    }

    /// Splits the projection `[..., 2E + 2N + H]` into `(z [..., E], xBC [..., E + 2N], dt [..., H])`.
    fn split(&self, zxbcdt: &Tensor) -> (Tensor, Tensor, Tensor) {
        let [z, xbc, dt] = split_last(zxbcdt, [self.e, self.e + 2 * self.n, self.h]);
        (z, xbc, dt)
    }

    /// Gate, norm, output projection: `y, z [..., E] -> [..., d]`.
    fn out(&self, y: &Tensor, z: &Tensor) -> Tensor {
        self.out_proj.forward(&self.norm.forward(&(y * z.silu())))
    }
}

impl SequenceMixer for Mamba2 {
    fn forward(&self, u: &Tensor) -> Tensor {
        let (b, t, _) = u.size3().expect("mamba2 input must be [B, T, d]");
        let (z, xbc, dt) = self.split(&self.in_proj.forward(u));
        let xbc = self.conv.forward(&xbc, self.path); // [B, T, E + 2N]
        let [x, bm, cm] = split_last(&xbc, [self.e, self.n, self.n]); // B, C: [B, T, N]
        let x = x.view([b, t, self.h, self.p]); // [B, T, H, P]
        let dt = (dt + &self.dt_bias).softplus(); // [B, T, H]
        let log_a = &dt * -self.a_log.exp(); // dt A: [B, T, H]
                                             // x dt in x's dtype: under bf16 autocast dt is float32 (a float32 bias), and a float32 product would
                                             // take SSD's kernel off its bfloat16 operands (float32 q, k, v keep the libtorch form)
        let xdt = &x * dt.to_kind(x.kind()).unsqueeze(-1);
        let (y, _) = ssd(&xdt, &log_a, &bm, &cm, None, self.chunk, self.path);
        let y = y + x * self.d.unsqueeze(-1); // D skip: [B, T, H, P]
        self.out(&y.reshape([b, t, self.e]), &z)
    }

    /// `[B, K-1, E + 2N]` convolution inputs and the `[B, H, P, N]` SSM state, zero.
    fn init_state(&self, batch: i64) -> State {
        let ssm = Tensor::zeros([batch, self.h, self.p, self.n], (self.d.kind(), self.d.device()));
        State { tensors: vec![self.conv.init_state(batch), ssm], position: 0 }
    }

    fn step(&self, u: &Tensor, state: &mut State) -> Tensor {
        let b = u.size()[0];
        let (z, xbc, dt) = self.split(&self.in_proj.forward(u));
        let (xbc, conv_state) = self.conv.step(&xbc, &state.tensors[0]);
        let x = xbc.narrow(-1, 0, self.e).view([b, self.h, self.p]);
        let (bm, cm) = (xbc.narrow(-1, self.e, self.n), xbc.narrow(-1, self.e + self.n, self.n));
        let dt = (dt + &self.dt_bias).softplus(); // [B, H]
        let log_a = &dt * -self.a_log.exp();
        let (y, h) = ssd_step(&(&x * dt.unsqueeze(-1)), &log_a, &bm, &cm, &state.tensors[1]);
        let y = y + x * self.d.unsqueeze(-1); // [B, H, P]
        state.tensors = vec![conv_state, h];
        state.position += 1;
        self.out(&y.reshape([b, self.e]), &z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LayerSpec;
    use crate::ssm::testing::{build, input_gradient_matches_finite_differences, param};

    #[test]
    fn init_follows_the_paper() {
        tch::manual_seed(0);
        let spec = Mamba2Spec { expand: 8, head_dim: 2, ..Mamba2Spec::default() }; // 64 heads
        let (vs, _m) = build(&LayerSpec::Mamba2(spec.clone()), KernelPath::Auto);
        let a = param(&vs, "A_log").exp();
        let (lo, hi) = (a.min().double_value(&[]), a.max().double_value(&[]));
        assert!((1.0..=16.0).contains(&lo) && hi <= 16.0 && hi - lo > 7.0, "A in [{lo}, {hi}]");
        assert_eq!(param(&vs, "D").min().double_value(&[]), 1.0);
        let dt = param(&vs, "dt.bias").softplus();
        let (lo, hi) = (dt.min().double_value(&[]), dt.max().double_value(&[]));
        assert!(lo >= spec.dt_min * (1.0 - 1e-5) && hi <= spec.dt_max * (1.0 + 1e-5), "dt in [{lo}, {hi}]");
    }

    #[test]
    fn gradient_of_the_chunked_path_matches_finite_differences_of_the_reference() {
        let spec = Mamba2Spec { d_state: 4, head_dim: 8, chunk: 2, ..Mamba2Spec::default() };
        input_gradient_matches_finite_differences(&LayerSpec::Mamba2(spec));
    }

    #[test]
    fn head_dim_must_divide_the_inner_width() {
        let spec = Mamba2Spec { head_dim: 5, ..Mamba2Spec::default() };
        let (param, message) = spec.check(16).unwrap_err();
        assert_eq!(param, "head_dim");
        assert!(message.contains("valid: 1, 2, 4, 8, 16, 32"), "{message}");
    }
}
