// Shared build script for the crates that link libtorch (included by their build.rs).
// It records libtorch's folder as an rpath so that `target/release/workbench` and the test binaries run
// without the user setting LD_LIBRARY_PATH. On a GPU machine LD_LIBRARY_PATH (searched first, since the
// linker writes RUNPATH) points them at that machine's own libtorch instead.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CUDA_LIBS");
    for var in ["LIBTORCH", "LIBTORCH_CUDA_LIBS"] {
        if let Ok(dir) = std::env::var(var) {
            let dir = if var == "LIBTORCH" { format!("{dir}/lib") } else { dir };
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
