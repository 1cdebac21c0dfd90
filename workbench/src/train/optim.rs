//! AdamW (Loshchilov & Hutter 2019) with explicit parameter groups and its state in plain tensors, so
//! a checkpoint holds everything needed to continue exactly where a trial stopped.
//!
//! ```text
//! p <- p * (1 - lr * wd)                    decay group only (projection matrices)
//! m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//! p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//! ```
//! On CUDA the update is libtorch's fused multi-tensor AdamW (`at::_fused_adamw_`, what
//! `torch.optim.AdamW(fused=True)` runs; kernels::train_ops), one launch per group instead of ~6 per
//! parameter; the math is the same (the GPU test `gpu_fused_adamw_matches_the_plain_update` checks it).
//! Checkpoint keys: the parameter path for weights (`layers.0.mixer.q_proj.weight`, so a checkpoint can
//! seed another run), `optim.m.<path>` and `optim.v.<path>` for the moments, `meta.step` for the step.

use crate::trial::OptimSpec;
use anyhow::{bail, Context, Result};
use operators::nn::DECAY;
use std::collections::HashMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

/// The optimiser and its state.
pub struct AdamW {
    params: Vec<Param>,
    spec: OptimSpec,
    /// Updates applied so far (t in the bias corrections).
    pub steps: u64,
    /// For the fused CUDA update: `steps` as a float32 scalar on the parameters' device (every parameter
    /// shares it; set with a host scalar, so no synchronisation).
    fused_step: Option<Tensor>,
}

