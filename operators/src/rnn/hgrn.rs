//! HGRN (Qin, Yang & Zhong 2023, "Hierarchically Gated Recurrent Neural Network for Sequence Modeling",
//! arXiv 2311.04823): an element-wise linear recurrence whose forget gate has a lower bound, with the input
//! gate tied to it and a gated output norm. Real-valued, as the maintained implementation in
//! flash-linear-attention (the paper's variant with complex phases doubles the state for a small gain).
//!
//! ```text
//! i, f, g = x W_i, x W_f, x W_g                   x: [B, T, d];  i, f, g: [B, T, E],  E = expand * d
//! λ_t = lb + (1 - lb) σ(f_t)                     forget gate in [lb, 1]
//! h_t = λ_t ⊙ h_{t-1} + (1 - λ_t) ⊙ SiLU(i_t)    (kernels::selective_scan::linear_scan, in log space)
//! o_t = (RMSNorm(h_t) ⊙ SiLU(g_t)) W_o           [B, T, d]
//! ```
//! The paper learns one lower bound per layer, increasing with depth (cumulative softmax over the layers);
//! a single mixer has no depth, so the bound is the `lower_bound` parameter (0 = no bound, the paper's first
//! layer).
//!
//! Accounting: params 3dE + E (norm gain) + Ed; FLOPs per token 6dE + 2Ed + 2E (the state update
//! multiply-add); state E.
//! Init: projections N(0, 0.02^2), W_o scaled by depth; norm gain 1.

use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, Linear, RmsNorm, INIT_STD};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use crate::ssm::check_at_least;
use kernels::selective_scan::{auto_chunk, linear_scan};
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::Tensor;

/// `hgrn` parameters (YAML: `hgrn: {expand: 1, lower_bound: 0.5}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HgrnSpec {
    /// Recurrent width E as a multiple of d_model.
    #[serde(default = "default_expand")]
    pub expand: i64,
    /// Lower bound of the forget gate, in [0, 1).
    #[serde(default = "default_lower_bound")]
    pub lower_bound: f64,
}

/// 1, as flash-linear-attention's HGRN.
pub fn default_expand() -> i64 {
    1
}
/// 0.5: a middle layer of the paper's depth-increasing bounds.
pub fn default_lower_bound() -> f64 {
    0.5
}

impl Default for HgrnSpec {
    fn default() -> Self {
        HgrnSpec { expand: default_expand(), lower_bound: default_lower_bound() }
    }
}

impl MixerSpec for HgrnSpec {
    const NAME: &'static str = "hgrn";
    const FAMILY: Family = Family::GatedRnn;
    const DESCRIPTION: &'static str =
        "HGRN: element-wise gated linear recurrence with a lower-bounded forget gate tied to the input gate, gated RMSNorm output";
    const PARAMS: crate::registry::ParamTable = &[
        ("expand", "int", "recurrent width E as a multiple of d_model"),
        ("lower_bound", "float", "lower bound lb of the forget gate, in [0, 1): λ = lb + (1 - lb) σ(·)"),
    ];
    const FLOPS_FORMULA: &'static str = "6*d*E + 2*E*d + 2*E, E = expand*d";
    const STATE_FORMULA: &'static str = "E";

    fn check(&self, _d_model: i64) -> Result<(), (String, String)> {
        check_at_least("expand", self.expand, 1)?;
        if !(0.0..1.0).contains(&self.lower_bound) {
            return Err(("lower_bound".into(), format!("must be in [0, 1), got {}", self.lower_bound)));
        }
        Ok(())
    }

    fn params(&self, d: i64) -> i64 {
        let e = self.expand * d;
        3 * Linear::params(d, e, false) + e + Linear::params(e, d, false)
    }

    fn flops_per_token(&self, d: i64, _seq_len: i64) -> f64 {
        let e = self.expand * d;
        (6 * d * e + 2 * e * d + 2 * e) as f64
    }

    fn state_size(&self, d: i64, _seq_len: i64) -> i64 {
        self.expand * d
    }

    fn output_params() -> &'static [&'static str] {
        &["o_proj.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(Hgrn::new(p, self, ctx)))
    }
}

