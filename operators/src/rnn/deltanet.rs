//! DeltaNet (Yang, Wang, Zhang, Shen & Kim 2024, "Parallelizing Linear Transformers with the Delta Rule over
//! Sequence Length", arXiv 2406.06484) and Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, "Gated Delta
//! Networks: Improving Mamba2 with Delta Rule", arXiv 2412.06464), as their flash-linear-attention layers.
//!
//! ```text
//! q, k, v = SiLU(conv1d_k([x W_q, x W_k, x W_v]))      x: [B, T, d];  q, k: [B, H, T, Dk];  v: [B, H, T, Dv]
//! q, k    = q / |q|, k / |k|  (L2 per head);  q *= Dk^-1/2
//! β       = σ(x W_β)                                   [B, H, T]
//! α       = exp(-exp(A_log) softplus(x W_α + dt_bias)) gated_deltanet only (Mamba-2's decay)
//! S_t     = α_t (I - β_t k_t k_t^T) S_{t-1} + β_t k_t v_t^T,  o_t = S_t^T q_t     (kernels::delta_rule)
//! o       = RMSNorm(o) per head  [⊙ SiLU(x W_g) when `gate`]
//! out     = o W_o                                       [B, T, d]
//! ```
//! Accounting (H = heads, Dk = head_dim, Dv = expand_v Dk, K = d_conv, L = min(chunk, T), Tp = T rounded up
//! to a multiple of L; [α] only for gated_deltanet, [g] only with `gate`):
//! - params: d(2H Dk + H Dv + H) + K(2H Dk + H Dv) + Dv (norm) + H Dv d  [+ dH + 2H]  [+ d H Dv]
//! - FLOPs per token: 2d(2H Dk + H Dv + H) + 2K(2H Dk + H Dv) + 2 H Dv d  [+ 2dH]  [+ 2d H Dv]
//!   + (Tp/L) H [4 L^2 Dk + L(L-1)(Dk + Dv) + 6 L Dk Dv + 2 L^2 Dv + 2 Dk Dv] / T   (the chunked form)
//! - state: (K-1)(2H Dk + H Dv) (convolution) + H Dk Dv
//!
//! Init: projections N(0, 0.02^2), W_o scaled by depth; convolution as PyTorch's Conv1d, without bias (fla);
//! Gated DeltaNet's A ~ U[1, 16] (A_log = log A) and dt bias = inverse softplus of dt ~ log-uniform[dt_min,
//! dt_max], as Mamba-2; A_log and the dt bias never decay.

use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, split_last, Linear, RmsNorm, INIT_STD, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use crate::ssm::mamba::{default_dt_max, default_dt_min};
use crate::ssm::{check_at_least, check_dt_range, dt_bias, ShortConv};
use kernels::delta_rule::{delta_rule, delta_rule_flops, delta_rule_step};
use kernels::short_conv::Activation;
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::{Kind, Tensor};

/// `deltanet` parameters (YAML: `deltanet: {heads: 4, chunk: 64}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeltaNetSpec {
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Key width per head; d_model / heads when absent.
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// Value width as a multiple of head_dim.
    #[serde(default = "default_expand_v_deltanet")]
    pub expand_v: i64,
    #[serde(default = "default_d_conv")]
    pub d_conv: i64,
    /// Chunk length of the chunked (UT-transform) form.
    #[serde(default = "default_chunk")]
    pub chunk: i64,
    /// Output gate SiLU(x W_g) after the norm.
    #[serde(default)]
    pub gate: bool,
}

/// `gated_deltanet` parameters (YAML: `gated_deltanet: {heads: 4}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatedDeltaNetSpec {
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Key width per head; d_model / heads when absent.
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// Value width as a multiple of head_dim.
    #[serde(default = "default_expand_v_gated")]
    pub expand_v: i64,
    #[serde(default = "default_d_conv")]
    pub d_conv: i64,
    /// Chunk length of the chunked (UT-transform) form.
    #[serde(default = "default_chunk")]
    pub chunk: i64,
    /// Output gate SiLU(x W_g) after the norm.
    #[serde(default = "default_true")]
    pub gate: bool,
    /// Smallest initial dt of the decay.
    #[serde(default = "default_dt_min")]
    pub dt_min: f64,
    /// Largest initial dt of the decay.
    #[serde(default = "default_dt_max")]
    pub dt_max: f64,
}

