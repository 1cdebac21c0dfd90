//! `grow_width`: function-preserving widening (Net2Net's wider net, Chen, Goodfellow & Shlens 2015,
//! arXiv 1511.05641), for the hidden width of channel mixers (`mlp`, `swiglu`: a larger `expand`).
//!
//! The first h hidden units are copied; the h' - h new units keep the target's own init in their input
//! rows (`up`, `gate`, and `up.bias`) and get zero columns in `down`, so they contribute nothing at the
//! graft point and the function is exactly unchanged; they break symmetry because their inputs differ
//! (Net2Net's duplicate-and-halve would need noise to do so).
//!
//! Not here: widening `d_model`. With RMSNorm, zero-padding the residual changes every norm's mean square by
//! d/d' (exact only if every norm's gain is scaled by sqrt(d'/d) and its epsilon by d/d', which the mixers'
//! inner norms do not expose), and attention's default head width d/heads would change RoPE's frequencies.
//! Heads and state sizes are not here either; such a target is a typed error.

use crate::{copy_layer, copy_outer, Action, GraftError, GraftReport, Target, Weights};
use operators::{LayerSpec, StackSpec};
use tch::nn::VarStore;
use tch::Tensor;

pub fn grow_width(
    src_spec: &StackSpec,
    src: &Weights,
    dst_spec: &StackSpec,
    dst: &VarStore,
) -> Result<GraftReport, GraftError> {
    if src_spec.d_model != dst_spec.d_model || src_spec.vocab != dst_spec.vocab {
        return Err(GraftError::Unsupported {
            op: "grow_width",
            message: format!(
                "widening d_model ({} -> {}) is not function-preserving with RMSNorm here; widen channel mixers (expand)",
                src_spec.d_model, dst_spec.d_model
            ),
        });
    }
    if src_spec.layers.len() != dst_spec.layers.len() {
        return Err(GraftError::Unsupported { op: "grow_width", message: "the layer count must stay the same".into() });
    }
    let mut t = Target::new(dst);
    copy_outer(&mut t, src)?;
    for (i, (a, b)) in src_spec.layers.iter().zip(&dst_spec.layers).enumerate() {
        let widened = match (a, b) {
            (LayerSpec::Swiglu(_), LayerSpec::Swiglu(_)) => &["gate.weight", "up.weight"][..],
            (LayerSpec::Mlp(x), LayerSpec::Mlp(y)) if x.activation == y.activation && x.bias == y.bias => {
                &["up.weight"][..]
            }
            _ if a == b => {
                copy_layer(&mut t, src, i, i)?;
                continue;
            }
            _ => {
                return Err(GraftError::Unsupported {
                    op: "grow_width",
                    message: format!(
                        "layer {i}: only mlp/swiglu hidden widths can grow ({} -> {})",
                        a.kind().name(),
                        b.kind().name()
                    ),
                })
            }
        };
        let p = |n: &str| format!("layers.{i}.mixer.{n}");
        t.copy(src, &format!("layers.{i}.norm.weight"), &format!("layers.{i}.norm.weight"))?;
        let h = src.get(&p("down.weight")).ok_or(GraftError::Missing { tensor: p("down.weight") })?.size()[1];
        let h2 = t.shape(&p("down.weight"))?[1];
        if h2 < h {
            return Err(GraftError::Shape {
                tensor: p("down.weight"),
                message: format!("the hidden width can only grow ({h} -> {h2})"),
            });
        }
        let mut rows = widened.to_vec();
        if t.shape(&p("up.bias")).is_ok() {
            rows.push("up.bias");
            t.copy(src, &p("down.bias"), &p("down.bias"))?;
        }
        for name in rows {
            let cur = t.current(&p(name))?;
            let s = src.get(&p(name)).ok_or(GraftError::Missing { tensor: p(name) })?;
            let v = Tensor::cat(&[s.to_kind(cur.kind()), cur.narrow(0, h, h2 - h)], 0);
            let how = format!("units 0..{h} copied, {h}..{h2} fresh");
            t.set(&p(name), &v, Action::Transformed { from: vec![p(name)], how })?;
        }
        let down = t.current(&p("down.weight"))?;
        let s = src.get(&p("down.weight")).unwrap().to_kind(down.kind());
        let v = Tensor::cat(&[s, down.narrow(1, h, h2 - h).zero_()], 1);
        let how = format!("columns 0..{h} copied, {h}..{h2} zero (new units contribute nothing)");
        t.set(&p("down.weight"), &v, Action::Transformed { from: vec![p("down.weight")], how })?;
    }
    Ok(t.report("grow_width"))
}
