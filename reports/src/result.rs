//! The trial record: what one trial process writes to `DIR/trials/ID/result.json` and what the report reads.
//!
//! This is the only contract between the trainer (which links libtorch) and the report (which must not),
//! so it lives here, in the crate without libtorch, and is plain serde data.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a trial ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Trained until its FLOP budget was spent.
    Completed,
    /// The loss became NaN/inf or exploded; training stopped early.
    Diverged,
    /// The trial process failed (out of memory, crash, bad checkpoint): see `reason`.
    Failed,
}

/// One evaluation point on a trial's training curve (one line of `curve.jsonl`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CurvePoint {
    /// Optimiser steps taken so far.
    pub step: u64,
    /// Training FLOPs spent so far (3 x forward FLOPs per token x tokens, see operators::flops).
    pub flops: f64,
    /// Training tokens seen so far.
    pub tokens: u64,
    /// Mean training loss over the steps since the previous point.
    pub train_loss: f64,
    /// Loss on the held-out set at this point.
    pub eval_loss: Option<f64>,
    /// Task metrics on the held-out set (for example `accuracy`).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// Everything the report needs to know about one finished (or failed) trial.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrialResult {
    /// Content hash of everything that determines the result (see workbench::store).
    pub id: String,
    /// The candidate's architecture name from the space (one fitted law per `arch` and task).
    pub arch: String,
    /// A short human label: the architecture with its size, e.g. `transformer d128 x4`.
    pub label: String,
    /// The task's name, e.g. `mqar` or `bytes`.
    pub task: String,
    pub status: Status,
    /// Why the trial diverged or failed.
    #[serde(default)]
    pub reason: Option<String>,
    pub d_model: u64,
    /// Number of blocks in the stack.
    pub depth: u64,
    /// The mixers of the stack, layer by layer (e.g. `["attention", "swiglu", ...]`).
    pub layers: Vec<String>,
    /// All trainable parameters.
    pub params: u64,
    /// Parameters outside the token embedding and the output head.
    pub non_embedding_params: u64,
    /// Forward FLOPs per token at `seq_len` (training spends 3x this); a grafted trial: its final stack.
    pub flops_per_token: f64,
    /// Recurrent state elements per sequence at `seq_len` (KV cache for attention).
    pub state_size: u64,
    /// Tokens per sequence; for a grafted trial whose `extend_context` changed it, the final length (its
    /// `grafts` record the length before and after each graft).
    pub seq_len: u64,
    pub batch_size: u64,
    /// The FLOP budget the trial was planned for.
    pub budget_flops: f64,
    /// FLOPs actually spent (at most the budget; a whole number of steps).
    pub flops_spent: f64,
    pub tokens_seen: u64,
    pub steps: u64,
    /// Held-out loss at the end (None when the trial failed before its first evaluation).
    pub final_eval_loss: Option<f64>,
    /// Final held-out task metrics.
    #[serde(default)]
    pub final_metrics: BTreeMap<String, f64>,
    pub learning_rate: f64,
    pub seed: u64,
    pub curve: Vec<CurvePoint>,
    pub wall_seconds: f64,
    /// Where it ran, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// One entry per graft point of a grafted trial (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grafts: Vec<GraftResult>,
    /// An evolution child that started from its parent's final weights (`inherit_weights: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited: Option<Inherited>,
    /// The task settings that tell variants of one task kind apart, e.g. MQAR's `seq_len`, `kv_pairs` and
    /// `vocab_size` (empty for tasks with one variant per sweep, and in results written before it existed).
    /// The report keeps each variant in its own section and plots MQAR per `(seq_len, kv_pairs)`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_params: BTreeMap<String, u64>,
}

/// What a child trial took from its parent: the parent's trial id, counts per action and the per-parameter
/// report of grafting's `transfer` (`{path, shape, action, from, how, why}` as it wrote them). Its FLOPs do
/// not include the parent's training: an inherited trial is not a from-scratch trial of its budget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Inherited {
    pub parent: String,
    /// Parameters copied, transformed and left fresh.
    pub copied: u64,
    pub transformed: u64,
    pub fresh: u64,
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

impl TrialResult {
    /// The task with its distinguishing settings, e.g. `mqar (seq_len 64, kv_pairs 4, vocab_size 256)`; the
    /// bare task name when it has none. The report groups trials by this.
    pub fn task_label(&self) -> String {
        if self.task_params.is_empty() {
            return self.task.clone();
        }
        let params: Vec<String> = self.task_params.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!("{} ({})", self.task, params.join(", "))
    }
}

/// What one graft point did to the loss (workbench::graft).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GraftResult {
    /// transfer, regress, distill, grow_depth, grow_width or extend_context.
    pub op: String,
    /// Training FLOPs spent when the graft happened.
    pub at_flops: f64,
    /// Held-out loss just before the graft.
    pub loss_before: f64,
    /// Held-out loss when end-to-end training resumes (after the operation and any regress/distill stage).
    pub loss_after: f64,
    /// `loss_after - loss_before`.
    pub spike: f64,
    /// FLOPs after the graft until an evaluation is back at `loss_before` (None: it never was).
    pub recovery_flops: Option<f64>,
    /// FLOPs of the regress/distill stage (teacher forwards included); counted in the budget.
    #[serde(default)]
    pub stage_flops: f64,
    /// Target parameters copied, transformed, fresh and distilled.
    #[serde(default)]
    pub params: BTreeMap<String, u64>,
    /// Sequence length of the training before the graft and of the evaluation giving `loss_before`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len_before: Option<u64>,
    /// Sequence length after the graft: of `loss_after`, of every later evaluation and training step. It
    /// differs from `seq_len_before` only for `extend_context`, whose `spike` and `recovery_flops` therefore
    /// compare losses per token at two lengths (more context usually lowers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len_after: Option<u64>,
}
