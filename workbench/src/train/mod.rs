//! The training loop of one trial (runs inside `workbench trial`): build the stack, stream the task's
//! batches, AdamW with warmup and cosine, stop when the FLOP budget is spent, evaluate and checkpoint at
//! fixed FLOP points, write the result last.
//!
//! A trial may be asked to stop early (`RunOptions::until_flops`, what multi-rung searches use): it still
//! trains with its full budget's learning-rate schedule, and at the step the limit buys it evaluates,
//! checkpoints and writes a [`RungRecord`] (`rungs/STEP.json`) instead of `result.json`; run again with
//! a higher limit (or none), it continues from that checkpoint.

mod graft_state;
mod grafted;
pub mod metrics;
pub mod optim;
pub mod step;

use crate::store::{RungRecord, Store};
use crate::tasks::{Batch, Task, IGNORE};
use crate::trial::TrialSpec;
use anyhow::{Context, Result};
use kernels::KernelPath;
use metrics::MacroAccuracy;
use operators::Stack;
use optim::AdamW;
use reports::{CurvePoint, Status, TrialResult};
use std::collections::BTreeMap;
use std::time::Instant;
use step::{Feeder, Precision};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

/// What a running trial tells whoever watches it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Progress { step: u64, steps: u64, loss: f64, flops: f64 },
    Eval { step: u64, eval_loss: f64, accuracy: Option<f64> },
}

/// Where and how to run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub device: Device,
    pub kernel_path: KernelPath,
    /// Pause after this many training FLOPs (whole steps) instead of training to the budget.
    pub until_flops: Option<f64>,
    /// Arithmetic: bf16 autocast on CUDA by default ([`Precision`]).
    pub precision: Precision,
}

impl RunOptions {
    /// CPU, fast kernels, float32, to the end of the budget.
    pub fn cpu() -> RunOptions {
        RunOptions { device: Device::Cpu, kernel_path: KernelPath::Auto, until_flops: None, precision: Precision::Auto }
    }
}

/// How a trial process ended.
#[derive(Debug, Clone)]
pub enum TrialEnd {
    /// Trained to its budget, diverged or failed: `result.json` is written.
    Finished(Box<TrialResult>),
    /// Stopped at its `until_flops` limit: `rungs/STEP.json` and the checkpoint are written.
    Paused(RungRecord),
}

/// The state of one training run, kept in one place.
struct Run<'a> {
    spec: &'a TrialSpec,
    task: Box<dyn Task>,
    eval: Vec<Batch>,
    stack: Stack,
    opt: AdamW,
    device: Device,
    /// Resolved: `Bf16` or `Fp32`.
    precision: Precision,
    feed: Feeder,
    steps: u64,
    /// Sum and count of training losses since the last evaluation (a device tensor: no sync per step).
    loss_sum: Tensor,
    loss_count: u64,
    /// Classes of `macro_accuracy`, computed for MAD tasks only (see [`metrics`]).
    macro_classes: Option<usize>,
}

/// Runs (or resumes) the trial `id` and writes its result. Errors inside training become a failed
/// result; only errors reading the spec or writing files are returned.
pub fn run_trial(store: &Store, id: &str, opts: RunOptions, on_event: &mut dyn FnMut(Event)) -> Result<TrialEnd> {
    let spec = store.read_spec(id)?;
    let start = Instant::now();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train(store, id, &spec, opts, start, on_event)));
    let result = match outcome {
        Ok(Ok(TrialEnd::Paused(rung))) => {
            store.write_rung(id, &rung)?;
            return Ok(TrialEnd::Paused(rung));
        }
        Ok(Ok(TrialEnd::Finished(r))) => *r,
        Ok(Err(e)) => failed(&spec, id, opts, out_of_memory(&spec, format!("{e:#}")), start),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the trial panicked".into());
            failed(&spec, id, opts, out_of_memory(&spec, first_line(&msg)), start)
        }
    };
    store.write_result(&result)?;
    Ok(TrialEnd::Finished(Box::new(result)))
}

/// A GPU out-of-memory error says so first, with the batch it tried, so a sweep's table shows what to shrink.
fn out_of_memory(spec: &TrialSpec, msg: String) -> String {
    if msg.contains("out of memory") {
        let _ = kernels::train_ops::empty_cache();
        format!(
            "out of GPU memory at batch size {} x sequence length {} ({} parameters): {msg}",
            spec.train.batch_size,
            spec.seq_len(),
            spec.stack.params()
        )
    } else {
        msg
    }
}

