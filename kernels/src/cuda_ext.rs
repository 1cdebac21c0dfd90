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

use crate::short_conv::Activation;
use crate::KernelPath;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::{Once, OnceLock};
use tch::{Device, Kind, Tensor};

/// The library's file name.
pub const LIBRARY: &str = "libworkbench_kernels.so";
/// Must match `kAbiVersion` in csrc/extension.cpp.
const ABI_VERSION: i32 = 3;

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
            grad: symbol(handle, "wb_grad")?,
            timer_new: symbol(handle, "wb_timer_new")?,
            timer_record: symbol(handle, "wb_timer_record")?,
            timer_elapsed_ms: symbol(handle, "wb_timer_elapsed_ms")?,
            timer_free: symbol(handle, "wb_timer_free")?,
            synchronize: symbol(handle, "wb_synchronize")?,
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
// Validation: device, dtype, layout and shape, checked on plain metadata so the rules are testable anywhere.

/// What validation looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub device: Device,
    pub kind: Kind,
    pub size: Vec<i64>,
    pub contiguous: bool,
}

impl Meta {
    pub fn of(t: &Tensor) -> Meta {
        Meta { device: t.device(), kind: t.kind(), size: t.size(), contiguous: t.is_contiguous() }
    }
}

fn bad(op: &'static str, arg: &'static str, msg: String) -> CudaKernelError {
    CudaKernelError::BadArgument { op, arg, msg }
}

/// The dtypes the kernels take.
pub fn supported_kind(kind: Kind) -> bool {
    matches!(kind, Kind::Float | Kind::BFloat16)
}

/// Checks `x` ([B, T, C], CUDA, float32 or bfloat16, contiguous) and that `w` ([C, k], 1 <= k <= 4) and
/// `bias` ([C]) match it in device and dtype.
pub fn check_short_conv(x: &Meta, w: &Meta, bias: Option<&Meta>) -> Result<(), CudaKernelError> {
    const OP: &str = "short_conv";
    let &[b, t, c] = x.size.as_slice() else {
        return Err(bad(OP, "x", format!("expected shape [B, T, C], got {:?}", x.size)));
    };
    if !x.device.is_cuda() {
        return Err(bad(OP, "x", format!("expected a CUDA tensor, got device {:?}", x.device)));
    }
    if !supported_kind(x.kind) {
        return Err(bad(OP, "x", format!("expected dtype Float or BFloat16, got {:?}", x.kind)));
    }
    if !x.contiguous {
        return Err(bad(
            OP,
            "x",
            format!("expected a contiguous [B, T, C] = {:?} tensor (call .contiguous())", x.size),
        ));
    }
    if b < 1 || t < 1 || c < 1 {
        return Err(bad(OP, "x", format!("expected shape [B, T, C] with B, T, C >= 1, got {:?}", x.size)));
    }
    if b > 65535 {
        return Err(bad(OP, "x", format!("expected B <= 65535 (one grid dimension), got shape {:?}", x.size)));
    }
    let k_ok = w.size.len() == 2 && w.size[0] == c && (1..=4).contains(&w.size[1]);
    if !k_ok {
        return Err(bad(OP, "w", format!("expected shape [C, k] = [{c}, 1..=4], got {:?}", w.size)));
    }
    same_device_and_kind(OP, "w", x, w)?;
    if let Some(bias) = bias {
        if bias.size != [c] {
            return Err(bad(OP, "bias", format!("expected shape [C] = [{c}], got {:?}", bias.size)));
        }
        same_device_and_kind(OP, "bias", x, bias)?;
    }
    Ok(())
}

/// The largest state size N the selective-scan kernel takes (16 lanes x 4 states per lane).
pub const SELECTIVE_SCAN_MAX_STATE: i64 = 64;

