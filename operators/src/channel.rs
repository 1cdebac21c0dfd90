//! Channel mixers: position-wise feed-forward networks.
//!
//! - `mlp`: `y = act(x W_1 + b_1) W_2 + b_2`, hidden width h = round(expand * d) (Vaswani et al. 2017;
//!   GELU as in GPT-2).
//! - `swiglu`: `y = (silu(x W_gate) * (x W_up)) W_down` (Shazeer 2020, arXiv 2002.05202), hidden width
//!   h = round(expand * d) rounded up to a multiple of `multiple_of`; the default expand 8/3 keeps the
//!   parameter count of a 4x MLP, as LLaMA does.
//!
//! Accounting: mlp params 2*d*h (+ h + d biases), FLOPs per token 4*d*h; swiglu params 3*d*h, FLOPs per
//! token 6*d*h; no state.
//! Init: input projections N(0, 0.02^2); the output projection N(0, (0.02/sqrt(2 n_blocks))^2).

use crate::mixer::ChannelMixer;
use crate::nn::{residual_std, Linear, INIT_STD};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::Tensor;

/// The MLP's nonlinearity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Gelu,
    Relu,
    Silu,
}

/// `mlp` parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    /// Hidden width as a multiple of d_model.
    #[serde(default = "default_mlp_expand")]
    pub expand: f64,
    #[serde(default = "default_activation")]
    pub activation: Activation,
    #[serde(default = "default_true")]
    pub bias: bool,
}

/// 4, as in the original transformer and GPT-2.
pub fn default_mlp_expand() -> f64 {
    4.0
}
/// GELU, as in GPT-2.
pub fn default_activation() -> Activation {
    Activation::Gelu
}
fn default_true() -> bool {
    true
}

impl Default for MlpSpec {
    fn default() -> Self {
        MlpSpec { expand: default_mlp_expand(), activation: default_activation(), bias: true }
    }
}

fn hidden(expand: f64, d: i64, multiple_of: i64) -> i64 {
    let h = (expand * d as f64).round() as i64;
    let m = multiple_of.max(1);
    ((h + m - 1) / m * m).max(1)
}

fn check_expand(expand: f64) -> Result<(), (String, String)> {
    if !(expand > 0.0) || !expand.is_finite() {
        return Err(("expand".into(), format!("must be a positive number, got {expand}")));
    }
    Ok(())
}

impl MixerSpec for MlpSpec {
    const NAME: &'static str = "mlp";
    const FAMILY: Family = Family::Channel;
    const STATE_FORMULA: &'static str = "0";
    const DESCRIPTION: &'static str = "two-layer feed-forward network with a GELU/ReLU/SiLU nonlinearity";
    const PARAMS: crate::registry::ParamTable = &[
        ("expand", "float", "hidden width as a multiple of d_model"),
        ("activation", "gelu|relu|silu", "nonlinearity"),
        ("bias", "bool", "biases on both projections"),
    ];
    const FLOPS_FORMULA: &'static str = "4*d*h, h = round(expand*d)";

    fn check(&self, _d: i64) -> Result<(), (String, String)> {
        check_expand(self.expand)
    }
    fn params(&self, d: i64) -> i64 {
        let h = self.hidden(d);
        Linear::params(d, h, self.bias) + Linear::params(h, d, self.bias)
    }
    fn flops_per_token(&self, d: i64, _seq_len: i64) -> f64 {
        4.0 * (d * self.hidden(d)) as f64
    }
    fn state_size(&self, _d: i64, _seq_len: i64) -> i64 {
        0
    }
    fn output_params() -> &'static [&'static str] {
        &["down.weight", "down.bias"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Channel(Box::new(Mlp::new(p, self, ctx)))
    }
}

impl MlpSpec {
    pub fn hidden(&self, d: i64) -> i64 {
        hidden(self.expand, d, 1)
    }
}