/// 4 heads: head widths of 16-64 at the widths of CPU sweeps.
pub fn default_heads() -> i64 {
    4
}
/// 1, as fla's DeltaNet.
pub fn default_expand_v_deltanet() -> i64 {
    1
}
/// 2, as fla's Gated DeltaNet.
pub fn default_expand_v_gated() -> i64 {
    2
}
/// 4, the papers' short convolution.
pub fn default_d_conv() -> i64 {
    4
}
/// 64, as fla's chunked kernels.
pub fn default_chunk() -> i64 {
    64
}
fn default_true() -> bool {
    true
}

impl Default for DeltaNetSpec {
    fn default() -> Self {
        DeltaNetSpec {
            heads: default_heads(),
            head_dim: None,
            expand_v: default_expand_v_deltanet(),
            d_conv: default_d_conv(),
            chunk: default_chunk(),
            gate: false,
        }
    }
}

impl Default for GatedDeltaNetSpec {
    fn default() -> Self {
        GatedDeltaNetSpec {
            heads: default_heads(),
            head_dim: None,
            expand_v: default_expand_v_gated(),
            d_conv: default_d_conv(),
            chunk: default_chunk(),
            gate: true,
            dt_min: default_dt_min(),
            dt_max: default_dt_max(),
        }
    }
}

/// What both mixers are built from.
#[derive(Clone, Copy, Debug)]
struct Config {
    heads: i64,
    dk: i64,
    dv: i64,
    d_conv: i64,
    chunk: i64,
    gate: bool,
    /// `(dt_min, dt_max)` for Gated DeltaNet's decay.
    decay: Option<(f64, f64)>,
}

impl Config {
    fn check(&self, head_dim: Option<i64>, expand_v: i64, d_model: i64) -> Result<(), (String, String)> {
        check_at_least("heads", self.heads, 1)?;
        if head_dim.is_none() && d_model % self.heads != 0 {
            let valid: Vec<String> =
                (1..=d_model.min(64)).filter(|h| d_model % h == 0).map(|h| h.to_string()).collect();
            return Err((
                "heads".into(),
                format!(
                    "d_model {d_model} is not divisible by heads {}; valid: {} (or set head_dim)",
                    self.heads,
                    valid.join(", ")
                ),
            ));
        }
        if let Some(hd) = head_dim {
            check_at_least("head_dim", hd, 1)?;
        }
        check_at_least("expand_v", expand_v, 1)?;
        check_at_least("d_conv", self.d_conv, 1)?;
        check_at_least("chunk", self.chunk, 1)?;
        if let Some((lo, hi)) = self.decay {
            check_dt_range(lo, hi)?;
        }
        Ok(())
    }

    fn qkv_width(&self) -> i64 {
        self.heads * (2 * self.dk + self.dv)
    }

    fn params(&self, d: i64) -> i64 {
        let (h, dv) = (self.heads, self.dv);
        let mut n = Linear::params(d, self.qkv_width() + h, false)
            + ShortConv::params(self.qkv_width(), self.d_conv, false)
            + dv
            + Linear::params(h * dv, d, false);
        if self.decay.is_some() {
            n += Linear::params(d, h, false) + 2 * h;
        }
        if self.gate {
            n += Linear::params(d, h * dv, false);
        }
        n
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let (h, dv, t) = (self.heads, self.dv, seq_len.max(1));
        let mut dense = 2 * d * (self.qkv_width() + h) + 2 * self.d_conv * self.qkv_width() + 2 * h * dv * d;
        if self.decay.is_some() {
            dense += 2 * d * h;
        }
        if self.gate {
            dense += 2 * d * h * dv;
        }
        dense as f64 + delta_rule_flops(1, h, t, self.dk, dv, self.chunk) / t as f64
    }

    fn state_size(&self) -> i64 {
        (self.d_conv - 1) * self.qkv_width() + self.heads * self.dk * self.dv
    }
}

