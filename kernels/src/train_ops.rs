//! libtorch's GPU training helpers that tch does not bind (csrc/train_ops.cpp): the fused multi-tensor
//! AdamW (`torch.optim.AdamW(fused=True)`), the CUDA autocast dtype (bfloat16 instead of libtorch's
//! float16 default), the caching allocator's memory counters (`torch.cuda.max_memory_allocated`) and the
//! Kineto profiler (`torch.profiler`: host ops and CUDA kernels to a Chrome trace).
//!
//! They live in the same `libworkbench_kernels.so` as our kernels (built with the `cuda` feature) but are
//! looked up as their own set with their own version, so the kernels' ABI can move without them. On a
//! machine or binary without the library every function here returns [`CudaKernelError::Unavailable`],
//! and callers fall back (plain AdamW, float32 training) with a warning.

use crate::cuda_ext::{self, dlerror, symbol, CudaKernelError};
use std::ffi::{c_char, c_void, CString};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

type Msg = *mut c_char;
type T = *const c_void;

/// Must match `wb_train_abi_version` in csrc/train_ops.cpp.
const TRAIN_ABI_VERSION: i32 = 2;

/// The functions of csrc/train_ops.cpp.
pub struct TrainOps {
    free_string: unsafe extern "C" fn(Msg),
    #[allow(clippy::type_complexity)]
    fused_adamw:
        unsafe extern "C" fn(*const T, *const T, *const T, *const T, *const T, i32, f64, f64, f64, f64, f64) -> Msg,
    set_autocast_dtype: unsafe extern "C" fn(i32) -> Msg,
    memory_stats: unsafe extern "C" fn(i32, *mut i64, *mut i64, *mut i64) -> Msg,
    reset_peak: unsafe extern "C" fn(i32) -> Msg,
    empty_cache: unsafe extern "C" fn() -> Msg,
    profile_start: unsafe extern "C" fn() -> Msg,
    profile_stop: unsafe extern "C" fn(*const c_char) -> Msg,
}

impl TrainOps {
    fn check(&self, op: &'static str, msg: Msg) -> Result<(), CudaKernelError> {
        cuda_ext::take_message(self.free_string, op, msg)
    }
}

static OPS: OnceLock<Result<TrainOps, String>> = OnceLock::new();

/// The training helpers, loaded on first use from the kernels' library.
pub fn train_ops() -> Result<&'static TrainOps, CudaKernelError> {
    OPS.get_or_init(load).as_ref().map_err(|why| CudaKernelError::Unavailable(why.clone()))
}

fn load() -> Result<TrainOps, String> {
    let path = cuda_ext::extension().map_err(|e| e.to_string())?.path().to_path_buf();
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| "library path contains NUL")?;
    // SAFETY: dlopen of the library cuda_ext already holds open (a second reference to the same handle),
    // never closed.
    let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("cannot load {}: {}", path.display(), dlerror()));
    }
    // SAFETY: each symbol gets the signature it is defined with in csrc/train_ops.cpp, checked by version.
    unsafe {
        let version: unsafe extern "C" fn() -> i32 = symbol(handle, "wb_train_abi_version")?;
        if version() != TRAIN_ABI_VERSION {
            return Err(format!("{}: training helpers of another version (rebuild)", path.display()));
        }
        Ok(TrainOps {
            free_string: symbol(handle, "wb_free_string")?,
            fused_adamw: symbol(handle, "wb_train_fused_adamw")?,
            set_autocast_dtype: symbol(handle, "wb_train_set_autocast_dtype")?,
            memory_stats: symbol(handle, "wb_train_memory_stats")?,
            reset_peak: symbol(handle, "wb_train_reset_peak")?,
            empty_cache: symbol(handle, "wb_train_empty_cache")?,
            profile_start: symbol(handle, "wb_train_profile_start")?,
            profile_stop: symbol(handle, "wb_train_profile_stop")?,
        })
    }
}

