//! attention -> linear_attention, based, gla, retnet: the exact weight mapping on tiny models, the
//! per-parameter report (copied / transformed / fresh), grouped K/V and widths that do not fit.

use grafting::{transfer, weights_of, Action, GraftReport, TransferOptions, Weights};
use kernels::KernelPath;
use operators::{LayerSpec, Stack, StackSpec};
use std::collections::BTreeMap;
use tch::nn::VarStore;
use tch::{Device, Tensor};

const ATTN: &str = r#"{"mixer": "attention", "params": {"heads": 2}}"#;
const GQA: &str = r#"{"mixer": "attention", "params": {"heads": 2, "kv_heads": 1}}"#;
const SWIGLU: &str = r#"{"mixer": "swiglu", "params": {}}"#;

fn spec(layers: &[&str]) -> StackSpec {
    StackSpec {
        vocab: 17,
        d_model: 16,
        layers: layers.iter().map(|l| serde_json::from_str::<LayerSpec>(l).unwrap()).collect(),
        norm_eps: 1e-5,
        head: Default::default(),
    }
}

/// Transfers `[src_mixer, swiglu]` into `[dst_mixer, swiglu]`: (source weights, target weights, report).
fn run(src_mixer: &str, dst_mixer: &str) -> (Weights, BTreeMap<String, Tensor>, GraftReport) {
    let (src, dst) = (spec(&[src_mixer, SWIGLU]), spec(&[dst_mixer, SWIGLU]));
    let vs = VarStore::new(Device::Cpu);
    let _ = Stack::new(&vs.root(), &src, KernelPath::Reference);
    let w = weights_of(&vs);
    let vs2 = VarStore::new(Device::Cpu);
    let _ = Stack::new(&vs2.root(), &dst, KernelPath::Reference);
    let r = transfer(&src, &w, &dst, &vs2, &TransferOptions::default()).unwrap();
    (w, vs2.variables().into_iter().collect(), r)
}

fn src(n: &str) -> String {
    format!("layers.0.mixer.{n}.weight")
}

fn fresh(r: &GraftReport, path: &str) -> bool {
    matches!(r.get(path), Some(Action::Fresh { .. }))
}

/// The outer parameters, the norm and the channel mixer are copied as they are.
fn outer_copied(w: &Weights, v: &BTreeMap<String, Tensor>, r: &GraftReport) {
    for p in ["embed.weight", "layers.0.norm.weight", "layers.1.mixer.up.weight", "layers.1.mixer.down.weight"] {
        assert_eq!(r.get(p), Some(&Action::Copied), "{p}");
        assert!(v[p].equal(&w[p]), "{p}");
    }
}

#[test]
fn attention_to_linear_attention_keeps_q_k_v_o() {
    let (w, v, r) = run(ATTN, r#"{"mixer": "linear_attention", "params": {"heads": 2}}"#);
    for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
        assert!(v[&src(n)].equal(&w[&src(n)]), "{n}");
        assert_eq!(r.get(&src(n)), Some(&Action::Copied), "{n}");
    }
    outer_copied(&w, &v, &r);
    assert_eq!(r.counts().1 + r.counts().2, 0, "{r:?}");
}

