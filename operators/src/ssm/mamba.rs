//! Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
//! arXiv 2312.00752): the selective state-space block (the paper's Figure 3, Algorithm 2).
//!
//! ```text
//! [x, z] = in_proj(u)                               u: [B, T, d];  x, z: [B, T, E],  E = expand * d
//! x      = SiLU(conv1d_k(x))                        causal depthwise, k = d_conv taps
//! [δ, B, C] = x_proj(x)                             δ: [B, T, R];  B, C: [B, T, N]
//! dt     = softplus(dt_proj(δ))                     [B, T, E]  (dt_proj carries the dt bias)
//! A      = -exp(A_log)                              [E, N]
//! h_t    = exp(dt_t A) ⊙ h_{t-1} + (dt_t x_t) B_t^T,   y_t = h_t C_t + D ⊙ x_t       (kernels::selective_scan)
//! out    = out_proj(y ⊙ SiLU(z))                    [B, T, d]
//! ```
//! Accounting (E = expand*d, N = d_state, R = dt_rank = ceil(d/16) by default, K = d_conv):
//! - params: 2dE (in) + KE + E (conv) + E(R + 2N) (x_proj) + RE + E (dt_proj) + EN (A_log) + E (D) + Ed (out)
//! - FLOPs per token: 4dE + 2KE + 2E(R + 2N) + 2RE + 4EN (scan: update + readout) + 2Ed
//! - state: (K-1)E (convolution) + EN (SSM)
//!
//! Init, as the paper's code: A_log = log(1..N) in every channel (S4D-real), D = 1, dt_proj bias =
//! inverse-softplus of dt ~ log-uniform[dt_min, dt_max], dt_proj weight U(±R^-1/2) (dt_scale = 1), the
//! convolution as PyTorch's Conv1d; A_log, D, the dt bias and the conv bias are never decayed. in_proj and
//! x_proj N(0, 0.02^2) and out_proj N(0, (0.02/sqrt(2 n_blocks))^2), as every projection in this workbench.

use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, split_last, without_autocast, Linear, DECAY, INIT_STD, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use crate::ssm::{check_at_least, check_dt_range, dt_bias, ShortConv};
use kernels::selective_scan::{selective_scan, selective_scan_flops, selective_scan_step, SCAN_BLOCK};
use kernels::short_conv::Activation;
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// `mamba` parameters (YAML: `mamba: {d_state: 16, expand: 2}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MambaSpec {
    /// State size N per channel.
    #[serde(default = "default_d_state")]
    pub d_state: i64,
    /// Taps of the causal depthwise convolution.
    #[serde(default = "default_d_conv")]
    pub d_conv: i64,
    /// Inner width as a multiple of d_model.
    #[serde(default = "default_expand")]
    pub expand: i64,
    /// Rank of the dt projection; ceil(d_model / 16) when absent ("auto").
    #[serde(default)]
    pub dt_rank: Option<i64>,
    /// Smallest initial dt.
    #[serde(default = "default_dt_min")]
    pub dt_min: f64,
    /// Largest initial dt.
    #[serde(default = "default_dt_max")]
    pub dt_max: f64,
}

/// 16, the paper's N.
pub fn default_d_state() -> i64 {
    16
}
/// 4, the paper's convolution width.
pub fn default_d_conv() -> i64 {
    4
}
/// 2, the paper's expansion factor.
pub fn default_expand() -> i64 {
    2
}
/// 0.001, the paper's dt_min.
pub fn default_dt_min() -> f64 {
    0.001
}
/// 0.1, the paper's dt_max.
pub fn default_dt_max() -> f64 {
    0.1
}

impl Default for MambaSpec {
    fn default() -> Self {
        MambaSpec {
            d_state: default_d_state(),
            d_conv: default_d_conv(),
            expand: default_expand(),
            dt_rank: None,
            dt_min: default_dt_min(),
            dt_max: default_dt_max(),
        }
    }
}

impl MambaSpec {
    /// The dt projection's rank: `dt_rank`, or ceil(d/16).
    pub fn dt_rank(&self, d: i64) -> i64 {
        self.dt_rank.unwrap_or((d + 15) / 16)
    }
}