impl DeltaNetSpec {
    fn config(&self, d: i64) -> Config {
        let dk = self.head_dim.unwrap_or(d / self.heads.max(1));
        Config {
            heads: self.heads,
            dk,
            dv: dk * self.expand_v,
            d_conv: self.d_conv,
            chunk: self.chunk,
            gate: self.gate,
            decay: None,
        }
    }
}

impl GatedDeltaNetSpec {
    fn config(&self, d: i64) -> Config {
        let dk = self.head_dim.unwrap_or(d / self.heads.max(1));
        Config {
            heads: self.heads,
            dk,
            dv: dk * self.expand_v,
            d_conv: self.d_conv,
            chunk: self.chunk,
            gate: self.gate,
            decay: Some((self.dt_min, self.dt_max)),
        }
    }
}

const COMMON_PARAMS: [(&str, &str, &str); 6] = [
    ("heads", "int", "heads H"),
    ("head_dim", "int?", "key width Dk per head; default: d_model / heads"),
    ("expand_v", "int", "value width Dv as a multiple of head_dim"),
    ("d_conv", "int", "taps of the short convolution on q, k, v"),
    ("chunk", "int", "chunk length L of the chunked (UT-transform) form"),
    ("gate", "bool", "output gate SiLU(x W_g) after the per-head RMSNorm"),
];

impl MixerSpec for DeltaNetSpec {
    const NAME: &'static str = "deltanet";
    const FAMILY: Family = Family::GatedRnn;
    const DESCRIPTION: &'static str =
        "DeltaNet: linear attention with the delta-rule update, L2-normalised q, k after a short conv, chunked UT-transform form";
    const PARAMS: crate::registry::ParamTable = &COMMON_PARAMS;
    const FLOPS_FORMULA: &'static str = "2d(H(2Dk + Dv) + H) + 2K H(2Dk + Dv) + 2H Dv d [+ 2d H Dv with gate] \
         + (Tp/L) H [4L^2 Dk + L(L-1)(Dk+Dv) + 6L Dk Dv + 2L^2 Dv + 2Dk Dv]/T, L = min(chunk, T), Tp = T rounded up to L";
    const STATE_FORMULA: &'static str = "(K-1)*H*(2Dk + Dv) + H*Dk*Dv";

    fn check(&self, d_model: i64) -> Result<(), (String, String)> {
        self.config(d_model).check(self.head_dim, self.expand_v, d_model)
    }
    fn params(&self, d: i64) -> i64 {
        self.config(d).params(d)
    }
    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        self.config(d).flops_per_token(d, seq_len)
    }
    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        self.config(d).state_size()
    }
    fn output_params() -> &'static [&'static str] {
        &["o_proj.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(DeltaNet::new(p, &self.config(ctx.d_model), ctx)))
    }
}

impl MixerSpec for GatedDeltaNetSpec {
    const NAME: &'static str = "gated_deltanet";
    const FAMILY: Family = Family::GatedRnn;
    const DESCRIPTION: &'static str =
        "Gated DeltaNet: the delta rule with a Mamba-2-style data-dependent decay per head, output gate, chunked";
    const PARAMS: crate::registry::ParamTable = &[
        COMMON_PARAMS[0],
        COMMON_PARAMS[1],
        COMMON_PARAMS[2],
        COMMON_PARAMS[3],
        COMMON_PARAMS[4],
        COMMON_PARAMS[5],
        ("dt_min", "float", "smallest initial dt of the decay (log-uniform init)"),
        ("dt_max", "float", "largest initial dt of the decay (log-uniform init)"),
    ];
    const FLOPS_FORMULA: &'static str = "2d(H(2Dk + Dv) + 2H) + 2K H(2Dk + Dv) + 2H Dv d [+ 2d H Dv with gate] \
         + (Tp/L) H [4L^2 Dk + L(L-1)(Dk+Dv) + 6L Dk Dv + 2L^2 Dv + 2Dk Dv]/T, L = min(chunk, T), Tp = T rounded up to L";
    const STATE_FORMULA: &'static str = "(K-1)*H*(2Dk + Dv) + H*Dk*Dv";

