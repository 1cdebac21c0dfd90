//! The fused short causal depthwise convolution on the GPU (csrc/short_conv.*, its autograd function in
//! csrc/extension.cpp): the checked entry point, the `Auto` path's dispatch and the tuning knob.

use super::{check_short_conv, extension, for_cuda_tensors, supported_kind, CudaKernelError, Extension, Meta, Raw};
use crate::short_conv::Activation;
use std::ffi::c_void;
use tch::Tensor;

fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Identity => 0,
        Activation::Silu => 1,
    }
}

/// The fused short causal depthwise convolution on the GPU (see [`crate::short_conv`] for the math):
/// `x [B, T, C]`, `w [C, k]` with k <= 4, `bias [C]`; differentiable in all three.
pub fn short_conv(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor, CudaKernelError> {
    check_short_conv(&Meta::of(x), &Meta::of(w), bias.map(Meta::of).as_ref())?;
    short_conv_unchecked(extension()?, x, w, bias, act)
}

fn short_conv_unchecked(
    ext: &Extension,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor, CudaKernelError> {
    let mut out: Raw = std::ptr::null_mut();
    let bias_ptr = bias.map_or(std::ptr::null(), |b| b.as_ptr().cast::<c_void>());
    // SAFETY: the pointers are live tch tensors (at::Tensor*) for the duration of the call; on success `out`
    // is a new at::Tensor* whose ownership passes to the returned Tensor.
    let msg = unsafe { (ext.short_conv)(x.as_ptr().cast(), w.as_ptr().cast(), bias_ptr, act_code(act), &mut out) };
    ext.check("short_conv", msg)?;
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// The `Auto` path of [`crate::short_conv::short_conv`] for a CUDA `x`: the kernel when it applies (float32
/// or bfloat16, k <= 4, non-empty) and the library is loaded, else `None` (the caller's libtorch path).
/// Arguments that do not fit together panic with the validation message, as the reference's checks do.
pub(crate) fn short_conv_auto(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Activation) -> Option<Tensor> {
    let k = w.size().get(1).copied().unwrap_or(0);
    if !supported_kind(x.kind()) || !(1..=4).contains(&k) || x.numel() == 0 {
        return None;
    }
    let ext = for_cuda_tensors()?;
    let x = x.contiguous();
    let checked = check_short_conv(&Meta::of(&x), &Meta::of(w), bias.map(Meta::of).as_ref());
    match checked.and_then(|()| short_conv_unchecked(ext, &x, w, bias, act)) {
        Ok(y) => Some(y),
        Err(e) => panic!("{e}"),
    }
}

/// How many times the short-convolution kernel ran in this process (tests check that dispatch reached it).
pub fn short_conv_calls() -> Result<i64, CudaKernelError> {
    let ext = extension()?;
    Ok(unsafe { (ext.short_conv_calls)() })
}

/// Tuning knob: time steps per GPU thread for the short convolution (0: automatic). Results do not depend
/// on it; the benchmark sweeps it.
pub fn set_short_conv_chunk(chunk: i64) -> Result<(), CudaKernelError> {
    let ext = extension()?;
    unsafe { (ext.short_conv_set_chunk)(chunk) };
    Ok(())
}