impl MixerSpec for MambaSpec {
    const NAME: &'static str = "mamba";
    const FAMILY: Family = Family::Ssm;
    const DESCRIPTION: &'static str =
        "Mamba: selective state-space scan (S6) with a short causal convolution, input-dependent dt, B, C and a SiLU gate";
    const PARAMS: crate::registry::ParamTable = &[
        ("d_state", "int", "state size N per channel"),
        ("d_conv", "int", "taps of the causal depthwise convolution"),
        ("expand", "int", "inner width E as a multiple of d_model"),
        ("dt_rank", "int?", "rank R of the dt projection; default: ceil(d_model / 16)"),
        ("dt_min", "float", "smallest initial dt (log-uniform init)"),
        ("dt_max", "float", "largest initial dt (log-uniform init)"),
    ];
    const FLOPS_FORMULA: &'static str =
        "4*d*E + 2*K*E + 2*E*(R + 2N) + 2*R*E + 4*E*N + 2*E*d, E = expand*d, R = dt_rank, K = d_conv, N = d_state";
    const STATE_FORMULA: &'static str = "(K-1)*E + E*N";

    fn check(&self, _d_model: i64) -> Result<(), (String, String)> {
        check_at_least("d_state", self.d_state, 1)?;
        check_at_least("d_conv", self.d_conv, 1)?;
        check_at_least("expand", self.expand, 1)?;
        if let Some(r) = self.dt_rank {
            check_at_least("dt_rank", r, 1)?;
        }
        check_dt_range(self.dt_min, self.dt_max)
    }

    fn params(&self, d: i64) -> i64 {
        let (e, n, r, k) = (self.expand * d, self.d_state, self.dt_rank(d), self.d_conv);
        Linear::params(d, 2 * e, false)
            + ShortConv::params(e, k, true)
            + Linear::params(e, r + 2 * n, false)
            + Linear::params(r, e, true)
            + e * n
            + e
            + Linear::params(e, d, false)
    }

    fn flops_per_token(&self, d: i64, _seq_len: i64) -> f64 {
        let (e, n, r, k) = (self.expand * d, self.d_state, self.dt_rank(d), self.d_conv);
        (4 * d * e + 2 * k * e + 2 * e * (r + 2 * n) + 2 * r * e + 2 * e * d) as f64 + selective_scan_flops(1, 1, e, n)
    }

    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        let e = self.expand * d;
        (self.d_conv - 1) * e + e * self.d_state
    }

    fn output_params() -> &'static [&'static str] {
        &["out_proj.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(Mamba::new(p, self, ctx)))
    }
}

/// The built mixer.
#[derive(Debug)]
pub struct Mamba {
    in_proj: Linear,
    conv: ShortConv,
    x_proj: Linear,
    dt_proj: Linear,
    /// `[E, N]`, A = -exp(A_log).
    a_log: Tensor,
    /// `[E]`, the skip.
    d: Tensor,
    out_proj: Linear,
    e: i64,
    n: i64,
    r: i64,
    path: KernelPath,
}

impl Mamba {
    pub fn new(p: &Path, spec: &MambaSpec, ctx: &BuildCtx) -> Mamba {
        let d = ctx.d_model;
        let (e, n, r) = (spec.expand * d, spec.d_state, spec.dt_rank(d));
        // dt_proj: weight U(±R^-1/2 * dt_scale) with dt_scale = 1; bias = inverse softplus of the initial dt.
        let dt_p = p / "dt_proj";
        let bound = (r as f64).powf(-0.5);
        let dt_proj = Linear {
            weight: dt_p.set_group(DECAY).var("weight", &[e, r], Init::Uniform { lo: -bound, up: bound }),
            bias: Some(dt_bias(&dt_p, e, spec.dt_min, spec.dt_max)),
        };
        // S4D-real: A_n = -(n + 1) in every channel.
        let a = Tensor::arange_start(1, n + 1, (Kind::Double, p.device())).repeat([e, 1]);
        Mamba {
            in_proj: Linear::new(&(p / "in_proj"), d, 2 * e, INIT_STD, false),
            conv: ShortConv::new(&(p / "conv"), e, spec.d_conv, true, Activation::Silu),
            x_proj: Linear::new(&(p / "x_proj"), e, r + 2 * n, INIT_STD, false),
            dt_proj,
            a_log: p.set_group(NO_DECAY).var_copy("A_log", &a.log()),
            d: p.set_group(NO_DECAY).var("D", &[e], Init::Const(1.0)),
            out_proj: Linear::new(&(p / "out_proj"), e, d, residual_std(ctx.n_blocks), false),
            e,
            n,
            r,
            path: ctx.kernel_path,
        }
    }

