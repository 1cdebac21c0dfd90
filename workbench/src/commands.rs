//! The CLI's commands: thin glue between the space, the store, the executors and the report.

use crate::{Cmd, DeviceArg, ExecutorArg, KernelsArg, LawArg, SlurmArgs};
use anyhow::Result;
use kernels::KernelPath;
use operators::MixerKind;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tch::Device;
use workbench::error::UsageError;
use workbench::exec::slurm::{absolute, ScriptContext, SlurmExecutor, SlurmSpec};
use workbench::exec::{default_threads, install_signal_handlers, Executor, ExecutorSpec, LocalOptions, LocalPool};
use workbench::search::{self, driver, Proposal, SearchSpec};
use workbench::space::Space;
use workbench::store::Store;
use workbench::train::step::Precision;
use workbench::train::{run_trial, Event, RunOptions, TrialEnd};

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Sweep {
            space,
            out,
            resume,
            force,
            device,
            jobs,
            kernels,
            devices,
            precision,
            executor,
            dry_run,
            slurm,
            init_from,
        } => {
            let how = How { device, jobs, kernels, devices, precision, executor, dry_run, slurm, init_from };
            sweep(&space, out, resume, force, how)
        }
        Cmd::Plan { space } => plan(&space),
        Cmd::Mad { space, out, baseline_only, epochs, train_fraction, jobs, resume, device, kernels, dry_run } => {
            let overrides = workbench::mad::MadOverrides { baseline_only, epochs, train_fraction };
            let device = match device {
                DeviceArg::Cpu => "cpu",
                DeviceArg::Cuda => "cuda",
            };
            parse_device(device)?;
            let kernels = format!("{kernels:?}").to_lowercase();
            let opts =
                workbench::mad::MadOptions { out, overrides, jobs, resume, device: device.into(), kernels, dry_run };
            if let Some(dir) = workbench::mad::run(&space, &opts)? {
                println!("report: {}", report(&dir)?.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report { dir } => {
            let path = report(&dir)?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Mixers { json } => mixers(json),
        Cmd::Fit { law, input, bootstrap, seed, json } => {
            let law = match law {
                LawArg::Power => reports::Law::Power,
                LawArg::Isoflop => reports::Law::Isoflop,
                LawArg::Chinchilla => reports::Law::Chinchilla,
            };
            let text = reports::run_fit(&input, law, (bootstrap > 0).then_some(bootstrap), seed, json)
                .map_err(|e| UsageError::new(e.to_string()))?;
            println!("{}", text.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchTrain {
            arch,
            device,
            d_model,
            vocab,
            seq_len,
            batch_size,
            warmup,
            steps,
            windows,
            kernels,
            precision,
            json,
            profile,
        } => {
            let archs: Vec<String> = arch.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
            for a in &archs {
                if !workbench::bench::ARCHS.contains(&a.as_str()) {
                    let known = workbench::bench::ARCHS.join(", ");
                    return Err(
                        UsageError::new(format!("--arch: unknown architecture `{a}` (expected {known})")).into()
                    );
                }
            }
            if steps == 0 || windows == 0 || batch_size == 0 || seq_len < 1 {
                return Err(UsageError::new("--steps, --windows, --batch-size and --seq-len must be positive").into());
            }
            let device = parse_device(&device)?;
            precision.resolve(device).map_err(UsageError::new)?;
            if let Some(dir) = &profile {
                if !device.is_cuda() {
                    return Err(UsageError::new("--profile profiles CUDA kernels: use it with --device cuda").into());
                }
                std::fs::create_dir_all(dir)
                    .map_err(|e| UsageError::new(format!("--profile {}: cannot create it: {e}", dir.display())))?;
            }
            let o = workbench::bench::BenchOptions {
                archs,
                d_model,
                vocab,
                seq_len,
                batch_size,
                warmup,
                steps,
                windows,
                device,
                kernel_path: kernel_path(kernels),
                precision,
                profile,
            };
            let report = workbench::bench::run(&o)?;
            print!("{}", workbench::bench::markdown(&report));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Trial { sweep, id, device, threads, kernels, precision, events, until_flops } => {
            trial(&sweep, &id, &device, threads, (kernels, precision), events, until_flops)
        }
        Cmd::Data { command: crate::DataCmd::Prepare(args) } => crate::data::prepare(args),
    }
}

fn kernel_path(k: KernelsArg) -> KernelPath {
    match k {
        KernelsArg::Auto => KernelPath::Auto,
        KernelsArg::Reference => KernelPath::Reference,
    }
}

/// Parses `cpu`, `cuda` or `cuda:N` and checks that the device is usable.
pub fn parse_device(s: &str) -> Result<Device, UsageError> {
    let cuda = |i: usize| -> Result<Device, UsageError> {
        let loaded = kernels::cuda::load_torch_cuda();
        if !tch::Cuda::is_available() {
            let why = loaded.err().unwrap_or_else(|| "libtorch sees no CUDA device (driver missing or no GPU)".into());
            return Err(UsageError::new(format!("--device {s}: no usable CUDA GPU: {why}")));
        }
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            return Err(UsageError::new(format!("--device {s}: only {n} CUDA devices are visible")));
        }
        Ok(Device::Cuda(i))
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => cuda(i),
            None => Err(UsageError::new(format!("--device {s}: expected cpu, cuda or cuda:N"))),
        },
    }
}

/// Whether the space's YAML fixes the local executor's `jobs`.
fn yaml_sets_jobs(space: &Space) -> bool {
    matches!(&space.file.executor, Some(ExecutorSpec::Local(l)) if l.jobs.is_some())
}

/// The local executor's devices: `--devices` as given (each checked), else every visible GPU for `cuda`,
/// else the CPU.
fn local_devices(device: &str, list: Option<&str>) -> Result<Vec<String>, UsageError> {
    if let Some(list) = list {
        if device == "cpu" {
            return Err(UsageError::new("--devices lists GPUs: use it with --device cuda"));
        }
        let names: Vec<String> = list.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect();
        if names.is_empty() {
            return Err(UsageError::new("--devices: expected a comma-separated list such as cuda:0,cuda:1"));
        }
        for d in &names {
            if !matches!(parse_device(d)?, Device::Cuda(_)) {
                return Err(UsageError::new(format!("--devices: `{d}` is not a GPU (expected cuda:N)")));
            }
        }
        return Ok(names);
    }
    match parse_device(device)? {
        Device::Cpu => Ok(vec!["cpu".into()]),
        _ => Ok((0..tch::Cuda::device_count()).map(|i| format!("cuda:{i}")).collect()),
    }
}

/// How a sweep runs: the device, the executor and its settings.
struct How {
    device: DeviceArg,
    jobs: Option<usize>,
    kernels: KernelsArg,
    devices: Option<String>,
    precision: Precision,
    executor: Option<ExecutorArg>,
    dry_run: bool,
    slurm: SlurmArgs,
    init_from: Option<PathBuf>,
}

/// The executor: the command line's kind over the YAML's, the command line's Slurm settings over the YAML's.
fn executor_spec(space: &Space, how: &How) -> Result<ExecutorSpec, UsageError> {
    let yaml = space.file.executor.clone();
    let kind = how.executor.unwrap_or(match yaml {
        Some(ExecutorSpec::Slurm(_)) => ExecutorArg::Slurm,
        _ => ExecutorArg::Local,
    });
    let a = &how.slurm;
    let slurm_flags = a.partition.is_some()
        || a.account.is_some()
        || a.time.is_some()
        || a.gpus_per_task.is_some()
        || a.cpus_per_task.is_some()
        || a.mem.is_some()
        || !a.extra.is_empty()
        || a.throttle.is_some()
        || a.max_retries.is_some()
        || a.poll_seconds.is_some()
        || a.probe_timeout.is_some()
        || a.detach;
    match kind {
        ExecutorArg::Local => {
            if slurm_flags {
                return Err(UsageError::new(
                    "Slurm settings (--partition, --throttle, --detach, ...) need --executor slurm",
                ));
            }
            let jobs = how.jobs.or(match yaml {
                Some(ExecutorSpec::Local(l)) => l.jobs,
                _ => None,
            });
            // One single-threaded trial per core unless told otherwise.
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            Ok(ExecutorSpec::Local(workbench::exec::LocalSpec { jobs: Some(jobs.unwrap_or(cores)) }))
        }
        ExecutorArg::Slurm => {
            if how.jobs.is_some() {
                return Err(UsageError::new(
                    "--jobs is for the local executor; Slurm runs `--throttle` array tasks at once",
                ));
            }
            let mut s = match yaml {
                Some(ExecutorSpec::Slurm(s)) => s,
                _ => SlurmSpec::default(),
            };
            s.partition = a.partition.clone().or(s.partition);
            s.account = a.account.clone().or(s.account);
            s.time = a.time.clone().or(s.time);
            s.gpus_per_task = a.gpus_per_task.unwrap_or(s.gpus_per_task);
            s.cpus_per_task = a.cpus_per_task.or(s.cpus_per_task);
            s.mem = a.mem.clone().or(s.mem);
            s.extra.extend(a.extra.iter().cloned());
            s.throttle = a.throttle.or(s.throttle);
            s.max_retries = a.max_retries.or(s.max_retries);
            s.poll_seconds = a.poll_seconds.or(s.poll_seconds);
            s.probe_timeout = a.probe_timeout.or(s.probe_timeout);
            Ok(ExecutorSpec::Slurm(s))
        }
    }
}

fn sweep(path: &Path, out: Option<PathBuf>, resume: bool, force: bool, how: How) -> Result<ExitCode> {
    let mut space = Space::load(path)?;
    if let Some(file) = &how.init_from {
        if space.file.search.uses_genome() {
            return Err(
                UsageError::new("--init-from needs candidates of one shape; a genome search builds its own").into()
            );
        }
        space.set_init_from(file)?;
    }
    let exec_spec = executor_spec(&space, &how)?;
    let device = match (how.device, &exec_spec) {
        (_, ExecutorSpec::Slurm(s)) if s.gpus_per_task > 0 => "cuda",
        (DeviceArg::Cpu, _) => "cpu",
        (DeviceArg::Cuda, _) => "cuda",
    };
    let kernels = format!("{:?}", how.kernels).to_lowercase();
    let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&space.file.name));
    let mut strategy = search::build(&space)?;
    let (name, seed) = (space.file.search.name(), space.file.search.seed());
    let ctx = |s: &SlurmSpec| -> Result<ScriptContext> {
        Ok(ScriptContext {
            spec: s.clone(),
            sweep: absolute(&out),
            exe: std::env::current_exe()?,
            name: space.file.name.clone(),
            device: device.to_string(),
            kernels: kernels.clone(),
        })
    };
    if how.dry_run {
        // The first decisions, before any outcome is known.
        let mut first = Vec::new();
        while let Proposal::Run(job) = strategy.propose() {
            first.push((first.len(), *job));
        }
        match &exec_spec {
            ExecutorSpec::Slurm(s) => {
                let rung = first.first().map_or(0, |(_, j)| j.rung);
                let array: Vec<_> = first.iter().filter(|(_, j)| j.rung == rung).cloned().collect();
                let c = ctx(s)?;
                println!("# {}/slurm/array-0.sh", c.sweep.display());
                print!("{}", c.script(0, array.len()));
                println!("# {}/slurm/array-0.tasks", c.sweep.display());
                print!("{}", ScriptContext::task_file(&array));
            }
            ExecutorSpec::Local(_) => {
                for (_, j) in &first {
                    println!("{} {}", j.id, workbench::exec::job_label(j));
                }
            }
        }
        eprintln!("dry run: the {name} search starts with {} jobs; nothing was submitted", first.len());
        return Ok(ExitCode::SUCCESS);
    }
    let store = Store::new(&out);
    store.prepare(&space.file.name, &space.text, Vec::new(), resume, force)?;
    crate::data::tokenize_text_tasks(&space, &store)?;
    install_signal_handlers();
    let (mut exec, window): (Box<dyn Executor>, usize) = match &exec_spec {
        ExecutorSpec::Local(l) => {
            let devices = local_devices(device, how.devices.as_deref())?;
            // One trial per GPU unless --jobs (or the YAML) says otherwise; one per core on CPU.
            let gpu_default =
                (device != "cpu" && how.jobs.is_none() && !yaml_sets_jobs(&space)).then_some(devices.len());
            let jobs = gpu_default.or(l.jobs).unwrap_or(1);
            if jobs < 1 {
                return Err(UsageError::new("--jobs must be at least 1").into());
            }
            if device != "cpu" {
                how.precision.resolve(parse_device(&devices[0])?).map_err(UsageError::new)?;
            }
            let opts = LocalOptions {
                jobs,
                threads: default_threads(jobs),
                devices,
                kernels: kernels.clone(),
                precision: how.precision.label().to_string(),
            };
            (Box::new(LocalPool::new(&store, opts, expected_jobs(&space))?), jobs)
        }
        ExecutorSpec::Slurm(s) => (Box::new(SlurmExecutor::new(&store, ctx(s)?, how.slurm.detach)?), s.throttle()),
    };
    let todo = match &space.file.search {
        SearchSpec::Grid(_) => {
            let ids: std::collections::HashSet<String> = space.trials()?.iter().map(|t| t.id()).collect();
            format!(", {} trials, {} to run", ids.len(), ids.iter().filter(|id| !store.is_done(id)).count())
        }
        _ => String::new(),
    };
    eprintln!("sweep `{}`: {name} search{todo}, into {}", space.file.name, out.display());
    let summary = driver::run(&store, strategy.as_mut(), name, seed, window, exec.as_mut(), &driver::Files::SWEEP)?;
    drop(exec);
    let path = report(&out)?;
    let count = |f: search::summary::TrialFate| summary.trials.iter().filter(|t| t.fate == f).count();
    use search::summary::TrialFate as F;
    eprintln!(
        "done: {} trials: {} completed, {} stopped early, {} diverged, {} failed; {:.3e} FLOPs{}",
        summary.trials.len(),
        count(F::Completed),
        count(F::Stopped),
        count(F::Diverged),
        count(F::Failed),
        summary.flops_spent,
        summary.fraction_of_grid.map(|f| format!(" ({:.1}% of the full grid's)", 100.0 * f)).unwrap_or_default()
    );
    println!("report: {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Jobs a grid or grid-sampling search will run, for the progress bar.
fn expected_jobs(space: &Space) -> Option<usize> {
    let distinct =
        || space.trials().ok().map(|t| t.iter().map(|t| t.id()).collect::<std::collections::HashSet<_>>().len());
    match &space.file.search {
        SearchSpec::Grid(_) => distinct(),
        SearchSpec::Random(r) if r.genome.is_none() => distinct().map(|n| n.min(r.n)),
        _ => None,
    }
}

/// Rebuilds the report from the trial files.
pub fn report(dir: &Path) -> Result<PathBuf> {
    if !dir.join("sweep.json").exists() && dir.join(reports::MAD_FILE).exists() {
        return workbench::mad::write_report_without_sweep(dir); // a MAD run alone
    }
    let store = Store::new(dir);
    let meta = store.meta()?;
    // Only this sweep's trials: a directory reused with --force may hold trials of an earlier space.
    let results: Vec<_> = reports::load_results(dir)?.into_iter().filter(|r| meta.trials.contains(&r.id)).collect();
    let info = reports::SweepInfo {
        name: meta.name,
        space_yaml: std::fs::read_to_string(dir.join("space.yaml")).ok(),
        notes: Vec::new(),
    };
    Ok(reports::write_report(dir, &results, &info)?)
}

fn plan(path: &Path) -> Result<ExitCode> {
    let space = Space::load(path)?;
    let genome = space.file.search.uses_genome();
    let trials = if genome {
        // A genome search has no grid: show the trials it starts with.
        let mut strategy = search::build(&space)?;
        let mut first = Vec::new();
        while let Proposal::Run(job) = strategy.propose() {
            first.push(job.spec);
        }
        first
    } else {
        space.trials()?
    };
    println!(
        "{:<28} {:<6} {:>11} {:>13} {:>10} {:>11} {:>12} {:>8}",
        "candidate", "task", "params", "FLOPs/token", "state", "budget", "tokens", "steps"
    );
    let mut total = 0.0;
    for t in &trials {
        let tokens = t.steps() * (t.train.batch_size as i64 * t.seq_len()) as u64;
        let spent = t.steps() as f64 * t.flops_per_step();
        total += spent;
        println!(
            "{:<28} {:<6} {:>11} {:>13.4e} {:>10} {:>11.3e} {:>12} {:>8}",
            t.label,
            t.task.name(),
            t.stack.params(),
            t.stack.flops_per_token(t.seq_len()),
            t.stack.state_size(t.seq_len()),
            t.budget_flops,
            tokens,
            t.steps()
        );
    }
    let what = if genome { "trials in the first generation" } else { "trials" };
    println!(
        "{} {what}, {:.4e} training FLOPs in total (whole steps; each trial spends at most its budget)",
        trials.len(),
        total
    );
    let search = &space.file.search;
    if !matches!(search, SearchSpec::Grid(_)) {
        println!("search: {} with seed {}; it decides which trials run and how far", search.name(), search.seed());
    }
    Ok(ExitCode::SUCCESS)
}

fn mixers(json: bool) -> Result<ExitCode> {
    let infos: Vec<_> = MixerKind::ALL.iter().map(|k| k.info()).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(ExitCode::SUCCESS);
    }
    for info in infos {
        println!("{} ({:?}): {}", info.name, info.family, info.description);
        println!("    FLOPs/token: {}", info.flops_formula);
        println!("    state:       {}", info.state_formula);
        for p in info.params {
            println!("    {:<14} {:<16} default {:<10} {}", p.name, p.ty, p.default.to_string(), p.doc);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn trial(
    sweep: &Path,
    id: &str,
    device: &str,
    threads: Option<usize>,
    (kernels, precision): (KernelsArg, Precision),
    events: bool,
    until_flops: Option<f64>,
) -> Result<ExitCode> {
    let device = parse_device(device)?;
    precision.resolve(device).map_err(UsageError::new)?;
    if until_flops.is_some_and(|f| !(f > 0.0) || !f.is_finite()) {
        return Err(UsageError::new("--until-flops must be a positive number of FLOPs").into());
    }
    let store = Store::new(sweep);
    store.read_spec(id)?;
    tch::set_num_threads(threads.unwrap_or_else(|| default_threads(1)) as i32);
    let human = !events && std::io::stdout().is_terminal();
    let mut on_event = |ev: Event| {
        if events {
            println!("{}", serde_json::to_string(&ev).expect("event serialises"));
        } else if human {
            if let Event::Eval { step, eval_loss, accuracy } = ev {
                println!("step {step}: eval loss {eval_loss:.4} accuracy {:.3}", accuracy.unwrap_or(f64::NAN));
            }
        }
    };
    let opts = RunOptions { device, kernel_path: kernel_path(kernels), until_flops, precision };
    match run_trial(&store, id, opts, &mut on_event)? {
        TrialEnd::Finished(r) if !events => {
            println!("{}: {:?}{}", id, r.status, r.reason.map(|r| format!(" ({r})")).unwrap_or_default())
        }
        TrialEnd::Paused(r) if !events => println!("{id}: paused at step {} (eval loss {:.4})", r.step, r.eval_loss),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}
