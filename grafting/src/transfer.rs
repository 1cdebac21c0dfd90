//! `transfer`: swap mixers and initialise each new mixer from the old one's weights where the mapping is
//! known (Mamba-in-the-Llama, arXiv 2408.15237; LoLCATs, arXiv 2410.10254); identical parameters (same
//! path, same shape: norms, channel mixers, embeddings, unchanged layers) are copied as they are.
//!
//! Known mappings (source attention without biases; K and V heads repeated to the query heads first when
//! grouped), in [`mapping`]:
//! - attention -> deltanet, gated_deltanet: `in_proj` rows `[q | k | v | beta]` <- `[W_q | W_k | W_v | fresh]`,
//!   `o_proj` <- `W_o`; needs heads and head widths to agree (Dk = Dv = D); the convolution, beta and
//!   the decay are fresh.
//! - attention -> mamba2: `in_proj` rows `[z | x | B | C | dt]` <- `[fresh | W_v | W_k | W_q | fresh]`,
//!   `out_proj` <- `W_o`; needs E = N = H D (Mamba-2 here has one B/C group); z, conv, dt, A, D and the
//!   inner norm are fresh.
//! - attention -> attention with different positional settings (`rope_scale`, `rope_base`, `window`):
//!   every tensor keeps its shape, so it is copied.
//!
//! - attention -> linear_attention, based, gla, retnet: Q, K, V, O to their projections, gates and decays
//!   fresh (`transfer_linear.rs`, which documents the shapes each needs).
//!
//! Adding a mapping: one arm in [`mapping`] and a function filling the target's tensors from the source's,
//! checked for shape by [`Target::set`].

use crate::transfer_linear;
use crate::{check_layer, copy_layer, copy_outer, same_outer, Action, GraftError, GraftReport, Target, Weights};
use operators::{LayerSpec, MixerKind, StackSpec};
use std::collections::BTreeSet;
use tch::nn::VarStore;
use tch::Tensor;

/// Per-transfer choices.
#[derive(Debug, Clone, Default)]
pub struct TransferOptions {
    /// A changed layer with no known mapping is initialised fresh instead of being an error.
    pub fallback_fresh: bool,
    /// Layers whose mixer is initialised fresh whatever the mapping (the self-graft control; regress).
    pub fresh_layers: BTreeSet<usize>,
}

/// Fills the target store `dst` (built from `dst_spec`) from the source weights; layer i maps to layer i.
pub fn transfer(
    src_spec: &StackSpec,
    src: &Weights,
    dst_spec: &StackSpec,
    dst: &VarStore,
    opts: &TransferOptions,
) -> Result<GraftReport, GraftError> {
    same_outer("transfer", src_spec, dst_spec)?;
    for &l in &opts.fresh_layers {
        check_layer(dst_spec, l, "target")?;
    }
    if src_spec.layers.len() != dst_spec.layers.len() {
        let (n, m) = (src_spec.layers.len(), dst_spec.layers.len());
        return Err(GraftError::NoLayer {
            layer: n.min(m),
            which: if n < m { "source" } else { "target" },
            len: n.min(m),
        });
    }
    let mut t = Target::new(dst);
    copy_outer(&mut t, src)?;
    for (i, (from, to)) in src_spec.layers.iter().zip(&dst_spec.layers).enumerate() {
        let mixer = format!("layers.{i}.mixer.");
        let norm = format!("layers.{i}.norm.weight");
        if opts.fresh_layers.contains(&i) {
            t.copy(src, &norm, &norm)?;
            for p in t.paths_under(&mixer) {
                t.fresh(&p, "fresh mixer by rule");
            }
            continue;
        }
        if from == to || from.kind() == to.kind() {
            match copy_layer(&mut t, src, i, i) {
                Ok(()) => continue,
                Err(e) if !opts.fallback_fresh || from == to => return Err(e),
                Err(_) => {}
            }
        } else if let Some(map) = mapping(from.kind(), to.kind()) {
            t.copy(src, &norm, &norm)?;
            map(&mut t, src, i, from, to)?;
            for p in t.paths_under(&mixer) {
                if !t.done.contains_key(&p) {
                    t.fresh(&p, &format!("no counterpart in {}", from.kind().name()));
                }
            }
            continue;
        } else if !opts.fallback_fresh {
            return Err(GraftError::NoMapping {
                layer: i,
                from: from.kind().name().into(),
                to: to.kind().name().into(),
            });
        }
        t.copy(src, &norm, &norm)?;
        for p in t.paths_under(&mixer) {
            t.fresh(&p, "fallback: fresh");
        }
    }
    Ok(t.report("transfer"))
}

/// Fills layer `i`'s target mixer from the source mixer.
pub(crate) type MapFn = fn(&mut Target, &Weights, usize, &LayerSpec, &LayerSpec) -> Result<(), GraftError>;

/// The mapping table: `Some` where a transfer from `from` to `to` is known.
pub(crate) fn mapping(from: MixerKind, to: MixerKind) -> Option<MapFn> {
    use MixerKind::*;
    match (from, to) {
        (Attention, Deltanet | GatedDeltanet) => Some(attention_to_deltanet),
        (Attention, Mamba2) => Some(attention_to_mamba2),
        (Attention, LinearAttention) => Some(transfer_linear::attention_to_linear_attention),
        (Attention, Based) => Some(transfer_linear::attention_to_based),
        (Attention, Gla | Retnet) => Some(transfer_linear::attention_to_gated),
        _ => None,
    }
}

