//! What the GPU benchmarks share: the CUDA set-up and the timing protocol (CUDA events around each call
//! on the current stream, the L2 flushed before every run by writing a 256 MiB buffer, warm-up runs, then
//! the median).

use kernels::cuda_ext::{self, CudaTimer};
use tch::{Device, Kind, Tensor};

/// GPU clock cycles of the spin in [`Timing::median_ms_queued`]: about 1 ms at the H200's 1.98 GHz, several
/// times the host time of one forward+backward call through autograd.
#[allow(dead_code)] // each bench compiles this module; not all of them time queued
const QUEUE_CYCLES: i64 = 2_000_000;

/// The timer and the flush buffer on one GPU.
pub struct Timing {
    flush: Tensor,
    timer: CudaTimer,
}

impl Timing {
    /// Loads libtorch's CUDA backend and our kernel library (exit 1 with the reason when either is missing),
    /// prints the library's path, and seeds libtorch.
    pub fn setup() -> (Timing, Device) {
        let loaded = kernels::cuda::load_torch_cuda();
        if !tch::Cuda::is_available() {
            eprintln!("no CUDA device: {loaded:?}");
            std::process::exit(1);
        }
        let ext = cuda_ext::extension().unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1);
        });
        let dev = Device::Cuda(0);
        println!("kernel library: {}\n", ext.path().display());
        let timing = Timing {
            flush: Tensor::empty([256 << 20], (Kind::Uint8, dev)),
            timer: CudaTimer::new().expect("CUDA events"),
        };
        tch::manual_seed(0);
        (timing, dev)
    }

    /// Median milliseconds of `f` over `runs` runs after `warmup` untimed ones, L2 flushed before each.
    /// The timer starts as soon as the flush is done, so a call whose host side (dispatch, launches) takes
    /// longer than the flush is timed with the GPU waiting for it: the time of one call made on its own.
    pub fn median_ms(&mut self, warmup: usize, runs: usize, f: impl FnMut()) -> f64 {
        self.median(warmup, runs, 0, f)
    }

    /// As [`Timing::median_ms`], but with the GPU kept busy for about a millisecond (a spinning kernel)
    /// between the flush and the timer's start, so the host has queued the whole call before the GPU reaches
    /// it: the GPU time of the call's kernels and the gaps between them, as in a training step where the
    /// host runs ahead. A call that synchronises with the host would show the spin in its time.
    #[allow(dead_code)]
    pub fn median_ms_queued(&mut self, warmup: usize, runs: usize, f: impl FnMut()) -> f64 {
        self.median(warmup, runs, QUEUE_CYCLES, f)
    }

    fn median(&mut self, warmup: usize, runs: usize, spin_cycles: i64, mut f: impl FnMut()) -> f64 {
        for _ in 0..warmup {
            f();
        }
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let _ = self.flush.fill_(1);
            if spin_cycles > 0 {
                cuda_ext::gpu_sleep(spin_cycles).unwrap();
            }
            self.timer.start().unwrap();
            f();
            self.timer.stop().unwrap();
            ms.push(f64::from(self.timer.elapsed_ms().unwrap()));
        }
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    }
}
