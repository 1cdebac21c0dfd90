//! Based (Arora et al. 2024, "Simple linear attention language models balance the recall-throughput
//! tradeoff", arXiv 2402.18668): Taylor linear attention plus sliding-window softmax attention.
//!
//! The linear branch (`crate::linear_attention`'s) projects q, k to `feature_dim` (16) per head, applies
//! `taylor2` (F = 1 + f + f^2) and normalises (eps 1e-12, as Based's code); values have width d / heads. The
//! sliding-window branch is the `attention` mixer (RoPE, `window_heads` heads, `Mask::Causal { window }`).
//! The paper stacks the two as separate layers of a hybrid; here one mixer holds both branches, reading the
//! same normalised input, and their outputs (each with its own output projection) are summed:
//! `out = linear(x) + window_attention(x)`. The paper's layer-wise composition is the stack
//! `[linear_attention{feature_map: taylor2}, attention{window}]`.
//!
//! Accounting (H heads, f = feature_dim, F = 1 + f + f^2, Dv = d / H, `lin(T)` as in `crate::linear_attention`):
//! params 2 d H f + 2 d (H Dv) + attention(window_heads, window); FLOPs per token 4 d H f + 4 d (H Dv) +
//! H lin(T) + attention's; state H F (Dv + 1) + 2 d min(T, window).

use crate::attention::{Attention, AttentionSpec};
use crate::linear_attention::{
    check_chunk, check_heads, default_chunk, default_heads, err, BranchShape, FeatureMap, LinearBranch,
};
use crate::mixer::{SequenceMixer, State};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use kernels::chunk_linear::chunk_linear_flops;
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::Tensor;

/// `based` parameters (YAML: `based: {heads: 4, feature_dim: 16, window: 64}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasedSpec {
    /// Heads of the linear branch (values have width d_model / heads).
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Width of each head's projected q, k before the Taylor map (F = 1 + f + f^2).
    #[serde(default = "default_feature_dim")]
    pub feature_dim: i64,
    /// Tokens the sliding-window branch sees.
    #[serde(default = "default_window")]
    pub window: i64,
    /// Heads of the sliding-window branch.
    #[serde(default = "default_heads")]
    pub window_heads: i64,
    /// Chunk length of the linear branch's chunked form.
    #[serde(default = "default_chunk")]
    pub chunk: i64,
}

/// 16, Based's feature dimension.
pub fn default_feature_dim() -> i64 {
    16
}
/// 64 tokens, Based's small sliding window.
pub fn default_window() -> i64 {
    64
}

impl Default for BasedSpec {
    fn default() -> Self {
        BasedSpec {
            heads: default_heads(),
            feature_dim: default_feature_dim(),
            window: default_window(),
            window_heads: default_heads(),
            chunk: default_chunk(),
        }
    }
}

/// Based's denominator epsilon (its code's 1e-12; the Taylor map keeps the denominator >= T/2 anyway).
const BASED_EPS: f64 = 1e-12;

impl BasedSpec {
    fn attention(&self) -> AttentionSpec {
        AttentionSpec { heads: self.window_heads, window: Some(self.window), ..AttentionSpec::default() }
    }

    fn linear_spec(&self, d: i64) -> (BranchShape, i64) {
        let shape = BranchShape { heads: self.heads, qk_dim: self.feature_dim, v_dim: d / self.heads.max(1) };
        (shape, FeatureMap::Taylor2.dim(self.feature_dim))
    }
}

