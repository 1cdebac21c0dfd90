//! Mamba's selective scan on the GPU (csrc/selective_scan.*, its autograd function in csrc/extension.cpp):
//! the checked entry point and the `Auto` path's dispatch.

use super::SELECTIVE_SCAN_MAX_STATE;
use super::{check_selective_scan, extension, for_cuda_tensors, supported_kind, CudaKernelError, Extension, Meta, Raw};
use std::ffi::c_void;
use tch::{Kind, Tensor};

/// Mamba's selective scan on the GPU (see [`crate::selective_scan`] for the math): returns `(y [B, T, D],
/// h_T [B, D, N])` in x's dtype, differentiable in every input. Arguments are checked first
/// ([`check_selective_scan`]); float32 arithmetic inside for either dtype.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: Option<&Tensor>,
    h0: Option<&Tensor>,
) -> Result<(Tensor, Tensor), CudaKernelError> {
    let inputs = Inputs { x, dt, a, b, c, d, h0 };
    inputs.check()?;
    inputs.run(extension()?)
}

/// The scan's seven inputs, as the entry point and the `Auto` path hand them to the check and the kernel.
struct Inputs<'a> {
    x: &'a Tensor,
    dt: &'a Tensor,
    a: &'a Tensor,
    b: &'a Tensor,
    c: &'a Tensor,
    d: Option<&'a Tensor>,
    h0: Option<&'a Tensor>,
}

impl Inputs<'_> {
    /// [`check_selective_scan`] on the tensors' metadata.
    fn check(&self) -> Result<(), CudaKernelError> {
        let (dm, hm) = (self.d.map(Meta::of), self.h0.map(Meta::of));
        let m = Meta::of;
        check_selective_scan(&m(self.x), &m(self.dt), &m(self.a), &m(self.b), &m(self.c), dm.as_ref(), hm.as_ref())
    }

    /// The kernel on checked inputs.
    fn run(&self, ext: &Extension) -> Result<(Tensor, Tensor), CudaKernelError> {
        let ptr = |t: &Tensor| t.as_ptr().cast::<c_void>();
        let opt = |t: Option<&Tensor>| t.map_or(std::ptr::null(), |t| t.as_ptr().cast::<c_void>());
        let (mut y, mut h): (Raw, Raw) = (std::ptr::null_mut(), std::ptr::null_mut());
        let Inputs { x, dt, a, b, c, d, h0 } = *self;
        // SAFETY: the pointers are live tch tensors (at::Tensor*) for the duration of the call; on success `y`
        // and `h` are new at::Tensor*s whose ownership passes to the returned Tensors.
        let msg =
            unsafe { (ext.selective_scan)(ptr(x), ptr(dt), ptr(a), ptr(b), ptr(c), opt(d), opt(h0), &mut y, &mut h) };
        ext.check("selective_scan", msg)?;
        Ok(unsafe { (Tensor::from_ptr(y.cast()), Tensor::from_ptr(h.cast())) })
    }
}

/// The `Auto` path of [`crate::selective_scan::selective_scan`] for a CUDA `x`: the kernel when it applies
/// (every tensor float32 or bfloat16 in x's dtype and on x's device, A, D and h0 also float32 beside bfloat16
/// x; 1 <= N <= 64, non-empty) and the
/// library is loaded, else `None` (the caller's libtorch path). Non-contiguous inputs are made contiguous
/// (the mixer slices B and C out of one projection). Shapes that do not fit together panic with the
/// validation message, as the reference's own checks do.
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_scan_auto(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: Option<&Tensor>,
    h0: Option<&Tensor>,
) -> Option<(Tensor, Tensor)> {
    let n = a.size().get(1).copied().unwrap_or(0);
    let fits = |t: &Tensor| t.kind() == x.kind() && t.device() == x.device();
    // A, D and h0 may also be float32 (read as float32 whatever their dtype; check.rs)
    let fits_or_f32 = |t: &Tensor| fits(t) || (t.kind() == Kind::Float && t.device() == x.device());
    if !supported_kind(x.kind())
        || !(1..=SELECTIVE_SCAN_MAX_STATE).contains(&n)
        || x.numel() == 0
        || ![dt, b, c].into_iter().all(fits)
        || ![a].into_iter().chain(d).chain(h0).all(fits_or_f32)
    {
        return None;
    }
    let ext = for_cuda_tensors()?;
    let cont = |t: &Tensor| t.contiguous();
    let (x, dt, a, b, c) = (cont(x), cont(dt), cont(a), cont(b), cont(c));
    let (d, h0) = (d.map(cont), h0.map(cont));
    let inputs = Inputs { x: &x, dt: &dt, a: &a, b: &b, c: &c, d: d.as_ref(), h0: h0.as_ref() };
    match inputs.check().and_then(|()| inputs.run(ext)) {
        Ok(r) => Some(r),
        Err(e) => panic!("{e}"),
    }
}

/// How many times the selective-scan kernel ran in this process (tests check that dispatch reached it).
pub fn selective_scan_calls() -> Result<i64, CudaKernelError> {
    let ext = extension()?;
    Ok(unsafe { (ext.selective_scan_calls)() })
}
