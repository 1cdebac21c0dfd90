//! # grafting
//!
//! Transforms a trained stack (its [`StackSpec`] and weights keyed by parameter path) into another
//! [`StackSpec`] and says, parameter by parameter, what happened: copied as it was, transformed from
//! named source tensors, freshly initialised, or left to a training stage (distilled/regressed).
//!
//! Key design decision: an operation never builds a model itself. The caller builds the target stack
//! as usual (so every mixer keeps its own initialisation, STYLE.md 5) and hands its [`VarStore`] to the
//! operation, which overwrites only what it can justify and reports every parameter. Strict by default:
//! a layer that does not exist, a pair of mixers with no known mapping (unless `fallback: fresh`), or a
//! tensor whose shape does not fit is a typed [`GraftError`] naming the layer and the tensor.
//!
//! Operations (one file each): [`transfer`] (swap mixers, initialise from the old weights where the
//! mapping is known), [`grow_depth`] (identity blocks or G_stack), [`grow_width`] (function-preserving
//! widening of channel mixers), [`extend_context`] (linear RoPE scaling), [`load`] (a checkpoint as a
//! source). `regress` and `distill` need training and live in the workbench's training loop; they use
//! [`transfer`] with fresh target mixers and mark those parameters [`Action::Distilled`].

pub mod extend_context;
pub mod grow_depth;
pub mod grow_width;
pub mod load;
pub mod transfer;
mod transfer_linear;

pub use extend_context::extend_context;
pub use grow_depth::{grow_depth, DepthMode};
pub use grow_width::grow_width;
pub use load::{load_weights, read_weights, LoadReport};
pub use transfer::{has_mapping, transfer, TransferOptions};

use operators::StackSpec;
use serde::Serialize;
use std::collections::BTreeMap;
use tch::nn::VarStore;
use tch::Tensor;

/// Weights keyed by parameter path (`layers.3.mixer.q_proj.weight`), as in checkpoints.
pub type Weights = BTreeMap<String, Tensor>;

/// What happened to one parameter of the target stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// The source tensor of the same path and shape, unchanged.
    Copied,
    /// Built from the named source tensors (slices, padding, zeroed parts), as `how` says.
    Transformed { from: Vec<String>, how: String },
    /// Left at the target mixer's own initialisation.
    Fresh { why: String },
    /// Fresh, then trained against the source by a regression or distillation stage.
    Distilled { stage: String },
}

/// One parameter of the target stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamReport {
    pub path: String,
    pub shape: Vec<i64>,
    #[serde(flatten)]
    pub action: Action,
}

/// Everything an operation did, one entry per target parameter, sorted by path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraftReport {
    pub op: String,
    pub params: Vec<ParamReport>,
}

impl GraftReport {
    /// Counts per action: (copied, transformed, fresh, distilled).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for p in &self.params {
            match p.action {
                Action::Copied => c.0 += 1,
                Action::Transformed { .. } => c.1 += 1,
                Action::Fresh { .. } => c.2 += 1,
                Action::Distilled { .. } => c.3 += 1,
            }
        }
        c
    }

    pub fn get(&self, path: &str) -> Option<&Action> {
        self.params.iter().find(|p| p.path == path).map(|p| &p.action)
    }

    /// Marks the parameters of the mixers of `layers` as trained by `stage` (regress, distill).
    pub fn mark_distilled(&mut self, layers: &[usize], stage: &str) {
        for p in &mut self.params {
            if layers.iter().any(|l| p.path.starts_with(&format!("layers.{l}.mixer."))) {
                p.action = Action::Distilled { stage: stage.to_string() };
            }
        }
    }
}

/// Bad input to a graft, named precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraftError {
    #[error("layer {layer} does not exist: the {which} stack has {len} layers")]
    NoLayer { layer: usize, which: &'static str, len: usize },
    #[error(
        "layer {layer}: no known mapping from `{from}` to `{to}`; choose `fallback: fresh` to initialise it fresh"
    )]
    NoMapping { layer: usize, from: String, to: String },
    #[error("tensor `{tensor}`: {message}")]
    Shape { tensor: String, message: String },
    #[error("tensor `{tensor}` is missing from the source")]
    Missing { tensor: String },
    #[error("{op}: {message}")]
    Unsupported { op: &'static str, message: String },
}

