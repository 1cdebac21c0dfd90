//! What one optimisation step needs beyond the model: the numeric precision it runs in and the batches it
//! reads, prepared one step ahead.
//!
//! On CUDA a step runs under bfloat16 autocast with float32 master weights (matmuls and attention in
//! bfloat16, reductions, norms, scans' state and the loss in float32: libtorch's autocast policy, the one
//! `torch.autocast("cuda", torch.bfloat16)` applies). Batches are written into pinned host memory and copied
//! with `non_blocking`, so the host builds step k+1's batch while the GPU still runs step k, and nothing in
//! the step waits for the GPU: the loss stays a device tensor until the trial logs it.

use crate::tasks::{Batch, Task};
use tch::{Device, Kind, Tensor};

/// The arithmetic a trial trains in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// bfloat16 autocast on CUDA, float32 on CPU.
    #[default]
    Auto,
    /// float32 everywhere.
    Fp32,
    /// bfloat16 autocast with float32 master weights (CUDA only).
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Precision::Auto),
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision `{other}` (expected auto, fp32 or bf16)")),
        }
    }
}

impl Precision {
    /// What `self` means on `device`: `Bf16` or `Fp32`. Bf16 needs the training helpers of our CUDA library
    /// (to set autocast's dtype); without them `Auto` falls back to float32 with one warning, and an explicit
    /// `Bf16` is an error.
    pub fn resolve(self, device: Device) -> Result<Precision, String> {
        match (self, device) {
            (Precision::Fp32, _) | (Precision::Auto, Device::Cpu) => Ok(Precision::Fp32),
            (Precision::Bf16, Device::Cpu) => Err("bf16 training needs a CUDA device (--device cuda)".into()),
            (Precision::Auto | Precision::Bf16, _) => match kernels::train_ops::set_autocast_dtype(Kind::BFloat16) {
                Ok(()) => Ok(Precision::Bf16),
                Err(e) if self == Precision::Auto => {
                    static WARN: std::sync::Once = std::sync::Once::new();
                    WARN.call_once(|| eprintln!("warning: training in float32: {e}"));
                    Ok(Precision::Fp32)
                }
                Err(e) => Err(format!("bf16 training: {e}")),
            },
        }
    }

    /// Runs `f` (a forward pass) in this precision. Call only with a resolved precision.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        match self {
            Precision::Bf16 => tch::autocast(true, f),
            _ => f(),
        }
    }

    /// How results name it.
    pub fn label(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::Fp32 => "fp32",
            Precision::Auto => "auto",
        }
    }
}

/// `[B, T]` int64 tensors of a batch on `device`; on CUDA through pinned memory with an asynchronous copy
/// (the pinned buffer is recycled by libtorch's host allocator only once the copy has run).
pub fn upload(b: &Batch, device: Device) -> (Tensor, Tensor) {
    let shape = [b.batch as i64, b.seq_len as i64];
    let host = |v: &[i64]| Tensor::from_slice(v).view(shape);
    match device {
        Device::Cpu => (host(&b.inputs), host(&b.targets)),
        _ => {
            let to = |t: Tensor| t.pin_memory(device).to_device_(device, Kind::Int64, true, false);
            (to(host(&b.inputs)), to(host(&b.targets)))
        }
    }
}

/// Training batches on the device, one step ahead.
pub struct Feeder {
    device: Device,
    batch_size: usize,
    ahead: Option<(u64, Tensor, Tensor)>,
}

impl Feeder {
    pub fn new(device: Device, batch_size: usize) -> Feeder {
        Feeder { device, batch_size, ahead: None }
    }

    /// Step `step`'s batch: the prefetched one if [`Feeder::prefetch`] prepared it, else built now.
    pub fn take(&mut self, task: &dyn Task, step: u64) -> (Tensor, Tensor) {
        match self.ahead.take() {
            Some((s, x, y)) if s == step => (x, y),
            _ => upload(&task.train_batch(step, self.batch_size), self.device),
        }
    }

    /// Builds step `step`'s batch and starts its copy to the device. Call after the current step's work is
    /// queued, so the host builds it while the GPU computes. A no-op on CPU, where there is nothing to overlap.
    pub fn prefetch(&mut self, task: &dyn Task, step: u64) {
        if self.device != Device::Cpu {
            let (x, y) = upload(&task.train_batch(step, self.batch_size), self.device);
            self.ahead = Some((step, x, y));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_resolves_per_device() {
        assert_eq!(Precision::Auto.resolve(Device::Cpu), Ok(Precision::Fp32));
        assert_eq!(Precision::Fp32.resolve(Device::Cuda(0)), Ok(Precision::Fp32));
        assert!(Precision::Bf16.resolve(Device::Cpu).unwrap_err().contains("CUDA"));
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("half".parse::<Precision>().unwrap_err().contains("expected auto, fp32 or bf16"));
    }
}