/// Checks the selective scan's arguments (shapes in [`crate::selective_scan`]'s note): `x` [B, T, D] (CUDA,
/// float32 or bfloat16, contiguous, B <= 65535), `dt` [B, T, D], `a` [D, N] with 1 <= N <= 64, `b` and `c`
/// [B, T, N], `d` [D], `h0` [B, D, N]; every one contiguous, on x's device, in x's dtype.
pub fn check_selective_scan(
    x: &Meta,
    dt: &Meta,
    a: &Meta,
    b: &Meta,
    c: &Meta,
    d: Option<&Meta>,
    h0: Option<&Meta>,
) -> Result<(), CudaKernelError> {
    const OP: &str = "selective_scan";
    let &[bs, t, di] = x.size.as_slice() else {
        return Err(bad(OP, "x", format!("expected shape [B, T, D], got {:?}", x.size)));
    };
    if !x.device.is_cuda() {
        return Err(bad(OP, "x", format!("expected a CUDA tensor, got device {:?}", x.device)));
    }
    if !supported_kind(x.kind) {
        return Err(bad(OP, "x", format!("expected dtype Float or BFloat16, got {:?}", x.kind)));
    }
    if !x.contiguous {
        return Err(bad(
            OP,
            "x",
            format!("expected a contiguous [B, T, D] = {:?} tensor (call .contiguous())", x.size),
        ));
    }
    if bs < 1 || t < 1 || di < 1 {
        return Err(bad(OP, "x", format!("expected shape [B, T, D] with B, T, D >= 1, got {:?}", x.size)));
    }
    if bs > 65535 {
        return Err(bad(OP, "x", format!("expected B <= 65535 (one grid dimension), got shape {:?}", x.size)));
    }
    let n_ok = a.size.len() == 2 && a.size[0] == di && (1..=SELECTIVE_SCAN_MAX_STATE).contains(&a.size[1]);
    if !n_ok {
        return Err(bad(OP, "A", format!("expected shape [D, N] = [{di}, 1..=64], got {:?}", a.size)));
    }
    let n = a.size[1];
    let mut args: Vec<(&'static str, &Meta, Vec<i64>, &str)> = vec![
        ("dt", dt, vec![bs, t, di], "[B, T, D]"),
        ("A", a, vec![di, n], "[D, N]"),
        ("B", b, vec![bs, t, n], "[B, T, N]"),
        ("C", c, vec![bs, t, n], "[B, T, N]"),
    ];
    if let Some(d) = d {
        args.push(("D", d, vec![di], "[D]"));
    }
    if let Some(h0) = h0 {
        args.push(("h0", h0, vec![bs, di, n], "[B, D, N]"));
    }
    for (arg, m, want, names) in args {
        if m.size != want {
            return Err(bad(OP, arg, format!("expected shape {names} = {want:?}, got {:?}", m.size)));
        }
        same_device_and_kind(OP, arg, x, m)?;
        if !m.contiguous {
            return Err(bad(OP, arg, format!("expected a contiguous {names} = {want:?} tensor (call .contiguous())")));
        }
    }
    Ok(())
}

/// The largest head dimension (Dk and Dv) the chunked linear-attention kernel takes.
pub const CHUNK_LINEAR_MAX_DIM: i64 = 128;

