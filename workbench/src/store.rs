//! The trial store: the only thing the sweep driver and the trial processes share, so a sweep can be
//! resumed by another process or from another node on a shared filesystem.
//!
//! ```text
//! DIR/sweep.json                  name, hash of the space text, trial ids
//! DIR/space.yaml                  the space as written
//! DIR/trials/ID/spec.json         TrialSpec, written before the trial starts
//! DIR/trials/ID/curve.jsonl       one CurvePoint per evaluation, appended as it trains
//! DIR/trials/ID/checkpoint.*      weights + optimiser state (safetensors) and the step (json), at each evaluation
//! DIR/trials/ID/rungs/STEP.json   RungRecord: the trial paused at an intermediate FLOP limit (search rungs)
//! DIR/trials/ID/result.json       TrialResult, written atomically, last
//! DIR/search.jsonl, search.json   the search's decision log and summary (see `search`)
//! DIR/report.html
//! ```

use crate::error::UsageError;
use crate::trial::TrialSpec;
use anyhow::{Context, Result};
use reports::{CurvePoint, Status, TrialResult};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `DIR/sweep.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SweepMeta {
    pub name: String,
    /// SHA-256 of the space file's text.
    pub space_hash: String,
    pub trials: Vec<String>,
}

/// `trials/ID/rungs/STEP.json`: a trial run with a FLOP limit below its budget (`workbench trial
/// --until-flops F`, what multi-rung searches use) trains with its full budget's schedule, stops at the
/// step F buys, evaluates, checkpoints and writes this instead of `result.json`. Running it again with a
/// higher limit continues from that checkpoint.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RungRecord {
    /// The step it paused at (the file's name).
    pub step: u64,
    /// Steps of the full budget (the schedule it trains with).
    pub steps: u64,
    /// The requested limit (`--until-flops`).
    pub until_flops: f64,
    /// Training FLOPs spent so far: `step` whole steps.
    pub flops: f64,
    pub tokens: u64,
    /// Held-out loss at `step`.
    pub eval_loss: f64,
    pub metrics: BTreeMap<String, f64>,
    pub wall_seconds: f64,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Hex SHA-256 of a text.
