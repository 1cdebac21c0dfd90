//! The graft plan of a candidate (issue 7): at a point in the trial, transform the current stack into a
//! target stack with the `grafting` crate, optionally train the new parts first (regress, distill), re-warm
//! the learning rate, then keep training to the end of the budget.
//!
//! ```yaml
//! candidates:
//!   - name: attn-to-hybrid
//!     layout: [attention, swiglu]
//!     depth: 4
//!     d_model: 64
//!     grafts:
//!       - at: 0.3                 # fraction of the FLOP budget (or at_step: N)
//!         op: transfer            # transfer | regress | distill | grow_depth | grow_width | extend_context
//!         to: {layout: [hyena, swiglu, attention, swiglu]}   # like a candidate; d_model and `mixers` carry over
//!         fallback: fresh         # a changed layer with no known mapping starts fresh (default: error)
//!         rules: {2: {fresh: true}}   # per-layer overrides: this mixer starts fresh whatever the mapping
//!         warmup: 0.02            # re-warm the learning rate over this fraction of the budget
//!         stage: 0.05             # regress/distill: FLOPs of the stage, as a fraction of the budget
//!         loss: mse               # regress: mse | l1 | huber
//! ```
//! `extend_context` (`factor: 2`) continues the trial at `seq_len x factor`: the task and its held-out set
//! are rebuilt at the new length, steps cost and see the new length's FLOPs and tokens, and the graft's
//! `loss_after` (and every later evaluation) is measured at it. Only tasks that take any length (`bytes`)
//! can; a synthetic task is refused when the space is loaded.
//!
//! Everything is resolved and dry-run on tiny CPU copies of both stacks when the space is loaded, so a
//! graft from or to a layer that does not exist, a mapping that is not known, or a shape that does not fit
//! is a usage error (exit code 2) before any training.

use crate::error::UsageError;
use crate::space::{LayerEntry, MixerParams};
use crate::tasks::TaskSpec;
use grafting::{DepthMode, TransferOptions};
use kernels::KernelPath;
use operators::{Stack, StackSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::nn::VarStore;
use tch::Device;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GraftOp {
    Transfer,
    Regress,
    Distill,
    GrowDepth,
    GrowWidth,
    ExtendContext,
}

impl GraftOp {
    pub fn name(self) -> &'static str {
        match self {
            GraftOp::Transfer => "transfer",
            GraftOp::Regress => "regress",
            GraftOp::Distill => "distill",
            GraftOp::GrowDepth => "grow_depth",
            GraftOp::GrowWidth => "grow_width",
            GraftOp::ExtendContext => "extend_context",
        }
    }
}

/// What a changed layer without a known mapping becomes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// A usage error naming the layer (strict, the default).
    #[default]
    Error,
    /// The new mixer keeps its own initialisation.
    Fresh,
}

/// The regression loss of `regress`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RegressLoss {
    #[default]
    Mse,
    L1,
    Huber,
}

/// A per-layer override.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LayerRule {
    /// Initialise this layer's mixer fresh (the self-graft control; with `regress`, it is regressed).
    #[serde(default)]
    pub fresh: bool,
}

/// The target stack, written like a candidate (`layout` + `depth`, or `layers`; `mixers` for parameters).
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct GraftTarget {
    #[serde(default)]
    pub layout: Option<Vec<LayerEntry>>,
    #[serde(default)]
    pub layers: Option<Vec<LayerEntry>>,
    #[serde(default)]
    pub depth: Option<i64>,
    /// grow_width: the new width (default: the candidate's); the norm epsilon is scaled by d/d' to stay exact.
    #[serde(default)]
    pub d_model: Option<i64>,
    #[serde(default)]
    pub mixers: MixerParams,
}

/// One graft point as written in the YAML.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct GraftPoint {
    /// Fraction of the FLOP budget spent before the graft, in (0, 1).
    #[serde(default)]
    pub at: Option<f64>,
    /// Or the optimiser step after which to graft.
    #[serde(default)]
    pub at_step: Option<u64>,
    pub op: GraftOp,
    /// The target stack; default: the current stack (a self-graft, with `rules`).
    #[serde(default)]
    pub to: Option<GraftTarget>,
    /// Per-layer overrides, keyed by target layer index.
    #[serde(default)]
    pub rules: BTreeMap<usize, LayerRule>,
    #[serde(default)]
    pub fallback: Fallback,
    /// Learning-rate re-warm-up after the graft, as a fraction of the budget.
    #[serde(default)]
    pub warmup: f64,
    /// FLOPs of the regress/distill stage, as a fraction of the budget (default 0.05).
    #[serde(default)]
    pub stage: Option<f64>,
    #[serde(default)]
    pub loss: RegressLoss,
    /// grow_depth: `identity` (new blocks start as the identity) or `stack` (G_stack).
    #[serde(default = "default_mode")]
    pub mode: DepthMode,
    /// extend_context: the sequence-length factor. The trial continues at `seq_len x factor` (a whole
    /// number; the task must take any length, as `bytes` does) and attention's `rope_scale` is multiplied by
    /// it (linear RoPE scaling).
    #[serde(default)]
    pub factor: Option<f64>,
}