/// Checks the chunked linear-attention kernel's arguments (shapes in [`crate::chunk_linear`]'s note): `q`
/// [B, H, T, Dk] (CUDA, float32 or bfloat16, contiguous, B * H <= 65535, 1 <= Dk <= 128), `k` [B, H, T, Dk],
/// `v` [B, H, T, Dv] with 1 <= Dv <= 128, `g` (scalar log-decays) [B, H, T], `s0` [B, H, Dk, Dv]; every one
/// contiguous, on q's device, in q's dtype.
pub fn check_chunk_linear(
    q: &Meta,
    k: &Meta,
    v: &Meta,
    g: Option<&Meta>,
    s0: Option<&Meta>,
) -> Result<(), CudaKernelError> {
    const OP: &str = "chunk_linear";
    let &[b, h, t, dk] = q.size.as_slice() else {
        return Err(bad(OP, "q", format!("expected shape [B, H, T, Dk], got {:?}", q.size)));
    };
    if !q.device.is_cuda() {
        return Err(bad(OP, "q", format!("expected a CUDA tensor, got device {:?}", q.device)));
    }
    if !supported_kind(q.kind) {
        return Err(bad(OP, "q", format!("expected dtype Float or BFloat16, got {:?}", q.kind)));
    }
    if !q.contiguous {
        return Err(bad(
            OP,
            "q",
            format!("expected a contiguous [B, H, T, Dk] = {:?} tensor (call .contiguous())", q.size),
        ));
    }
    if b < 1 || h < 1 || t < 1 || !(1..=CHUNK_LINEAR_MAX_DIM).contains(&dk) {
        return Err(bad(
            OP,
            "q",
            format!("expected shape [B, H, T, Dk] with B, H, T >= 1 and 1 <= Dk <= 128, got {:?}", q.size),
        ));
    }
    if b * h > 65535 {
        return Err(bad(OP, "q", format!("expected B * H <= 65535 (one grid dimension), got shape {:?}", q.size)));
    }
    let dv_ok = v.size.len() == 4 && v.size[..3] == [b, h, t] && (1..=CHUNK_LINEAR_MAX_DIM).contains(&v.size[3]);
    if !dv_ok {
        return Err(bad(OP, "v", format!("expected shape [B, H, T, Dv] = [{b}, {h}, {t}, 1..=128], got {:?}", v.size)));
    }
    let dv = v.size[3];
    let mut args: Vec<(&'static str, &Meta, Vec<i64>, &str)> =
        vec![("k", k, vec![b, h, t, dk], "[B, H, T, Dk]"), ("v", v, vec![b, h, t, dv], "[B, H, T, Dv]")];
    if let Some(g) = g {
        args.push(("g", g, vec![b, h, t], "[B, H, T]"));
    }
    if let Some(s0) = s0 {
        args.push(("s0", s0, vec![b, h, dk, dv], "[B, H, Dk, Dv]"));
    }
    for (arg, m, want, names) in args {
        if m.size != want {
            return Err(bad(OP, arg, format!("expected shape {names} = {want:?}, got {:?}", m.size)));
        }
        if m.device != q.device {
            return Err(bad(OP, arg, format!("expected device {:?} (that of q), got {:?}", q.device, m.device)));
        }
        if m.kind != q.kind {
            return Err(bad(OP, arg, format!("expected dtype {:?} (that of q), got {:?}", q.kind, m.kind)));
        }
        if !m.contiguous {
            return Err(bad(OP, arg, format!("expected a contiguous {names} = {want:?} tensor (call .contiguous())")));
        }
    }
    Ok(())
}

fn same_device_and_kind(op: &'static str, arg: &'static str, x: &Meta, m: &Meta) -> Result<(), CudaKernelError> {
    if m.device != x.device {
        return Err(bad(op, arg, format!("expected device {:?} (that of x), got {:?}", x.device, m.device)));
    }
    if m.kind != x.kind {
        return Err(bad(op, arg, format!("expected dtype {:?} (that of x), got {:?}", x.kind, m.kind)));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------------
// Kernels.

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
    let (dm, hm) = (d.map(Meta::of), h0.map(Meta::of));
    check_selective_scan(
        &Meta::of(x),
        &Meta::of(dt),
        &Meta::of(a),
        &Meta::of(b),
        &Meta::of(c),
        dm.as_ref(),
        hm.as_ref(),
    )?;
    selective_scan_unchecked(extension()?, x, dt, a, b, c, d, h0)
}

#[allow(clippy::too_many_arguments)]
fn selective_scan_unchecked(
    ext: &Extension,
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: Option<&Tensor>,
    h0: Option<&Tensor>,
) -> Result<(Tensor, Tensor), CudaKernelError> {
    let ptr = |t: &Tensor| t.as_ptr().cast::<c_void>();
    let opt = |t: Option<&Tensor>| t.map_or(std::ptr::null(), |t| t.as_ptr().cast::<c_void>());
    let (mut y, mut h): (Raw, Raw) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: the pointers are live tch tensors (at::Tensor*) for the duration of the call; on success `y`
    // and `h` are new at::Tensor*s whose ownership passes to the returned Tensors.
    let msg = unsafe { (ext.selective_scan)(ptr(x), ptr(dt), ptr(a), ptr(b), ptr(c), opt(d), opt(h0), &mut y, &mut h) };
    ext.check("selective_scan", msg)?;
    Ok(unsafe { (Tensor::from_ptr(y.cast()), Tensor::from_ptr(h.cast())) })
}

/// The `Auto` path of [`crate::selective_scan::selective_scan`] for a CUDA `x`: the kernel when it applies
/// (every tensor float32 or bfloat16 in x's dtype and on x's device, 1 <= N <= 64, non-empty) and the
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
    if !supported_kind(x.kind())
        || !(1..=SELECTIVE_SCAN_MAX_STATE).contains(&n)
        || x.numel() == 0
        || ![dt, a, b, c].into_iter().chain(d).chain(h0).all(fits)
    {
        return None;
    }
    let ext = for_cuda_tensors()?;
    let cont = |t: &Tensor| t.contiguous();
    let (x, dt, a, b, c) = (cont(x), cont(dt), cont(a), cont(b), cont(c));
    let (d, h0) = (d.map(cont), h0.map(cont));
    let (dm, hm) = (d.as_ref().map(Meta::of), h0.as_ref().map(Meta::of));
    let checked = check_selective_scan(
        &Meta::of(&x),
        &Meta::of(&dt),
        &Meta::of(&a),
        &Meta::of(&b),
        &Meta::of(&c),
        dm.as_ref(),
        hm.as_ref(),
    );
    match checked.and_then(|()| selective_scan_unchecked(ext, &x, &dt, &a, &b, &c, d.as_ref(), h0.as_ref())) {
        Ok(r) => Some(r),
        Err(e) => panic!("{e}"),
    }
}

/// Chunked linear attention with a scalar per-head decay on the GPU (see [`crate::chunk_linear`] for the
/// math): `q`, `k` [B, H, T, Dk], `v` [B, H, T, Dv], `g` the log-decays [B, H, T] (None: no decay), `s0` the
/// initial state [B, H, Dk, Dv]. Returns `(o [B, H, T, Dv], S_T [B, H, Dk, Dv])` in q's dtype,
/// differentiable in every input. Arguments are checked first ([`check_chunk_linear`]); float32 arithmetic
/// inside for either dtype.
pub fn chunk_linear(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    s0: Option<&Tensor>,
) -> Result<(Tensor, Tensor), CudaKernelError> {
    let (gm, sm) = (g.map(Meta::of), s0.map(Meta::of));
    check_chunk_linear(&Meta::of(q), &Meta::of(k), &Meta::of(v), gm.as_ref(), sm.as_ref())?;
    chunk_linear_unchecked(extension()?, q, k, v, g, s0)
}

fn chunk_linear_unchecked(
    ext: &Extension,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    s0: Option<&Tensor>,
) -> Result<(Tensor, Tensor), CudaKernelError> {
    let ptr = |t: &Tensor| t.as_ptr().cast::<c_void>();
    let opt = |t: Option<&Tensor>| t.map_or(std::ptr::null(), |t| t.as_ptr().cast::<c_void>());
    let (mut o, mut s): (Raw, Raw) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: the pointers are live tch tensors (at::Tensor*) for the duration of the call; on success `o`
    // and `s` are new at::Tensor*s whose ownership passes to the returned Tensors.
    let msg = unsafe { (ext.chunk_linear)(ptr(q), ptr(k), ptr(v), opt(g), opt(s0), &mut o, &mut s) };
    ext.check("chunk_linear", msg)?;
    Ok(unsafe { (Tensor::from_ptr(o.cast()), Tensor::from_ptr(s.cast())) })
}

/// `WORKBENCH_CHUNK_LINEAR_KERNEL`: `1` opts the `Auto` path into the chunked linear-attention kernel.
///
/// TEMPORARY gate: the kernel has passed its host emulation (csrc/tests/emulate_chunk_linear.cu) but has
/// not yet run its `gpu_chunk_linear_*` tests on the H200, so training must not reach it by default. Once
/// those tests pass there, this gate goes and the kernel becomes the default for CUDA tensors like the
/// others (`WORKBENCH_KERNELS=reference` still forces the reference).
fn parse_chunk_linear_gate(value: Option<&str>) -> bool {
    value.map(str::trim) == Some("1")
}

/// Whether `WORKBENCH_CHUNK_LINEAR_KERNEL=1` is set (read once); see [`parse_chunk_linear_gate`].
pub fn chunk_linear_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| parse_chunk_linear_gate(std::env::var("WORKBENCH_CHUNK_LINEAR_KERNEL").ok().as_deref()))
}