pub fn text_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A sweep directory.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// Prepares `root` for a sweep of `space_text`. An existing sweep from the same space needs
    /// `resume`; one from a different space is refused unless `force`.
    pub fn prepare(
        &self,
        name: &str,
        space_text: &str,
        trial_ids: Vec<String>,
        resume: bool,
        force: bool,
    ) -> Result<()> {
        let meta_path = self.root.join("sweep.json");
        let hash = text_hash(space_text);
        if meta_path.exists() {
            let old: SweepMeta = serde_json::from_slice(&std::fs::read(&meta_path)?)
                .with_context(|| format!("reading {}", meta_path.display()))?;
            if old.space_hash != hash && !force {
                return Err(UsageError::new(format!(
                    "{} holds a sweep made from a different space (`{}`); pass --force to add this space's trials to it, or choose another --out",
                    self.root.display(),
                    old.name
                ))
                .into());
            }
            if old.space_hash == hash && !resume && !force {
                return Err(UsageError::new(format!(
                    "{} already holds this sweep; pass --resume to continue it (finished trials are kept), or choose another --out",
                    self.root.display()
                ))
                .into());
            }
        }
        std::fs::create_dir_all(self.root.join("trials"))
            .with_context(|| format!("creating {}", self.root.display()))?;
        write_atomic(&self.root.join("space.yaml"), space_text.as_bytes())?;
        let meta = SweepMeta { name: name.to_string(), space_hash: hash, trials: trial_ids };
        write_atomic(&meta_path, &serde_json::to_vec_pretty(&meta)?)
    }

    pub fn meta(&self) -> Result<SweepMeta> {
        let p = self.root.join("sweep.json");
        let bytes = std::fs::read(&p)
            .map_err(|e| UsageError::new(format!("{}: not a sweep directory ({e})", self.root.display())))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))
    }

    /// `DIR/data`: data the sweep derives from its inputs, such as the `text` task's tokenized cache.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn trial_dir(&self, id: &str) -> PathBuf {
        self.root.join("trials").join(id)
    }

    /// Writes `spec.json` unless it is already there.
    pub fn write_spec(&self, spec: &TrialSpec) -> Result<String> {
        let id = spec.id();
        let dir = self.trial_dir(&id);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("spec.json");
        if !path.exists() {
            write_atomic(&path, &serde_json::to_vec_pretty(spec)?)?;
        }
        Ok(id)
    }

    pub fn read_spec(&self, id: &str) -> Result<TrialSpec> {
        let path = self.trial_dir(id).join("spec.json");
        let bytes =
            std::fs::read(&path).map_err(|e| UsageError::new(format!("{}: no such trial ({e})", path.display())))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// The trial's result, if it has finished (in any status).
    pub fn read_result(&self, id: &str) -> Option<TrialResult> {
        let bytes = std::fs::read(self.trial_dir(id).join("result.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// True when the trial needs no more work: completed or diverged (failed trials are retried).
    pub fn is_done(&self, id: &str) -> bool {
        matches!(self.read_result(id).map(|r| r.status), Some(Status::Completed | Status::Diverged))
    }

    /// The record of the trial's pause at `step`, if it paused there.
    pub fn read_rung(&self, id: &str, step: u64) -> Option<RungRecord> {
        let bytes = std::fs::read(self.trial_dir(id).join("rungs").join(format!("{step}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn write_rung(&self, id: &str, rung: &RungRecord) -> Result<()> {
        let dir = self.trial_dir(id).join("rungs");
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join(format!("{}.json", rung.step)), &serde_json::to_vec_pretty(rung)?)
    }

    /// Replaces the list of trial ids in `sweep.json` (searches add trials as they propose them).
    pub fn set_trials(&self, ids: Vec<String>) -> Result<()> {
        let mut meta = self.meta()?;
        if meta.trials != ids {
            meta.trials = ids;
            write_atomic(&self.root.join("sweep.json"), &serde_json::to_vec_pretty(&meta)?)?;
        }
        Ok(())
    }

    pub fn write_result(&self, result: &TrialResult) -> Result<()> {
        let path = self.trial_dir(&result.id).join("result.json");
        write_atomic(&path, &serde_json::to_vec_pretty(result)?)
    }

    /// Appends one evaluation point to `curve.jsonl` (flushed and synced: it survives a SIGKILL).
    pub fn append_curve(&self, id: &str, point: &CurvePoint) -> Result<()> {
        let path = self.trial_dir(id).join("curve.jsonl");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let mut line = serde_json::to_vec(point)?;
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_data()?;
        Ok(())
    }

    /// The first `n` points of the curve, rewriting the file if it has more (a grafted trial resumed from its
    /// checkpoint: its graft points share steps with evaluations, so it counts points rather than steps).
    pub fn curve_prefix(&self, id: &str, n: usize) -> Result<Vec<CurvePoint>> {
        let path = self.trial_dir(id).join("curve.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Vec::new()) };
        let all: Vec<CurvePoint> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let kept: Vec<CurvePoint> = all.into_iter().take(n).collect();
        if kept.len() != text.lines().count() {
            let mut out = Vec::new();
            for p in &kept {
                out.extend(serde_json::to_vec(p)?);
                out.push(b'\n');
            }
            write_atomic(&path, &out)?;
        }
        Ok(kept)
    }

    /// The curve so far, keeping only points at or before `max_step` (points after the last checkpoint
    /// will be recomputed by a resumed trial) and rewriting the file if any were dropped.
    pub fn curve_until(&self, id: &str, max_step: u64) -> Result<Vec<CurvePoint>> {
        let path = self.trial_dir(id).join("curve.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Vec::new()) };
        let all: Vec<CurvePoint> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let kept: Vec<CurvePoint> = all.iter().filter(|p| p.step <= max_step).cloned().collect();
        if kept.len() != text.lines().count() {
            let mut out = Vec::new();
            for p in &kept {
                out.extend(serde_json::to_vec(p)?);
                out.push(b'\n');
            }
            write_atomic(&path, &out)?;
        }
        Ok(kept)
    }
}
