//! Function-preserving grafts leave the loss unchanged (|spike| <= 1e-5 in float64 on CPU), and transfers map
//! weights exactly on tiny models.

use grafting::{grow_depth, grow_width, transfer, weights_of, Action, DepthMode, GraftError, TransferOptions, Weights};
use kernels::KernelPath;
use operators::{LayerSpec, MixerKind, Stack, StackSpec};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

fn layer(yaml: &str) -> LayerSpec {
    let v: serde_json::Value = serde_json::from_str(yaml).unwrap();
    serde_json::from_value(v).unwrap()
}

fn spec(layers: &[&str]) -> StackSpec {
    StackSpec { vocab: 17, d_model: 16, layers: layers.iter().map(|l| layer(l)).collect(), norm_eps: 1e-5 }
}

const ATTN: &str = r#"{"mixer": "attention", "params": {"heads": 2}}"#;
const SWIGLU: &str = r#"{"mixer": "swiglu", "params": {}}"#;
const WIDE: &str = r#"{"mixer": "swiglu", "params": {"expand": 4.0}}"#;
const MLP: &str = r#"{"mixer": "mlp", "params": {}}"#;
const WIDE_MLP: &str = r#"{"mixer": "mlp", "params": {"expand": 6.0}}"#;

/// A float64 stack on CPU with its var store.
fn build(spec: &StackSpec, seed: i64) -> (VarStore, Stack) {
    tch::manual_seed(seed);
    let mut vs = VarStore::new(Device::Cpu);
    let stack = Stack::new(&vs.root(), spec, KernelPath::Reference);
    vs.set_kind(Kind::Double);
    // Non-zero output projections, so an identity graft is not trivially a no-op on zero weights.
    tch::no_grad(|| {
        let vars: std::collections::BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        for (_, mut t) in vars {
            let _ = t.g_add_(&(t.randn_like() * 0.05));
        }
    });
    (vs, stack)
}

fn eval_loss(stack: &Stack) -> f64 {
    // Fixed tokens (tests run in parallel threads that share libtorch's generator).
    let x = (Tensor::arange(36, (Kind::Int64, Device::Cpu)) * 7).remainder(17).view([3, 12]);
    let y = (Tensor::arange(36, (Kind::Int64, Device::Cpu)) * 5 + 3).remainder(17).view([3, 12]);
    tch::no_grad(|| {
        let logits = stack.forward(&x);
        logits
            .view([-1, 17])
            .cross_entropy_loss::<Tensor>(&y.view([-1]), None, Reduction::Mean, -100, 0.0)
            .double_value(&[])
    })
}

/// Loss after minus loss before a graft from a `src` stack into a `dst` stack.
fn spike(src: &StackSpec, dst: &StackSpec, op: impl Fn(&Weights, &VarStore) -> grafting::GraftReport) -> f64 {
    let (vs, stack) = build(src, 1);
    let before = eval_loss(&stack);
    let (vs2, stack2) = build(dst, 2);
    let report = op(&weights_of(&vs), &vs2);
    assert!(!report.params.is_empty());
    let after = eval_loss(&stack2);
    drop(vs);
    after - before
}

#[test]
fn identity_transfer_between_equal_configurations_preserves_the_loss() {
    let s = spec(&[ATTN, SWIGLU, ATTN, SWIGLU]);
    let d = spike(&s, &s, |w, t| {
        let r = transfer(&s, w, &s, t, &TransferOptions::default()).unwrap();
        assert_eq!(r.counts(), (r.params.len(), 0, 0, 0));
        r
    });
    assert!(d.abs() <= 1e-5, "spike {d}");
}

#[test]
fn grow_depth_with_identity_blocks_preserves_the_loss() {
    let src = spec(&[ATTN, SWIGLU]);
    let dst = spec(&[ATTN, SWIGLU, ATTN, SWIGLU, MLP]);
    let d = spike(&src, &dst, |w, t| grow_depth(&src, w, &dst, t, DepthMode::Identity).unwrap());
    assert!(d.abs() <= 1e-5, "spike {d}");
}

#[test]
fn grow_depth_stack_copies_layers_cyclically() {
    let src = spec(&[ATTN, SWIGLU]);
    let dst = spec(&[ATTN, SWIGLU, ATTN, SWIGLU]);
    let (vs, _) = build(&src, 1);
    let w = weights_of(&vs);
    let (vs2, _) = build(&dst, 2);
    let r = grow_depth(&src, &w, &dst, &vs2, DepthMode::Stack).unwrap();
    let v = vs2.variables();
    assert!(v["layers.2.mixer.q_proj.weight"].equal(&w["layers.0.mixer.q_proj.weight"]));
    assert_eq!(
        r.get("layers.3.mixer.down.weight"),
        Some(&Action::Transformed { from: vec!["layers.1.mixer.down.weight".into()], how: "moved".into() })
    );
}

