//! Helpers shared by the operator tests.
#![allow(dead_code)]

use kernels::KernelPath;
use operators::registry::{build, BuildCtx, Built};
use operators::{LayerSpec, MixerKind, Stack, StackSpec};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub const D: i64 = 16;

/// libtorch's random generator is one per process and a test binary runs its tests on several threads: a
/// test that seeds it and then builds and draws must hold this lock, and so must every test that draws at
/// all, or the draws interleave and a seeded test sees other numbers from run to run (MoE's "every
/// parameter receives a gradient" failed once in CI that way: an expert received no token).
pub fn seeded(seed: i64) -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    guard
}

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
    for extra in [
        r#"{"mixer":"hyena","params":{"order":1}}"#,
        r#"{"mixer":"hyena","params":{"order":3,"emb_dim":4,"filter_order":8,"l_max":4,"short_kernel":1,"decay_shift":0.1}}"#,
        r#"{"mixer":"h3","params":{"heads":4,"d_state":4,"shift_size":2}}"#,
        r#"{"mixer":"h3","params":{"heads":8,"d_state":6,"shift_size":1,"dt_min":0.01,"dt_max":0.5}}"#,
        r#"{"mixer":"base_conv","params":{"filter":"explicit","l_max":12}}"#,
        r#"{"mixer":"base_conv","params":{"filter":"short","short_kernel":4,"act":true}}"#,
        r#"{"mixer":"base_conv","params":{"emb_dim":5,"filter_order":8,"act":true}}"#,
        r#"{"mixer":"moe","params":{"experts":3,"top_k":1}}"#,
        r#"{"mixer":"moe","params":{"experts":2,"top_k":2,"expand":1.0,"multiple_of":1,"aux_loss_coef":0.0}}"#,
    ] {
        out.push(serde_json::from_str(extra).unwrap());
    }
    // State-space and gated-RNN variants: explicit ranks and widths, chunks that do not divide T, no-bound gates.
    for json in [
        r#"{"mixer":"mamba","params":{"d_state":4,"d_conv":2,"expand":1,"dt_rank":3,"dt_min":0.01,"dt_max":0.5}}"#,
        r#"{"mixer":"mamba2","params":{"d_state":8,"head_dim":8,"chunk":3,"d_conv":2}}"#,
        r#"{"mixer":"mamba2","params":{"d_state":5,"head_dim":4,"expand":1,"chunk":1,"d_conv":1}}"#,
        r#"{"mixer":"s4d","params":{"d_state":2,"dt_min":0.01,"dt_max":0.5}}"#,
        r#"{"mixer":"hgrn","params":{"expand":2,"lower_bound":0.0}}"#,
        r#"{"mixer":"rglru","params":{"lru_width":24,"heads":3,"d_conv":2}}"#,
        r#"{"mixer":"deltanet","params":{"heads":3,"head_dim":5,"expand_v":2,"chunk":3,"gate":true}}"#,
        r#"{"mixer":"gated_deltanet","params":{"heads":2,"expand_v":1,"chunk":4,"gate":false}}"#,
    ] {
        out.push(serde_json::from_str(json).unwrap());
    }
    // Linear-attention variants: every feature map, with and without the normaliser, odd chunks.
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
    let spec = StackSpec { vocab: 11, d_model: D, layers, norm_eps: 1e-5, head: Default::default() };
    spec.validate(true).unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let stack = Stack::new(&vs.root(), &spec, path);
    vs.set_kind(Kind::Double);
    (vs, stack)
}
