//! Griffin's recurrent block with the Real-Gated Linear Recurrent Unit (De et al. 2024, "Griffin: Mixing
//! Gated Linear Recurrences with Local Attention for Efficient Language Models", arXiv 2402.19427, section
//! 2.4 and Figure 2).
//!
//! ```text
//! gate  = GeLU(x W_y)                                   x: [B, T, d];  [B, T, E], E = lru_width
//! u     = conv1d_k(x W_x)                               causal depthwise with bias, no activation
//! r_t   = σ(u_t W_a + b_a),  i_t = σ(u_t W_i + b_i)     block-diagonal over `heads` blocks of P = E/heads
//! log a_t = -c r_t softplus(-Λ)                          a_t = a^(c r_t), a = σ(Λ), c = 8
//! h_t   = a_t ⊙ h_{t-1} + sqrt(1 - a_t^2) ⊙ (i_t ⊙ u_t)  (kernels::selective_scan::linear_scan)
//! out   = (h ⊙ gate) W_out                              [B, T, d]
//! ```
//! GeLU is the tanh approximation (as the reference JAX code). `sqrt(1 - a_t^2)` is computed as
//! `sqrt(max(-expm1(2 log a_t), 2.5e-7))`: the floor bounds its gradient by 1000, as the reference code's
//! clipped square-root derivative does.
//!
//! Accounting (E = lru_width, P = E/heads, K = d_conv):
//! - params: 2dE (W_y, W_x) + KE + E (conv) + 2(E P + E) (gates) + E (Λ) + Ed (W_out)
//! - FLOPs per token: 4dE + 2KE + 4EP (gates) + 2E (state update) + 2Ed
//! - state: (K-1)E (convolution) + E (h)
//!
//! Init: Λ such that a^c ~ U[0.9, 0.999] (the paper; Λ never decays); gate blocks N(0, 1/P) with zero
//! biases (the reference code's LeCun normal); conv as PyTorch's Conv1d; W_y, W_x N(0, 0.02^2), W_out
//! scaled by depth. No biases on the dense projections (the workbench's convention; the paper leaves them
//! unspecified).

use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, Linear, DECAY, INIT_STD, NO_DECAY};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use crate::ssm::{check_at_least, ShortConv};
use kernels::flop_count;
use kernels::selective_scan::{auto_chunk, linear_scan};
use kernels::short_conv::Activation;
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// The RG-LRU's fixed temperature c.
pub const C: f64 = 8.0;

/// `rglru` parameters (YAML: `rglru: {heads: 4}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RglruSpec {
    /// Recurrent width E; d_model when absent.
    #[serde(default)]
    pub lru_width: Option<i64>,
    /// Blocks of the block-diagonal gate matrices.
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Taps of the temporal convolution.
    #[serde(default = "default_d_conv")]
    pub d_conv: i64,
}

/// 4 blocks, for head widths of 16-64 at the widths of CPU sweeps.
pub fn default_heads() -> i64 {
    4
}
/// 4, the paper's temporal convolution width.
pub fn default_d_conv() -> i64 {
    4
}

impl Default for RglruSpec {
    fn default() -> Self {
        RglruSpec { lru_width: None, heads: default_heads(), d_conv: default_d_conv() }
    }
}

impl RglruSpec {
    /// `(E, P)`: recurrent width and gate block width.
    fn dims(&self, d: i64) -> (i64, i64) {
        let e = self.lru_width.unwrap_or(d);
        (e, e / self.heads.max(1))
    }
}

impl MixerSpec for RglruSpec {
    const NAME: &'static str = "rglru";
    const FAMILY: Family = Family::GatedRnn;
    const DESCRIPTION: &'static str =
        "Griffin's recurrent block: GeLU gate branch times conv1d + RG-LRU (real-gated diagonal recurrence) branch";
    const PARAMS: crate::registry::ParamTable = &[
        ("lru_width", "int?", "recurrent width E; default: d_model"),
        ("heads", "int", "blocks of the block-diagonal recurrence and input gates (must divide E)"),
        ("d_conv", "int", "taps of the temporal convolution"),
    ];
    const FLOPS_FORMULA: &'static str = "4*d*E + 2*K*E + 4*E*P + 2*E + 2*E*d, E = lru_width, P = E/heads, K = d_conv";
    const STATE_FORMULA: &'static str = "(K-1)*E + E";

