//! `extend_context`: continue at a longer sequence length with linear RoPE scaling (position
//! interpolation, Chen et al. 2023, arXiv 2306.15595): every attention layer's `rope_scale` is multiplied
//! by the length factor, all weights are copied. Other mixers need no change (their parameters do not
//! depend on the length); the longer sequences are the training loop's business.

use crate::{copy_layer, copy_outer, same_outer, GraftError, GraftReport, Target, Weights};
use operators::{LayerSpec, StackSpec};
use tch::nn::VarStore;

/// The target spec: `spec` with each attention layer's `rope_scale` multiplied by `factor` (> 0).
pub fn extended_spec(spec: &StackSpec, factor: f64) -> StackSpec {
    let mut out = spec.clone();
    for l in &mut out.layers {
        if let LayerSpec::Attention(a) = l {
            a.rope_scale *= factor;
        }
    }
    out
}

/// Copies every weight of `src` into `dst`, whose spec must equal `extended_spec(src_spec, factor)`.
pub fn extend_context(
    src_spec: &StackSpec,
    src: &Weights,
    dst_spec: &StackSpec,
    dst: &VarStore,
    factor: f64,
) -> Result<GraftReport, GraftError> {
    same_outer("extend_context", src_spec, dst_spec)?;
    if !(factor > 0.0) || extended_spec(src_spec, factor) != *dst_spec {
        return Err(GraftError::Unsupported {
            op: "extend_context",
            message: format!("the target must be the source with attention rope_scale multiplied by {factor}"),
        });
    }
    let mut t = Target::new(dst);
    copy_outer(&mut t, src)?;
    for i in 0..src_spec.layers.len() {
        copy_layer(&mut t, src, i, i)?;
    }
    Ok(t.report("extend_context"))
}
