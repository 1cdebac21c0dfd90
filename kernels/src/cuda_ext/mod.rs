//! Our own CUDA kernels (`kernels/csrc`), loaded at run time from `libworkbench_kernels.so`.
//!
//! `build.rs` compiles the library with the `cuda` feature and puts it next to the binaries. It is loaded
//! with `dlopen` on first use, never linked, so a binary built with the feature still runs on a machine
//! without a GPU. Where loading fails on a GPU machine (wrong driver, missing symbols, no library), CUDA
//! tensors take the reference path and one warning says why.
//!
//! Where the library is looked for, first match wins: `$WORKBENCH_KERNELS_LIB`; the running binary's
//! folder and its parent (test binaries live in `target/<profile>/deps/`); the path `build.rs` built it at.
//!
//! Calling convention (csrc/extension.cpp): tensors go in as `at::Tensor*` (a tch tensor's `as_ptr()`),
//! results come back as new `at::Tensor*` that [`Tensor::from_ptr`] takes ownership of, errors as a C
//! string (C++ exceptions are caught on the C++ side and never unwind into Rust). The kernels are
//! `torch::autograd::Function`s, so their outputs carry gradients through tch's `backward()`.
//!
//! Arguments are validated here first, with errors that name the argument and the expected shape; a bad
//! tensor never reaches a kernel. `WORKBENCH_KERNELS=reference` forces the reference path everywhere
//! (as [`KernelPath::Reference`] does for one call).

mod check;
mod chunk_linear;
mod long_conv;
mod selective_scan;
mod short_conv;

use crate::KernelPath;
pub use check::*;
pub(crate) use chunk_linear::chunk_linear_auto;
pub use chunk_linear::{chunk_linear, chunk_linear_calls, chunk_linear_fits, chunk_linear_gate, ChunkLinearGate};
pub(crate) use long_conv::long_conv_auto;
pub use long_conv::{channels_meta, check_long_conv, long_conv, long_conv_calls, LONG_CONV_MAX_CHANNELS};
pub(crate) use selective_scan::selective_scan_auto;
pub use selective_scan::{selective_scan, selective_scan_calls};
pub(crate) use short_conv::short_conv_auto;
pub use short_conv::{set_short_conv_chunk, short_conv, short_conv_calls};
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::{Once, OnceLock};
use tch::Tensor;

/// The library's file name.
pub const LIBRARY: &str = "libworkbench_kernels.so";
/// Must match `kAbiVersion` in csrc/extension.cpp.
const ABI_VERSION: i32 = 7;

/// Why a kernel call did not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CudaKernelError {
    /// An argument the kernel cannot take, named, with what was expected.
    #[error("{op}: argument `{arg}`: {msg}")]
    BadArgument { op: &'static str, arg: &'static str, msg: String },
    /// The library is not there or did not load.
    #[error("CUDA kernels unavailable: {0}")]
    Unavailable(String),
    /// The C++ side reported an error (a CUDA error, an exception).
    #[error("{op}: {msg}")]
    Failed { op: &'static str, msg: String },
}

type Raw = *mut c_void;
type Msg = *mut c_char;

/// The loaded library: its exported functions (csrc/extension.cpp).
pub struct Extension {
    path: PathBuf,
    free_string: unsafe extern "C" fn(Msg),
    short_conv: unsafe extern "C" fn(*const c_void, *const c_void, *const c_void, i32, *mut Raw) -> Msg,
    short_conv_calls: unsafe extern "C" fn() -> i64,
    short_conv_set_chunk: unsafe extern "C" fn(i64),
    #[allow(clippy::type_complexity)]
    selective_scan: unsafe extern "C" fn(
        *const c_void,
        *const c_void,
        *const c_void,
        *const c_void,
        *const c_void,
        *const c_void,
        *const c_void,
        *mut Raw,
        *mut Raw,
    ) -> Msg,
    selective_scan_calls: unsafe extern "C" fn() -> i64,
    #[allow(clippy::type_complexity)]
    chunk_linear: unsafe extern "C" fn(
        *const c_void,
        *const c_void,
        *const c_void,
        *const c_void,
        *const c_void,
        *mut Raw,
        *mut Raw,
    ) -> Msg,
    chunk_linear_calls: unsafe extern "C" fn() -> i64,
    chunk_linear_fits: unsafe extern "C" fn(i64, i64, i32) -> i32,
    long_conv: long_conv::Symbols,
    grad: unsafe extern "C" fn(
        *const *const c_void,
        *const *const c_void,
        i32,
        *const *const c_void,
        i32,
        *mut Raw,
    ) -> Msg,
    timer_new: unsafe extern "C" fn(*mut Raw) -> Msg,
    timer_record: unsafe extern "C" fn(Raw, i32) -> Msg,
    timer_elapsed_ms: unsafe extern "C" fn(Raw, *mut f32) -> Msg,
    timer_free: unsafe extern "C" fn(Raw),
    synchronize: unsafe extern "C" fn() -> Msg,
    gpu_sleep: unsafe extern "C" fn(i64) -> Msg,
}