    fn check(&self, d_model: i64) -> Result<(), (String, String)> {
        check_at_least("heads", self.heads, 1)?;
        check_at_least("d_conv", self.d_conv, 1)?;
        if let Some(e) = self.lru_width {
            check_at_least("lru_width", e, 1)?;
        }
        let (e, _) = self.dims(d_model);
        if e % self.heads != 0 {
            let valid: Vec<String> = (1..=e.min(64)).filter(|h| e % h == 0).map(|h| h.to_string()).collect();
            return Err((
                "heads".into(),
                format!("must divide the recurrent width {e}, got {}; valid: {}", self.heads, valid.join(", ")),
            ));
        }
        Ok(())
    }

    fn params(&self, d: i64) -> i64 {
        let (e, p) = self.dims(d);
        2 * Linear::params(d, e, false)
            + ShortConv::params(e, self.d_conv, true)
            + 2 * (e * p + e)
            + e
            + Linear::params(e, d, false)
    }

    fn flops_per_token(&self, d: i64, _seq_len: i64) -> f64 {
        let (e, p) = self.dims(d);
        (4 * d * e + 2 * self.d_conv * e + 4 * e * p + 2 * e + 2 * e * d) as f64
    }

    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        let (e, _) = self.dims(d);
        (self.d_conv - 1) * e + e
    }

    fn output_params() -> &'static [&'static str] {
        &["linear_out.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(Rglru::new(p, self, ctx)))
    }
}

/// `y = x W + b` with `W` block-diagonal: `weight [heads, P, P]`, `bias [heads * P]`.
#[derive(Debug)]
struct BlockDiagonal {
    weight: Tensor,
    bias: Tensor,
}

impl BlockDiagonal {
    fn new(p: &Path, heads: i64, width: i64) -> BlockDiagonal {
        let std = (1.0 / width as f64).sqrt();
        BlockDiagonal {
            weight: p.set_group(DECAY).var("weight", &[heads, width, width], Init::Randn { mean: 0.0, stdev: std }),
            bias: p.set_group(NO_DECAY).var("bias", &[heads * width], Init::Const(0.0)),
        }
    }

    /// `x [..., heads * P] -> [..., heads * P]`; records 2 P per output element.
    fn forward(&self, x: &Tensor) -> Tensor {
        let (h, pw) = (self.weight.size()[0], self.weight.size()[1]);
        let mut shape = x.size();
        let last = shape.len() - 1;
        shape[last] = h;
        shape.push(1);
        shape.push(pw);
        let y = flop_count::matmul(&x.reshape(shape.as_slice()), &self.weight); // [..., H, 1, P]
        y.flatten(-3, -1) + &self.bias
    }
}

/// The built mixer.
#[derive(Debug)]
pub struct Rglru {
    linear_y: Linear,
    linear_x: Linear,
    conv: ShortConv,
    gate_a: BlockDiagonal,
    gate_x: BlockDiagonal,
    /// `[E]`, a = σ(Λ).
    a_param: Tensor,
    linear_out: Linear,
    e: i64,
    path: KernelPath,
}

