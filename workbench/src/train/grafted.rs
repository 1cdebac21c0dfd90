//! The training loop of a trial with graft points (workbench::graft). The budget is counted in FLOPs, not
//! steps, because a graft changes the FLOPs of a step; every FLOP of a regress or distill stage, including
//! the teacher's forward passes, is spent from the same budget, so a grafted trial and a from-scratch trial
//! of the same budget used the same compute.
//!
//! ```text
//! until the budget is spent:
//!     one AdamW step on the current stack; lr = schedule(FLOPs spent / budget) x re-warm-up factor
//!     at an evaluation point (evenly spaced in FLOPs): evaluate
//!     at a graft point: evaluate (loss_before); build the target stack; the grafting operation fills it;
//!         regress/distill stage against the old stack; evaluate (loss_after); fresh optimiser moments
//! ```
//! A grafted trial does not checkpoint mid-run (the stack changes shape); `--resume` restarts it.

use super::optim::AdamW;
use super::{to_tensors, Event, Run, RunOptions};
use crate::graft::{GraftOp, RegressLoss, ResolvedGraft};
use crate::store::Store;
use crate::trial::TrialSpec;
use anyhow::{Context, Result};
use operators::{Stack, StackSpec};
use reports::{CurvePoint, GraftResult, Status, TrialResult};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Kind, Reduction};

/// Resolution of the FLOP-based learning-rate schedule (OptimSpec::lr_at takes whole steps).
const SCHEDULE_TICKS: u64 = 1_000_000;

fn per_step(spec: &TrialSpec, stack: &StackSpec) -> f64 {
    TrialSpec { stack: stack.clone(), grafts: Vec::new(), ..spec.clone() }.flops_per_step()
}

/// Forward FLOPs per token of the first `upto` blocks (the teacher's share of a regression step).
fn prefix_flops(stack: &StackSpec, upto: usize, seq_len: i64) -> f64 {
    stack.layers.iter().take(upto).map(|l| l.flops_per_token(stack.d_model, seq_len)).sum()
}

