//! A trial: one model, one task, one FLOP budget, one seed. Its id is a hash of everything that
//! determines its result, so the same trial in two sweeps is the same folder.

use crate::tasks::TaskSpec;
use operators::StackSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// AdamW with warmup and cosine decay. Defaults suit the small models of CPU sweeps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimSpec {
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Decoupled weight decay on the decay group (projection matrices; never norms, biases, embeddings).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Fraction of the trial's steps spent warming up linearly from 0.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    /// The cosine ends at `lr * min_lr_ratio`.
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Gradients are rescaled so their global norm is at most this (0 disables clipping).
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
}

/// 3e-3: small models tolerate a large step.
pub fn default_lr() -> f64 {
    3e-3
}
/// 0.1, the common choice for AdamW language models.
pub fn default_weight_decay() -> f64 {
    0.1
}
/// 0.9.
pub fn default_beta1() -> f64 {
    0.9
}
/// 0.95, as in GPT-3 and LLaMA (more stable than 0.999 for transformers).
pub fn default_beta2() -> f64 {
    0.95
}
/// 1e-8.
pub fn default_eps() -> f64 {
    1e-8
}
/// 5% of the steps.
pub fn default_warmup() -> f64 {
    0.05
}
/// 0.1: the Chinchilla recipe decays to a tenth of the peak.
pub fn default_min_lr_ratio() -> f64 {
    0.1
}
/// 1.0.
pub fn default_grad_clip() -> f64 {
    1.0
}

impl Default for OptimSpec {
    fn default() -> Self {
        OptimSpec {
            lr: default_lr(),
            weight_decay: default_weight_decay(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            warmup: default_warmup(),
            min_lr_ratio: default_min_lr_ratio(),
            grad_clip: default_grad_clip(),
        }
    }
}

impl OptimSpec {
    /// `Err((field, message))` for a value out of range.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let range = |field: &'static str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err((field, format!("must be in [{lo}, {hi}], got {v}")))
            }
        };
        if !(self.lr > 0.0) || !self.lr.is_finite() {
            return Err(("lr", format!("must be positive, got {}", self.lr)));
        }
        range("weight_decay", self.weight_decay, 0.0, 10.0)?;
        range("beta1", self.beta1, 0.0, 0.999999)?;
        range("beta2", self.beta2, 0.0, 0.999999)?;
        range("eps", self.eps, 0.0, 1.0)?;
        range("warmup", self.warmup, 0.0, 1.0)?;
        range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)?;
        range("grad_clip", self.grad_clip, 0.0, f64::MAX)
    }

    /// The learning rate at `step` of `total`: linear warmup to `lr`, then cosine to `lr * min_lr_ratio`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let total = total.max(1) as f64;
        let warm = (self.warmup * total).round().max(0.0);
        let s = step as f64;
        if s < warm {
            return self.lr * (s + 1.0) / warm;
        }
        let progress = if total > warm { ((s - warm) / (total - warm)).clamp(0.0, 1.0) } else { 1.0 };
        let floor = self.lr * self.min_lr_ratio;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// How a trial trains and evaluates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Sequences per step.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Evaluations on held-out data, evenly spaced in FLOPs; the last is at the end of the budget.
    #[serde(default = "default_eval_points")]
    pub eval_points: usize,
}

/// 16 sequences.
pub fn default_batch_size() -> usize {
    16
}
/// 5 evaluations per trial.
pub fn default_eval_points() -> usize {
    5
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec { batch_size: default_batch_size(), eval_points: default_eval_points() }
    }
}

impl TrainSpec {
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.batch_size < 1 {
            return Err(("batch_size", "must be at least 1".into()));
        }
        if self.eval_points < 1 {
            return Err(("eval_points", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Everything one trial process needs; written to `trials/ID/spec.json` before it starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrialSpec {
    pub arch: String,
    pub label: String,
    pub task: TaskSpec,
    pub stack: StackSpec,
    pub budget_flops: f64,
    pub optim: OptimSpec,
    pub train: TrainSpec,
    pub seed: u64,
    /// Graft points, resolved (empty for a plain trial; see `graft`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grafts: Vec<crate::graft::ResolvedGraft>,
    /// Start from these weights instead of a fresh initialisation (`--init-from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<crate::graft::InitFrom>,
    /// An evolution child's parent, whose final weights it starts from (`inherit_weights`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit: Option<crate::search::inherit::Inherit>,
}

impl TrialSpec {
    /// 16 hex digits of SHA-256 over the canonical JSON of what determines the result (the names
    /// `arch` and `label` do not).
    pub fn id(&self) -> String {
        let mut key = serde_json::json!({
            "task": self.task, "stack": self.stack, "budget_flops": self.budget_flops,
            "optim": self.optim, "train": self.train, "seed": self.seed,
        });
        if !self.grafts.is_empty() {
            key["grafts"] = serde_json::json!(self.grafts); // plain trials keep their ids
        }
        if let Some(init) = &self.init_from {
            key["init_from"] = serde_json::json!(init.sha256);
        }
        if let Some(inherit) = &self.inherit {
            key["inherit"] = serde_json::json!(inherit.parent); // the parent's id fixes its weights
        }
        let digest = Sha256::digest(serde_json::to_vec(&key).expect("trial spec serialises"));
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    pub fn seq_len(&self) -> i64 {
        self.task.seq_len() as i64
    }

    /// Training FLOPs of one optimiser step: 3 x forward FLOPs per token x batch x seq_len.
    pub fn flops_per_step(&self) -> f64 {
        self.step_flops(&self.stack, self.seq_len())
    }

    /// Training FLOPs of one optimiser step of `stack` on sequences of `seq_len` tokens (a grafted trial's
    /// stack and, after `extend_context`, its length change mid-run).
    pub fn step_flops(&self, stack: &StackSpec, seq_len: i64) -> f64 {
        operators::flops::TRAIN_MULTIPLIER
            * stack.flops_per_token(seq_len)
            * (self.train.batch_size as i64 * seq_len) as f64
    }

    /// Whole steps the budget buys.
    pub fn steps(&self) -> u64 {
        (self.budget_flops / self.flops_per_step()).floor() as u64
    }

    /// The step at which a trial asked to stop after `flops` training FLOPs pauses (`workbench trial
    /// --until-flops`): the whole steps that many FLOPs buy, at most the budget's.
    pub fn steps_until(&self, flops: f64) -> u64 {
        ((flops / self.flops_per_step()).floor().max(0.0) as u64).min(self.steps())
    }

    /// The steps after which the trial evaluates (and checkpoints): evenly spaced, the last at the end.
    pub fn eval_steps(&self) -> Vec<u64> {
        let (n, total) = (self.train.eval_points as u64, self.steps());
        let mut v: Vec<u64> = (1..=n).map(|k| (k * total).div_ceil(n)).filter(|&s| s > 0).collect();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let o = OptimSpec { lr: 1.0, warmup: 0.1, min_lr_ratio: 0.1, ..OptimSpec::default() };
        assert!((o.lr_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((o.lr_at(9, 100) - 1.0).abs() < 1e-12);
        assert!((o.lr_at(10, 100) - 1.0).abs() < 1e-12);
        assert!((o.lr_at(100, 100) - 0.1).abs() < 1e-12);
        let mid = o.lr_at(55, 100);
        assert!((mid - 0.55).abs() < 1e-12, "{mid}");
        for s in 10..99 {
            assert!(o.lr_at(s + 1, 100) <= o.lr_at(s, 100));
        }
    }
}