impl Extension {
    /// The file it was loaded from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Turns a returned message into an error (and frees it).
    fn check(&self, op: &'static str, msg: Msg) -> Result<(), CudaKernelError> {
        take_message(self.free_string, op, msg)
    }
}

/// A library function's return: null is success, anything else a NUL-terminated message malloc'd by the
/// library, turned into an error and freed once here with `free_string`.
pub(crate) fn take_message(
    free_string: unsafe extern "C" fn(Msg),
    op: &'static str,
    msg: Msg,
) -> Result<(), CudaKernelError> {
    if msg.is_null() {
        return Ok(());
    }
    // SAFETY: see above; `msg` is not used after it is freed.
    let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
    unsafe { free_string(msg) };
    Err(CudaKernelError::Failed { op, msg: text })
}

static EXTENSION: OnceLock<Result<Extension, String>> = OnceLock::new();
static WARNED: Once = Once::new();

/// The kernel library, loaded on first call; the error says why it is not usable.
pub fn extension() -> Result<&'static Extension, CudaKernelError> {
    EXTENSION.get_or_init(load).as_ref().map_err(|why| CudaKernelError::Unavailable(why.clone()))
}

/// Whether our CUDA kernels are loaded and usable.
pub fn available() -> bool {
    extension().is_ok()
}

/// Where the library is looked for, in order.
fn candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("WORKBENCH_KERNELS_LIB") {
        return vec![PathBuf::from(p)];
    }
    let mut v = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from)) {
        v.push(dir.join(LIBRARY));
        if let Some(up) = dir.parent() {
            v.push(up.join(LIBRARY));
        }
    }
    if let Some(built) = option_env!("WORKBENCH_KERNELS_SO") {
        v.push(PathBuf::from(built));
    }
    v
}

fn load() -> Result<Extension, String> {
    if !cfg!(workbench_cuda) && std::env::var_os("WORKBENCH_KERNELS_LIB").is_none() {
        return Err("this binary was built without the `cuda` feature (`make build-cuda` builds it)".into());
    }
    crate::cuda::load_torch_cuda()?;
    let tried = candidates();
    let path = tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        format!("{LIBRARY} not found (looked in: {})", list.join(", "))
    })?;
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| "library path contains NUL")?;
    // SAFETY: dlopen with a valid C string; the handle is never closed (the functions live for the process).
    let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("cannot load {}: {}", path.display(), dlerror()));
    }
    // SAFETY: each symbol is looked up in the library just opened and given the signature it is defined with
    // in csrc/extension.cpp; the ABI version (checked first) guards against a library of another version.
    unsafe {
        let version: unsafe extern "C" fn() -> i32 = symbol(handle, "wb_abi_version")?;
        let v = version();
        if v != ABI_VERSION {
            return Err(format!(
                "{} has ABI version {v}, this binary needs {ABI_VERSION} (rebuild both)",
                path.display()
            ));
        }
        Ok(Extension {
            free_string: symbol(handle, "wb_free_string")?,
            short_conv: symbol(handle, "wb_short_conv")?,
            short_conv_calls: symbol(handle, "wb_short_conv_calls")?,
            short_conv_set_chunk: symbol(handle, "wb_short_conv_set_chunk")?,
            selective_scan: symbol(handle, "wb_selective_scan")?,
            selective_scan_calls: symbol(handle, "wb_selective_scan_calls")?,
            chunk_linear: symbol(handle, "wb_chunk_linear")?,
            chunk_linear_calls: symbol(handle, "wb_chunk_linear_calls")?,
            chunk_linear_fits: symbol(handle, "wb_chunk_linear_fits")?,
            long_conv: long_conv::Symbols::load(handle)?,
            grad: symbol(handle, "wb_grad")?,
            timer_new: symbol(handle, "wb_timer_new")?,
            timer_record: symbol(handle, "wb_timer_record")?,
            timer_elapsed_ms: symbol(handle, "wb_timer_elapsed_ms")?,
            timer_free: symbol(handle, "wb_timer_free")?,
            synchronize: symbol(handle, "wb_synchronize")?,
            gpu_sleep: symbol(handle, "wb_gpu_sleep")?,
            path,
        })
    }
}

