//! Weights from a safetensors checkpoint as a graft's source or a trial's initialisation (`--init-from`),
//! with a load report in burn's manner: which tensors were applied, which the model has but the file does
//! not (missing), which the file has but the model does not (unused), and which disagree in shape.
//! Keys under `optim.` and `meta.` (the workbench's optimiser state) are not weights and are skipped.

use crate::{GraftError, Weights};
use serde::Serialize;
use std::path::Path;
use tch::nn::VarStore;
use tch::Tensor;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    pub applied: Vec<String>,
    pub missing: Vec<String>,
    pub unused: Vec<String>,
    /// (path, model shape, file shape).
    pub shape_mismatch: Vec<(String, Vec<i64>, Vec<i64>)>,
}

impl LoadReport {
    /// Strict loading: every model tensor present with its shape and no unused tensor.
    pub fn check_strict(&self) -> Result<(), GraftError> {
        if let Some((p, want, got)) = self.shape_mismatch.first() {
            return Err(GraftError::Shape {
                tensor: p.clone(),
                message: format!("model shape {want:?}, file shape {got:?}"),
            });
        }
        if let Some(p) = self.missing.first() {
            return Err(GraftError::Missing { tensor: p.clone() });
        }
        if let Some(p) = self.unused.first() {
            return Err(GraftError::Shape { tensor: p.clone(), message: "in the file but not in the model".into() });
        }
        Ok(())
    }
}

/// Reads the weights of a safetensors file (skipping `optim.*` and `meta.*`).
pub fn read_weights(file: &Path) -> Result<Weights, GraftError> {
    let named = Tensor::read_safetensors(file)
        .map_err(|e| GraftError::Unsupported { op: "load", message: format!("{}: {e}", file.display()) })?;
    Ok(named.into_iter().filter(|(k, _)| !k.starts_with("optim.") && !k.starts_with("meta.")).collect())
}

/// Copies every tensor of `w` whose path and shape match a variable of `vs`; reports the rest.
pub fn load_weights(w: &Weights, vs: &VarStore) -> LoadReport {
    let mut r = LoadReport::default();
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let mut t = vars[name].shallow_clone();
        match w.get(name) {
            None => r.missing.push(name.clone()),
            Some(s) if s.size() != t.size() => r.shape_mismatch.push((name.clone(), t.size(), s.size())),
            Some(s) => {
                tch::no_grad(|| t.copy_(&s.to_kind(t.kind()).to_device(t.device())));
                r.applied.push(name.clone());
            }
        }
    }
    r.unused = w.keys().filter(|k| !vars.contains_key(*k)).cloned().collect();
    r
}