#[test]
fn grow_width_of_swiglu_and_mlp_preserves_the_loss() {
    let src = spec(&[ATTN, SWIGLU, ATTN, MLP]);
    let dst = spec(&[ATTN, WIDE, ATTN, WIDE_MLP]);
    let d = spike(&src, &dst, |w, t| grow_width(&src, w, &dst, t).unwrap());
    assert!(d.abs() <= 1e-5, "spike {d}");
}

#[test]
fn grow_width_of_d_model_preserves_the_loss_for_attention_mlp_swiglu() {
    let fixed = r#"{"mixer": "attention", "params": {"heads": 2, "head_dim": 8, "kv_heads": 1}}"#;
    let src = spec(&[fixed, SWIGLU, fixed, MLP]);
    let mut dst = spec(&[fixed, WIDE, fixed, MLP]);
    dst.d_model = 24;
    dst.norm_eps = src.norm_eps * 16.0 / 24.0;
    let d = spike(&src, &dst, |w, t| grow_width(&src, w, &dst, t).unwrap());
    assert!(d.abs() <= 1e-5, "spike {d}");
}

#[test]
fn grow_width_refuses_what_it_cannot_keep_exact() {
    let src = spec(&[ATTN, SWIGLU]);
    let mut dst = src.clone();
    dst.d_model = 32; // attention's head width would change with d/heads, and norm_eps is not scaled
    let (vs, _) = build(&src, 1);
    let (vs2, _) = build(&dst, 2);
    let e = grow_width(&src, &weights_of(&vs), &dst, &vs2).unwrap_err();
    assert!(e.to_string().contains("norm_eps"), "{e}");
    dst.norm_eps = src.norm_eps / 2.0;
    let (vs2, _) = build(&dst, 2);
    let e = grow_width(&src, &weights_of(&vs), &dst, &vs2).unwrap_err();
    assert!(e.to_string().contains("layer 0"), "{e}");
}

