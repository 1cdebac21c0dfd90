//! Causal multi-head softmax attention with rotary position embeddings (Vaswani et al. 2017; RoPE: Su et
//! al. 2021, arXiv 2104.09864), grouped key/value heads (GQA: Ainslie et al. 2023; `kv_heads = 1` is
//! multi-query attention), linear RoPE scaling for context extension (Chen et al. 2023, "position
//! interpolation": positions are divided by `rope_scale`), and an optional sliding window.
//!
//! ```text
//! q = x W_q, k = x W_k, v = x W_v          x: [B, T, d];  q: [B, H, T, D];  k, v: [B, KV, T, D]
//! q, k <- RoPE(q, k; position / rope_scale, base)
//! y = softmax(q k^T / sqrt(D) + causal/window mask) v           (kernels::attention)
//! out = y W_o                                                   [B, T, d]
//! ```
//!
//! Accounting (D = head_dim, H = heads, KV = kv_heads, w = window):
//! - params:  d*H*D (q) + 2*d*KV*D (k, v) + H*D*d (o)
//! - FLOPs per token at length T: 2*d*D*(2H + 2KV) for the projections
//!   + 4*H*D*keys(T), keys(T) = mean over positions of min(t, w) = (T+1)/2 without a window
//! - state (KV cache) after T tokens: 2*KV*D*min(T, w)
//!
//! Init: projections N(0, 0.02^2); the output projection N(0, (0.02/sqrt(2 n_blocks))^2) (GPT-2).

use crate::flops::mean_causal_keys;
use crate::mixer::{SequenceMixer, State};
use crate::nn::{residual_std, rope, Linear, INIT_STD};
use crate::registry::{BuildCtx, Built, Family, MixerSpec};
use kernels::attention::{attention, Mask};
use kernels::KernelPath;
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::{Kind, Tensor};

/// `attention` parameters (YAML: `attention: {heads: 4, kv_heads: 2, window: 64}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttentionSpec {
    /// Query heads.
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Key/value heads; `heads` when absent (plain multi-head), 1 for multi-query.
    #[serde(default)]
    pub kv_heads: Option<i64>,
    /// Per-head width; `d_model / heads` when absent.
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// RoPE base (theta).
    #[serde(default = "default_rope_base")]
    pub rope_base: f64,
    /// Linear RoPE scaling factor: positions are divided by it (1 = no scaling).
    #[serde(default = "default_rope_scale")]
    pub rope_scale: f64,
    /// Sliding-window size in tokens; unlimited when absent.
    #[serde(default)]
    pub window: Option<i64>,
    /// Biases on the projections.
    #[serde(default)]
    pub bias: bool,
}

/// 4 heads: with the small widths of CPU sweeps (64-256) that gives head dims of 16-64.
pub fn default_heads() -> i64 {
    4
}
/// 10000, as in the RoPE paper.
pub fn default_rope_base() -> f64 {
    10000.0
}
/// 1: no position interpolation.
pub fn default_rope_scale() -> f64 {
    1.0
}

impl Default for AttentionSpec {
    fn default() -> Self {
        AttentionSpec {
            heads: default_heads(),
            kv_heads: None,
            head_dim: None,
            rope_base: default_rope_base(),
            rope_scale: default_rope_scale(),
            window: None,
            bias: false,
        }
    }
}

impl MixerSpec for AttentionSpec {
    const NAME: &'static str = "attention";
    const FAMILY: Family = Family::Attention;
    const DESCRIPTION: &'static str =
        "causal multi-head softmax attention with RoPE, grouped KV heads and an optional sliding window (fused SDPA)";
    const PARAMS: crate::registry::ParamTable = &[
        ("heads", "int", "query heads"),
        ("kv_heads", "int?", "key/value heads (grouped-query; 1 = multi-query); default: heads"),
        ("head_dim", "int?", "width per head; default: d_model / heads"),
        ("rope_base", "float", "RoPE base theta"),
        ("rope_scale", "float", "linear RoPE scaling (position interpolation) factor for context extension"),
        ("window", "int?", "sliding-window size in tokens; default: unlimited"),
        ("bias", "bool", "biases on the q, k, v, o projections"),
    ];
    const FLOPS_FORMULA: &'static str =
        "2*d*D*(2H + 2KV) + 4*H*D*keys(T), keys(T) = mean_t min(t, window) = (T+1)/2 unwindowed";
    const STATE_FORMULA: &'static str = "2*KV*D*min(T, window)";