/// The built mixer.
#[derive(Debug)]
pub struct Hgrn {
    i_proj: Linear,
    f_proj: Linear,
    g_proj: Linear,
    g_norm: RmsNorm,
    o_proj: Linear,
    lower_bound: f64,
    e: i64,
    path: KernelPath,
}

impl Hgrn {
    pub fn new(p: &Path, spec: &HgrnSpec, ctx: &BuildCtx) -> Hgrn {
        let (d, e) = (ctx.d_model, spec.expand * ctx.d_model);
        Hgrn {
            i_proj: Linear::new(&(p / "i_proj"), d, e, INIT_STD, false),
            f_proj: Linear::new(&(p / "f_proj"), d, e, INIT_STD, false),
            g_proj: Linear::new(&(p / "g_proj"), d, e, INIT_STD, false),
            g_norm: RmsNorm::new(&(p / "g_norm"), e, 1e-5),
            o_proj: Linear::new(&(p / "o_proj"), e, d, residual_std(ctx.n_blocks), false),
            lower_bound: spec.lower_bound,
            e,
            path: ctx.kernel_path,
        }
    }

    /// `(log λ, (1 - λ) ⊙ SiLU(i))` for `x [..., d]`, each `[..., E]`.
    fn gates(&self, x: &Tensor) -> (Tensor, Tensor) {
        let f = self.f_proj.forward(x);
        let lb = self.lower_bound;
        // log(lb + (1 - lb) σ(f)), computed in log space so that small gates stay exact.
        let log_f = if lb == 0.0 {
            f.log_sigmoid()
        } else {
            (f.log_sigmoid() + (1.0 - lb).ln()).logaddexp(&f.full_like(lb.ln()))
        };
        let input = self.i_proj.forward(x).silu() * (1.0 - log_f.exp());
        (log_f, input)
    }

    fn out(&self, h: &Tensor, x: &Tensor) -> Tensor {
        self.o_proj.forward(&(self.g_norm.forward(h) * self.g_proj.forward(x).silu()))
    }
}

impl SequenceMixer for Hgrn {
    fn forward(&self, x: &Tensor) -> Tensor {
        let t = x.size()[1];
        let (log_f, input) = self.gates(x); // [B, T, E]
        let (h, _) = linear_scan(&log_f, &input, None, auto_chunk(t), self.path);
        self.out(&h, x)
    }

    /// The hidden state `[B, E]`, zero.
    fn init_state(&self, batch: i64) -> State {
        let w = &self.g_norm.weight;
        State { tensors: vec![Tensor::zeros([batch, self.e], (w.kind(), w.device()))], position: 0 }
    }

    fn step(&self, x: &Tensor, state: &mut State) -> Tensor {
        let (log_f, input) = self.gates(x); // [B, E]
        let h = input.addcmul(&log_f.exp(), &state.tensors[0]);
        let y = self.out(&h, x);
        state.tensors = vec![h];
        state.position += 1;
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LayerSpec;
    use crate::ssm::testing::input_gradient_matches_finite_differences;
    use tch::{Device, Kind};

    #[test]
    fn forget_gate_respects_the_lower_bound() {
        for lb in [0.0, 0.5, 0.9] {
            let vs = tch::nn::VarStore::new(Device::Cpu);
            let ctx = BuildCtx { d_model: 16, layer: 0, n_blocks: 1, kernel_path: KernelPath::Auto };
            let m = Hgrn::new(&vs.root(), &HgrnSpec { lower_bound: lb, ..HgrnSpec::default() }, &ctx);
            let x = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu)) * 100.0;
            let f = m.gates(&x).0.exp();
            let (lo, hi) = (f.min().double_value(&[]), f.max().double_value(&[]));
            assert!(lo >= lb - 1e-6 && hi <= 1.0, "lb={lb}: forget gate in [{lo}, {hi}]");
        }
    }

    #[test]
    fn gradient_of_the_chunked_scan_matches_finite_differences_of_the_loop() {
        input_gradient_matches_finite_differences(&LayerSpec::Hgrn(HgrnSpec::default()));
    }
}
