//! # workbench (CLI)
//!
//! Find and scale sequence-model architectures: a YAML search space in, trained candidates and a
//! scaling-law report out. This binary is the CLI; the libraries under it do the work.
//!
//! Key design decision: every trial is its own process (`workbench trial`), reading and writing only
//! the sweep directory, so one crash kills one trial and any executor (a local pool, a Slurm array)
//! runs the same command.

mod commands;
mod data;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use workbench::error::UsageError;
use workbench::train::step::Precision;

#[derive(Parser, Debug)]
#[command(
    name = "workbench",
    version,
    about = "Compare sequence-model architectures by loss per FLOP: sweep a YAML search space, fit scaling laws, read one HTML report.",
    after_help = "Start with:\n  workbench plan experiments/quickstart.yaml     # what would run, and what it costs\n  workbench sweep experiments/quickstart.yaml    # train everything, write runs/quickstart/report.html\n  workbench mixers                               # the sequence and channel mixers you can use"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Where trials run.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

/// Which implementation the mixers use.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum KernelsArg {
    /// The fastest available (fused libtorch ops; CUDA kernels when built).
    Auto,
    /// The plain-tch references, for comparison.
    Reference,
}

/// The scaling law to fit.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LawArg {
    Power,
    Isoflop,
    Chinchilla,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Train every candidate of a search space at every FLOP budget, then write the report.
    #[command(
        after_help = "Example:\n  workbench sweep experiments/quickstart.yaml --out runs/qs --jobs 2\n  workbench sweep experiments/quickstart.yaml --out runs/qs --resume   # after an interruption\n  workbench sweep space.yaml --executor slurm --partition gpu --gpus-per-task 1 --dry-run"
    )]
    Sweep {
        /// The search space (YAML).
        space: PathBuf,
        /// Sweep directory; default `runs/<space name>`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue a sweep in --out: finished trials are kept, unfinished ones continue from their last checkpoint.
        #[arg(long)]
        resume: bool,
        /// Use --out even if it holds a sweep of a different space.
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
        /// Trial processes at once with the local executor, each with cores/jobs threads (default: the
        /// YAML's `executor.jobs`, else one per core, one thread each; small models train faster as parallel
        /// single-threaded trials than as one multi-threaded one).
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long, value_enum, default_value_t = KernelsArg::Auto)]
        kernels: KernelsArg,
        /// GPUs for the local executor, comma-separated (`cuda:0,cuda:1`): one trial per GPU at a time, the
        /// rest queued (default with --device cuda: every visible GPU). --jobs overrides the trials at once.
        #[arg(long)]
        devices: Option<String>,
        /// Arithmetic of training: auto (bf16 autocast with float32 master weights on CUDA, float32 on
        /// CPU), fp32 or bf16.
        #[arg(long, default_value = "auto")]
        precision: Precision,
        /// Where trials run (default: the YAML's `executor`, else local).
        #[arg(long, value_enum)]
        executor: Option<ExecutorArg>,
        /// Print what would be submitted (the Slurm batch script, or the jobs) and exit.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        slurm: SlurmArgs,
        /// Start every candidate from these weights (safetensors keyed by parameter path, e.g. a trial's
        /// checkpoint.safetensors); checked against each stack before training (exit 2 naming the tensor).
        #[arg(long)]
        init_from: Option<PathBuf>,
    },
    /// Run the MAD protocol on a space's candidates: six synthetic tasks and their settings, a learning-rate x
    /// weight-decay grid, best-of per setting; write DIR/mad.json and the report's heatmap.
    #[command(
        after_help = "Examples:\n  workbench mad experiments/mad-quick.yaml --baseline-only --jobs 2\n  workbench mad space.yaml --out runs/space --resume      # after an interruption\n  workbench mad space.yaml --dry-run                      # the trials and their FLOPs, nothing trained\n\nThe published protocol: width 128, 200 epochs, batch 128, AdamW (0.9, 0.98), cosine to 1e-6, seed 12345,\nlr {1e-4, 5e-4, 1e-3} x weight decay {0, 0.1}, 66 task settings. A `mad:` section in the space changes it;\nthe report lists every difference."
    )]
    Mad {
        /// The space (YAML): its `candidates`, and an optional `mad:` section.
        space: PathBuf,
        /// Output directory; default `runs/<space name>` (shared with the sweep of the same space).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only each task's baseline setting (6 settings instead of 66).
        #[arg(long)]
        baseline_only: bool,
        /// Epochs per trial (published: 200).
        #[arg(long)]
        epochs: Option<u64>,
        /// Scale every training set but memorization's by this fraction, in (0, 1] (published: 1).
        #[arg(long)]
        train_fraction: Option<f64>,
        /// Trial processes at once (default 1; each gets cores/jobs threads).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Continue the MAD run in --out: finished trials are kept, unfinished ones continue from their last checkpoint.
        #[arg(long)]
        resume: bool,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
        #[arg(long, value_enum, default_value_t = KernelsArg::Auto)]
        kernels: KernelsArg,
        /// Print every trial with its steps and FLOPs, and the total; train nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List every candidate with its parameters, FLOPs per token, tokens per budget and the sweep's total FLOPs; trains nothing.
    #[command(after_help = "Example:\n  workbench plan experiments/quickstart.yaml")]
    Plan { space: PathBuf },
    /// Rebuild DIR/report.html from the trial files alone.
    #[command(after_help = "Example:\n  workbench report runs/quickstart && xdg-open runs/quickstart/report.html")]
    Report { dir: PathBuf },
    /// Print the mixer registry: names, families, parameters with defaults, FLOP and state formulas.
    #[command(after_help = "Example:\n  workbench mixers\n  workbench mixers --json | jq '.[].name'")]
    Mixers {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fit a scaling law to any CSV with columns among params, tokens, flops, loss (and optionally arch).
    #[command(
        after_help = "Examples:\n  workbench fit --law chinchilla --input runs.csv --bootstrap 200\n  workbench fit --law power --input report-trials.csv --json   # the report's CSV download works as input\n\nLaws: power = L(C) = E + A*C^-alpha over the best loss per FLOP budget; isoflop = Chinchilla approach 2\n(parabola per budget, N* = k*C^a, D* = k'*C^b); chinchilla = approach 3, L(N,D) = E + A/N^alpha + B/D^beta\n(Huber on log loss, L-BFGS from the paper's grid). `flops` defaults to 6*params*tokens."
    )]
    Fit {
        #[arg(long, value_enum)]
        law: LawArg,
        #[arg(long)]
        input: PathBuf,
        /// Bootstrap resamples for confidence intervals (0 = none).
        #[arg(long, default_value_t = 0)]
        bootstrap: usize,
        /// Seed of the bootstrap.
        #[arg(long, default_value_t = reports::fit_csv::DEFAULT_SEED)]
        seed: u64,
        /// One JSON object per architecture instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Training throughput per architecture (~125M-parameter presets): tokens/s, model FLOP utilisation
    /// against the measured bf16 matmul ceiling, peak GPU memory. The step is the one trials run.
    #[command(
        name = "bench-train",
        after_help = "Examples:\n  workbench bench-train --device cuda                       # all five presets, T=2048, batch 8\n  workbench bench-train --device cuda --arch gla,mamba --json out.json\n  workbench bench-train --d-model 64 --seq-len 128 --batch-size 4   # a quick CPU check"
    )]
    BenchTrain {
        /// Comma-separated presets among transformer, gla, mamba, hyena, striped.
        #[arg(long, default_value = "transformer,gla,mamba,hyena,striped")]
        arch: String,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value_t = 768)]
        d_model: i64,
        #[arg(long, default_value_t = 32000)]
        vocab: i64,
        #[arg(long, default_value_t = 2048)]
        seq_len: i64,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Steps per timed window.
        #[arg(long, default_value_t = 10)]
        steps: u64,
        /// Timed windows; the median is reported.
        #[arg(long, default_value_t = 3)]
        windows: usize,
        #[arg(long, value_enum, default_value_t = KernelsArg::Auto)]
        kernels: KernelsArg,
        #[arg(long, default_value = "auto")]
        precision: Precision,
        /// Also write the measurements as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Profile one more window per architecture (CUDA): Chrome traces DIR/ARCH.trace.json and a summary
        /// (GPU busy time per step, kernels and host ops per step, the kernels with the most time).
        #[arg(long, value_name = "DIR")]
        profile: Option<PathBuf>,
    },
    /// Data tools: convert text into a token file.
    Data {
        #[command(subcommand)]
        command: DataCmd,
    },
    /// Run one trial of a sweep directory (what every executor invokes).
    #[command(after_help = "Example:\n  workbench trial --sweep runs/quickstart --id 3f2a9c0d1b7e4a55")]
    Trial {
        #[arg(long)]
        sweep: PathBuf,
        #[arg(long)]
        id: String,
        /// `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// CPU threads for this trial (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, value_enum, default_value_t = KernelsArg::Auto)]
        kernels: KernelsArg,
        /// auto (bf16 autocast on CUDA, float32 on CPU), fp32 or bf16.
        #[arg(long, default_value = "auto")]
        precision: Precision,
        /// Print progress as JSON lines on stdout (for executors).
        #[arg(long)]
        events: bool,
        /// Pause after this many training FLOPs (a search rung): evaluate, checkpoint, write
        /// rungs/STEP.json; run again with a higher limit (or none) to continue.
        #[arg(long)]
        until_flops: Option<f64>,
    },
}

