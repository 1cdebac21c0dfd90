//! GPU tests of our CUDA kernels against their plain-tch references in float64.
//!
//! Every test is `#[ignore]` and named `gpu_*`: run them on a GPU machine with
//! `make test-gpu` (cargo test --release -p kernels --features cuda --test gpu -- --ignored gpu_), or from
//! a bundle with scripts/gpu-run.sh. They fail (never skip) when there is no GPU or the library does not
//! load: a GPU test that silently used the reference would prove nothing.
//!
//! Method (as for every kernel here): fresh random inputs (never zeros), rounded to the tested dtype; the
//! reference runs in float64 on those same rounded values; the output gradient is random too, and the
//! kernel's gradients come from autograd through its C++ autograd function. Tolerance, per dtype, on
//! `max |kernel - reference| <= tol * max(max |reference|, 1)`:
//! - float32: 1e-4 (float32 arithmetic; the only difference is summation order);
//! - bfloat16: 1.6e-2 (outputs and gradients are rounded to bfloat16 once, 2^-9 relative, from float32
//!   arithmetic; the margin covers the scale of the largest element against smaller ones).

use kernels::cuda_ext;
use tch::{Device, Kind, Tensor};

fn gpu() -> Device {
    let loaded = kernels::cuda::load_torch_cuda();
    assert!(tch::Cuda::is_available(), "no CUDA device visible to libtorch: {loaded:?}");
    if let Err(e) = cuda_ext::extension() {
        panic!("the kernel library did not load: {e}");
    }
    Device::Cuda(0)
}

/// max |a - r| / max(max |r|, 1), in float64.
fn rel_err(a: &Tensor, r: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let r = r.to_kind(Kind::Double);
    assert_eq!(a.size(), r.size());
    let scale = r.abs().max().double_value(&[]).max(1.0);
    (&a - &r).abs().max().double_value(&[]) / scale
}

mod chunk_linear;
mod long_conv;
mod selective_scan;
mod short_conv;
