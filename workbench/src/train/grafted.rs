//! The training loop of a trial with graft points (workbench::graft). The budget is counted in FLOPs, not
//! steps, because a graft changes the FLOPs of a step; every FLOP of a regress or distill stage, including
//! the teacher's forward passes, is spent from the same budget, so a grafted trial and a from-scratch trial
//! of the same budget used the same compute.
//!
//! ```text
//! until the budget is spent:
//!     at a graft point: evaluate (loss_before); build the target stack; the grafting operation fills it;
//!         regress/distill stage against the old stack; extend_context: rebuild the task and its held-out
//!         set at the new length; evaluate (loss_after, at the new length); fresh optimiser moments;
//!         checkpoint
//!     one AdamW step on the current stack at the current length; lr = schedule(FLOPs spent / budget) x
//!         re-warm-up factor
//!     at an evaluation point (evenly spaced in FLOPs): evaluate, checkpoint
//! ```
//! Checkpoints hold the weights, the moments and a [`GraftState`] (the current stack and length, counters,
//! graft records), so a killed grafted trial resumes from its last one. Each graft's fresh parameters are
//! drawn right after seeding libtorch from (trial seed, graft index), so a trial resumed before a graft
//! draws the same ones as an uninterrupted run. A grafted trial does not pause at a rung (`--until-flops`):
//! rungs are named by step and a graft changes the FLOPs of a step, so it trains to its budget.

use super::graft_state::GraftState;
use super::optim::AdamW;
use super::{to_tensors, Event, Run, RunOptions};
use crate::graft::{GraftOp, RegressLoss, ResolvedGraft};
use crate::store::Store;
use crate::trial::TrialSpec;
use anyhow::{anyhow, Context, Result};
use operators::{Stack, StackSpec};
use reports::{CurvePoint, GraftResult, Status, TrialResult};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Kind, Reduction};

/// Resolution of the FLOP-based learning-rate schedule (OptimSpec::lr_at takes whole steps).
const SCHEDULE_TICKS: u64 = 1_000_000;

/// Forward FLOPs per token of the first `upto` blocks (the teacher's share of a regression step).
fn prefix_flops(stack: &StackSpec, upto: usize, seq_len: i64) -> f64 {
    stack.layers.iter().take(upto).map(|l| l.flops_per_token(stack.d_model, seq_len)).sum()
}

fn tokens_per_step(spec: &TrialSpec, seq_len: i64) -> u64 {
    (spec.train.batch_size as i64 * seq_len) as u64
}

/// The trial's task and held-out set at `seq_len` (after an `extend_context`).
fn set_length(run: &mut Run, spec: &TrialSpec, seq_len: i64) -> Result<()> {
    let task = spec.task.with_seq_len(seq_len as usize).map_err(|e| anyhow!(e))?;
    run.task = task.build(spec.seed).with_context(|| format!("building the task at seq_len {seq_len}"))?;
    run.eval = run.task.eval_set(spec.train.batch_size);
    // A batch prefetched from the old task has the old length.
    run.feed = super::step::Feeder::new(run.device, spec.train.batch_size);
    Ok(())
}

/// Builds the task at every length the grafts will use, before step 0, so that a corpus too small for the
/// longer windows fails the trial before any training (naming the graft).
fn check_lengths(spec: &TrialSpec) -> Result<()> {
    for (i, g) in spec.grafts.iter().enumerate() {
        if let Some(n) = g.seq_len {
            let task = spec.task.with_seq_len(n as usize).map_err(|e| anyhow!(e));
            task.and_then(|t| Ok(t.build(spec.seed)?))
                .with_context(|| format!("grafts[{i}] ({}) to seq_len {n}", g.op.name()))?;
        }
    }
    Ok(())
}