/// Snapshot of a var store's tensors by path (detached copies, so the source may be dropped or changed).
pub fn weights_of(vs: &VarStore) -> Weights {
    vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

/// Tracks a target store while an operation fills it: every write is recorded, the rest is reported
/// fresh at the end.
pub(crate) struct Target {
    vars: BTreeMap<String, Tensor>,
    done: BTreeMap<String, Action>,
}

impl Target {
    pub(crate) fn new(vs: &VarStore) -> Target {
        Target { vars: vs.variables().into_iter().collect(), done: BTreeMap::new() }
    }

    pub(crate) fn shape(&self, path: &str) -> Result<Vec<i64>, GraftError> {
        self.vars.get(path).map(|t| t.size()).ok_or_else(|| GraftError::Missing { tensor: path.to_string() })
    }

    pub(crate) fn paths_under(&self, prefix: &str) -> Vec<String> {
        self.vars.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    /// Current value (the target's own init), for building a transformed tensor around it.
    pub(crate) fn current(&self, path: &str) -> Result<Tensor, GraftError> {
        self.vars.get(path).map(|t| t.detach().copy()).ok_or_else(|| GraftError::Missing { tensor: path.to_string() })
    }

    /// Writes `value` into the target parameter `path` (shapes must agree).
    pub(crate) fn set(&mut self, path: &str, value: &Tensor, action: Action) -> Result<(), GraftError> {
        let t = self.vars.get_mut(path).ok_or_else(|| GraftError::Missing { tensor: path.to_string() })?;
        if t.size() != value.size() {
            return Err(GraftError::Shape {
                tensor: path.to_string(),
                message: format!("target shape {:?}, source gives {:?}", t.size(), value.size()),
            });
        }
        tch::no_grad(|| t.copy_(&value.to_kind(t.kind()).to_device(t.device())));
        self.done.insert(path.to_string(), action);
        Ok(())
    }

    /// Copies `src[from]` into `to`, erroring on a missing tensor or a shape mismatch.
    pub(crate) fn copy(&mut self, src: &Weights, from: &str, to: &str) -> Result<(), GraftError> {
        let s = src.get(from).ok_or_else(|| GraftError::Missing { tensor: from.to_string() })?;
        let action = if from == to {
            Action::Copied
        } else {
            Action::Transformed { from: vec![from.into()], how: "moved".into() }
        };
        self.set(to, s, action)
    }

    pub(crate) fn fresh(&mut self, path: &str, why: &str) {
        self.done.insert(path.to_string(), Action::Fresh { why: why.to_string() });
    }

    pub(crate) fn report(self, op: &str) -> GraftReport {
        let params = self
            .vars
            .iter()
            .map(|(path, t)| ParamReport {
                path: path.clone(),
                shape: t.size(),
                action: self.done.get(path).cloned().unwrap_or(Action::Fresh { why: "no source".into() }),
            })
            .collect();
        GraftReport { op: op.to_string(), params }
    }
}

/// Copies the embedding, final norm and head (same path, same shape) into `t`.
pub(crate) fn copy_outer(t: &mut Target, src: &Weights) -> Result<(), GraftError> {
    for p in ["embed.weight", "norm.weight", "head.weight"] {
        t.copy(src, p, p)?;
    }
    Ok(())
}

/// Copies every parameter of source layer `from` to target layer `to` (norm and mixer); the layer specs must
/// build the same tensors.
pub(crate) fn copy_layer(t: &mut Target, src: &Weights, from: usize, to: usize) -> Result<(), GraftError> {
    let (sp, tp) = (format!("layers.{from}."), format!("layers.{to}."));
    for path in t.paths_under(&tp) {
        let rel = &path[tp.len()..];
        t.copy(src, &format!("{sp}{rel}"), &path)?;
    }
    Ok(())
}

/// The layer count check every operation makes.
pub(crate) fn check_layer(spec: &StackSpec, layer: usize, which: &'static str) -> Result<(), GraftError> {
    if layer >= spec.layers.len() {
        return Err(GraftError::NoLayer { layer, which, len: spec.layers.len() });
    }
    Ok(())
}

/// `d_model` and `vocab` must agree for every operation except width growth.
pub(crate) fn same_outer(op: &'static str, a: &StackSpec, b: &StackSpec) -> Result<(), GraftError> {
    if a.d_model != b.d_model || a.vocab != b.vocab {
        return Err(GraftError::Unsupported {
            op,
            message: format!(
                "d_model/vocab must stay the same ({}x{} -> {}x{}); use grow_width to widen",
                a.d_model, a.vocab, b.d_model, b.vocab
            ),
        });
    }
    Ok(())
}
