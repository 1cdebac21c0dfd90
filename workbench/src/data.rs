//! `workbench data prepare` and the sweep's tokenization of `text` tasks: thin glue over
//! `workbench::tasks::prepare`, which does the streaming conversion.

use crate::{DtypeArg, PrepareArgs};
use anyhow::Result;
use std::process::ExitCode;
use std::time::Instant;
use workbench::error::UsageError;
use workbench::space::Space;
use workbench::store::Store;
use workbench::tasks::prepare::{load_tokenizer, Prepare};
use workbench::tasks::{Dtype, TaskError, TaskSpec};

/// A data error as the CLI reports it: the user's input (exit 2), unless writing the output (a `OUT.tmp-PID`
/// file) failed, which is the machine's problem (exit 1).
fn to_cli(e: TaskError) -> anyhow::Error {
    match e {
        TaskError::Io { ref path, .. } if path.extension().is_some_and(|x| x.to_string_lossy().starts_with("tmp-")) => {
            anyhow::Error::new(e)
        }
        e => UsageError::new(e.to_string()).into(),
    }
}

/// Prints `bytes` as MB with one decimal.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub fn prepare(args: PrepareArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let tokenizer = args.tokenizer.as_deref().map(load_tokenizer).transpose().map_err(to_cli)?;
    let dtype = match args.dtype {
        DtypeArg::Auto => None,
        DtypeArg::Uint16 => Some(Dtype::Uint16),
        DtypeArg::Uint32 => Some(Dtype::Uint32),
    };
    let job = Prepare { inputs: &args.input, tokenizer: tokenizer.as_ref(), out: &args.out, dtype };
    let total: u64 = args.input.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let mut next_report = 64 << 20;
    let side = workbench::tasks::prepare::prepare(&job, |done| {
        if done >= next_report {
            eprintln!("  {} of {} read", mb(done), mb(total));
            next_report = done + (64 << 20);
        }
    })
    .map_err(to_cli)?;
    let secs = start.elapsed().as_secs_f64();
    let bytes: u64 = side.sources.iter().map(|s| s.bytes).sum();
    println!(
        "{}: {} tokens ({}, vocabulary {}, largest id {}) from {} of text in {} file(s), {:.3} tokens/byte, {:.1} s",
        args.out.display(),
        side.tokens,
        side.dtype.name(),
        side.vocab_size,
        side.max_token_id.map_or("none".to_string(), |m| m.to_string()),
        mb(bytes),
        side.sources.len(),
        side.tokens as f64 / bytes.max(1) as f64,
        secs
    );
    println!("{}: sidecar", workbench::tasks::token_file::sidecar_path(&args.out).display());
    println!(
        "use it as:  {{kind: tokens, path: {}, dtype: {}, vocab_size: {}}}",
        args.out.display(),
        side.dtype.name(),
        side.vocab_size
    );
    Ok(ExitCode::SUCCESS)
}

/// Tokenizes every `text` task of the space into `DIR/data` before the first trial (a no-op for a cache that is
/// already there), then checks the windows fit, so a trial never tokenizes and a bad text fails here, exit 2.
pub fn tokenize_text_tasks(space: &Space, store: &Store) -> Result<()> {
    let dir = store.data_dir();
    for (ti, task) in space.file.tasks.iter().enumerate() {
        let TaskSpec::Text(spec) = task else { continue };
        let start = Instant::now();
        let at = |e: TaskError| -> anyhow::Error {
            UsageError::new(format!("{}: tasks[{ti}] (text): {e}", space.path.display())).into()
        };
        let (path, built) = spec.ensure_cache(&dir, |_| {}).map_err(at)?;
        spec.open(0, &dir).map_err(at)?;
        if built {
            eprintln!(
                "tasks[{ti}] (text): tokenized into {} in {:.1} s",
                path.display(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