    /// The selective parameters from the convolved input `x [..., E]`: `(dt [..., E], B, C [..., N])`.
    fn selection(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let dbc = self.x_proj.forward(x); // [..., R + 2N]
        let [d, b, c] = split_last(&dbc, [self.r, self.n, self.n]);
        // dt [..., E] in the projection's dtype: under bf16 autocast the scan takes dt in bfloat16 (rounded
        // once, as mamba-ssm's kernel takes it), so a float32 softplus would only add copies and casts.
        let dt = self.dt_proj.forward(&d);
        (without_autocast(|| dt.softplus()), b, c)
    }
}

impl SequenceMixer for Mamba {
    fn forward(&self, u: &Tensor) -> Tensor {
        let xz = self.in_proj.forward(u); // [B, T, 2E]
        let [x, z] = split_last(&xz, [self.e, self.e]);
        let x = self.conv.forward(&x, self.path); // [B, T, E]
        let (dt, b, c) = self.selection(&x);
        let a = -self.a_log.exp(); // [E, N]
        let (y, _) = selective_scan(&x, &dt, &a, &b, &c, Some(&self.d), None, SCAN_BLOCK, self.path);
        self.out_proj.forward(&(y * z.silu()))
    }

    /// `[B, K-1, E]` convolution inputs and the `[B, E, N]` SSM state, zero.
    fn init_state(&self, batch: i64) -> State {
        let ssm = Tensor::zeros([batch, self.e, self.n], (self.d.kind(), self.d.device()));
        State { tensors: vec![self.conv.init_state(batch), ssm], position: 0 }
    }

    fn step(&self, u: &Tensor, state: &mut State) -> Tensor {
        let xz = self.in_proj.forward(u); // [B, 2E]
        let (x, z) = (xz.narrow(-1, 0, self.e), xz.narrow(-1, self.e, self.e));
        let (x, conv_state) = self.conv.step(&x, &state.tensors[0]);
        let (dt, b, c) = self.selection(&x);
        let (y, h) = selective_scan_step(&x, &dt, &(-self.a_log.exp()), &b, &c, Some(&self.d), &state.tensors[1]);
        state.tensors = vec![conv_state, h];
        state.position += 1;
        self.out_proj.forward(&(y * z.silu()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LayerSpec;
    use crate::ssm::testing::{build, input_gradient_matches_finite_differences, param, D};

    #[test]
    fn init_follows_the_paper() {
        tch::manual_seed(0);
        let spec = MambaSpec::default();
        let (vs, _m) = build(&LayerSpec::Mamba(spec.clone()), KernelPath::Auto);
        let e = spec.expand * D;
        // A = -(1..N) in every channel, D = 1.
        let a = param(&vs, "A_log").exp();
        let expect = Tensor::arange_start(1, spec.d_state + 1, (Kind::Double, tch::Device::Cpu)).repeat([e, 1]);
        assert!((a - expect).abs().max().double_value(&[]) < 1e-5);
        assert_eq!(param(&vs, "D").min().double_value(&[]), 1.0);
        // softplus(dt bias) = dt in [dt_min, dt_max], spread over the range (log-uniform).
        let dt = param(&vs, "dt_proj.bias").softplus();
        let (lo, hi) = (dt.min().double_value(&[]), dt.max().double_value(&[]));
        assert!(lo >= spec.dt_min * (1.0 - 1e-5) && hi <= spec.dt_max * (1.0 + 1e-5), "dt in [{lo}, {hi}]");
        assert!(hi / lo > 10.0, "dt should span the log range, got [{lo}, {hi}]");
        let bound = (spec.dt_rank(D) as f64).powf(-0.5);
        assert!(param(&vs, "dt_proj.weight").abs().max().double_value(&[]) <= bound);
    }

    #[test]
    fn gradient_of_the_fast_path_matches_finite_differences_of_the_reference() {
        input_gradient_matches_finite_differences(&LayerSpec::Mamba(MambaSpec::default()));
    }
}
