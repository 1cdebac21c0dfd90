//! Making libtorch's CUDA backend visible to a tch binary.
//!
//! The linker drops `libtorch_cuda.so` from the binary (nothing references it by symbol), and without it
//! libtorch reports no GPU. [`load_torch_cuda`] loads it at run time, from the library path (on a GPU
//! machine `LD_LIBRARY_PATH` points at that machine's torch install) or the binary's rpath. On a machine
//! without CUDA it fails with the loader's reason, which callers turn into a clear error.

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

static LOADED: OnceLock<Result<(), String>> = OnceLock::new();

/// Loads `libtorch_cuda.so` once (RTLD_GLOBAL, so libtorch's CUDA hooks register); returns why it failed.
pub fn load_torch_cuda() -> Result<(), String> {
    LOADED
        .get_or_init(|| {
            let name = CString::new("libtorch_cuda.so").expect("no interior NUL");
            // SAFETY: dlopen with a valid C string; the handle is intentionally never closed.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a valid C string or NULL right after a failed dlopen.
                let err = unsafe { libc::dlerror() };
                let msg = if err.is_null() {
                    "unknown error".to_string()
                } else {
                    unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
                };
                Err(format!("cannot load libtorch_cuda.so: {msg}"))
            } else {
                Ok(())
            }
        })
        .clone()
}
