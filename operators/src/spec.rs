//! Plain-data specifications: what a layer and a stack are, serde-serialisable and hashable, with the
//! accounting (parameters, FLOPs per token, state size) as pure functions of them.

pub use crate::registry::LayerSpec;
use serde::{Deserialize, Serialize};

/// A bad value in a specification, named precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("layer {layer} ({mixer}): parameter `{param}`: {message}")]
    Param { layer: usize, mixer: &'static str, param: String, message: String },
    #[error("the stack has no sequence mixer (layers: {layers}); every position would be processed alone. Add a sequence mixer such as `attention`, or mark the candidate `allow_no_mixing: true` for a deliberate token-wise baseline")]
    NoSequenceMixer { layers: String },
    #[error("`{field}`: {message}")]
    Field { field: &'static str, message: String },
}

/// A whole model: token embedding, `layers` as pre-norm residual blocks, final norm, output head.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    pub vocab: i64,
    pub d_model: i64,
    pub layers: Vec<LayerSpec>,
    /// RMSNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
}

/// 1e-5, as in LLaMA and most recent stacks.
pub fn default_norm_eps() -> f64 {
    1e-5
}

impl StackSpec {
    /// Validates widths and every layer. `allow_no_mixing` permits a stack of channel mixers only.
    pub fn validate(&self, allow_no_mixing: bool) -> Result<(), SpecError> {
        if self.vocab < 2 {
            return Err(SpecError::Field {
                field: "vocab",
                message: format!("must be at least 2, got {}", self.vocab),
            });
        }
        if self.d_model < 1 {
            return Err(SpecError::Field {
                field: "d_model",
                message: format!("must be positive, got {}", self.d_model),
            });
        }
        if self.layers.is_empty() {
            return Err(SpecError::Field { field: "layers", message: "the stack has no layers".into() });
        }
        for (i, layer) in self.layers.iter().enumerate() {
            layer.check(self.d_model).map_err(|(param, message)| SpecError::Param {
                layer: i,
                mixer: layer.kind().name(),
                param,
                message,
            })?;
        }
        if !allow_no_mixing && !self.layers.iter().any(|l| l.kind().is_sequence_mixer()) {
            let names: Vec<&str> = self.layers.iter().map(|l| l.kind().name()).collect();
            return Err(SpecError::NoSequenceMixer { layers: names.join(", ") });
        }
        Ok(())
    }

    /// Parameters of the token embedding plus the output head (untied).
    pub fn embedding_params(&self) -> i64 {
        2 * self.vocab * self.d_model
    }

    /// All trainable parameters: embeddings, one norm gain per block, the mixers, the final norm.
    pub fn params(&self) -> i64 {
        let d = self.d_model;
        let blocks: i64 = self.layers.iter().map(|l| d + l.params(d)).sum();
        self.embedding_params() + blocks + d
    }

    /// Forward FLOPs per token at `seq_len`: every mixer plus the output head (2 d V).
    pub fn flops_per_token(&self, seq_len: i64) -> f64 {
        let d = self.d_model;
        let mixers: f64 = self.layers.iter().map(|l| l.flops_per_token(d, seq_len)).sum();
        mixers + 2.0 * (d * self.vocab) as f64
    }

    /// State elements per sequence held by `step` after `seq_len` tokens, summed over layers.
    pub fn state_size(&self, seq_len: i64) -> i64 {
        self.layers.iter().map(|l| l.state_size(self.d_model, seq_len)).sum()
    }

    /// The layer names, in order.
    pub fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.kind().name().to_string()).collect()
    }
}