#[test]
fn attention_to_hedgehog_linear_attention_leaves_the_maps_fresh() {
    let (w, v, r) = run(ATTN, r#"{"mixer": "linear_attention", "params": {"heads": 2, "feature_map": "hedgehog"}}"#);
    assert!(v[&src("q_proj")].equal(&w[&src("q_proj")]));
    for p in ["q_map.weight", "q_map.bias", "k_map.weight", "k_map.bias"] {
        assert!(fresh(&r, &format!("layers.0.mixer.{p}")), "{p}: {:?}", r.get(p));
    }
}

#[test]
fn attention_to_based_feeds_both_branches_and_halves_the_output() {
    let based = r#"{"mixer": "based", "params": {"heads": 2, "feature_dim": 8, "window": 4, "window_heads": 2}}"#;
    let (w, v, r) = run(ATTN, based);
    for branch in ["linear", "window_attn"] {
        for n in ["q_proj", "k_proj", "v_proj"] {
            assert!(v[&src(&format!("{branch}.{n}"))].equal(&w[&src(n)]), "{branch}.{n}");
        }
        let o = &v[&src(&format!("{branch}.o_proj"))];
        assert!(o.equal(&(&w[&src("o_proj")] * 0.5)), "{branch}.o_proj");
        assert_eq!(
            r.get(&src(&format!("{branch}.o_proj"))),
            Some(&Action::Transformed { from: vec![src("o_proj")], how: "W_o * 0.5".into() })
        );
    }
    outer_copied(&w, &v, &r);
    assert_eq!(r.counts().2, 0, "based has no parameter without a counterpart: {r:?}");
}

#[test]
fn attention_to_gla_maps_projections_and_leaves_gates_fresh() {
    let gla = r#"{"mixer": "gla", "params": {"heads": 2, "expand_k": 1.0, "expand_v": 1.0}}"#;
    let (w, v, r) = run(ATTN, gla);
    for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
        assert!(v[&src(n)].equal(&w[&src(n)]), "{n}");
        assert_eq!(r.get(&src(n)), Some(&Action::Copied), "{n}");
    }
    for p in ["g_proj.weight", "gate_down.weight", "gate_up.weight", "gate_up.bias", "g_norm.weight"] {
        assert!(fresh(&r, &format!("layers.0.mixer.{p}")), "{p}");
    }
    outer_copied(&w, &v, &r);
    assert_eq!(r.counts(), (r.params.len() - 5, 0, 5, 0));
}

#[test]
fn attention_to_retnet_maps_projections_and_leaves_the_output_gate_fresh() {
    let (w, v, r) = run(ATTN, r#"{"mixer": "retnet", "params": {"heads": 2, "expand_v": 1.0}}"#);
    for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
        assert!(v[&src(n)].equal(&w[&src(n)]), "{n}");
    }
    assert!(fresh(&r, &src("g_proj")));
    assert_eq!(r.counts(), (r.params.len() - 1, 0, 1, 0));
}

#[test]
fn grouped_kv_is_repeated_per_query_head_and_reported_transformed() {
    let (w, v, r) = run(GQA, r#"{"mixer": "gla", "params": {"heads": 2, "expand_k": 1.0, "expand_v": 1.0}}"#);
    let k = &w[&src("k_proj")]; // [8, 16]: one kv head of width 8
    assert!(v[&src("k_proj")].narrow(0, 0, 8).equal(k) && v[&src("k_proj")].narrow(0, 8, 8).equal(k));
    let vv = &w[&src("v_proj")];
    assert!(v[&src("v_proj")].narrow(0, 8, 8).equal(vv));
    assert!(matches!(r.get(&src("k_proj")), Some(Action::Transformed { how, .. }) if how.contains("repeated")));
    assert!(v[&src("q_proj")].equal(&w[&src("q_proj")]));
}

#[test]
fn widths_that_do_not_fit_name_the_layer_and_tensor() {
    let cases = [
        (r#"{"mixer": "gla", "params": {"heads": 2}}"#, "layers.0.mixer.q_proj.weight"), // expand_k 0.5
        (r#"{"mixer": "retnet", "params": {"heads": 2}}"#, "layers.0.mixer.v_proj.weight"), // expand_v 2
        (r#"{"mixer": "retnet", "params": {"heads": 4, "expand_v": 1.0}}"#, "layers.0.mixer.q_proj.weight"),
        (r#"{"mixer": "linear_attention", "params": {"heads": 4}}"#, "layers.0.mixer.q_proj.weight"),
        (r#"{"mixer": "based", "params": {"heads": 2, "window_heads": 2}}"#, "layers.0.mixer.linear.q_proj.weight"),
    ];
    for (dst, tensor) in cases {
        let (s, d) = (spec(&[ATTN, SWIGLU]), spec(&[dst, SWIGLU]));
        let vs = VarStore::new(Device::Cpu);
        let _ = Stack::new(&vs.root(), &s, KernelPath::Reference);
        let vs2 = VarStore::new(Device::Cpu);
        let _ = Stack::new(&vs2.root(), &d, KernelPath::Reference);
        let e = transfer(&s, &weights_of(&vs), &d, &vs2, &TransferOptions::default()).unwrap_err();
        assert!(e.to_string().contains(tensor), "{dst}: {e}");
    }
}
