//! `transfer` mappings from softmax attention into the linear-attention family: the query, key, value
//! and output projections carry over, everything the source has no counterpart for (gates, decays, the
//! output gate, Hedgehog's feature maps, inner norms) keeps the target's own initialisation and is
//! reported fresh by [`crate::transfer`]. This is the LoLCATs starting point (arXiv 2410.10254): the new
//! mixer reads the same q, k, v as the attention it replaces and only its kernel changes.
//!
//! Shapes (H heads, D head width; K and V repeated to the query heads when the source groups them):
//! - `linear_attention`: `q_proj, k_proj, v_proj [H D, d]`, `o_proj [d, H D]` <- W_q, W_k, W_v, W_o;
//!   needs heads H and head_dim D. Hedgehog's `q_map`/`k_map` are fresh (they start as the identity).
//! - `based`: both branches read the same Q, K, V: the sliding-window branch (`window_attn`, softmax
//!   attention) takes W_q, W_k, W_v as they are, the Taylor linear branch (`linear`) takes them too
//!   (needs `feature_dim` = D and heads = `window_heads` = H); each branch's output projection is W_o / 2,
//!   so the summed output starts as the average of windowed softmax and Taylor-approximated global
//!   attention, both estimates of the source's attention.
//! - `gla`: `q_proj, k_proj [Kd, d]`, `v_proj [Vd, d]`, `o_proj [d, Vd]` <- W_q, W_k, W_v, W_o; needs
//!   Kd = Vd = H D (`expand_k`, `expand_v` = H D / d). The low-rank decay gate, the output gate `g_proj`
//!   and the inner norm `g_norm` are fresh.
//! - `retnet`: as gla with Kd = d (fixed) and Vd = `expand_v` d; its decays are constants (not parameters)
//!   and its GroupNorm has no weights, so only `g_proj` is fresh.
//!
//! A width that does not fit is a [`GraftError::Shape`] naming the layer's tensor and the sizes needed.

use crate::transfer::{attention_weights, shape_err};
use crate::{Action, GraftError, Target, Weights};
use operators::LayerSpec;
use tch::Tensor;

/// Writes `value` (built from source tensors `from`) to target `to`: `Copied` when it is the source tensor
/// of the same path unchanged, `Transformed` otherwise.
fn put(t: &mut Target, src: &Weights, to: &str, value: &Tensor, from: &[String], how: &str) -> Result<(), GraftError> {
    let same =
        from.len() == 1 && from[0] == to && src.get(to).is_some_and(|s| s.size() == value.size() && s.equal(value));
    let action = if same { Action::Copied } else { Action::Transformed { from: from.to_vec(), how: how.to_string() } };
    t.set(to, value, action)
}

/// Checks the target tensor `tensor` of layer `i` has `want` shape, with a message saying what must match.
fn need(t: &Target, i: usize, tensor: &str, want: [i64; 2], what: &str) -> Result<(), GraftError> {
    let got = t.shape(&format!("layers.{i}.mixer.{tensor}"))?;
    if got != want {
        return Err(shape_err(i, tensor, format!("is {got:?}; taking attention's weights needs {want:?} ({what})")));
    }
    Ok(())
}

/// Q, K, V, O of source layer `i` into the target tensors `{prefix}{q,k,v,o}_proj.weight` of a target with
/// `heads` heads, O scaled by `o_scale`; `what` names the target parameters that set the widths (for the
/// error). Equal shapes are not enough: the heads must split the same way.
#[allow(clippy::too_many_arguments)]
fn qkvo_into(
    t: &mut Target,
    src: &Weights,
    i: usize,
    from: &LayerSpec,
    heads: i64,
    prefix: &str,
    o_scale: f64,
    what: &str,
) -> Result<(), GraftError> {
    let (q, k, v, o, h, hd) = attention_weights(src, i, from)?;
    let d = q.size()[1];
    if heads != h {
        let msg = format!("target has {heads} heads; taking attention's weights needs its {h} heads");
        return Err(shape_err(i, &format!("{prefix}q_proj.weight"), msg));
    }
    for n in ["q_proj", "k_proj", "v_proj"] {
        need(t, i, &format!("{prefix}{n}.weight"), [h * hd, d], what)?;
    }
    need(t, i, &format!("{prefix}o_proj.weight"), [d, h * hd], what)?;
    let s = |n: &str| format!("layers.{i}.mixer.{n}.weight");
    let kv_how = if k.size() == src[&s("k_proj")].size() { "W_k" } else { "W_k, heads repeated per query head" };
    let vv_how = if kv_how == "W_k" { "W_v" } else { "W_v, heads repeated per query head" };
    let dst = |n: &str| format!("layers.{i}.mixer.{prefix}{n}.weight");
    put(t, src, &dst("q_proj"), &q, &[s("q_proj")], "W_q")?;
    put(t, src, &dst("k_proj"), &k, &[s("k_proj")], kv_how)?;
    put(t, src, &dst("v_proj"), &v, &[s("v_proj")], vv_how)?;
    let (o, how) = if o_scale == 1.0 { (o, "W_o".to_string()) } else { (o * o_scale, format!("W_o * {o_scale}")) };
    put(t, src, &dst("o_proj"), &o, &[s("o_proj")], &how)
}

/// attention -> linear_attention (any feature map; Hedgehog's maps stay fresh).
pub(crate) fn attention_to_linear_attention(
    t: &mut Target,
    src: &Weights,
    i: usize,
    from: &LayerSpec,
    to: &LayerSpec,
) -> Result<(), GraftError> {
    let LayerSpec::LinearAttention(l) = to else { unreachable!("linear_attention mapping to {to:?}") };
    qkvo_into(t, src, i, from, l.heads, "", 1.0, "head_dim as the attention layer")
}

/// attention -> based: Q, K, V into both branches, W_o / 2 into each output projection.
pub(crate) fn attention_to_based(
    t: &mut Target,
    src: &Weights,
    i: usize,
    from: &LayerSpec,
    to: &LayerSpec,
) -> Result<(), GraftError> {
    let LayerSpec::Based(b) = to else { unreachable!("based mapping to {to:?}") };
    qkvo_into(t, src, i, from, b.window_heads, "window_attn.", 0.5, "d_model / window_heads = head_dim")?;
    qkvo_into(t, src, i, from, b.heads, "linear.", 0.5, "feature_dim = d_model / heads = head_dim")
}

/// attention -> gla or retnet: Q, K, V, O to their projections; gates fresh.
pub(crate) fn attention_to_gated(
    t: &mut Target,
    src: &Weights,
    i: usize,
    from: &LayerSpec,
    to: &LayerSpec,
) -> Result<(), GraftError> {
    let (heads, widths) = match to {
        LayerSpec::Gla(g) => (g.heads, "expand_k and expand_v giving key and value widths H*head_dim"),
        LayerSpec::Retnet(r) => (r.heads, "key width d_model and expand_v giving value width H*head_dim"),
        _ => unreachable!("gated mapping to a mixer that is neither gla nor retnet"),
    };
    qkvo_into(t, src, i, from, heads, "", 1.0, widths)
}