impl Rglru {
    pub fn new(p: &Path, spec: &RglruSpec, ctx: &BuildCtx) -> Rglru {
        let d = ctx.d_model;
        let (e, pw) = spec.dims(d);
        // a^c ~ U[0.9, 0.999]  =>  a = s^(1/c),  Λ = logit(a).
        let s = Tensor::rand([e], (Kind::Double, p.device())) * 0.099 + 0.9;
        let a = s.pow_tensor_scalar(1.0 / C);
        let lambda = a.log() - (-&a).log1p();
        Rglru {
            linear_y: Linear::new(&(p / "linear_y"), d, e, INIT_STD, false),
            linear_x: Linear::new(&(p / "linear_x"), d, e, INIT_STD, false),
            conv: ShortConv::new(&(p / "conv"), e, spec.d_conv, true, Activation::Identity),
            gate_a: BlockDiagonal::new(&(p / "gate_a"), spec.heads, pw),
            gate_x: BlockDiagonal::new(&(p / "gate_x"), spec.heads, pw),
            a_param: p.set_group(NO_DECAY).var_copy("a_param", &lambda),
            linear_out: Linear::new(&(p / "linear_out"), e, d, residual_std(ctx.n_blocks), false),
            e,
            path: ctx.kernel_path,
        }
    }

    /// The RG-LRU's `(log a_t, sqrt(1 - a_t^2) ⊙ i_t ⊙ u_t)` for the convolved input `u [..., E]`.
    fn recurrence_inputs(&self, u: &Tensor) -> (Tensor, Tensor) {
        let r = self.gate_a.forward(u).sigmoid();
        let i = self.gate_x.forward(u).sigmoid();
        let log_a = (-&self.a_param).softplus() * r * -C; // c r log σ(Λ)
        let multiplier = (-(&log_a * 2.0).expm1()).clamp_min(2.5e-7).sqrt();
        (log_a, multiplier * i * u)
    }

    fn out(&self, h: &Tensor, x: &Tensor) -> Tensor {
        self.linear_out.forward(&(h * self.linear_y.forward(x).gelu("tanh")))
    }
}

impl SequenceMixer for Rglru {
    fn forward(&self, x: &Tensor) -> Tensor {
        let t = x.size()[1];
        let u = self.conv.forward(&self.linear_x.forward(x), self.path); // [B, T, E]
        let (log_a, input) = self.recurrence_inputs(&u);
        let (h, _) = linear_scan(&log_a, &input, None, auto_chunk(t), self.path);
        self.out(&h, x)
    }

    /// `[B, K-1, E]` convolution inputs and the hidden state `[B, E]`, zero.
    fn init_state(&self, batch: i64) -> State {
        let h = Tensor::zeros([batch, self.e], (self.a_param.kind(), self.a_param.device()));
        State { tensors: vec![self.conv.init_state(batch), h], position: 0 }
    }

    fn step(&self, x: &Tensor, state: &mut State) -> Tensor {
        let (u, conv_state) = self.conv.step(&self.linear_x.forward(x), &state.tensors[0]);
        let (log_a, input) = self.recurrence_inputs(&u);
        let h = input.addcmul(&log_a.exp(), &state.tensors[1]);
        let y = self.out(&h, x);
        state.tensors = vec![conv_state, h];
        state.position += 1;
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LayerSpec;
    use crate::ssm::testing::{build, input_gradient_matches_finite_differences, param};

    #[test]
    fn a_to_the_c_starts_uniform_in_the_papers_range() {
        tch::manual_seed(0);
        let spec = RglruSpec { lru_width: Some(256), ..RglruSpec::default() };
        let (vs, _m) = build(&LayerSpec::Rglru(spec), KernelPath::Auto);
        let a_c = (param(&vs, "a_param").sigmoid().log() * C).exp();
        let (lo, hi) = (a_c.min().double_value(&[]), a_c.max().double_value(&[]));
        assert!(lo >= 0.9 - 1e-6 && hi <= 0.999 + 1e-6, "a^c in [{lo}, {hi}]");
        assert!(lo < 0.91 && hi > 0.99, "a^c should cover [0.9, 0.999], got [{lo}, {hi}]");
    }

    #[test]
    fn gradient_of_the_chunked_scan_matches_finite_differences_of_the_loop() {
        input_gradient_matches_finite_differences(&LayerSpec::Rglru(RglruSpec::default()));
    }
}