/// The `Auto` path of [`crate::chunk_linear::chunk_linear`] for a CUDA `q` with a scalar or no decay: the
/// kernel when it is enabled ([`chunk_linear_enabled`]), applies (every tensor float32 or bfloat16 in q's
/// dtype and on q's device, 1 <= Dk, Dv <= 128, B * H <= 65535, non-empty) and the library is loaded, else
/// `None` (the caller's libtorch path). Non-contiguous inputs are made contiguous. Shapes that do not fit
/// together panic with the validation message, as the reference's own checks do.
pub(crate) fn chunk_linear_auto(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    s0: Option<&Tensor>,
) -> Option<(Tensor, Tensor)> {
    if !chunk_linear_enabled() {
        return None;
    }
    let (qs, vs) = (q.size(), v.size());
    let dims_ok = qs.len() == 4
        && vs.len() == 4
        && (1..=CHUNK_LINEAR_MAX_DIM).contains(&qs[3])
        && (1..=CHUNK_LINEAR_MAX_DIM).contains(&vs[3])
        && qs[0] * qs[1] <= 65535;
    let fits = |t: &Tensor| t.kind() == q.kind() && t.device() == q.device();
    if !supported_kind(q.kind()) || !dims_ok || q.numel() == 0 || ![k, v].into_iter().chain(g).chain(s0).all(fits) {
        return None;
    }
    let ext = for_cuda_tensors()?;
    let cont = |t: &Tensor| t.contiguous();
    let (q, k, v) = (cont(q), cont(k), cont(v));
    let (g, s0) = (g.map(cont), s0.map(cont));
    let (gm, sm) = (g.as_ref().map(Meta::of), s0.as_ref().map(Meta::of));
    let checked = check_chunk_linear(&Meta::of(&q), &Meta::of(&k), &Meta::of(&v), gm.as_ref(), sm.as_ref());
    match checked.and_then(|()| chunk_linear_unchecked(ext, &q, &k, &v, g.as_ref(), s0.as_ref())) {
        Ok(r) => Some(r),
        Err(e) => panic!("{e}"),
    }
}