/// Whether `transfer` knows how to initialise a `to` mixer from a `from` mixer.
pub fn has_mapping(from: MixerKind, to: MixerKind) -> bool {
    mapping(from, to).is_some()
}

/// Attention's projections with K and V repeated to the query heads: (q, k, v [H D, d], o [d, H D], H, D).
pub(crate) fn attention_weights(
    src: &Weights,
    i: usize,
    spec: &LayerSpec,
) -> Result<(Tensor, Tensor, Tensor, Tensor, i64, i64), GraftError> {
    let LayerSpec::Attention(a) = spec else { unreachable!("attention mapping from a non-attention layer") };
    let get = |n: &str| {
        let p = format!("layers.{i}.mixer.{n}");
        src.get(&p).map(|t| t.shallow_clone()).ok_or(GraftError::Missing { tensor: p })
    };
    if a.bias {
        return Err(GraftError::Shape {
            tensor: format!("layers.{i}.mixer.q_proj.bias"),
            message: "attention with biases has no known mapping (the target has no biases)".into(),
        });
    }
    let (q, k, v, o) = (get("q_proj.weight")?, get("k_proj.weight")?, get("v_proj.weight")?, get("o_proj.weight")?);
    let d = q.size()[1];
    let (h, kv) = (a.heads, a.kv_heads());
    let hd = q.size()[0] / h;
    let repeat = |t: Tensor| t.view([kv, hd, d]).repeat_interleave_self_int(h / kv, 0, None).reshape([h * hd, d]);
    Ok((q, repeat(k), repeat(v), o, h, hd))
}

pub(crate) fn shape_err(i: usize, tensor: &str, message: String) -> GraftError {
    GraftError::Shape { tensor: format!("layers.{i}.mixer.{tensor}"), message }
}

fn attention_to_deltanet(
    t: &mut Target,
    src: &Weights,
    i: usize,
    from: &LayerSpec,
    to: &LayerSpec,
) -> Result<(), GraftError> {
    let (q, k, v, _o, h, hd) = attention_weights(src, i, from)?;
    let heads = match to {
        LayerSpec::Deltanet(s) => s.heads,
        LayerSpec::GatedDeltanet(s) => s.heads,
        _ => unreachable!(),
    };
    let p = |n: &str| format!("layers.{i}.mixer.{n}");
    let dv = t.shape(&p("o_norm.weight"))?[0];
    let rows = t.shape(&p("in_proj.weight"))?[0];
    let dk = (rows / heads - 1 - dv) / 2;
    if heads != h || dk != hd || dv != hd {
        return Err(shape_err(
            i,
            "in_proj.weight",
            format!("needs heads {h}, head_dim {hd} and expand_v 1 to take attention's Q, K, V; target has heads {heads}, Dk {dk}, Dv {dv}"),
        ));
    }
    let w = t.current(&p("in_proj.weight"))?;
    let beta = w.narrow(0, 3 * h * hd, h);
    let from = vec![p("q_proj.weight"), p("k_proj.weight"), p("v_proj.weight")];
    let how = "rows [q | k | v] from W_q, W_k, W_v (K, V repeated per query head); beta rows fresh".to_string();
    t.set(&p("in_proj.weight"), &Tensor::cat(&[q, k, v, beta], 0), Action::Transformed { from, how })?;
    t.copy(src, &p("o_proj.weight"), &p("o_proj.weight"))
}

fn attention_to_mamba2(
    t: &mut Target,
    src: &Weights,
    i: usize,
    from: &LayerSpec,
    _to: &LayerSpec,
) -> Result<(), GraftError> {
    let (q, k, v, o, h, hd) = attention_weights(src, i, from)?;
    let p = |n: &str| format!("layers.{i}.mixer.{n}");
    let e = t.shape(&p("out_proj.weight"))?[1];
    let heads = t.shape(&p("D"))?[0];
    let n = (t.shape(&p("in_proj.weight"))?[0] - 2 * e - heads) / 2;
    if e != h * hd || n != h * hd {
        return Err(shape_err(
            i,
            "in_proj.weight",
            format!(
                "needs expand*d_model = d_state = {} (attention's H*D) to take V, K, Q; target has E {e}, N {n}",
                h * hd
            ),
        ));
    }
    let w = t.current(&p("in_proj.weight"))?;
    let (z, dt) = (w.narrow(0, 0, e), w.narrow(0, 2 * e + 2 * n, heads));
    let from = vec![p("v_proj.weight"), p("k_proj.weight"), p("q_proj.weight")];
    let how = "rows [z | x | B | C | dt]: x from W_v, B from W_k, C from W_q; z and dt rows fresh".to_string();
    t.set(&p("in_proj.weight"), &Tensor::cat(&[z, v, k, q, dt], 0), Action::Transformed { from, how })?;
    let from = vec![p("o_proj.weight")];
    t.set(&p("out_proj.weight"), &o, Action::Transformed { from, how: "from W_o".into() })
}