    fn check(&self, d_model: i64) -> Result<(), (String, String)> {
        let err = |p: &str, m: String| Err((p.to_string(), m));
        if self.heads < 1 {
            return err("heads", format!("must be at least 1, got {}", self.heads));
        }
        if self.head_dim.is_none() && d_model % self.heads != 0 {
            let divisors: Vec<String> =
                (1..=d_model.min(64)).filter(|h| d_model % h == 0).map(|h| h.to_string()).collect();
            return err(
                "heads",
                format!(
                    "d_model {d_model} is not divisible by heads {}; valid head counts: {} (or set head_dim)",
                    self.heads,
                    divisors.join(", ")
                ),
            );
        }
        if let Some(hd) = self.head_dim {
            if hd < 1 {
                return err("head_dim", format!("must be at least 1, got {hd}"));
            }
        }
        let kv = self.kv_heads();
        if kv < 1 || self.heads % kv != 0 {
            return err("kv_heads", format!("must divide heads ({}), got {kv}", self.heads));
        }
        if self.head_dim(d_model) % 2 != 0 {
            return err("head_dim", format!("RoPE needs an even head dimension, got {}", self.head_dim(d_model)));
        }
        if !(self.rope_base > 1.0) {
            return err("rope_base", format!("must be greater than 1, got {}", self.rope_base));
        }
        if !(self.rope_scale > 0.0) {
            return err("rope_scale", format!("must be positive, got {}", self.rope_scale));
        }
        if let Some(w) = self.window {
            if w < 1 {
                return err("window", format!("must be at least 1 token, got {w}"));
            }
        }
        Ok(())
    }

    fn params(&self, d: i64) -> i64 {
        let (h, kv, hd) = (self.heads, self.kv_heads(), self.head_dim(d));
        let b = self.bias;
        Linear::params(d, h * hd, b) + 2 * Linear::params(d, kv * hd, b) + Linear::params(h * hd, d, b)
    }

    fn flops_per_token(&self, d: i64, seq_len: i64) -> f64 {
        let (h, kv, hd) = (self.heads as f64, self.kv_heads() as f64, self.head_dim(d) as f64);
        let proj = 2.0 * d as f64 * hd * (2.0 * h + 2.0 * kv);
        proj + 4.0 * h * hd * mean_causal_keys(seq_len, self.window)
    }

    fn state_size(&self, d: i64, seq_len: i64) -> i64 {
        let t = self.window.map_or(seq_len, |w| seq_len.min(w));
        2 * self.kv_heads() * self.head_dim(d) * t
    }

    fn output_params() -> &'static [&'static str] {
        &["o_proj.weight", "o_proj.bias"]
    }
    fn build(&self, p: &Path, ctx: &BuildCtx) -> Built {
        Built::Sequence(Box::new(Attention::new(p, self, ctx)))
    }
}

impl AttentionSpec {
    pub fn kv_heads(&self) -> i64 {
        self.kv_heads.unwrap_or(self.heads)
    }

    pub fn head_dim(&self, d_model: i64) -> i64 {
        self.head_dim.unwrap_or(d_model / self.heads.max(1))
    }
}

/// The built mixer.
#[derive(Debug)]
pub struct Attention {
    spec: AttentionSpec,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// `[D/2]` inverse frequencies of the rotary embedding.
    inv_freq: Tensor,
    head_dim: i64,
    path: KernelPath,
}