/// `workbench data ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum DataCmd {
    /// Convert text files into a token file (flat little-endian uint16/uint32) plus its sidecar OUT.json, for a
    /// `kind: tokens` task.
    #[command(
        after_help = "Examples:\n  workbench data prepare --input data/kjv.txt --out data/kjv.bin                 # bytes: no tokenizer\n  workbench data prepare --tokenizer tokenizer.json --input a.txt b.txt --out corpus.bin\n\nThe sidecar records the dtype, vocabulary, token count, largest id and the tokenizer's SHA-256; the tokens\ntask checks the file against it before training."
    )]
    Prepare(PrepareArgs),
}

/// The token width for `data prepare`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DtypeArg {
    /// uint16 when the vocabulary fits (at most 65,536 ids), else uint32.
    Auto,
    Uint16,
    Uint32,
}

#[derive(clap::Args, Debug)]
pub(crate) struct PrepareArgs {
    /// A HuggingFace tokenizer.json; without it every byte is one token (vocabulary 256).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Text files, concatenated in this order.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// The token file to write; its sidecar is OUT.json.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = DtypeArg::Auto)]
    pub dtype: DtypeArg,
}

/// Executors for `--executor`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ExecutorArg {
    /// Trial processes on this machine (`--jobs N`).
    Local,
    /// Slurm job arrays on a shared sweep directory.
    Slurm,
}