/// AdamW hyper-parameters of one fused update.
#[derive(Debug, Clone, Copy)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// One AdamW update of every tensor in `params` with libtorch's fused multi-tensor kernel. `steps` are
/// float32 tensors on the parameters' device holding each parameter's update count *including* this one.
/// All lists have the same length; parameters, gradients and moments share shapes and device.
pub fn fused_adamw(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    steps: &[&Tensor],
    h: AdamWHyper,
) -> Result<(), CudaKernelError> {
    const OP: &str = "fused_adamw";
    let n = params.len();
    for (arg, len) in [("grads", grads.len()), ("exp_avgs", exp_avgs.len()), ("exp_avg_sqs", exp_avg_sqs.len())]
        .into_iter()
        .chain([("steps", steps.len())])
    {
        if len != n {
            return Err(CudaKernelError::BadArgument { op: OP, arg, msg: format!("{len} tensors for {n} parameters") });
        }
    }
    for (i, p) in params.iter().enumerate() {
        if !p.device().is_cuda() {
            return Err(CudaKernelError::BadArgument {
                op: OP,
                arg: "params",
                msg: format!("parameter {i} is on {:?}; the fused update runs on CUDA tensors", p.device()),
            });
        }
        for (arg, t) in [("grads", grads[i]), ("exp_avgs", exp_avgs[i]), ("exp_avg_sqs", exp_avg_sqs[i])] {
            if t.size() != p.size() || t.device() != p.device() {
                return Err(CudaKernelError::BadArgument {
                    op: OP,
                    arg,
                    msg: format!(
                        "tensor {i} is {:?} on {:?}, expected {:?} on {:?}",
                        t.size(),
                        t.device(),
                        p.size(),
                        p.device()
                    ),
                });
            }
        }
    }
    let ops = train_ops()?;
    let raw = |v: &[&Tensor]| -> Vec<T> { v.iter().map(|t| t.as_ptr() as T).collect() };
    let (p, g, m, v, s) = (raw(params), raw(grads), raw(exp_avgs), raw(exp_avg_sqs), raw(steps));
    // SAFETY: five arrays of `n` live at::Tensor* (checked above), read during the call only.
    let msg = unsafe {
        (ops.fused_adamw)(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n as i32,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
        )
    };
    ops.check(OP, msg)
}

/// Makes CUDA autocast cast to `kind`, float16 or bfloat16 (libtorch's default is float16; our training
/// path uses bfloat16).
pub fn set_autocast_dtype(kind: Kind) -> Result<(), CudaKernelError> {
    // c10::ScalarType codes (tch keeps its own mapping private).
    let code = match kind {
        Kind::Half => 5,
        Kind::BFloat16 => 15,
        other => {
            return Err(CudaKernelError::BadArgument {
                op: "set_autocast_dtype",
                arg: "kind",
                msg: format!("{other:?}: autocast casts to float16 or bfloat16"),
            })
        }
    };
    let ops = train_ops()?;
    ops.check("set_autocast_dtype", unsafe { (ops.set_autocast_dtype)(code) })
}

/// The CUDA caching allocator's counters of one device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    pub allocated: i64,
    /// The most allocated at once since the last [`reset_peak`] (what `torch.cuda.max_memory_allocated` reads).
    pub peak: i64,
    pub reserved: i64,
}

fn cuda_index(op: &'static str, device: Device) -> Result<i32, CudaKernelError> {
    match device {
        Device::Cuda(i) => Ok(i as i32),
        other => {
            Err(CudaKernelError::BadArgument { op, arg: "device", msg: format!("{other:?} is not a CUDA device") })
        }
    }
}

/// The allocator's counters for `device`.
pub fn memory_stats(device: Device) -> Result<MemoryStats, CudaKernelError> {
    let ops = train_ops()?;
    let d = cuda_index("memory_stats", device)?;
    let (mut allocated, mut peak, mut reserved) = (0i64, 0i64, 0i64);
    // SAFETY: three valid out-pointers.
    ops.check("memory_stats", unsafe { (ops.memory_stats)(d, &mut allocated, &mut peak, &mut reserved) })?;
    Ok(MemoryStats { allocated, peak, reserved })
}

/// Starts `device`'s peak counters over.
pub fn reset_peak(device: Device) -> Result<(), CudaKernelError> {
    let ops = train_ops()?;
    let d = cuda_index("reset_peak", device)?;
    ops.check("reset_peak", unsafe { (ops.reset_peak)(d) })
}

/// Returns cached blocks to the driver.
pub fn empty_cache() -> Result<(), CudaKernelError> {
    let ops = train_ops()?;
    ops.check("empty_cache", unsafe { (ops.empty_cache)() })
}

/// Starts libtorch's profiler (host-side ops and CUDA kernels) until [`profile_stop`].
pub fn profile_start() -> Result<(), CudaKernelError> {
    let ops = train_ops()?;
    ops.check("profile_start", unsafe { (ops.profile_start)() })
}

/// Stops the profiler and writes its Chrome trace (JSON) to `path`.
pub fn profile_stop(path: &std::path::Path) -> Result<(), CudaKernelError> {
    let ops = train_ops()?;
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| CudaKernelError::BadArgument {
        op: "profile_stop",
        arg: "path",
        msg: "contains a NUL byte".into(),
    })?;
    // SAFETY: a NUL-terminated path, read during the call only.
    ops.check("profile_stop", unsafe { (ops.profile_stop)(c.as_ptr()) })
}
