//! The CLI's commands: thin glue between the space, the store, the executors and the report.

use crate::{Cmd, DeviceArg, KernelsArg, LawArg};
use anyhow::Result;
use kernels::KernelPath;
use operators::MixerKind;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tch::Device;
use workbench::error::UsageError;
use workbench::exec::{default_threads, run_local, LocalOptions};
use workbench::space::Space;
use workbench::store::Store;
use workbench::train::{run_trial, Event, RunOptions};

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Sweep { space, out, resume, force, device, jobs, kernels, init_from } => {
            sweep(&space, out, resume, force, device, jobs, kernels, init_from.as_deref())
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
        Cmd::Trial { sweep, id, device, threads, kernels, events } => {
            trial(&sweep, &id, &device, threads, kernels, events)
        }
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

#[allow(clippy::too_many_arguments)]
fn sweep(
    path: &Path,
    out: Option<PathBuf>,
    resume: bool,
    force: bool,
    device: DeviceArg,
    jobs: Option<usize>,
    kernels: KernelsArg,
    init_from: Option<&Path>,
) -> Result<ExitCode> {
    let mut space = Space::load(path)?;
    if let Some(file) = init_from {
        space.set_init_from(file)?;
    }
    let device = match device {
        DeviceArg::Cpu => "cpu",
        DeviceArg::Cuda => "cuda",
    };
    parse_device(device)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let jobs = jobs.unwrap_or(cores);
    if jobs < 1 {
        return Err(UsageError::new("--jobs must be at least 1").into());
    }
    let trials = space.trials()?;
    let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&space.file.name));
    let store = Store::new(&out);
    let mut ids = Vec::new();
    for t in &trials {
        if !ids.contains(&t.id()) {
            ids.push(t.id());
        }
    }
    store.prepare(&space.file.name, &space.text, ids.clone(), resume, force)?;
    let mut pending = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in trials {
        let id = store.write_spec(&t)?;
        if seen.insert(id.clone()) && !store.is_done(&id) {
            pending.push((id, t));
        }
    }
    eprintln!("sweep `{}`: {} trials, {} to run, into {}", space.file.name, ids.len(), pending.len(), out.display());
    let opts = LocalOptions {
        jobs,
        threads: default_threads(jobs),
        device: device.into(),
        kernels: format!("{kernels:?}").to_lowercase(),
    };
    let summary = run_local(&store, &pending, ids.len(), &opts)?;
    let path = report(&out)?;
    eprintln!(
        "done: {} completed, {} diverged, {} failed this run",
        summary.completed, summary.diverged, summary.failed
    );
    println!("report: {}", path.display());
    Ok(ExitCode::SUCCESS)
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
    let trials = space.trials()?;
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
    println!(
        "{} trials, {:.4e} training FLOPs in total (whole steps; each trial spends at most its budget)",
        trials.len(),
        total
    );
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
    kernels: KernelsArg,
    events: bool,
) -> Result<ExitCode> {
    let device = parse_device(device)?;
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
    let result = run_trial(&store, id, RunOptions { device, kernel_path: kernel_path(kernels) }, &mut on_event)?;
    if !events {
        println!("{}: {:?}{}", id, result.status, result.reason.map(|r| format!(" ({r})")).unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}
