//! `grow_width`: function-preserving widening (Net2Net's wider net, Chen, Goodfellow & Shlens 2015,
//! arXiv 1511.05641) of the hidden width of channel mixers (`mlp`, `swiglu`: a larger `expand`) and of
//! `d_model` for stacks of `attention`, `mlp` and `swiglu`.
//!
//! Every target tensor starts as the target's own init, or as zeros where the tensor writes into the
//! residual stream (the mixer's `output_params`, and the embedding); the source tensor is copied into its
//! leading block. So new hidden units contribute nothing (zero `down` columns) and new residual dimensions
//! stay exactly zero (zero embedding columns, zero output rows) while their inputs are ignored.
//!
//! What is exact, and why: with the residual `x' = [x, 0]` of width d', RMSNorm's mean square becomes
//! (d/d') ms(x). The norm output on the first d dimensions is unchanged when every norm gain is scaled by
//! sqrt(d/d') and the epsilon by d/d' (the target's `norm_eps` must be `norm_eps * d / d'`; the workbench sets
//! it). Attention is unchanged when heads, kv_heads and the head width stay (give `head_dim` explicitly, or
//! RoPE's frequencies would change with d/heads). Mixers with inner norms or width-derived shapes (mamba2,
//! hyena, deltanet, ...) are refused when d_model changes; heads and state sizes are not widened here.

use crate::{Action, GraftError, GraftReport, Target, Weights};
use operators::{LayerSpec, StackSpec};
use tch::nn::VarStore;

/// Whether widening `d_model` keeps `a` (at width d) and `b` (at width d2) the same function.
fn widenable(a: &LayerSpec, b: &LayerSpec, d: i64, d2: i64) -> bool {
    match (a, b) {
        (LayerSpec::Attention(x), LayerSpec::Attention(y)) => {
            x.heads == y.heads
                && x.kv_heads() == y.kv_heads()
                && x.head_dim(d) == y.head_dim(d2)
                && (x.rope_base, x.rope_scale, x.window, x.bias) == (y.rope_base, y.rope_scale, y.window, y.bias)
        }
        (LayerSpec::Swiglu(_), LayerSpec::Swiglu(_)) => true,
        (LayerSpec::Mlp(x), LayerSpec::Mlp(y)) => x.activation == y.activation && x.bias == y.bias,
        _ => d == d2 && a == b,
    }
}

pub fn grow_width(
    src_spec: &StackSpec,
    src: &Weights,
    dst_spec: &StackSpec,
    dst: &VarStore,
) -> Result<GraftReport, GraftError> {
    let (d, d2) = (src_spec.d_model, dst_spec.d_model);
    let unsupported = |message: String| GraftError::Unsupported { op: "grow_width", message };
    if d2 < d || src_spec.vocab != dst_spec.vocab || src_spec.layers.len() != dst_spec.layers.len() {
        return Err(unsupported(format!(
            "the target must keep vocab and layer count and not narrow d_model ({d} -> {d2})"
        )));
    }
    let ratio = d as f64 / d2 as f64;
    if ((dst_spec.norm_eps - src_spec.norm_eps * ratio) / src_spec.norm_eps).abs() > 1e-9 {
        return Err(unsupported(format!(
            "widening d_model {d} -> {d2} needs norm_eps {} (= {} * d/d') to stay exact",
            src_spec.norm_eps * ratio,
            src_spec.norm_eps
        )));
    }
    for (i, (a, b)) in src_spec.layers.iter().zip(&dst_spec.layers).enumerate() {
        if !widenable(a, b, d, d2) {
            return Err(unsupported(format!(
                "layer {i}: {} -> {} cannot be widened exactly (only mlp/swiglu hidden widths, and d_model for \
                 attention with a fixed head width, mlp and swiglu)",
                a.kind().name(),
                b.kind().name()
            )));
        }
    }
    let mut t = Target::new(dst);
    for path in t.paths_under("") {
        let s = src.get(&path).ok_or_else(|| GraftError::Missing { tensor: path.clone() })?;
        let cur = t.current(&path)?;
        let (ss, cs) = (s.size(), cur.size());
        if ss == cs && d == d2 {
            t.copy(src, &path, &path)?;
            continue;
        }
        if ss.len() != cs.len() || ss.iter().zip(&cs).any(|(a, b)| a > b) {
            return Err(GraftError::Shape { tensor: path, message: format!("cannot embed {ss:?} into {cs:?}") });
        }
        let zero = path == "embed.weight" || is_output(dst_spec, &path);
        let norm = path.ends_with("norm.weight");
        let out = if zero { cur.zeros_like() } else { cur };
        let value = if norm { s.to_kind(out.kind()) * ratio.sqrt() } else { s.to_kind(out.kind()) };
        let mut block = out.shallow_clone();
        for (dim, &n) in ss.iter().enumerate() {
            block = block.narrow(dim as i64, 0, n);
        }
        block.copy_(&value);
        let how = match (norm, zero) {
            (true, _) => format!("leading {ss:?} copied, times sqrt(d/d') = {:.6}; the rest at init", ratio.sqrt()),
            (_, true) => format!("leading {ss:?} copied, the rest zero (writes into the residual)"),
            _ => format!("leading {ss:?} copied, the rest at init (reads only zero inputs or feeds zero outputs)"),
        };
        t.set(&path, &out, Action::Transformed { from: vec![path.clone()], how })?;
    }
    Ok(t.report("grow_width"))
}

/// Whether `path` is a residual-writing parameter of its layer's mixer.
fn is_output(spec: &StackSpec, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("layers.") else { return false };
    let Some((i, rel)) = rest.split_once(".mixer.") else { return false };
    let Some(layer) = i.parse::<usize>().ok().and_then(|i| spec.layers.get(i)) else { return false };
    layer.output_params().iter().any(|o| rel == *o || rel.ends_with(&format!(".{o}")))
}
