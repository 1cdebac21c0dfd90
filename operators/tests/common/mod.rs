//! Helpers shared by the operator tests.
#![allow(dead_code)]

use kernels::KernelPath;
use operators::registry::{build, BuildCtx, Built};
use operators::{LayerSpec, MixerKind, Stack, StackSpec};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub const D: i64 = 16;

/// Small but non-trivial specs of every registered mixer (several per mixer where options matter).
pub fn test_specs() -> Vec<LayerSpec> {
    let mut out = Vec::new();
    for kind in MixerKind::ALL {
        out.push(kind.default_spec());
    }
    out.push(serde_json::from_str(r#"{"mixer":"attention","params":{"heads":4,"kv_heads":2,"window":3}}"#).unwrap());
    out.push(
        serde_json::from_str(
            r#"{"mixer":"attention","params":{"heads":2,"kv_heads":1,"head_dim":6,"rope_scale":4.0,"bias":true}}"#,
        )
        .unwrap(),
    );
    out.push(
        serde_json::from_str(r#"{"mixer":"mlp","params":{"expand":2.5,"activation":"relu","bias":false}}"#).unwrap(),
    );
    for json in [
        r#"{"mixer":"linear_attention","params":{"feature_map":"identity","normalize":false,"chunk":3}}"#,
        r#"{"mixer":"linear_attention","params":{"heads":2,"head_dim":5,"feature_map":"relu","chunk":4}}"#,
        r#"{"mixer":"linear_attention","params":{"heads":4,"feature_map":"taylor2","chunk":2}}"#,
        r#"{"mixer":"linear_attention","params":{"heads":2,"feature_map":"hedgehog","normalize":false,"chunk":3}}"#,
        r#"{"mixer":"linear_attention","params":{"heads":2,"feature_map":"hedgehog","eps":0.001}}"#,
        r#"{"mixer":"based","params":{"heads":2,"feature_dim":4,"window":3,"window_heads":2,"chunk":4}}"#,
        r#"{"mixer":"retnet","params":{"heads":2,"expand_v":1.0,"rotary":true,"chunk":3}}"#,
        r#"{"mixer":"retnet","params":{"heads":8,"chunk":1}}"#,
        r#"{"mixer":"gla","params":{"heads":2,"expand_k":1.0,"expand_v":0.5,"gate_rank":4,"gate_tau":8.0,"chunk":3}}"#,
        r#"{"mixer":"gla","params":{"heads":1,"chunk":64}}"#,
    ] {
        out.push(serde_json::from_str(json).unwrap());
    }
    out
}

/// Builds one mixer in float64 on CPU with the reference kernels (so counted FLOPs are exact).
pub fn build_f64(spec: &LayerSpec) -> (VarStore, Built) {
    build_with(spec, KernelPath::Reference)
}

/// Builds one mixer in float64 on CPU with the given kernel path.
pub fn build_with(spec: &LayerSpec, kernel_path: KernelPath) -> (VarStore, Built) {
    let mut vs = VarStore::new(Device::Cpu);
    let ctx = BuildCtx { d_model: D, layer: 0, n_blocks: 2, kernel_path };
    let built = build(spec, &vs.root(), &ctx);
    vs.set_kind(Kind::Double);
    (vs, built)
}

pub fn forward(m: &Built, x: &Tensor) -> Tensor {
    match m {
        Built::Sequence(s) => s.forward(x),
        Built::Channel(c) => c.forward(x),
    }
}

pub fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Double, Device::Cpu))
}

/// A small stack: embedding, the given layers, head.
pub fn stack_f64(layers: Vec<LayerSpec>, path: KernelPath) -> (VarStore, Stack) {
    let spec = StackSpec { vocab: 11, d_model: D, layers, norm_eps: 1e-5 };
    spec.validate(true).unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let stack = Stack::new(&vs.root(), &spec, path);
    vs.set_kind(Kind::Double);
    (vs, stack)
}
