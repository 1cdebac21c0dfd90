//! Plain-data specifications: what a layer and a stack are, serde-serialisable and hashable, with the
//! accounting (parameters, FLOPs per token, state size) as pure functions of them.

pub use crate::head::HeadSpec;
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

/// A whole model: token embedding, `layers` as pre-norm residual blocks, then the output head (by default the
/// final norm and the next-token projection; see [`HeadSpec`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    pub vocab: i64,
    pub d_model: i64,
    pub layers: Vec<LayerSpec>,
    /// RMSNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// The output head; absent from the JSON when it is the default next-token head, so the ids of trials
    /// written before heads existed do not change.
    #[serde(default, skip_serializing_if = "HeadSpec::is_next")]
    pub head: HeadSpec,
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
        self.head.check(self.d_model)?;
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

    /// Parameters of the token embedding plus the head's projection onto the vocabulary (untied).
    pub fn embedding_params(&self) -> i64 {
        self.vocab * self.d_model + self.head.output_params(self.d_model, self.vocab)
    }

    /// All trainable parameters: the embedding, one norm gain per block, the mixers, the head (with its norms).
    pub fn params(&self) -> i64 {
        let d = self.d_model;
        let blocks: i64 = self.layers.iter().map(|l| d + l.params(d)).sum();
        self.vocab * d + blocks + self.head.params(d, self.vocab)
    }

    /// Forward FLOPs per token at `seq_len`: every mixer plus the head (2 d V for the next-token head).
    pub fn flops_per_token(&self, seq_len: i64) -> f64 {
        let d = self.d_model;
        let mixers: f64 = self.layers.iter().map(|l| l.flops_per_token(d, seq_len)).sum();
        mixers + self.head.flops_per_token(d, self.vocab, seq_len)
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