pub(super) fn train(
    store: &Store,
    id: &str,
    spec: &TrialSpec,
    opts: RunOptions,
    start: Instant,
    on_event: &mut dyn FnMut(Event),
) -> Result<TrialResult> {
    let ckpt = store.trial_dir(id).join("checkpoint.safetensors");
    let resumed = if ckpt.exists() { Some(GraftState::read(&ckpt)?) } else { None };
    let (mut vs, mut run) = Run::prepare(store, id, spec, opts, resumed.is_none())?;
    check_lengths(spec)?;
    let (mut s, mut curve, mut wall_before) = match resumed {
        Some(state) => {
            if state.stack != spec.stack {
                vs = VarStore::new(run.device);
                run.stack = Stack::new(&vs.root(), &state.stack, opts.kernel_path);
                run.opt = AdamW::new(&vs, &spec.optim);
            }
            if state.seq_len != spec.seq_len() {
                set_length(&mut run, spec, state.seq_len)?;
            }
            let (step, wall) = run.opt.load(&ckpt)?;
            eprintln!(
                "resuming from checkpoint at step {step} ({} of {} grafts done, seq_len {})",
                state.next_graft,
                spec.grafts.len(),
                state.seq_len
            );
            let curve = store.curve_prefix(id, state.curve_len)?;
            (state, curve, wall)
        }
        None => {
            std::fs::remove_file(store.trial_dir(id).join("curve.jsonl")).ok(); // no checkpoint: begin anew
            (GraftState::start(&spec.stack, spec.seq_len()), Vec::new(), 0.0)
        }
    };
    let budget = spec.budget_flops;
    let n_eval = spec.train.eval_points as f64;
    let (mut status, mut reason) = (Status::Completed, None);
    let mut last_report = Instant::now();
    let save = |s: &mut GraftState, run: &Run, curve: &[CurvePoint]| -> Result<()> {
        s.curve_len = curve.len();
        s.save(&run.opt, &ckpt, wall_before + start.elapsed().as_secs_f64())
    };
    loop {
        if let Some(g) = spec.grafts.get(s.next_graft).filter(|g| s.flops >= g.at_flops) {
            vs = graft(&mut run, (store, id), spec, opts, g, &vs, &mut s, &mut curve, on_event)?;
            save(&mut s, &run, &curve)?;
            continue;
        }
        let cost = spec.step_flops(&s.stack, s.seq_len);
        if s.flops + cost > budget {
            break;
        }
        let tick = (s.flops / budget * SCHEDULE_TICKS as f64) as u64;
        let warm =
            if s.warm_len > 0.0 { ((s.flops - s.warm_from) / s.warm_len).clamp(0.0, 1.0).max(1e-3) } else { 1.0 };
        let lr = spec.optim.lr_at(tick, SCHEDULE_TICKS) * warm;
        run.step_with_lr(s.step, lr, true);
        (s.flops, s.step, s.tokens) = (s.flops + cost, s.step + 1, s.tokens + tokens_per_step(spec, s.seq_len));
        if last_report.elapsed().as_secs_f64() > 0.5 {
            let loss = run.loss_sum.double_value(&[]) / run.loss_count.max(1) as f64;
            on_event(Event::Progress { step: s.step, steps: run.steps, loss, flops: s.flops });
            last_report = Instant::now();
        }
        if s.flops >= s.next_eval * budget / n_eval || s.flops + cost > budget {
            s.next_eval = (s.flops * n_eval / budget).floor() + 1.0;
            let e = point(&mut run, (store, id), on_event, (s.step, s.flops, s.tokens), &mut curve)?;
            if !e.is_finite() {
                (status, reason) = (Status::Diverged, Some(format!("loss became {e} at step {}", s.step)));
                break;
            }
            save(&mut s, &run, &curve)?;
        }
    }
    wall_before += start.elapsed().as_secs_f64();
    let mut grafts = s.grafts;
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
    let (current, t) = (&s.stack, s.seq_len);
    result.d_model = current.d_model as u64;
    result.depth = current.layers.len() as u64;
    result.layers = current.layer_names();
    result.params = current.params() as u64;
    result.non_embedding_params = (current.params() - current.embedding_params()) as u64;
    result.flops_per_token = current.flops_per_token(t);
    result.state_size = current.state_size(t) as u64;
    result.seq_len = t as u64;
    Ok(TrialResult {
        status,
        reason,
        flops_spent: s.flops,
        tokens_seen: s.tokens,
        steps: s.step,
        final_eval_loss: last.as_ref().and_then(|p| p.eval_loss),
        final_metrics: last.map(|p| p.metrics).unwrap_or_default(),
        curve,
        wall_seconds: wall_before,
        grafts,
        ..result
    })
}