#[test]
fn transfer_attention_to_deltanet_maps_q_k_v_o() {
    let src = spec(&[ATTN, SWIGLU]);
    let dst = spec(&[r#"{"mixer": "gated_deltanet", "params": {"heads": 2, "expand_v": 1}}"#, SWIGLU]);
    let (vs, _) = build(&src, 1);
    let w = weights_of(&vs);
    let (vs2, _) = build(&dst, 2);
    let r = transfer(&src, &w, &dst, &vs2, &TransferOptions::default()).unwrap();
    let v = vs2.variables();
    let inp = &v["layers.0.mixer.in_proj.weight"]; // [q 16 | k 16 | v 16 | beta 2, 16]
    assert!(inp.narrow(0, 0, 16).equal(&w["layers.0.mixer.q_proj.weight"]));
    assert!(inp.narrow(0, 16, 16).equal(&w["layers.0.mixer.k_proj.weight"]));
    assert!(inp.narrow(0, 32, 16).equal(&w["layers.0.mixer.v_proj.weight"]));
    assert!(v["layers.0.mixer.o_proj.weight"].equal(&w["layers.0.mixer.o_proj.weight"]));
    assert!(v["layers.1.mixer.down.weight"].equal(&w["layers.1.mixer.down.weight"]));
    assert_eq!(r.get("layers.1.mixer.down.weight"), Some(&Action::Copied));
    assert!(matches!(r.get("layers.0.mixer.a_proj.weight"), Some(Action::Fresh { .. })));
    assert!(matches!(r.get("layers.0.mixer.in_proj.weight"), Some(Action::Transformed { .. })));
}

#[test]
fn transfer_attention_to_mamba2_maps_c_b_x_and_output() {
    let src = spec(&[ATTN, SWIGLU]);
    let dst = spec(&[r#"{"mixer": "mamba2", "params": {"expand": 1, "d_state": 16, "head_dim": 8}}"#, SWIGLU]);
    let (vs, _) = build(&src, 1);
    let w = weights_of(&vs);
    let (vs2, _) = build(&dst, 2);
    transfer(&src, &w, &dst, &vs2, &TransferOptions::default()).unwrap();
    let v = vs2.variables();
    let inp = &v["layers.0.mixer.in_proj.weight"]; // [z 16 | x 16 | B 16 | C 16 | dt 2, 16]
    assert!(inp.narrow(0, 16, 16).equal(&w["layers.0.mixer.v_proj.weight"]));
    assert!(inp.narrow(0, 32, 16).equal(&w["layers.0.mixer.k_proj.weight"]));
    assert!(inp.narrow(0, 48, 16).equal(&w["layers.0.mixer.q_proj.weight"]));
    assert!(v["layers.0.mixer.out_proj.weight"].equal(&w["layers.0.mixer.o_proj.weight"]));
}

#[test]
fn transfer_with_grouped_kv_repeats_heads() {
    let src = spec(&[r#"{"mixer": "attention", "params": {"heads": 2, "kv_heads": 1}}"#, SWIGLU]);
    let dst = spec(&[r#"{"mixer": "deltanet", "params": {"heads": 2}}"#, SWIGLU]);
    let (vs, _) = build(&src, 1);
    let w = weights_of(&vs);
    let (vs2, _) = build(&dst, 2);
    transfer(&src, &w, &dst, &vs2, &TransferOptions::default()).unwrap();
    let k = &w["layers.0.mixer.k_proj.weight"]; // [8, 16]
    let inp = &vs2.variables()["layers.0.mixer.in_proj.weight"];
    assert!(inp.narrow(0, 16, 8).equal(k) && inp.narrow(0, 24, 8).equal(k));
}

#[test]
fn unknown_mapping_is_an_error_unless_fallback_fresh() {
    let src = spec(&[ATTN, SWIGLU]);
    let dst = spec(&[r#"{"mixer": "hyena", "params": {}}"#, SWIGLU]);
    let (vs, _) = build(&src, 1);
    let w = weights_of(&vs);
    let (vs2, _) = build(&dst, 2);
    let e = transfer(&src, &w, &dst, &vs2, &TransferOptions::default()).unwrap_err();
    assert_eq!(e, GraftError::NoMapping { layer: 0, from: "attention".into(), to: "hyena".into() });
    let opts = TransferOptions { fallback_fresh: true, ..Default::default() };
    let r = transfer(&src, &w, &dst, &vs2, &opts).unwrap();
    assert_eq!(r.get("layers.0.norm.weight"), Some(&Action::Copied));
    assert!(matches!(r.get("layers.0.mixer.out_proj.weight"), Some(Action::Fresh { .. })));
    assert!(!grafting::has_mapping(MixerKind::Attention, MixerKind::Hyena));
}

#[test]
fn mismatched_shapes_name_the_tensor() {
    let src = spec(&[ATTN, SWIGLU]);
    let dst = spec(&[r#"{"mixer": "deltanet", "params": {"heads": 4}}"#, SWIGLU]);
    let (vs, _) = build(&src, 1);
    let (vs2, _) = build(&dst, 2);
    let e = transfer(&src, &weights_of(&vs), &dst, &vs2, &TransferOptions::default()).unwrap_err();
    assert!(e.to_string().contains("layers.0.mixer.in_proj.weight"), "{e}");
}

#[test]
fn self_graft_control_reinitialises_only_the_chosen_mixer() {
    let s = spec(&[ATTN, SWIGLU]);
    let (vs, _) = build(&s, 1);
    let w = weights_of(&vs);
    let (vs2, _) = build(&s, 2);
    let opts = TransferOptions { fresh_layers: [0].into(), ..Default::default() };
    let r = transfer(&s, &w, &s, &vs2, &opts).unwrap();
    assert!(matches!(r.get("layers.0.mixer.q_proj.weight"), Some(Action::Fresh { .. })));
    assert_eq!(r.get("layers.1.mixer.up.weight"), Some(&Action::Copied));
    assert!(!vs2.variables()["layers.0.mixer.q_proj.weight"].equal(&w["layers.0.mixer.q_proj.weight"]));
}

#[test]
fn extend_context_scales_rope_and_copies_everything() {
    let src = spec(&[ATTN, SWIGLU]);
    let dst = grafting::extend_context::extended_spec(&src, 4.0);
    let LayerSpec::Attention(a) = &dst.layers[0] else { panic!() };
    assert_eq!(a.rope_scale, 4.0);
    let (vs, _) = build(&src, 1);
    let (vs2, _) = build(&dst, 2);
    let r = grafting::extend_context(&src, &weights_of(&vs), &dst, &vs2, 4.0).unwrap();
    assert_eq!(r.counts().0, r.params.len());
    assert!(grafting::extend_context(&src, &weights_of(&vs), &src, &vs2, 4.0).is_err());
}

#[test]
fn checkpoint_load_reports_applied_missing_unused_and_mismatched() {
    let s = spec(&[ATTN, SWIGLU]);
    let (vs, _) = build(&s, 1);
    let dir = std::env::temp_dir().join(format!("graft-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("w.safetensors");
    let mut w = weights_of(&vs);
    w.remove("head.weight");
    w.insert("layers.9.norm.weight".into(), Tensor::ones([16], (Kind::Double, Device::Cpu)));
    w.insert("norm.weight".into(), Tensor::ones([3], (Kind::Double, Device::Cpu)));
    w.insert("optim.m.embed.weight".into(), Tensor::ones([3], (Kind::Double, Device::Cpu)));
    let named: Vec<(String, Tensor)> = w.into_iter().collect();
    Tensor::write_safetensors(&named, &file).unwrap();
    let (vs2, _) = build(&s, 2);
    let r = grafting::load_weights(&grafting::read_weights(&file).unwrap(), &vs2);
    assert_eq!(r.missing, vec!["head.weight".to_string()]);
    assert_eq!(r.unused, vec!["layers.9.norm.weight".to_string()]);
    assert_eq!(r.shape_mismatch, vec![("norm.weight".to_string(), vec![16], vec![3])]);
    assert!(r.applied.contains(&"layers.0.mixer.q_proj.weight".to_string()));
    assert!(r.check_strict().unwrap_err().to_string().contains("norm.weight"));
    std::fs::remove_dir_all(&dir).ok();
}