impl AdamW {
    /// Takes every trainable variable of `vs`, decaying only the [`DECAY`] group.
    pub fn new(vs: &VarStore, spec: &OptimSpec) -> AdamW {
        let vars = vs.variables_.lock().expect("var store lock");
        let names: HashMap<usize, &String> =
            vars.named_variables.iter().map(|(n, t)| (t.data_ptr() as usize, n)).collect();
        let mut params: Vec<Param> = vars
            .trainable_variables
            .iter()
            .map(|v| Param {
                name: names[&(v.tensor.data_ptr() as usize)].clone(),
                tensor: v.tensor.shallow_clone(),
                decay: v.group == DECAY,
                m: v.tensor.zeros_like(),
                v: v.tensor.zeros_like(),
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        let mut opt = AdamW { params, spec: spec.clone(), steps: 0, fused_step: None };
        opt.fuse_on_cuda();
        opt
    }

    /// The plain per-parameter update even on CUDA (for comparisons).
    pub fn unfused(mut self) -> AdamW {
        self.fused_step = None;
        self
    }

    /// Whether updates go through libtorch's fused kernel.
    pub fn is_fused(&self) -> bool {
        self.fused_step.is_some()
    }

    /// Uses libtorch's fused update when the parameters are on CUDA and our library is loaded (else stays
    /// plain, saying why once). Returns whether it is fused.
    fn fuse_on_cuda(&mut self) -> bool {
        let Some(device) = self.params.first().map(|p| p.tensor.device()).filter(|d| d.is_cuda()) else {
            return false;
        };
        match kernels::train_ops::train_ops() {
            Ok(_) => {
                self.fused_step = Some(Tensor::zeros([], (Kind::Float, device)));
                true
            }
            Err(e) => {
                static WARN: std::sync::Once = std::sync::Once::new();
                WARN.call_once(|| eprintln!("warning: plain (unfused) AdamW on CUDA: {e}"));
                false
            }
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Rescales gradients so their global L2 norm is at most `max` (no host synchronisation).
    pub fn clip_grad_norm(&mut self, max: f64) {
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
        if grads.is_empty() || max <= 0.0 {
            return;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_kind(Kind::Float)).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let scale = (total + 1e-6).reciprocal().g_mul_scalar(max).clamp_max(1.0);
        for mut g in grads {
            let _ = g.g_mul_(&scale.to_kind(g.kind()));
        }
    }

    /// One update at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        if let Some(t) = &self.fused_step {
            let _ = t.shallow_clone().fill_(self.steps as f64);
            self.fused_update(lr);
            return;
        }
        let s = &self.spec;
        let t = self.steps as i32;
        let (bc1, bc2) = (1.0 - s.beta1.powi(t), 1.0 - s.beta2.powi(t));
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.tensor.grad();
                if !g.defined() {
                    continue;
                }
                if p.decay && s.weight_decay > 0.0 {
                    let _ = p.tensor.g_mul_scalar_(1.0 - lr * s.weight_decay);
                }
                let _ = p.m.g_mul_scalar_(s.beta1).g_add_(&(&g * (1.0 - s.beta1)));
                let _ = p.v.g_mul_scalar_(s.beta2).g_add_(&(g.square() * (1.0 - s.beta2)));
                let denom = (&p.v / bc2).sqrt() + s.eps;
                let update = (&p.m / bc1) / denom * lr;
                let _ = p.tensor.g_sub_(&update);
            }
        });
    }

    /// The update of [`AdamW::step`] through `at::_fused_adamw_`, decay and no-decay groups separately.
    fn fused_update(&mut self, lr: f64) {
        let s = &self.spec;
        let step = self.fused_step.as_ref().expect("fused");
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.tensor.grad()).collect();
        for decay in [true, false] {
            let idx: Vec<usize> =
                (0..self.params.len()).filter(|&i| self.params[i].decay == decay && grads[i].defined()).collect();
            if idx.is_empty() {
                continue;
            }
            let params: Vec<&Tensor> = idx.iter().map(|&i| &self.params[i].tensor).collect();
            let g: Vec<&Tensor> = idx.iter().map(|&i| &grads[i]).collect();
            let m: Vec<&Tensor> = idx.iter().map(|&i| &self.params[i].m).collect();
            let v: Vec<&Tensor> = idx.iter().map(|&i| &self.params[i].v).collect();
            let steps: Vec<&Tensor> = vec![step; idx.len()];
            let h = kernels::train_ops::AdamWHyper {
                lr,
                beta1: s.beta1,
                beta2: s.beta2,
                weight_decay: if decay { s.weight_decay } else { 0.0 },
                eps: s.eps,
            };
            kernels::train_ops::fused_adamw(&params, &g, &m, &v, &steps, h)
                .unwrap_or_else(|e| panic!("fused AdamW: {e}"));
        }
    }

    /// Writes weights, moments and `step` (the trial's step count) to one safetensors file, atomically.
    pub fn save(&self, path: &Path, step: u64, wall_seconds: f64) -> Result<()> {
        self.save_with(path, step, wall_seconds, Vec::new())
    }

    /// As [`AdamW::save`], with `extra` tensors (keys under `meta.`) in the same file, so that state kept
    /// beside the weights is renamed into place with them and can never be from another step.
    pub fn save_with(&self, path: &Path, step: u64, wall_seconds: f64, extra: Vec<(String, Tensor)>) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(3 * self.params.len() + 2 + extra.len());
        named.extend(extra);
        for p in &self.params {
            named.push((p.name.clone(), p.tensor.detach().to_device(tch::Device::Cpu)));
            named.push((format!("optim.m.{}", p.name), p.m.to_device(tch::Device::Cpu)));
            named.push((format!("optim.v.{}", p.name), p.v.to_device(tch::Device::Cpu)));
        }
        named.push(("meta.step".into(), Tensor::from_slice(&[step as i64, self.steps as i64])));
        named.push(("meta.wall_seconds".into(), Tensor::from_slice(&[wall_seconds])));
        let tmp = path.with_extension("safetensors.tmp");
        Tensor::write_safetensors(&named, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }

    /// Restores weights and moments; returns (trial step, wall seconds so far).
    pub fn load(&mut self, path: &Path) -> Result<(u64, f64)> {
        let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("reading checkpoint {}", path.display()))?
            .into_iter()
            .collect();
        let get =
            |k: &str| tensors.get(k).with_context(|| format!("checkpoint {} has no tensor `{k}`", path.display()));
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                for (dst, key) in [
                    (&mut p.tensor, p.name.clone()),
                    (&mut p.m, format!("optim.m.{}", p.name)),
                    (&mut p.v, format!("optim.v.{}", p.name)),
                ] {
                    let src = get(&key)?;
                    if src.size() != dst.size() {
                        bail!(
                            "checkpoint {}: tensor `{key}` has shape {:?}, the model expects {:?}",
                            path.display(),
                            src.size(),
                            dst.size()
                        );
                    }
                    dst.copy_(src);
                }
            }
            Ok(())
        })?;
        let meta: Vec<i64> = get("meta.step")?.try_into()?;
        self.steps = meta[1] as u64;
        let wall: Vec<f64> = get("meta.wall_seconds")?.try_into()?;
        Ok((meta[0] as u64, wall[0]))
    }
}