pub(super) fn train(
    store: &Store,
    id: &str,
    spec: &TrialSpec,
    opts: RunOptions,
    start: Instant,
    on_event: &mut dyn FnMut(Event),
) -> Result<TrialResult> {
    let (mut vs, mut run) = Run::prepare(store, id, spec, opts, true)?;
    std::fs::remove_file(store.trial_dir(id).join("curve.jsonl")).ok(); // a restart begins anew
    let budget = spec.budget_flops;
    let tokens_per_step = (spec.train.batch_size as i64 * spec.seq_len()) as u64;
    let n_eval = spec.train.eval_points as f64;
    let (mut current, mut flops, mut step, mut tokens) = (spec.stack.clone(), 0.0, 0u64, 0u64);
    let (mut next_eval, mut next_graft) = (1.0, 0usize);
    let (mut warm_from, mut warm_len) = (0.0, 0.0);
    let mut curve: Vec<CurvePoint> = Vec::new();
    let mut grafts: Vec<GraftResult> = Vec::new();
    let (mut status, mut reason) = (Status::Completed, None);
    let mut last_report = Instant::now();
    loop {
        let cost = per_step(spec, &current);
        if flops + cost > budget {
            break;
        }
        let tick = (flops / budget * SCHEDULE_TICKS as f64) as u64;
        let warm = if warm_len > 0.0 { ((flops - warm_from) / warm_len).clamp(0.0, 1.0).max(1e-3) } else { 1.0 };
        let lr = spec.optim.lr_at(tick, SCHEDULE_TICKS) * warm;
        run.step_with_lr(step, lr, true);
        (flops, step, tokens) = (flops + cost, step + 1, tokens + tokens_per_step);
        if last_report.elapsed().as_secs_f64() > 0.5 {
            let loss = run.loss_sum.double_value(&[]) / run.loss_count.max(1) as f64;
            on_event(Event::Progress { step, steps: run.steps, loss, flops });
            last_report = Instant::now();
        }
        if flops >= next_eval * budget / n_eval || flops + per_step(spec, &current) > budget {
            next_eval = (flops * n_eval / budget).floor() + 1.0;
            let e = point(&mut run, (store, id), on_event, (step, flops, tokens), &mut curve)?;
            if !e.is_finite() {
                (status, reason) = (Status::Diverged, Some(format!("loss became {e} at step {step}")));
                break;
            }
        }
        let Some(g) = spec.grafts.get(next_graft).filter(|g| flops >= g.at_flops) else { continue };
        next_graft += 1;
        let loss_before = point(&mut run, (store, id), on_event, (step, flops, tokens), &mut curve)?;
        let new_vs = VarStore::new(run.device);
        let new_stack = Stack::new(&new_vs.root(), &g.to, opts.kernel_path);
        let mut report = g.apply(&current, &vs, &new_vs).with_context(|| format!("graft at {flops:.3e} FLOPs"))?;
        let old_stack = std::mem::replace(&mut run.stack, new_stack);
        let lr = spec.optim.lr_at((flops / budget * SCHEDULE_TICKS as f64) as u64, SCHEDULE_TICKS);
        let (stage_flops, stage_steps) =
            stage(&mut run, spec, g, &current, &old_stack, &new_vs, step, lr, &mut report)?;
        // Stage steps are optimiser steps on their own batches: the main loop continues after them.
        (flops, step, tokens) = (flops + stage_flops, step + stage_steps, tokens + stage_steps * tokens_per_step);
        drop(old_stack);
        vs = new_vs;
        run.opt = AdamW::new(&vs, &spec.optim);
        current = g.to.clone();
        let loss_after = point(&mut run, (store, id), on_event, (step, flops, tokens), &mut curve)?;
        (warm_from, warm_len) = (flops, g.warmup * budget);
        let (c, t, f, d) = report.counts();
        let params = [("copied", c), ("transformed", t), ("fresh", f), ("distilled", d)];
        grafts.push(GraftResult {
            op: g.op.name().to_string(),
            at_flops: flops - stage_flops,
            loss_before,
            loss_after,
            spike: loss_after - loss_before,
            recovery_flops: None,
            stage_flops,
            params: params.into_iter().map(|(k, v)| (k.to_string(), v as u64)).collect(),
        });
        let file = store.trial_dir(id).join(format!("graft{}.json", grafts.len() - 1));
        crate::store::write_atomic(&file, &serde_json::to_vec_pretty(&report)?)?;
    }
    for g in &mut grafts {
        let end = g.at_flops + g.stage_flops;
        if g.spike <= 0.0 {
            g.recovery_flops = Some(g.stage_flops); // back at the pre-graft loss as soon as training resumes
            continue;
        }
        g.recovery_flops = curve
            .iter()
            .filter(|p| p.flops > end)
            .find(|p| p.eval_loss.is_some_and(|e| e <= g.loss_before))
            .map(|p| p.flops - g.at_flops);
    }
    let last = curve.last().cloned();
    let mut result = super::base_result(spec, id, opts);
    let t = spec.seq_len();
    result.d_model = current.d_model as u64;
    result.depth = current.layers.len() as u64;
    result.layers = current.layer_names();
    result.params = current.params() as u64;
    result.non_embedding_params = (current.params() - current.embedding_params()) as u64;
    result.flops_per_token = current.flops_per_token(t);
    result.state_size = current.state_size(t) as u64;
    Ok(TrialResult {
        status,
        reason,
        flops_spent: flops,
        tokens_seen: tokens,
        steps: step,
        final_eval_loss: last.as_ref().and_then(|p| p.eval_loss),
        final_metrics: last.map(|p| p.metrics).unwrap_or_default(),
        curve,
        wall_seconds: start.elapsed().as_secs_f64(),
        grafts,
        ..result
    })
}

/// `--init-from`: loads the weights strictly before the first step and writes `init_report.json` (applied,
/// missing, unused, shape mismatch).
pub(super) fn init_from(store: &Store, id: &str, spec: &TrialSpec, vs: &VarStore) -> Result<()> {
    let Some(init) = &spec.init_from else { return Ok(()) };
    let report = init.load(vs).with_context(|| format!("--init-from {}", init.path))?;
    eprintln!("initialised from {}: {} tensors applied", init.path, report.applied.len());
    crate::store::write_atomic(&store.trial_dir(id).join("init_report.json"), &serde_json::to_vec_pretty(&report)?)
}

/// Evaluates, appends the point to the curve (memory and file) and returns the held-out loss.
fn point(
    run: &mut Run,
    (store, id): (&Store, &str),
    on_event: &mut dyn FnMut(Event),
    (step, flops, tokens): (u64, f64, u64),
    curve: &mut Vec<CurvePoint>,
) -> Result<f64> {
    let train_loss = run.take_train_loss();
    let (eval_loss, metrics) = run.evaluate();
    let accuracy = metrics.get("accuracy").copied();
    let p = CurvePoint { step, flops, tokens, train_loss, eval_loss: Some(eval_loss), metrics };
    store.append_curve(id, &p)?;
    curve.push(p);
    on_event(Event::Eval { step, eval_loss, accuracy });
    Ok(eval_loss)
}