/// The first line of a panic message; libtorch errors reach us Debug-formatted (`Torch("...\\n...")`), so an
/// escaped newline ends the line too (what follows is libtorch's C++ backtrace).
pub(crate) fn first_line(msg: &str) -> String {
    let line = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or(msg);
    line.split("\\n").next().unwrap_or(line).to_string()
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn base_result(spec: &TrialSpec, id: &str, opts: RunOptions) -> TrialResult {
    let t = spec.seq_len();
    TrialResult {
        id: id.to_string(),
        arch: spec.arch.clone(),
        label: spec.label.clone(),
        task: spec.task.name().to_string(),
        status: Status::Failed,
        reason: None,
        d_model: spec.stack.d_model as u64,
        depth: spec.stack.layers.len() as u64,
        layers: spec.stack.layer_names(),
        params: spec.stack.params() as u64,
        non_embedding_params: (spec.stack.params() - spec.stack.embedding_params()) as u64,
        flops_per_token: spec.stack.flops_per_token(t),
        state_size: spec.stack.state_size(t) as u64,
        seq_len: t as u64,
        batch_size: spec.train.batch_size as u64,
        budget_flops: spec.budget_flops,
        flops_spent: 0.0,
        tokens_seen: 0,
        steps: 0,
        final_eval_loss: None,
        final_metrics: BTreeMap::new(),
        learning_rate: spec.optim.lr,
        seed: spec.seed,
        curve: Vec::new(),
        wall_seconds: 0.0,
        device: device_name(opts.device),
        grafts: Vec::new(),
        inherited: None,
        task_params: spec.task.variant_params(),
    }
}

/// A failed result with the trial's static facts filled in (for a process that died without one).
pub fn empty_result(spec: &TrialSpec, id: &str, device: &str) -> TrialResult {
    TrialResult { device: device.to_string(), ..base_result(spec, id, RunOptions::cpu()) }
}

fn failed(spec: &TrialSpec, id: &str, opts: RunOptions, reason: String, start: Instant) -> TrialResult {
    TrialResult { reason: Some(reason), wall_seconds: start.elapsed().as_secs_f64(), ..base_result(spec, id, opts) }
}

use step::upload as to_tensors;

/// Mean cross-entropy over labelled positions of `logits [B, T, V]` against `targets [B, T]`.
fn loss(logits: &Tensor, targets: &Tensor, reduction: Reduction) -> Tensor {
    let v = logits.size()[2];
    logits.view([-1, v]).to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
        &targets.view([-1]),
        None,
        reduction,
        IGNORE,
        0.0,
    )
}

/// What [`optimizer_step`] works on.
pub struct StepParts<'a> {
    pub stack: &'a Stack,
    pub opt: &'a mut AdamW,
    /// Resolved ([`Precision::resolve`]).
    pub precision: Precision,
    pub feed: &'a mut Feeder,
}

/// One optimiser step of `task`'s batch `step` at learning rate `lr`, the one trials and `bench-train` run:
/// forward and loss in `precision`, backward, clipping, AdamW. Queues the GPU work without waiting for it,
/// then (if `prefetch`) builds the next step's batch while the GPU runs. Returns the loss, detached, still
/// on the device.
pub fn optimizer_step(p: StepParts, task: &dyn Task, step: u64, lr: f64, grad_clip: f64, prefetch: bool) -> Tensor {
    let (x, y) = p.feed.take(task, step);
    p.opt.zero_grad();
    let (l, total) = p.precision.run(|| {
        let l = loss(&p.stack.forward(&x), &y, Reduction::Mean);
        let total = p.stack.aux_loss().map(|aux| &l + aux);
        (l, total)
    });
    total.as_ref().unwrap_or(&l).backward();
    p.opt.clip_grad_norm(grad_clip);
    p.opt.step(lr);
    if prefetch {
        p.feed.prefetch(task, step + 1);
    }
    l.detach()
}

impl<'a> Run<'a> {
    /// One optimiser step at the trial's own learning-rate schedule.
    fn train_step(&mut self, step: u64) {
        let lr = self.spec.optim.lr_at(step, self.steps);
        self.step_with_lr(step, lr, step + 1 < self.steps);
    }

