//! The checkpoint of a grafted trial: what its loop needs to continue after a kill.
//!
//! A plain trial's checkpoint is its weights and AdamW moments plus a step count, because its stack, length
//! and FLOPs per step are fixed by the spec. A graft changes all three mid-run, so a grafted trial also keeps
//! [`GraftState`]: the current stack (after the grafts so far), the current sequence length, the counters,
//! the learning-rate re-warm-up, the graft records and how many curve points belong to this state. It is
//! stored as JSON bytes in the tensor `meta.graft_state` of the same safetensors file as the weights
//! (`checkpoint.safetensors`), so weights and state are renamed into place together and can never be from
//! two different steps; the weights stay keyed by parameter path, so the file still seeds `--init-from`.
//!
//! Checkpoints are written only right after an evaluation (an evaluation point or the end of a graft), when
//! the running train-loss sum is empty; a trial killed inside a graft's regress/distill stage restarts that
//! graft from the previous checkpoint.

use super::optim::AdamW;
use anyhow::{Context, Result};
use operators::StackSpec;
use reports::GraftResult;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Tensor;

/// The key of the state inside the checkpoint (under `meta.`, so weight loaders skip it).
const KEY: &str = "meta.graft_state";

/// Everything of a grafted run that is not a tensor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct GraftState {
    /// Index into the spec's grafts of the next one to apply.
    pub next_graft: usize,
    /// The stack now (the spec's, or the target of the last graft applied).
    pub stack: StackSpec,
    /// Tokens per sequence now (changed by `extend_context`).
    pub seq_len: i64,
    /// Training FLOPs, optimiser steps and tokens so far (regress/distill stages included).
    pub flops: f64,
    pub step: u64,
    pub tokens: u64,
    /// The next evaluation is due at `next_eval x budget / eval_points` FLOPs.
    pub next_eval: f64,
    /// The learning-rate re-warm-up after the last graft: from `warm_from` FLOPs over `warm_len` FLOPs.
    pub warm_from: f64,
    pub warm_len: f64,
    /// One record per graft applied (recovery is filled in at the end).
    pub grafts: Vec<GraftResult>,
    /// Points of `curve.jsonl` written up to this state (later ones are dropped on resume).
    pub curve_len: usize,
}

impl GraftState {
    /// The state before step 0.
    pub fn start(stack: &StackSpec, seq_len: i64) -> GraftState {
        GraftState {
            next_graft: 0,
            stack: stack.clone(),
            seq_len,
            flops: 0.0,
            step: 0,
            tokens: 0,
            next_eval: 1.0,
            warm_from: 0.0,
            warm_len: 0.0,
            grafts: Vec::new(),
            curve_len: 0,
        }
    }

    /// Writes weights, moments and this state to `path` (one file, renamed into place).
    pub fn save(&self, opt: &AdamW, path: &Path, wall_seconds: f64) -> Result<()> {
        let json = serde_json::to_vec(self)?;
        opt.save_with(path, self.step, wall_seconds, vec![(KEY.to_string(), Tensor::from_slice(&json))])
    }

    /// Reads the state of the checkpoint at `path` (the weights are loaded by [`AdamW::load`] once the stack
    /// it names is built).
    pub fn read(path: &Path) -> Result<GraftState> {
        let tensors =
            Tensor::read_safetensors(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
        let (_, t) = tensors.into_iter().find(|(k, _)| k == KEY).with_context(|| {
            format!("checkpoint {} has no `{KEY}`: it was not written by a grafted trial", path.display())
        })?;
        let bytes: Vec<u8> = Vec::<u8>::try_from(&t)?;
        serde_json::from_slice(&bytes).with_context(|| format!("checkpoint {}: `{KEY}` is not valid", path.display()))
    }
}