/// Slurm executor settings; each overrides the YAML's `executor: {kind: slurm, ...}`.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Slurm executor")]
pub(crate) struct SlurmArgs {
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long)]
    pub account: Option<String>,
    /// Time limit per array task, e.g. 2:00:00.
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// Memory per task, e.g. 8G.
    #[arg(long)]
    pub mem: Option<String>,
    /// An extra #SBATCH line (repeatable), e.g. --sbatch=--qos=short.
    #[arg(long = "sbatch", value_name = "LINE", allow_hyphen_values = true)]
    pub extra: Vec<String>,
    /// Array tasks at once (%N; default 8).
    #[arg(long)]
    pub throttle: Option<usize>,
    /// Resubmissions of a failed task (default 2).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Seconds between squeue polls (default 5).
    #[arg(long)]
    pub poll_seconds: Option<f64>,
    /// Seconds to wait for the probe job that checks the compute nodes see the sweep directory (default 300).
    #[arg(long)]
    pub probe_timeout: Option<f64>,
    /// On Ctrl-C, leave the submitted arrays running instead of cancelling them.
    #[arg(long)]
    pub detach: bool,
}

fn main() -> ExitCode {
    // A panic is a bug, not a user error: say so in one line, without a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let first = msg.lines().next().unwrap_or("");
        eprintln!("internal error: {first} ({})", info.location().map(|l| l.to_string()).unwrap_or_default());
    }));
    let cli = Cli::parse();
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!("error: {u}");
                ExitCode::from(2)
            } else if let Some(i) = e.downcast_ref::<workbench::exec::Interrupted>() {
                eprintln!("{i}");
                ExitCode::from(130)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}
