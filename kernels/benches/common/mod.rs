//! What the GPU benchmarks share: the CUDA set-up and the timing protocol (CUDA events around each call
//! on the current stream, the L2 flushed before every run by writing a 256 MiB buffer, warm-up runs, then
//! the median).

use kernels::cuda_ext::{self, CudaTimer};
use tch::{Device, Kind, Tensor};

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
    pub fn median_ms(&mut self, warmup: usize, runs: usize, mut f: impl FnMut()) -> f64 {
        for _ in 0..warmup {
            f();
        }
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let _ = self.flush.fill_(1);
            self.timer.start().unwrap();
            f();
            self.timer.stop().unwrap();
            ms.push(f64::from(self.timer.elapsed_ms().unwrap()));
        }
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    }
}