/// Applies graft `g` to the run at the state `s` (which it advances: stage FLOPs and steps, the new stack
/// and length, the record, the re-warm-up); returns the var store of the new stack.
#[allow(clippy::too_many_arguments)]
fn graft(
    run: &mut Run,
    (store, id): (&Store, &str),
    spec: &TrialSpec,
    opts: RunOptions,
    g: &ResolvedGraft,
    vs: &VarStore,
    s: &mut GraftState,
    curve: &mut Vec<CurvePoint>,
    on_event: &mut dyn FnMut(Event),
) -> Result<VarStore> {
    let budget = spec.budget_flops;
    let loss_before = point(run, (store, id), on_event, (s.step, s.flops, s.tokens), curve)?;
    // Fresh parameters depend only on (seed, graft index): a resumed trial draws what an uninterrupted one did.
    tch::manual_seed(crate::tasks::splitmix64(spec.seed ^ (s.next_graft as u64 + 1)) as i64);
    let new_vs = VarStore::new(run.device);
    let new_stack = Stack::new(&new_vs.root(), &g.to, opts.kernel_path);
    let mut report = g.apply(&s.stack, vs, &new_vs).with_context(|| format!("graft at {:.3e} FLOPs", s.flops))?;
    let old_stack = std::mem::replace(&mut run.stack, new_stack);
    let lr = spec.optim.lr_at((s.flops / budget * SCHEDULE_TICKS as f64) as u64, SCHEDULE_TICKS);
    let (stage_flops, stage_steps) =
        stage(run, spec, g, &s.stack, &old_stack, &new_vs, (s.step, s.seq_len), lr, &mut report)?;
    // Stage steps are optimiser steps on their own batches: the main loop continues after them.
    s.flops += stage_flops;
    s.step += stage_steps;
    s.tokens += stage_steps * tokens_per_step(spec, s.seq_len);
    drop(old_stack);
    run.opt = AdamW::new(&new_vs, &spec.optim);
    let len_before = s.seq_len;
    s.seq_len = g.seq_len_after(s.seq_len);
    if s.seq_len != len_before {
        set_length(run, spec, s.seq_len)?;
    }
    s.stack = g.to.clone();
    let loss_after = point(run, (store, id), on_event, (s.step, s.flops, s.tokens), curve)?;
    (s.warm_from, s.warm_len) = (s.flops, g.warmup * budget);
    let (c, t, f, d) = report.counts();
    let params = [("copied", c), ("transformed", t), ("fresh", f), ("distilled", d)];
    s.grafts.push(GraftResult {
        op: g.op.name().to_string(),
        at_flops: s.flops - stage_flops,
        loss_before,
        loss_after,
        spike: loss_after - loss_before,
        recovery_flops: None,
        stage_flops,
        params: params.into_iter().map(|(k, v)| (k.to_string(), v as u64)).collect(),
        seq_len_before: Some(len_before as u64),
        seq_len_after: Some(s.seq_len as u64),
    });
    let file = store.trial_dir(id).join(format!("graft{}.json", s.grafts.len() - 1));
    crate::store::write_atomic(&file, &serde_json::to_vec_pretty(&report)?)?;
    s.next_graft += 1;
    Ok(new_vs)
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
    (step, seq): (u64, i64),
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
    let tokens = tokens_per_step(spec, seq) as f64;
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