fn default_mode() -> DepthMode {
    DepthMode::Identity
}

/// A graft point resolved against one trial: what the training loop executes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResolvedGraft {
    pub op: GraftOp,
    /// Training FLOPs spent before the graft (the graft happens after the step that crosses it).
    pub at_flops: f64,
    pub to: StackSpec,
    pub fresh_layers: Vec<usize>,
    pub fallback_fresh: bool,
    pub warmup: f64,
    pub stage: f64,
    pub loss: RegressLoss,
    pub mode: DepthMode,
    pub factor: f64,
    /// extend_context: the task's seq_len from this graft on (absent for the other operations, which keep
    /// the length, so their trial ids did not change when this field was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<u64>,
}

impl ResolvedGraft {
    /// The sequence length after this graft, given the length before it.
    pub fn seq_len_after(&self, before: i64) -> i64 {
        self.seq_len.map_or(before, |n| n as i64)
    }

    /// Layers whose mixer a regress/distill stage trains: the changed ones and those ruled fresh.
    pub fn new_layers(&self, from: &StackSpec) -> Vec<usize> {
        (0..self.to.layers.len())
            .filter(|&i| self.fresh_layers.contains(&i) || from.layers.get(i) != Some(&self.to.layers[i]))
            .collect()
    }

    /// Applies the graft's weight operation: from `src` (spec and store) into `dst` built from `self.to`.
    pub fn apply(
        &self,
        from: &StackSpec,
        src: &VarStore,
        dst: &VarStore,
    ) -> Result<grafting::GraftReport, grafting::GraftError> {
        let w = grafting::weights_of(src);
        match self.op {
            GraftOp::Transfer | GraftOp::Regress | GraftOp::Distill => {
                let mut fresh: std::collections::BTreeSet<usize> = self.fresh_layers.iter().copied().collect();
                if self.op != GraftOp::Transfer {
                    fresh.extend(self.new_layers(from));
                }
                let opts = TransferOptions { fallback_fresh: self.fallback_fresh, fresh_layers: fresh };
                grafting::transfer(from, &w, &self.to, dst, &opts)
            }
            GraftOp::GrowDepth => grafting::grow_depth(from, &w, &self.to, dst, self.mode),
            GraftOp::GrowWidth => grafting::grow_width(from, &w, &self.to, dst),
            GraftOp::ExtendContext => grafting::extend_context(from, &w, &self.to, dst, self.factor),
        }
    }
}

