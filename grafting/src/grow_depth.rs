//! `grow_depth`: a deeper stack that starts as the same function.
//!
//! - [`DepthMode::Identity`] (Net2Net's deeper net, arXiv 1511.05641, in its residual form): the source
//!   layers must appear in order in the target (a subsequence, matched greedily); they are copied, and every
//!   other target layer is a new block whose residual-writing parameters (the mixer's
//!   `output_params`, e.g. `o_proj.weight`, `down.weight`) are zero, so `x + mixer(norm(x)) = x` at the
//!   graft point; its other parameters keep their own init, so gradients reach them as soon as the output
//!   projection moves.
//! - [`DepthMode::Stack`] (G_stack, Du et al. 2024, arXiv 2405.15319): the target is the source's layers
//!   repeated k times; layer j is copied from source layer j mod n. Not function-preserving.

use crate::{copy_layer, copy_outer, same_outer, Action, GraftError, GraftReport, Target, Weights};
use operators::StackSpec;
use tch::nn::VarStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepthMode {
    Identity,
    Stack,
}

pub fn grow_depth(
    src_spec: &StackSpec,
    src: &Weights,
    dst_spec: &StackSpec,
    dst: &VarStore,
    mode: DepthMode,
) -> Result<GraftReport, GraftError> {
    same_outer("grow_depth", src_spec, dst_spec)?;
    let (n, m) = (src_spec.layers.len(), dst_spec.layers.len());
    let mut t = Target::new(dst);
    copy_outer(&mut t, src)?;
    match mode {
        DepthMode::Stack => {
            if m % n != 0 || (0..m).any(|j| dst_spec.layers[j] != src_spec.layers[j % n]) {
                return Err(GraftError::Unsupported {
                    op: "grow_depth",
                    message: format!(
                        "mode stack needs the target to repeat the source's {n} layers; it has {m} layers"
                    ),
                });
            }
            for j in 0..m {
                copy_layer(&mut t, src, j % n, j)?;
            }
        }
        DepthMode::Identity => {
            let mut next = 0; // next source layer to place
            for (j, layer) in dst_spec.layers.iter().enumerate() {
                if next < n && *layer == src_spec.layers[next] {
                    copy_layer(&mut t, src, next, j)?;
                    next += 1;
                    continue;
                }
                let outputs = layer.output_params();
                if outputs.is_empty() {
                    return Err(GraftError::Unsupported {
                        op: "grow_depth",
                        message: format!(
                            "layer {j} ({}) does not declare its output parameters, so it cannot start as the identity",
                            layer.kind().name()
                        ),
                    });
                }
                let prefix = format!("layers.{j}.mixer.");
                for p in t.paths_under(&format!("layers.{j}.")) {
                    let rel = p.strip_prefix(&prefix).unwrap_or("");
                    if outputs.iter().any(|o| rel == *o || rel.ends_with(&format!(".{o}"))) {
                        let zero = t.current(&p)?.zero_();
                        let how = "zero: the new block starts as the identity".to_string();
                        t.set(&p, &zero, Action::Transformed { from: vec![], how })?;
                    } else {
                        t.fresh(&p, "new block");
                    }
                }
            }
            if next < n {
                return Err(GraftError::Unsupported {
                    op: "grow_depth",
                    message: format!(
                        "source layer {next} ({}) has no equal layer in order in the target; identity growth only inserts",
                        src_spec.layers[next].kind().name()
                    ),
                });
            }
        }
    }
    Ok(t.report("grow_depth"))
}
