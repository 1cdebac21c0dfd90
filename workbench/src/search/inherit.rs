//! Evolution children that start from a parent's trained weights (`search: {strategy: evolution,
//! inherit_weights: true}`), through grafting's `transfer`: the embedding, head, norms and every layer the
//! child shares with the parent are copied; a layer whose mixer changed is initialised from the parent's
//! where `transfer` knows a mapping (attention -> linear_attention, gla, deltanet, mamba2, ...) and fresh
//! otherwise (`fallback: fresh`). Each child trial (one per task and seed) inherits from the parent's
//! trial of the same task and seed, from its final `trials/ID/checkpoint.safetensors`.
//!
//! Why it is off by default: a child that inherits has been trained with its parent's FLOPs as well as its
//! own, so its loss at its budget is not a from-scratch measurement and the report's loss-per-FLOP
//! comparisons would flatter it. Inheritance speeds the search up (Lamarckian evolution); it is a choice.
//!
//! Determinism and resume: the decision is made when the child is bred, after every outcome of the parent's
//! generation is known (the driver runs generations in order), by a dry run of `transfer` on freshly built
//! CPU copies (shapes decide whether it works, not values). The parent's trial id goes into the child's
//! spec, hence into its trial id, so inheritance on and off give different trials. The transfer itself runs
//! when the child's trial starts from step 0 (a resumed child continues from its own checkpoint) and writes
//! `inherit_report.json`, which the result copies under `inherited`.

use crate::store::Store;
use crate::trial::TrialSpec;
use anyhow::{bail, Context, Result};
use grafting::{transfer, weights_of, TransferOptions};
use kernels::KernelPath;
use operators::{Stack, StackSpec};
use reports::Inherited;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Device;

/// The file a child trial writes when it inherits.
pub const REPORT_FILE: &str = "inherit_report.json";

/// Where a child trial's weights come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Inherit {
    /// The parent trial (same task and seed); its final checkpoint is the transfer's source.
    pub parent: String,
    /// The parent's stack.
    pub from: StackSpec,
}

/// Unmappable changed layers start fresh rather than refusing the whole inheritance.
fn options() -> TransferOptions {
    TransferOptions { fallback_fresh: true, ..Default::default() }
}

/// Whether `child` can start from the trial `parent_id` (spec `parent`): same vocabulary, width and depth,
/// and a dry run of the transfer on fresh CPU copies succeeds.
pub fn plan(parent_id: &str, parent: &TrialSpec, child: &TrialSpec) -> Option<Inherit> {
    let (a, b) = (&parent.stack, &child.stack);
    if a.vocab != b.vocab || a.d_model != b.d_model || a.layers.len() != b.layers.len() || a.head != b.head {
        return None;
    }
    let (src, dst) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let _src = Stack::new(&src.root(), a, KernelPath::Reference);
    let _dst = Stack::new(&dst.root(), b, KernelPath::Reference);
    transfer(a, &weights_of(&src), b, &dst, &options()).ok()?;
    Some(Inherit { parent: parent_id.to_string(), from: a.clone() })
}

/// At a child trial's first step: fills `vs` (built from `spec.stack`) from the parent's final checkpoint
/// and writes `inherit_report.json`. Nothing for a trial that does not inherit.
pub fn apply(store: &Store, id: &str, spec: &TrialSpec, vs: &VarStore) -> Result<()> {
    let Some(inherit) = &spec.inherit else { return Ok(()) };
    let file = store.trial_dir(&inherit.parent).join("checkpoint.safetensors");
    if !file.exists() {
        bail!(
            "inherits weights from trial {}, but {} does not exist (the parent must have finished first)",
            inherit.parent,
            file.display()
        );
    }
    let weights = grafting::read_weights(&file)?;
    let report = transfer(&inherit.from, &weights, &spec.stack, vs, &options())
        .with_context(|| format!("inheriting weights from trial {}", inherit.parent))?;
    let (copied, transformed, fresh, _) = report.counts();
    eprintln!(
        "inherited from trial {}: {copied} tensors copied, {transformed} transformed, {fresh} fresh",
        inherit.parent
    );
    let record = Inherited {
        parent: inherit.parent.clone(),
        copied: copied as u64,
        transformed: transformed as u64,
        fresh: fresh as u64,
        params: report.params.iter().map(|p| serde_json::to_value(p).expect("a report serialises")).collect(),
    };
    crate::store::write_atomic(&store.trial_dir(id).join(REPORT_FILE), &serde_json::to_vec_pretty(&record)?)
}