impl Attention {
    pub fn new(p: &Path, spec: &AttentionSpec, ctx: &BuildCtx) -> Attention {
        let d = ctx.d_model;
        let (h, kv, hd) = (spec.heads, spec.kv_heads(), spec.head_dim(d));
        let o_std = residual_std(ctx.n_blocks);
        // inv_freq_i = base^(-2i/D), i = 0..D/2: a constant, not a parameter.
        let exponents = Tensor::arange_start_step(0, hd, 2, (Kind::Double, p.device())) / hd as f64;
        let inv_freq =
            Tensor::from(spec.rope_base).to_device(p.device()).pow(&exponents).reciprocal().to_kind(p.kind());
        Attention {
            spec: spec.clone(),
            q_proj: Linear::new(&(p / "q_proj"), d, h * hd, INIT_STD, spec.bias),
            k_proj: Linear::new(&(p / "k_proj"), d, kv * hd, INIT_STD, spec.bias),
            v_proj: Linear::new(&(p / "v_proj"), d, kv * hd, INIT_STD, spec.bias),
            o_proj: Linear::new(&(p / "o_proj"), h * hd, d, o_std, spec.bias),
            inv_freq,
            head_dim: hd,
            path: ctx.kernel_path,
        }
    }

    /// Rotates `x [B, heads, T, D]` at positions `start..start+T` (rotate-half form, [`rope`]).
    fn rope(&self, x: &Tensor, start: i64) -> Tensor {
        rope(x, start, self.spec.rope_scale, &self.inv_freq)
    }

    /// `x [B, T, d] -> q [B, H, T, D], k, v [B, KV, T, D]` at positions starting at `start`.
    fn qkv(&self, x: &Tensor, start: i64) -> (Tensor, Tensor, Tensor) {
        let (b, t, _) = x.size3().expect("attention input must be [B, T, d]");
        let hd = self.head_dim;
        let split = |y: Tensor, heads: i64| y.view([b, t, heads, hd]).transpose(1, 2); // [B, heads, T, D]
        let q = split(self.q_proj.forward(x), self.spec.heads);
        let k = split(self.k_proj.forward(x), self.spec.kv_heads());
        let v = split(self.v_proj.forward(x), self.spec.kv_heads());
        (self.rope(&q, start), self.rope(&k, start), v)
    }

    /// `y [B, H, T, D] -> [B, T, d]`.
    fn out(&self, y: Tensor) -> Tensor {
        let (b, h, t, hd) = y.size4().expect("attention output must be [B, H, T, D]");
        self.o_proj.forward(&y.transpose(1, 2).contiguous().view([b, t, h * hd]))
    }
}

impl SequenceMixer for Attention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (q, k, v) = self.qkv(x, 0);
        let y = attention(&q, &k, &v, Mask::Causal { window: self.spec.window }, self.path);
        self.out(y)
    }

    /// The KV cache, empty: `[B, KV, 0, D]` keys and values.
    fn init_state(&self, batch: i64) -> State {
        let empty = || {
            Tensor::zeros(
                [batch, self.spec.kv_heads(), 0, self.head_dim],
                (self.inv_freq.kind(), self.inv_freq.device()),
            )
        };
        State { tensors: vec![empty(), empty()], position: 0 }
    }

    fn step(&self, x: &Tensor, state: &mut State) -> Tensor {
        let (q, k, v) = self.qkv(&x.unsqueeze(1), state.position); // [B, *, 1, D]
        let mut keys = Tensor::cat(&[&state.tensors[0], &k], 2); // [B, KV, S+1, D]
        let mut values = Tensor::cat(&[&state.tensors[1], &v], 2);
        if let Some(w) = self.spec.window {
            let len = keys.size()[2];
            if len > w {
                keys = keys.narrow(2, len - w, w);
                values = values.narrow(2, len - w, w);
            }
        }
        let y = attention(&q, &keys, &values, Mask::Full, self.path); // [B, H, 1, D]
        state.tensors = vec![keys, values];
        state.position += 1;
        self.out(y).squeeze_dim(1)
    }
}