    fn check(&self, d_model: i64) -> Result<(), (String, String)> {
        self.config(d_model).check(self.head_dim, self.expand_v, d_model)
    }
    fn params(&self, d: i64) -> i64 {
        self.config(d).params(d)
    }
    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        self.config(d).flops_per_token(d, seq_len)
    }
    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        self.config(d).state_size()
    }
    fn output_params() -> &'static [&'static str] {
        &["o_proj.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(DeltaNet::new(p, &self.config(ctx.d_model), ctx)))
    }
}

/// Mamba-2's decay: `log α = -exp(A_log) softplus(x W_α + dt_bias)`.
#[derive(Debug)]
struct Decay {
    a_proj: Linear,
    a_log: Tensor,
    dt_bias: Tensor,
}

/// The built mixer (both variants).
#[derive(Debug)]
pub struct DeltaNet {
    /// `[q | k | v | β]` in one projection.
    in_proj: Linear,
    conv: ShortConv,
    decay: Option<Decay>,
    g_proj: Option<Linear>,
    o_norm: RmsNorm,
    o_proj: Linear,
    cfg: Config,
    path: KernelPath,
}

impl DeltaNet {
    fn new(p: &Path, cfg: &Config, ctx: &BuildCtx) -> DeltaNet {
        let (d, h) = (ctx.d_model, cfg.heads);
        let decay = cfg.decay.map(|(dt_min, dt_max)| {
            let a = Tensor::rand([h], (Kind::Double, p.device())) * 15.0 + 1.0; // A ~ U[1, 16]
            Decay {
                a_proj: Linear::new(&(p / "a_proj"), d, h, INIT_STD, false),
                a_log: p.set_group(NO_DECAY).var_copy("A_log", &a.log()),
                dt_bias: dt_bias(&(p / "dt"), h, dt_min, dt_max),
            }
        });
        DeltaNet {
            in_proj: Linear::new(&(p / "in_proj"), d, cfg.qkv_width() + h, INIT_STD, false),
            conv: ShortConv::new(&(p / "conv"), cfg.qkv_width(), cfg.d_conv, false, Activation::Silu),
            decay,
            g_proj: cfg.gate.then(|| Linear::new(&(p / "g_proj"), d, h * cfg.dv, INIT_STD, false)),
            o_norm: RmsNorm::new(&(p / "o_norm"), cfg.dv, 1e-5),
            o_proj: Linear::new(&(p / "o_proj"), h * cfg.dv, d, residual_std(ctx.n_blocks), false),
            cfg: *cfg,
            path: ctx.kernel_path,
        }
    }

    /// From `x [..., d]` (already projected to `[qkv | β]` and convolved): `q, k [..., H, Dk]` (unit, q scaled),
    /// `v [..., H, Dv]`, `β [..., H]`.
    fn heads(&self, qkv: &Tensor, beta: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        let (h, dk, dv) = (self.cfg.heads, self.cfg.dk, self.cfg.dv);
        let split = |start: i64, width: i64| {
            let mut shape = qkv.size();
            let last = shape.len() - 1;
            shape[last] = h;
            shape.push(width);
            qkv.narrow(-1, start * h, h * width).reshape(shape.as_slice())
        };
        let unit = |x: Tensor| &x * (x.square().sum_dim_intlist(-1, true, x.kind()) + 1e-6).rsqrt();
        let q = unit(split(0, dk)) * (dk as f64).powf(-0.5);
        let k = unit(split(dk, dk));
        let v = qkv.narrow(-1, 2 * h * dk, h * dv);
        let mut vshape = v.size();
        let last = vshape.len() - 1;
        vshape[last] = h;
        vshape.push(dv);
        (q, k, v.reshape(vshape.as_slice()), beta.sigmoid())
    }

    /// `log α [..., H]` for Gated DeltaNet.
    fn log_decay(&self, x: &Tensor) -> Option<Tensor> {
        self.decay.as_ref().map(|g| (g.a_proj.forward(x) + &g.dt_bias).softplus() * -g.a_log.exp())
    }