/// The record `apply` wrote for trial `id`, for its result.
pub fn recorded(store: &Store, id: &str) -> Option<Inherited> {
    let text = std::fs::read(store.trial_dir(id).join(REPORT_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Space;

    /// A parent of two blocks (attention, swiglu) and a child whose attention became gated_deltanet.
    fn specs() -> (TrialSpec, TrialSpec) {
        let text = "name: t
tasks: [{kind: mqar, vocab_size: 16, seq_len: 16, kv_pairs: 2, train_examples: 64, test_examples: 16}]
budgets: [1e8]
candidates: [{name: a, layout: [attention, swiglu], depth: 2, d_model: 16, mixers: {attention: {heads: 2}}}]
";
        let space = Space::from_text(text, std::path::Path::new("space.yaml")).unwrap();
        let parent = space.trials().unwrap().remove(0);
        let mut child = parent.clone();
        child.stack.layers[0] =
            serde_json::from_str(r#"{"mixer": "gated_deltanet", "params": {"heads": 2, "expand_v": 1}}"#).unwrap();
        (parent, child)
    }

    #[test]
    fn a_child_with_one_mixer_changed_starts_from_the_parents_weights() {
        let (parent, mut child) = specs();
        let dir = std::env::temp_dir().join(format!("workbench-inherit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(&dir);
        let parent_id = parent.id();
        // The parent's "final checkpoint": its weights (random, so a copy is not trivially equal) and an
        // optimiser entry that must be skipped.
        let pvs = VarStore::new(Device::Cpu);
        let _p = Stack::new(&pvs.root(), &parent.stack, KernelPath::Reference);
        let mut named: Vec<(String, tch::Tensor)> = weights_of(&pvs).into_iter().collect();
        named.push(("optim.step".into(), tch::Tensor::from(3i64)));
        std::fs::create_dir_all(store.trial_dir(&parent_id)).unwrap();
        tch::Tensor::write_safetensors(&named, store.trial_dir(&parent_id).join("checkpoint.safetensors")).unwrap();

        let fresh_id = child.id();
        child.inherit = plan(&parent_id, &parent, &child);
        assert!(child.inherit.is_some(), "attention -> gated_deltanet has a mapping");
        assert_ne!(child.id(), fresh_id, "inheritance must change the trial id");
        let id = child.id();
        std::fs::create_dir_all(store.trial_dir(&id)).unwrap(); // the driver writes spec.json there first
        let vs = VarStore::new(Device::Cpu);
        let _c = Stack::new(&vs.root(), &child.stack, KernelPath::Reference);
        apply(&store, &id, &child, &vs).unwrap();
        let (p, c) = (weights_of(&pvs), vs.variables());
        for name in [
            "embed.weight",
            "head.weight",
            "norm.weight",
            "layers.0.norm.weight",
            "layers.1.norm.weight",
            "layers.1.mixer.up.weight",
            "layers.1.mixer.gate.weight",
            "layers.1.mixer.down.weight",
            "layers.0.mixer.o_proj.weight",
        ] {
            assert!(c[name].equal(&p[name]), "{name} is not bit-identical to the parent's");
        }
        assert!(c["layers.0.mixer.in_proj.weight"].narrow(0, 0, 16).equal(&p["layers.0.mixer.q_proj.weight"]));
        let rec = recorded(&store, &id).unwrap();
        assert_eq!(rec.parent, parent_id);
        assert!(rec.copied >= 9 && rec.transformed == 1 && rec.fresh > 0, "{rec:?}");
        assert_eq!(rec.params.len() as u64, rec.copied + rec.transformed + rec.fresh);

        // Another width cannot inherit; a missing checkpoint is an error naming the parent.
        let mut wide = parent.clone();
        wide.stack.d_model = 32;
        assert!(plan(&parent_id, &parent, &wide).is_none());
        std::fs::remove_file(store.trial_dir(&parent_id).join("checkpoint.safetensors")).unwrap();
        let e = apply(&store, &id, &child, &vs).unwrap_err().to_string();
        assert!(e.contains(&parent_id), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