/// How many times the chunked linear-attention kernel ran in this process (tests check that dispatch
/// reached it).
pub fn chunk_linear_calls() -> Result<i64, CudaKernelError> {
    let ext = extension()?;
    Ok(unsafe { (ext.chunk_linear_calls)() })
}

/// How many times the selective-scan kernel ran in this process (tests check that dispatch reached it).
pub fn selective_scan_calls() -> Result<i64, CudaKernelError> {
    let ext = extension()?;
    Ok(unsafe { (ext.selective_scan_calls)() })
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

    fn meta(device: Device, kind: Kind, size: &[i64]) -> Meta {
        Meta { device, kind, size: size.to_vec(), contiguous: true }
    }

    fn arg_of(e: CudaKernelError) -> (&'static str, String) {
        match e {
            CudaKernelError::BadArgument { arg, .. } => (arg, e.to_string()),
            other => panic!("expected a bad-argument error, got {other}"),
        }
    }

    #[test]
    fn validation_names_the_argument_and_the_expected_shape() {
        let gpu = Device::Cuda(0);
        let x = meta(gpu, Kind::BFloat16, &[2, 9, 5]);
        let w = meta(gpu, Kind::BFloat16, &[5, 4]);
        let b = meta(gpu, Kind::BFloat16, &[5]);
        assert_eq!(check_short_conv(&x, &w, Some(&b)), Ok(()));
        assert_eq!(check_short_conv(&x, &w, None), Ok(()));

        let cases: Vec<(Meta, Meta, Option<Meta>, &str, &str)> = vec![
            (meta(gpu, Kind::BFloat16, &[9, 5]), w.clone(), None, "x", "[B, T, C]"),
            (meta(Device::Cpu, Kind::BFloat16, &[2, 9, 5]), w.clone(), None, "x", "CUDA"),
            (meta(gpu, Kind::Double, &[2, 9, 5]), w.clone(), None, "x", "Float or BFloat16"),
            (Meta { contiguous: false, ..x.clone() }, w.clone(), None, "x", "contiguous"),
            (meta(gpu, Kind::Float, &[2, 0, 5]), w.clone(), None, "x", ">= 1"),
            (meta(gpu, Kind::Float, &[70000, 1, 5]), w.clone(), None, "x", "B <= 65535"),
            (x.clone(), meta(gpu, Kind::BFloat16, &[6, 4]), None, "w", "[C, k] = [5, 1..=4]"),
            (x.clone(), meta(gpu, Kind::BFloat16, &[5, 5]), None, "w", "[C, k] = [5, 1..=4]"),
            (x.clone(), meta(gpu, Kind::BFloat16, &[5]), None, "w", "[C, k]"),
            (x.clone(), meta(Device::Cpu, Kind::BFloat16, &[5, 4]), None, "w", "device"),
            (x.clone(), meta(gpu, Kind::Float, &[5, 4]), None, "w", "dtype BFloat16"),
            (x.clone(), w.clone(), Some(meta(gpu, Kind::BFloat16, &[4])), "bias", "[C] = [5]"),
            (x.clone(), w.clone(), Some(meta(Device::Cuda(1), Kind::BFloat16, &[5])), "bias", "device"),
            (x.clone(), w.clone(), Some(meta(gpu, Kind::Float, &[5])), "bias", "dtype"),
        ];
        for (x, w, b, want_arg, want_text) in cases {
            let (arg, text) = arg_of(check_short_conv(&x, &w, b.as_ref()).unwrap_err());
            assert_eq!(arg, want_arg, "{text}");
            assert!(text.contains(want_text), "`{text}` should mention `{want_text}`");
            assert!(text.starts_with("short_conv: argument"), "{text}");
        }
    }

    #[test]
    fn selective_scan_validation_names_the_argument_and_the_expected_shape() {
        let gpu = Device::Cuda(0);
        let k = Kind::BFloat16;
        let x = meta(gpu, k, &[2, 9, 5]);
        let a = meta(gpu, k, &[5, 16]);
        let bc = meta(gpu, k, &[2, 9, 16]);
        let d = meta(gpu, k, &[5]);
        let h0 = meta(gpu, k, &[2, 5, 16]);
        let ok = |x: &Meta, dt: &Meta, a: &Meta, b: &Meta, c: &Meta, d: Option<&Meta>, h: Option<&Meta>| {
            check_selective_scan(x, dt, a, b, c, d, h)
        };
        assert_eq!(ok(&x, &x, &a, &bc, &bc, Some(&d), Some(&h0)), Ok(()));
        assert_eq!(ok(&x, &x, &a, &bc, &bc, None, None), Ok(()));
        type Args = (Meta, Meta, Meta, Meta, Meta, Option<Meta>, Option<Meta>);
        let base: Args = (x.clone(), x.clone(), a.clone(), bc.clone(), bc.clone(), Some(d.clone()), Some(h0.clone()));
        let with = |f: &dyn Fn(&mut Args)| {
            let mut v = base.clone();
            f(&mut v);
            v
        };
        let cases: Vec<(Args, &str, &str)> = vec![
            (with(&|v| v.0 = meta(gpu, k, &[9, 5])), "x", "[B, T, D]"),
            (with(&|v| v.0 = meta(Device::Cpu, k, &[2, 9, 5])), "x", "CUDA"),
            (with(&|v| v.0 = meta(gpu, Kind::Half, &[2, 9, 5])), "x", "Float or BFloat16"),
            (with(&|v| v.0.contiguous = false), "x", "contiguous"),
            (with(&|v| v.0 = meta(gpu, k, &[2, 0, 5])), "x", ">= 1"),
            (with(&|v| v.1 = meta(gpu, k, &[2, 9, 4])), "dt", "[B, T, D] = [2, 9, 5]"),
            (with(&|v| v.1 = meta(gpu, Kind::Float, &[2, 9, 5])), "dt", "dtype BFloat16"),
            (with(&|v| v.2 = meta(gpu, k, &[5, 65])), "A", "[D, N] = [5, 1..=64]"),
            (with(&|v| v.2 = meta(gpu, k, &[4, 16])), "A", "[D, N] = [5, 1..=64]"),
            (with(&|v| v.2 = meta(Device::Cpu, k, &[5, 16])), "A", "device"),
            (with(&|v| v.3 = meta(gpu, k, &[2, 9, 15])), "B", "[B, T, N] = [2, 9, 16]"),
            (with(&|v| v.3.contiguous = false), "B", "contiguous"),
            (with(&|v| v.4 = meta(gpu, k, &[2, 8, 16])), "C", "[B, T, N] = [2, 9, 16]"),
            (with(&|v| v.5 = Some(meta(gpu, k, &[6]))), "D", "[D] = [5]"),
            (with(&|v| v.6 = Some(meta(gpu, k, &[2, 16, 5]))), "h0", "[B, D, N] = [2, 5, 16]"),
            (with(&|v| v.6 = Some(meta(gpu, Kind::Float, &[2, 5, 16]))), "h0", "dtype"),
        ];
        for (v, want_arg, want_text) in cases {
            let e = check_selective_scan(&v.0, &v.1, &v.2, &v.3, &v.4, v.5.as_ref(), v.6.as_ref()).unwrap_err();
            let (arg, text) = arg_of(e);
            assert_eq!(arg, want_arg, "{text}");
            assert!(text.contains(want_text), "`{text}` should mention `{want_text}`");
            assert!(text.starts_with("selective_scan: argument"), "{text}");
        }
    }

    #[test]
    fn chunk_linear_validation_names_the_argument_and_the_expected_shape() {
        let gpu = Device::Cuda(0);
        let kd = Kind::BFloat16;
        let q = meta(gpu, kd, &[2, 3, 9, 5]);
        let v = meta(gpu, kd, &[2, 3, 9, 7]);
        let g = meta(gpu, kd, &[2, 3, 9]);
        let s0 = meta(gpu, kd, &[2, 3, 5, 7]);
        assert_eq!(check_chunk_linear(&q, &q, &v, Some(&g), Some(&s0)), Ok(()));
        assert_eq!(check_chunk_linear(&q, &q, &v, None, None), Ok(()));
        type Args = (Meta, Meta, Meta, Option<Meta>, Option<Meta>);
        let base: Args = (q.clone(), q.clone(), v.clone(), Some(g.clone()), Some(s0.clone()));
        let with = |f: &dyn Fn(&mut Args)| {
            let mut a = base.clone();
            f(&mut a);
            a
        };
        let cases: Vec<(Args, &str, &str)> = vec![
            (with(&|a| a.0 = meta(gpu, kd, &[2, 9, 5])), "q", "[B, H, T, Dk]"),
            (with(&|a| a.0 = meta(Device::Cpu, kd, &[2, 3, 9, 5])), "q", "CUDA"),
            (with(&|a| a.0 = meta(gpu, Kind::Half, &[2, 3, 9, 5])), "q", "Float or BFloat16"),
            (with(&|a| a.0.contiguous = false), "q", "contiguous"),
            (with(&|a| a.0 = meta(gpu, kd, &[2, 3, 0, 5])), "q", "T >= 1"),
            (with(&|a| a.0 = meta(gpu, kd, &[2, 3, 9, 129])), "q", "1 <= Dk <= 128"),
            (with(&|a| a.0 = meta(gpu, kd, &[300, 300, 9, 5])), "q", "B * H <= 65535"),
            (with(&|a| a.1 = meta(gpu, kd, &[2, 3, 9, 4])), "k", "[B, H, T, Dk] = [2, 3, 9, 5]"),
            (with(&|a| a.1 = meta(gpu, Kind::Float, &[2, 3, 9, 5])), "k", "dtype BFloat16 (that of q)"),
            (with(&|a| a.1.contiguous = false), "k", "contiguous"),
            (with(&|a| a.2 = meta(gpu, kd, &[2, 3, 8, 7])), "v", "[B, H, T, Dv] = [2, 3, 9, 1..=128]"),
            (with(&|a| a.2 = meta(gpu, kd, &[2, 3, 9, 200])), "v", "[B, H, T, Dv] = [2, 3, 9, 1..=128]"),
            (with(&|a| a.2 = meta(Device::Cuda(1), kd, &[2, 3, 9, 7])), "v", "device"),
            (with(&|a| a.3 = Some(meta(gpu, kd, &[2, 3, 9, 5]))), "g", "[B, H, T] = [2, 3, 9]"),
            (with(&|a| a.3 = Some(meta(gpu, Kind::Float, &[2, 3, 9]))), "g", "dtype"),
            (with(&|a| a.4 = Some(meta(gpu, kd, &[2, 3, 7, 5]))), "s0", "[B, H, Dk, Dv] = [2, 3, 5, 7]"),
        ];
        for (a, want_arg, want_text) in cases {
            let e = check_chunk_linear(&a.0, &a.1, &a.2, a.3.as_ref(), a.4.as_ref()).unwrap_err();
            let (arg, text) = arg_of(e);
            assert_eq!(arg, want_arg, "{text}");
            assert!(text.contains(want_text), "`{text}` should mention `{want_text}`");
            assert!(text.starts_with("chunk_linear: argument"), "{text}");
        }
    }

    #[test]
    fn chunk_linear_gate_values() {
        assert!(!parse_chunk_linear_gate(None));
        assert!(!parse_chunk_linear_gate(Some("")));
        assert!(!parse_chunk_linear_gate(Some("0")));
        assert!(parse_chunk_linear_gate(Some("1")));
        assert!(parse_chunk_linear_gate(Some(" 1\n")));
    }

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