impl MixerSpec for BasedSpec {
    const NAME: &'static str = "based";
    const FAMILY: Family = Family::LinearAttention;
    const DESCRIPTION: &'static str =
        "Based: 2nd-order Taylor linear attention on small projected q/k plus sliding-window softmax attention, summed";
    const PARAMS: crate::registry::ParamTable = &[
        ("heads", "int", "heads of the linear branch; values have width d_model / heads"),
        ("feature_dim", "int", "projected q/k width per head before the Taylor map (F = 1 + f + f^2)"),
        ("window", "int", "sliding-window size of the softmax branch in tokens"),
        ("window_heads", "int", "heads of the sliding-window branch (head width d_model / window_heads)"),
        ("chunk", "int", "chunk length of the linear branch's chunked form"),
    ];
    const FLOPS_FORMULA: &'static str = "4*d*H*f + 4*d^2 + H*ceil(T/C')*(2C'^2(F+Dv+1) + 4C'*F*(Dv+1))/T \
         + attention(window_heads, window), F = 1+f+f^2, Dv = d/H, C' = min(chunk, T)";
    const STATE_FORMULA: &'static str = "H*F*(Dv+1) + 2*d*min(T, window)";

    fn check(&self, d: i64) -> Result<(), (String, String)> {
        check_heads("heads", self.heads, d, true)?;
        if self.feature_dim < 1 {
            return err("feature_dim", format!("must be at least 1, got {}", self.feature_dim));
        }
        check_heads("window_heads", self.window_heads, d, true)?;
        if self.window < 1 {
            return err("window", format!("must be at least 1 token, got {}", self.window));
        }
        self.attention().check(d).map_err(|(p, m)| (if p == "window" { p } else { "window_heads".into() }, m))?;
        check_chunk(self.chunk)
    }

    fn params(&self, d: i64) -> i64 {
        let (s, _) = self.linear_spec(d);
        2 * d * s.heads * s.qk_dim + 2 * d * s.heads * s.v_dim + self.attention().params(d)
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let (s, f) = self.linear_spec(d);
        let proj = 4 * d * s.heads * s.qk_dim + 4 * d * s.heads * s.v_dim;
        let kernel = chunk_linear_flops(s.heads, seq_len, f, s.v_dim + 1, self.chunk) / seq_len as f64;
        proj as f64 + kernel + self.attention().flops_per_token(d, seq_len)
    }

    fn state_size(&self, d: i64, seq_len: i64) -> i64 {
        let (s, f) = self.linear_spec(d);
        s.heads * f * (s.v_dim + 1) + self.attention().state_size(d, seq_len)
    }

    fn output_params() -> &'static [&'static str] {
        &["linear.o_proj.weight", "window_attn.o_proj.weight"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        let (shape, _) = self.linear_spec(ctx.d_model);
        let linear = LinearBranch::new(&(p / "linear"), shape, FeatureMap::Taylor2, Some(BASED_EPS), self.chunk, ctx);
        let window = Attention::new(&(p / "window_attn"), &self.attention(), ctx);
        Built::Sequence(Box::new(Based { linear, window }))
    }
}

/// The built `based` mixer: both branches on the same input, outputs summed.
#[derive(Debug)]
pub struct Based {
    linear: LinearBranch,
    window: Attention,
}

impl SequenceMixer for Based {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.linear.forward(x) + self.window.forward(x)
    }

    /// `[S | z]` of the linear branch, then the window's key and value caches.
    fn init_state(&self, batch: i64) -> State {
        let mut s = self.linear.init_state(batch);
        s.tensors.extend(self.window.init_state(batch).tensors);
        s
    }

    fn step(&self, x: &Tensor, state: &mut State) -> Tensor {
        let mut lin = State { tensors: vec![state.tensors[0].shallow_clone()], position: state.position };
        let mut win =
            State { tensors: state.tensors[1..].iter().map(|t| t.shallow_clone()).collect(), position: state.position };
        let y = self.linear.step(x, &mut lin) + self.window.step(x, &mut win);
        state.tensors = lin.tensors.into_iter().chain(win.tensors).collect();
        state.position += 1;
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gated_rnn::tests::input_gradient_matches_finite_differences;
    use crate::LayerSpec;

    const D: i64 = 16;

    #[test]
    fn gradients_match_finite_differences() {
        let json = r#"{"mixer":"based","params":{"heads":2,"feature_dim":3,"window":2,"window_heads":2,"chunk":2}}"#;
        input_gradient_matches_finite_differences(&serde_json::from_str::<LayerSpec>(json).unwrap());
    }

    #[test]
    fn bad_parameters_name_the_parameter() {
        let based = |json: &str| serde_json::from_str::<BasedSpec>(json).unwrap().check(D).unwrap_err().0;
        assert_eq!(based(r#"{"window_heads":16}"#), "window_heads"); // head width 1 is odd: no RoPE
        assert_eq!(based(r#"{"window":0}"#), "window");
        assert_eq!(based(r#"{"feature_dim":0}"#), "feature_dim");
    }
}