pub(crate) fn dlerror() -> String {
    // SAFETY: dlerror returns a valid C string or NULL.
    let err = unsafe { libc::dlerror() };
    if err.is_null() {
        "unknown error".into()
    } else {
        unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
    }
}

/// # Safety
/// `F` must be the function-pointer type the symbol is defined with.
pub(crate) unsafe fn symbol<F: Copy>(handle: *mut c_void, name: &str) -> Result<F, String> {
    let cname = CString::new(name).expect("symbol names have no NUL");
    let p = libc::dlsym(handle, cname.as_ptr());
    if p.is_null() {
        return Err(format!("missing symbol {name}: {}", dlerror()));
    }
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    Ok(std::mem::transmute_copy::<*mut c_void, F>(&p))
}

// ------------------------------------------------------------------------------------------------------
// Dispatch.

/// `WORKBENCH_KERNELS`: unset, empty or `auto` lets [`KernelPath::Auto`] pick fast paths; `reference` forces
/// the reference path everywhere.
fn parse_kernels_env(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None | Some("") | Some("auto") => Ok(false),
        Some("reference") => Ok(true),
        Some(other) => Err(format!("WORKBENCH_KERNELS={other} is neither `auto` nor `reference`; using `auto`")),
    }
}

/// Whether `WORKBENCH_KERNELS=reference` is set (read once).
pub fn forced_reference() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| {
        parse_kernels_env(std::env::var("WORKBENCH_KERNELS").ok().as_deref()).unwrap_or_else(|why| {
            eprintln!("warning: {why}");
            false
        })
    })
}

/// The path a kernel should take: `Auto` becomes `Reference` under `WORKBENCH_KERNELS=reference`.
pub fn resolve(path: KernelPath) -> KernelPath {
    if path == KernelPath::Auto && forced_reference() {
        KernelPath::Reference
    } else {
        path
    }
}

/// The library for a CUDA tensor on the `Auto` path, or `None` (after one warning saying why) when it is
/// not usable.
fn for_cuda_tensors() -> Option<&'static Extension> {
    match extension() {
        Ok(ext) => Some(ext),
        Err(e) => {
            WARNED.call_once(|| eprintln!("warning: using the reference path for CUDA tensors: {e}"));
            None
        }
    }
}

// ------------------------------------------------------------------------------------------------------
// Kernels.

// ------------------------------------------------------------------------------------------------------
// Helpers for tests and benchmarks.

/// Gradients of `outputs` with respect to `inputs` for the given output gradients (torch::autograd::grad:
/// nothing accumulates into `.grad`). An input the outputs do not depend on gets an undefined tensor.
pub fn grad(outputs: &[&Tensor], grad_outputs: &[&Tensor], inputs: &[&Tensor]) -> Result<Vec<Tensor>, CudaKernelError> {
    assert_eq!(outputs.len(), grad_outputs.len(), "grad: one output gradient per output");
    let ext = extension()?;
    let outs: Vec<*const c_void> = outputs.iter().map(|t| t.as_ptr().cast()).collect();
    let gouts: Vec<*const c_void> = grad_outputs.iter().map(|t| t.as_ptr().cast()).collect();
    let ins: Vec<*const c_void> = inputs.iter().map(|t| t.as_ptr().cast()).collect();
    let mut res: Vec<Raw> = vec![std::ptr::null_mut(); inputs.len()];
    // SAFETY: arrays of live at::Tensor* with the stated lengths; on success `res` holds new at::Tensor*s.
    let msg = unsafe {
        (ext.grad)(outs.as_ptr(), gouts.as_ptr(), outs.len() as i32, ins.as_ptr(), ins.len() as i32, res.as_mut_ptr())
    };
    ext.check("grad", msg)?;
    Ok(res.into_iter().map(|p| unsafe { Tensor::from_ptr(p.cast()) }).collect())
}