    /// One optimiser step at `lr` ([`optimizer_step`]), adding its loss to the running sum.
    pub(super) fn step_with_lr(&mut self, step: u64, lr: f64, prefetch: bool) {
        let parts =
            StepParts { stack: &self.stack, opt: &mut self.opt, precision: self.precision, feed: &mut self.feed };
        let l = optimizer_step(parts, &*self.task, step, lr, self.spec.optim.grad_clip, prefetch);
        self.loss_sum += l;
        self.loss_count += 1;
    }

    /// Held-out loss (mean over labelled tokens) and metrics ([`metrics`]): `accuracy` (per example over its
    /// labelled positions, then over examples) and, for MAD tasks, `macro_accuracy`.
    fn evaluate(&self) -> (f64, BTreeMap<String, f64>) {
        tch::no_grad(|| {
            let (mut loss_sum, mut tokens, mut acc_sum, mut examples) = (0.0, 0.0, 0.0, 0.0);
            let mut macro_acc = self.macro_classes.map(MacroAccuracy::new);
            for b in &self.eval {
                let (x, y) = to_tensors(b, self.device);
                let logits = self.precision.run(|| self.stack.forward(&x));
                loss_sum += loss(&logits, &y, Reduction::Sum).double_value(&[]);
                let mask = y.ne(IGNORE);
                let labelled = mask.sum_dim_intlist(1, false, Kind::Float); // [B]
                let pred = logits.argmax(-1, false); // [B, T]
                if let Some(m) = &mut macro_acc {
                    m.add_tensors(&pred, &y, &mask);
                }
                let correct = pred.eq_tensor(&y).logical_and(&mask).sum_dim_intlist(1, false, Kind::Float);
                let has = labelled.gt(0.0);
                let per_example = (correct / labelled.clamp_min(1.0)).masked_select(&has);
                tokens += labelled.sum(Kind::Float).double_value(&[]);
                acc_sum += per_example.sum(Kind::Float).double_value(&[]);
                examples += has.sum(Kind::Float).double_value(&[]);
            }
            let mut metrics = BTreeMap::from([("accuracy".to_string(), acc_sum / examples.max(1.0))]);
            if let Some(m) = macro_acc {
                metrics.insert("macro_accuracy".to_string(), m.value());
            }
            (loss_sum / tokens.max(1.0), metrics)
        })
    }

    /// Seeds libtorch, builds the task and its held-out set, the stack under a fresh var store (loading the
    /// trial's `init_from` weights when `load_init`), and the optimiser. The var store is returned so the caller
    /// can keep (or, for a graft, rebuild) it.
    pub(super) fn prepare(
        store: &Store,
        id: &str,
        spec: &'a TrialSpec,
        opts: RunOptions,
        load_init: bool,
    ) -> Result<(VarStore, Run<'a>)> {
        let precision = opts.precision.resolve(opts.device).map_err(anyhow::Error::msg)?;
        tch::manual_seed(spec.seed as i64);
        let task = spec.task.build_in(spec.seed, &store.data_dir()).context("building the task")?;
        let eval = task.eval_set(spec.train.batch_size);
        let vs = VarStore::new(opts.device);
        let stack = Stack::new(&vs.root(), &spec.stack, opts.kernel_path);
        if load_init {
            grafted::init_from(store, id, spec, &vs)?;
            crate::search::inherit::apply(store, id, spec, &vs)?;
        }
        let opt = AdamW::new(&vs, &spec.optim);
        let run = Run {
            spec,
            task,
            eval,
            stack,
            opt,
            device: opts.device,
            precision,
            feed: Feeder::new(opts.device, spec.train.batch_size),
            steps: spec.steps(),
            loss_sum: Tensor::zeros([], (Kind::Float, opts.device)),
            loss_count: 0,
            macro_classes: crate::tasks::MadTaskKind::of(&spec.task).map(|_| spec.task.vocab_size()),
        };
        Ok((vs, run))
    }

    fn take_train_loss(&mut self) -> f64 {
        let mean = self.loss_sum.double_value(&[]) / self.loss_count.max(1) as f64;
        self.loss_sum = Tensor::zeros([], (Kind::Float, self.device));
        self.loss_count = 0;
        mean
    }
}