/// Resolves a candidate's graft points for one trial on `task`. `target_of` builds a `to` into a validated
/// stack at the candidate's width; `per_step` gives the FLOPs of one step of a stack at a sequence length.
pub fn resolve(
    points: &[GraftPoint],
    start: &StackSpec,
    task: &TaskSpec,
    budget: f64,
    per_step: &dyn Fn(&StackSpec, i64) -> f64,
    target_of: &dyn Fn(&GraftTarget) -> Result<StackSpec, UsageError>,
    at: &dyn Fn(String) -> UsageError,
) -> Result<Vec<ResolvedGraft>, UsageError> {
    let mut out: Vec<ResolvedGraft> = Vec::new();
    let mut current = start.clone();
    let mut len = task.seq_len() as i64;
    let mut spent = 0.0;
    for (gi, g) in points.iter().enumerate() {
        let name = format!("grafts[{gi}] ({})", g.op.name());
        let at_flops = match (g.at, g.at_step) {
            (Some(f), None) if f > 0.0 && f < 1.0 => f * budget,
            (Some(f), None) => {
                return Err(at(format!("{name}: `at` must be a fraction of the budget in (0, 1), got {f}")))
            }
            (None, Some(s)) => spent + s as f64 * per_step(&current, len),
            _ => return Err(at(format!("{name}: give exactly one of `at` (fraction of the budget) and `at_step`"))),
        };
        if at_flops <= spent || at_flops >= budget {
            return Err(at(format!(
                "{name}: the graft point ({at_flops:.3e} FLOPs) must lie after the previous one ({spent:.3e}) and before the end of the budget ({budget:.3e})"
            )));
        }
        let stage = g.stage.unwrap_or(if matches!(g.op, GraftOp::Regress | GraftOp::Distill) { 0.05 } else { 0.0 });
        if !(0.0..1.0).contains(&g.warmup) || !(0.0..1.0).contains(&stage) {
            return Err(at(format!("{name}: `warmup` and `stage` are fractions of the budget in [0, 1)")));
        }
        let factor = g.factor.unwrap_or(1.0);
        let to = match (g.op, &g.to) {
            (GraftOp::ExtendContext, None) => grafting::extend_context::extended_spec(&current, factor),
            (_, Some(t)) => target_of(t)?,
            (_, None) => current.clone(),
        };
        let mut to = to;
        if g.op == GraftOp::GrowWidth && to.d_model != current.d_model {
            to.norm_eps = current.norm_eps * current.d_model as f64 / to.d_model as f64;
            // exact widening
        }
        if g.op == GraftOp::ExtendContext && !(factor > 0.0) {
            return Err(at(format!("{name}: `factor` must be positive")));
        }
        let seq_len = match g.op {
            GraftOp::ExtendContext => Some(extended_len(task, len, factor).map_err(|e| at(format!("{name}: {e}")))?),
            _ => None,
        };
        let len_after = seq_len.map_or(len, |n| n as i64);
        // The first step after the graft runs on the target stack at the new length.
        if at_flops + stage * budget + per_step(&to, len_after) >= budget {
            return Err(at(format!(
                "{name}: the graft and its stage leave no training step before the end of the budget"
            )));
        }
        for &l in g.rules.keys() {
            if l >= to.layers.len() {
                return Err(at(format!(
                    "{name}: rules: layer {l} does not exist (the target has {} layers)",
                    to.layers.len()
                )));
            }
        }
        let r = ResolvedGraft {
            op: g.op,
            at_flops,
            fresh_layers: g.rules.iter().filter(|(_, r)| r.fresh).map(|(l, _)| *l).collect(),
            fallback_fresh: g.fallback == Fallback::Fresh,
            warmup: g.warmup,
            stage,
            loss: g.loss,
            mode: g.mode,
            factor,
            seq_len,
            to,
        };
        dry_run(&current, &r).map_err(|e| at(format!("{name}: {e}")))?;
        spent = at_flops + stage * budget;
        current = r.to.clone();
        len = len_after;
        out.push(r);
    }
    Ok(out)
}

/// The length `extend_context` continues at: `len x factor`, a whole number the task accepts.
fn extended_len(task: &TaskSpec, len: i64, factor: f64) -> Result<u64, String> {
    let n = len as f64 * factor;
    if (n - n.round()).abs() > 1e-9 || n.round() < 1.0 {
        return Err(format!("seq_len {len} x factor {factor} = {n} is not a whole number of tokens"));
    }
    let n = n.round() as usize;
    task.with_seq_len(n).map_err(|e| format!("cannot continue at seq_len {n}: {e}"))?;
    Ok(n as u64)
}

/// Runs the weight operation on CPU copies of both stacks (cheap at sweep sizes), so every mapping and
/// shape problem surfaces before training.
fn dry_run(from: &StackSpec, g: &ResolvedGraft) -> Result<(), grafting::GraftError> {
    let (a, b) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let _s = Stack::new(&a.root(), from, KernelPath::Reference);
    let _t = Stack::new(&b.root(), &g.to, KernelPath::Reference);
    g.apply(from, &a, &b).map(|_| ())
}

/// `--init-from FILE`: a trial starts from weights trained elsewhere (safetensors keyed by parameter path).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitFrom {
    pub path: String,
    /// SHA-256 of the file (part of the trial id: other weights, another trial).
    pub sha256: String,
}

impl InitFrom {
    /// Reads `path`, hashes it and checks it strictly against `stack`: every tensor present with its shape,
    /// none unused; a mismatch is a usage error naming the tensor (before any training).
    pub fn check(path: &std::path::Path, stack: &StackSpec) -> Result<InitFrom, UsageError> {
        use sha2::Digest;
        let bytes = std::fs::read(path)
            .map_err(|e| UsageError::new(format!("--init-from {}: cannot read: {e}", path.display())))?;
        let sha256 = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let init = InitFrom { path: abs.display().to_string(), sha256 };
        let vs = VarStore::new(Device::Cpu);
        let _stack = Stack::new(&vs.root(), stack, KernelPath::Reference);
        init.load(&vs).map_err(|e| UsageError::new(format!("--init-from {}: {e}", path.display())))?;
        Ok(init)
    }

    /// Copies the file's weights into `vs` strictly; returns the load report.
    pub fn load(&self, vs: &VarStore) -> Result<grafting::LoadReport, grafting::GraftError> {
        let w = grafting::read_weights(std::path::Path::new(&self.path))?;
        let report = grafting::load_weights(&w, vs);
        report.check_strict()?;
        Ok(report)
    }
}