/// `swiglu` parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwigluSpec {
    /// Hidden width as a multiple of d_model before rounding.
    #[serde(default = "default_swiglu_expand")]
    pub expand: f64,
    /// The hidden width is rounded up to a multiple of this.
    #[serde(default = "default_multiple_of")]
    pub multiple_of: i64,
}

/// 8/3: the same parameters as a 4x MLP with three matrices instead of two.
pub fn default_swiglu_expand() -> f64 {
    8.0 / 3.0
}
/// 8: hardware-friendly widths at the small sizes of CPU sweeps.
pub fn default_multiple_of() -> i64 {
    8
}

impl Default for SwigluSpec {
    fn default() -> Self {
        SwigluSpec { expand: default_swiglu_expand(), multiple_of: default_multiple_of() }
    }
}

impl MixerSpec for SwigluSpec {
    const NAME: &'static str = "swiglu";
    const FAMILY: Family = Family::Channel;
    const STATE_FORMULA: &'static str = "0";
    const DESCRIPTION: &'static str =
        "gated feed-forward network silu(x W_gate) * (x W_up) -> W_down (LLaMA's channel mixer)";
    const PARAMS: crate::registry::ParamTable = &[
        ("expand", "float", "hidden width as a multiple of d_model before rounding"),
        ("multiple_of", "int", "round the hidden width up to a multiple of this"),
    ];
    const FLOPS_FORMULA: &'static str = "6*d*h, h = roundup(expand*d, multiple_of)";

    fn check(&self, _d: i64) -> Result<(), (String, String)> {
        check_expand(self.expand)?;
        if self.multiple_of < 1 {
            return Err(("multiple_of".into(), format!("must be at least 1, got {}", self.multiple_of)));
        }
        Ok(())
    }
    fn params(&self, d: i64) -> i64 {
        3 * d * self.hidden(d)
    }
    fn flops_per_token(&self, d: i64, _seq_len: i64) -> f64 {
        6.0 * (d * self.hidden(d)) as f64
    }
    fn state_size(&self, _d: i64, _seq_len: i64) -> i64 {
        0
    }
    fn output_params() -> &'static [&'static str] {
        &["down.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Channel(Box::new(Swiglu::new(p, self, ctx)))
    }
}

impl SwigluSpec {
    pub fn hidden(&self, d: i64) -> i64 {
        hidden(self.expand, d, self.multiple_of)
    }
}

/// The built MLP.
#[derive(Debug)]
pub struct Mlp {
    up: Linear,
    down: Linear,
    activation: Activation,
}

impl Mlp {
    pub fn new(p: &Path, spec: &MlpSpec, ctx: &BuildCtx) -> Mlp {
        let (d, h) = (ctx.d_model, spec.hidden(ctx.d_model));
        Mlp {
            up: Linear::new(&(p / "up"), d, h, INIT_STD, spec.bias),
            down: Linear::new(&(p / "down"), h, d, residual_std(ctx.n_blocks), spec.bias),
            activation: spec.activation,
        }
    }
}

impl ChannelMixer for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.up.forward(x); // [B, T, h]
        let h = match self.activation {
            Activation::Gelu => h.gelu("none"),
            Activation::Relu => h.relu(),
            Activation::Silu => h.silu(),
        };
        self.down.forward(&h) // [B, T, d]
    }
}

/// The built SwiGLU.
#[derive(Debug)]
pub struct Swiglu {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Swiglu {
    pub fn new(p: &Path, spec: &SwigluSpec, ctx: &BuildCtx) -> Swiglu {
        let (d, h) = (ctx.d_model, spec.hidden(ctx.d_model));
        Swiglu {
            gate: Linear::new(&(p / "gate"), d, h, INIT_STD, false),
            up: Linear::new(&(p / "up"), d, h, INIT_STD, false),
            down: Linear::new(&(p / "down"), h, d, residual_std(ctx.n_blocks), false),
        }
    }
}

impl ChannelMixer for Swiglu {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.gate.forward(x).silu() * self.up.forward(x); // [B, T, h]
        self.down.forward(&h)
    }
}