/// The regress or distill stage of graft `g`: trains the new stack against the old one for `g.stage` of the
/// budget; returns the FLOPs it spent (teacher forwards included) and its steps.
#[allow(clippy::too_many_arguments)]
fn stage(
    run: &mut Run,
    spec: &TrialSpec,
    g: &ResolvedGraft,
    from: &StackSpec,
    teacher: &Stack,
    vs: &VarStore,
    step: u64,
    lr: f64,
    report: &mut grafting::GraftReport,
) -> Result<(f64, u64)> {
    if !matches!(g.op, GraftOp::Regress | GraftOp::Distill) || g.stage <= 0.0 {
        return Ok((0.0, 0));
    }
    let layers = g.new_layers(from);
    if layers.is_empty() {
        return Ok((0.0, 0));
    }
    let (seq, tokens) = (spec.seq_len(), (spec.train.batch_size as i64 * spec.seq_len()) as f64);
    let top = layers.iter().max().copied().unwrap_or(0) + 1;
    let d = g.to.d_model;
    let student: f64 = layers.iter().map(|&i| g.to.layers[i].flops_per_token(d, seq)).sum();
    // Regression step: teacher forward through the first `top` blocks + the new mixers trained (3x).
    let regress_cost = tokens * (prefix_flops(from, top, seq) + operators::flops::TRAIN_MULTIPLIER * student);
    // Logit distillation step: the whole teacher forward + the whole student trained.
    let distill_cost =
        tokens * (from.flops_per_token(seq) + operators::flops::TRAIN_MULTIPLIER * g.to.flops_per_token(seq));
    let budget = g.stage * spec.budget_flops;
    let regress_budget = if g.op == GraftOp::Distill { budget / 2.0 } else { budget };
    let mut opt = AdamW::new(vs, &spec.optim);
    let mut spent = 0.0;
    let mut k = 0u64;
    while spent + regress_cost <= regress_budget {
        let batch = run.task.train_batch(step + k, spec.train.batch_size);
        let (x, _) = to_tensors(&batch, run.device);
        let (inputs, targets) = tch::no_grad(|| {
            let (mut h, mut inputs, mut targets) = (teacher.embed(&x), BTreeMap::new(), BTreeMap::new());
            for (i, b) in teacher.blocks().iter().enumerate().take(top) {
                if layers.contains(&i) {
                    let n = b.normed(&h);
                    targets.insert(i, b.mix(&n));
                    inputs.insert(i, n);
                }
                h = b.forward(&h);
            }
            (inputs, targets)
        });
        opt.zero_grad();
        let blocks = run.stack.blocks();
        let l = layers
            .iter()
            .map(|i| {
                let (y, t) = (blocks[*i].mix(&inputs[i]), &targets[i]);
                match g.loss {
                    RegressLoss::Mse => y.mse_loss(t, Reduction::Mean),
                    RegressLoss::L1 => y.l1_loss(t, Reduction::Mean),
                    RegressLoss::Huber => y.huber_loss(t, Reduction::Mean, 1.0),
                }
            })
            .reduce(|a, b| a + b)
            .expect("at least one new layer");
        l.backward();
        opt.clip_grad_norm(spec.optim.grad_clip);
        opt.step(lr);
        (spent, k) = (spent + regress_cost, k + 1);
    }
    while g.op == GraftOp::Distill && spent + distill_cost <= budget {
        let batch = run.task.train_batch(step + k, spec.train.batch_size);
        let (x, _) = to_tensors(&batch, run.device);
        let target = tch::no_grad(|| teacher.forward(&x).log_softmax(-1, Kind::Float));
        opt.zero_grad();
        let student = run.stack.forward(&x).log_softmax(-1, Kind::Float);
        let l = student.kl_div(&target, Reduction::Mean, true) * target.size()[2] as f64; // KL(teacher || student)
        l.backward();
        opt.clip_grad_norm(spec.optim.grad_clip);
        opt.step(lr);
        (spent, k) = (spent + distill_cost, k + 1);
    }
    report.mark_distilled(&layers, g.op.name());
    Ok((spent, k))
}
