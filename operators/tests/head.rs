//! The heads a stack can end in: MAD compression's decoder is checked like a mixer (parameters against what it
//! allocates, FLOPs against the operations it performs, every parameter trained, norms and biases not decayed),
//! and the default next-token head keeps the stack's JSON (and so every trial id) as it was.

mod common;

use kernels::KernelPath;
use operators::flops::Counter;
use operators::{HeadSpec, LayerSpec, MixerKind, Stack, StackSpec};
use std::collections::HashMap;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const V: i64 = 11;

fn layers() -> Vec<LayerSpec> {
    vec![MixerKind::Attention.default_spec(), MixerKind::Swiglu.default_spec(), MixerKind::Hyena.default_spec()]
}

fn compression(positions: i64) -> (VarStore, Stack) {
    let spec = StackSpec {
        vocab: V,
        d_model: common::D,
        layers: layers(),
        norm_eps: 1e-5,
        head: HeadSpec::Compression { positions },
    };
    spec.validate(false).unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let stack = Stack::new(&vs.root(), &spec, KernelPath::Reference);
    vs.set_kind(Kind::Double);
    (vs, stack)
}

#[test]
fn compression_head_accounting_matches_the_built_model() {
    let _rng = common::seeded(7);
    for (t, p) in [(6, 6), (7, 3), (1, 5)] {
        let (vs, stack) = compression(p);
        let allocated: i64 = vs.trainable_variables().iter().map(|x| x.numel() as i64).sum();
        assert_eq!(allocated, stack.spec.params(), "T={t} P={p}");
        let tokens = Tensor::randint(V, [3, t], (Kind::Int64, Device::Cpu));
        let counter = Counter::start();
        let logits = tch::no_grad(|| stack.forward(&tokens));
        let counted = counter.total();
        drop(counter);
        assert_eq!(logits.size(), [3, p, V], "logits are [B, P, V]");
        let formula = stack.spec.flops_per_token(t) * (3 * t) as f64;
        assert!((counted - formula).abs() <= 1e-9 * formula, "T={t} P={p}: formula {formula} counted {counted}");
    }
}

#[test]
fn compression_head_has_its_paths_groups_and_gradients() {
    let _rng = common::seeded(8);
    let (vs, stack) = compression(5);
    let tokens = Tensor::randint(V, [2, 5], (Kind::Int64, Device::Cpu));
    stack.forward(&tokens).square().sum(Kind::Double).backward();
    let vars = vs.variables_.lock().unwrap();
    let names: HashMap<usize, String> =
        vars.named_variables.iter().map(|(n, t)| (t.data_ptr() as usize, n.clone())).collect();
    let decoder: Vec<&String> = names.values().filter(|n| n.starts_with("decoder.")).collect();
    assert_eq!(decoder.len(), 9, "3 norms, 3 weights, 3 biases: {decoder:?}");
    assert!(!names.values().any(|n| n == "head.weight" || n == "norm.weight"), "the LM head is replaced");
    for v in &vars.trainable_variables {
        let name = &names[&(v.tensor.data_ptr() as usize)];
        let g = v.tensor.grad();
        assert!(g.defined() && g.abs().sum(Kind::Double).double_value(&[]) > 0.0, "{name} gets no gradient");
        if name.starts_with("decoder.") {
            let decays = name.ends_with(".weight") && !name.contains("norm");
            let want = if decays { operators::nn::DECAY } else { operators::nn::NO_DECAY };
            assert_eq!(v.group, want, "{name}");
        }
    }
}

#[test]
fn compression_output_depends_on_the_code_and_the_position() {
    let _rng = common::seeded(9);
    let (_vs, stack) = compression(4);
    let tokens = Tensor::randint(V, [2, 6], (Kind::Int64, Device::Cpu));
    let y = tch::no_grad(|| stack.forward(&tokens)); // [2, 4, V]
                                                     // Different decoder positions decode differently (the position embedding), from the same code.
    let d01 = (y.select(1, 0) - y.select(1, 1)).abs().max().double_value(&[]);
    assert!(d01 > 0.0);
    // Equal rows give equal outputs: the decoder sees nothing but its own row's last position.
    let same = tokens.select(0, 0).unsqueeze(0).repeat([2, 1]);
    let z = tch::no_grad(|| stack.forward(&same));
    assert_eq!((z.select(0, 0) - z.select(0, 1)).abs().max().double_value(&[]), 0.0);
}

#[test]
fn next_head_keeps_the_stack_json() {
    let spec = StackSpec { vocab: V, d_model: 8, layers: layers(), norm_eps: 1e-5, head: HeadSpec::Next };
    let json = serde_json::to_value(&spec).unwrap();
    assert!(json.get("head").is_none(), "the default head must not change trial ids: {json}");
    let back: StackSpec = serde_json::from_value(json).unwrap();
    assert_eq!(back, spec);
    let c = StackSpec { head: HeadSpec::Compression { positions: 6 }, ..spec };
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["head"], serde_json::json!({"kind": "compression", "positions": 6}));
    assert_eq!(serde_json::from_value::<StackSpec>(json).unwrap(), c);
    // The next-token head's accounting is what it always was: 2 V d embedding parameters, 2 d V FLOPs per token.
    assert!(c.params() > c.embedding_params());
    assert_eq!(StackSpec { head: HeadSpec::Next, ..c.clone() }.embedding_params(), 2 * V * 8);
}