    /// `o [..., H, Dv]` -> norm, gate, output projection `[..., d]`.
    fn out(&self, o: &Tensor, x: &Tensor) -> Tensor {
        let o = self.o_norm.forward(o);
        let o = match &self.g_proj {
            Some(g) => {
                let gate = g.forward(x).silu().reshape(o.size().as_slice());
                o * gate
            }
            None => o,
        };
        self.o_proj.forward(&o.flatten(-2, -1))
    }
}

impl SequenceMixer for DeltaNet {
    fn forward(&self, x: &Tensor) -> Tensor {
        let w = self.cfg.qkv_width();
        let proj = self.in_proj.forward(x); // [B, T, qkv + H]
        let [qkv, beta] = split_last(&proj, [w, self.cfg.heads]);
        let qkv = self.conv.forward(&qkv, self.path);
        let (q, k, v, beta) = self.heads(&qkv, &beta);
        let to_heads = |t: Tensor| t.transpose(1, 2); // [B, T, H, ...] -> [B, H, T, ...]
        let decay = self.log_decay(x).map(to_heads);
        let (o, _) = delta_rule(
            &to_heads(q),
            &to_heads(k),
            &to_heads(v),
            &to_heads(beta),
            decay.as_ref(),
            None,
            self.cfg.chunk,
            self.path,
        ); // [B, H, T, Dv]
        self.out(&o.transpose(1, 2), x)
    }

    /// `[B, K-1, H(2Dk + Dv)]` convolution inputs and the `[B, H, Dk, Dv]` state, zero.
    fn init_state(&self, batch: i64) -> State {
        let w = &self.o_norm.weight;
        let s = Tensor::zeros([batch, self.cfg.heads, self.cfg.dk, self.cfg.dv], (w.kind(), w.device()));
        State { tensors: vec![self.conv.init_state(batch), s], position: 0 }
    }

    fn step(&self, x: &Tensor, state: &mut State) -> Tensor {
        let w = self.cfg.qkv_width();
        let proj = self.in_proj.forward(x); // [B, qkv + H]
        let (qkv, conv_state) = self.conv.step(&proj.narrow(-1, 0, w), &state.tensors[0]);
        let (q, k, v, beta) = self.heads(&qkv, &proj.narrow(-1, w, self.cfg.heads));
        let decay = self.log_decay(x);
        let (o, s) = delta_rule_step(&q, &k, &v, &beta, decay.as_ref(), &state.tensors[1]); // [B, H, Dv]
        state.tensors = vec![conv_state, s];
        state.position += 1;
        self.out(&o, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LayerSpec;
    use crate::ssm::testing::{build, input_gradient_matches_finite_differences, param};

    #[test]
    fn gradient_of_the_chunked_path_matches_finite_differences_of_the_recurrence() {
        input_gradient_matches_finite_differences(&LayerSpec::Deltanet(DeltaNetSpec {
            chunk: 2,
            ..DeltaNetSpec::default()
        }));
        let gated = GatedDeltaNetSpec { chunk: 3, ..GatedDeltaNetSpec::default() };
        input_gradient_matches_finite_differences(&LayerSpec::GatedDeltanet(gated));
    }

    #[test]
    fn gated_decay_starts_as_mamba2() {
        tch::manual_seed(0);
        let spec = GatedDeltaNetSpec { heads: 16, head_dim: Some(1), ..GatedDeltaNetSpec::default() };
        let (vs, _m) = build(&LayerSpec::GatedDeltanet(spec.clone()), KernelPath::Auto);
        let a = param(&vs, "A_log").exp();
        assert!(a.min().double_value(&[]) >= 1.0 && a.max().double_value(&[]) <= 16.0);
        let dt = param(&vs, "dt.bias").softplus();
        assert!(dt.min().double_value(&[]) >= spec.dt_min * (1.0 - 1e-5));
        assert!(dt.max().double_value(&[]) <= spec.dt_max * (1.0 + 1e-5));
    }

    #[test]
    fn heads_must_divide_d_model_unless_head_dim_is_set() {
        let spec = DeltaNetSpec { heads: 3, ..DeltaNetSpec::default() };
        assert_eq!(spec.check(16).unwrap_err().0, "heads");
        assert!(DeltaNetSpec { heads: 3, head_dim: Some(5), ..DeltaNetSpec::default() }.check(16).is_ok());
    }
}