/// Waits for all work on the current CUDA device.
pub fn synchronize() -> Result<(), CudaKernelError> {
    let ext = extension()?;
    ext.check("synchronize", unsafe { (ext.synchronize)() })
}

/// Enqueues a kernel on the current stream that spins for `cycles` GPU clock cycles (benchmarks: the host
/// queues the timed work while the GPU is still busy, so launch latency does not count).
pub fn gpu_sleep(cycles: i64) -> Result<(), CudaKernelError> {
    let ext = extension()?;
    ext.check("gpu_sleep", unsafe { (ext.gpu_sleep)(cycles) })
}

/// A pair of CUDA events on the current stream: [`CudaTimer::start`], the work, [`CudaTimer::stop`], then
/// [`CudaTimer::elapsed_ms`] (which waits for the stop event).
pub struct CudaTimer {
    ext: &'static Extension,
    raw: Raw,
}

impl CudaTimer {
    pub fn new() -> Result<CudaTimer, CudaKernelError> {
        let ext = extension()?;
        let mut raw: Raw = std::ptr::null_mut();
        ext.check("timer", unsafe { (ext.timer_new)(&mut raw) })?;
        Ok(CudaTimer { ext, raw })
    }

    pub fn start(&self) -> Result<(), CudaKernelError> {
        self.ext.check("timer", unsafe { (self.ext.timer_record)(self.raw, 0) })
    }

    pub fn stop(&self) -> Result<(), CudaKernelError> {
        self.ext.check("timer", unsafe { (self.ext.timer_record)(self.raw, 1) })
    }

    pub fn elapsed_ms(&self) -> Result<f32, CudaKernelError> {
        let mut ms = 0.0f32;
        self.ext.check("timer", unsafe { (self.ext.timer_elapsed_ms)(self.raw, &mut ms) })?;
        Ok(ms)
    }
}

impl Drop for CudaTimer {
    fn drop(&mut self) {
        // SAFETY: raw came from timer_new and is freed once.
        unsafe { (self.ext.timer_free)(self.raw) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::short_conv::Activation;
    use tch::{Device, Kind};

    #[test]
    fn cpu_tensors_are_refused_before_any_library_is_needed() {
        let x = Tensor::randn([1, 3, 2], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([2, 3], (Kind::Float, Device::Cpu));
        let e = short_conv(&x, &w, None, Activation::Silu).unwrap_err();
        assert!(matches!(e, CudaKernelError::BadArgument { arg: "x", .. }), "{e}");
        let q = Tensor::randn([1, 2, 3, 4], (Kind::Float, Device::Cpu));
        let e = chunk_linear(&q, &q, &q, None, None).unwrap_err();
        assert!(matches!(e, CudaKernelError::BadArgument { arg: "q", .. }), "{e}");
    }

    #[test]
    fn kernels_env_values() {
        assert_eq!(parse_kernels_env(None), Ok(false));
        assert_eq!(parse_kernels_env(Some("auto")), Ok(false));
        assert_eq!(parse_kernels_env(Some("reference")), Ok(true));
        assert_eq!(parse_kernels_env(Some(" reference\n")), Ok(true));
        assert!(parse_kernels_env(Some("refrence")).unwrap_err().contains("neither"));
    }

    #[test]
    fn without_a_gpu_the_library_reports_why() {
        if crate::cuda::load_torch_cuda().is_ok() && tch::Cuda::is_available() {
            return; // on a GPU machine loading may well succeed; the gpu_ tests cover that
        }
        let e = extension().err().expect("no GPU here, so the kernels cannot be usable");
        assert!(matches!(e, CudaKernelError::Unavailable(ref why) if !why.is_empty()), "{e}");
        eprintln!("as expected without a GPU: {e}");
    }

    /// csrc/tests/*.cu run the kernels' own per-thread code on the CPU against a float64 reference.
    #[cfg(workbench_cuda)]
    #[test]
    fn host_emulation_of_the_cuda_kernels() {
        for exe in env!("WORKBENCH_CUDA_HOST_TESTS").split(';').filter(|s| !s.is_empty()) {
            let out = std::process::Command::new(exe).output().unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{exe} failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