fn train(
    store: &Store,
    id: &str,
    spec: &TrialSpec,
    opts: RunOptions,
    start: Instant,
    on_event: &mut dyn FnMut(Event),
) -> Result<TrialEnd> {
    if !spec.grafts.is_empty() {
        // A grafted trial checkpoints and resumes, but does not pause at a rung: rungs are named by step and
        // its FLOPs per step change at each graft, so it trains to its budget even under `--until-flops`.
        return grafted::train(store, id, spec, opts, start, on_event).map(|r| TrialEnd::Finished(Box::new(r)));
    }
    let dir = store.trial_dir(id);
    let ckpt = dir.join("checkpoint.safetensors");
    let (_vs, mut run) = Run::prepare(store, id, spec, opts, !ckpt.exists())?;
    let steps = run.steps;
    let (mut step, mut wall_before) = (0u64, 0.0);
    if ckpt.exists() {
        (step, wall_before) = run.opt.load(&ckpt)?;
        eprintln!("resuming from checkpoint at step {step} of {steps}");
    }
    let stop = opts.until_flops.map_or(steps, |f| spec.steps_until(f));
    if step > stop {
        anyhow::bail!("the checkpoint is at step {step}, past the requested stop at step {stop} (--until-flops)");
    }
    let mut curve = store.curve_until(id, step)?;
    let per_step = spec.flops_per_step();
    let tokens_per_step = (spec.train.batch_size as i64 * spec.seq_len()) as u64;
    let eval_steps = spec.eval_steps();
    let mut last_report = Instant::now();
    let mut status = Status::Completed;
    let mut reason = None;
    while step < stop {
        run.train_step(step);
        step += 1;
        if last_report.elapsed().as_secs_f64() > 0.5 || step == stop {
            let loss = run.loss_sum.double_value(&[]) / run.loss_count.max(1) as f64;
            on_event(Event::Progress { step, steps, loss, flops: step as f64 * per_step });
            last_report = Instant::now();
        }
        if eval_steps.contains(&step) {
            let train_loss = run.take_train_loss();
            let (eval_loss, metrics) = run.evaluate();
            let accuracy = metrics.get("accuracy").copied();
            let point = CurvePoint {
                step,
                flops: step as f64 * per_step,
                tokens: step * tokens_per_step,
                train_loss,
                eval_loss: Some(eval_loss),
                metrics,
            };
            store.append_curve(id, &point)?;
            curve.push(point);
            on_event(Event::Eval { step, eval_loss, accuracy });
            if !train_loss.is_finite() || !eval_loss.is_finite() {
                status = Status::Diverged;
                reason = Some(format!(
                    "loss became {} at step {step}",
                    if train_loss.is_finite() { eval_loss } else { train_loss }
                ));
                break;
            }
            run.opt.save(&ckpt, step, wall_before + start.elapsed().as_secs_f64())?;
        }
    }
    if stop < steps && status == Status::Completed {
        // Paused at the limit: evaluate there (unless this step was an evaluation point), checkpoint, record.
        let (eval_loss, metrics) = match curve.last() {
            Some(p) if p.step == stop => (p.eval_loss.unwrap_or(f64::NAN), p.metrics.clone()),
            _ => run.evaluate(),
        };
        if eval_loss.is_finite() {
            let wall = wall_before + start.elapsed().as_secs_f64();
            run.opt.save(&ckpt, step, wall)?;
            return Ok(TrialEnd::Paused(RungRecord {
                step,
                steps,
                until_flops: opts.until_flops.unwrap_or(f64::INFINITY),
                flops: step as f64 * per_step,
                tokens: step * tokens_per_step,
                eval_loss,
                metrics,
                wall_seconds: wall,
            }));
        }
        status = Status::Diverged;
        reason = Some(format!("loss became {eval_loss} at step {step}"));
    }
    let last = curve.last().cloned();
    Ok(TrialEnd::Finished(Box::new(TrialResult {
        status,
        reason,
        flops_spent: step as f64 * per_step,
        tokens_seen: step * tokens_per_step,
        steps: step,
        final_eval_loss: last.as_ref().and_then(|p| p.eval_loss),
        final_metrics: last.map(|p| p.metrics).unwrap_or_default(),
        curve,
        wall_seconds: wall_before + start.elapsed().as_secs_f64(),
        inherited: crate::search::inherit::recorded(store, id),
        ..base_result(spec, id, opts)
    })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_line_stops_at_libtorchs_escaped_backtrace() {
        let msg = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 22.00 GiB.\\nException raised from malloc\\nframe #0\")\nstack";
        assert_eq!(
            super::first_line(msg),
            "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 22.00 GiB."
        );
        assert_eq!(super::first_line("\n  \nplain\nsecond"), "plain");
    }
}
