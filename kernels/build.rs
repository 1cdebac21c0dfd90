//! Build script of the `kernels` crate.
//!
//! 1. libtorch's folder as an rpath, like every crate that links libtorch (build-support/link_libtorch.rs).
//! 2. With the `cuda` feature (or `WORKBENCH_CUDA=1`): compiles every `csrc/*.cu` and `csrc/*.cpp` with the
//!    pinned nvcc from `.deps/py` (scripts/setup-cuda.sh) for sm_90 into `libworkbench_kernels.so`, and
//!    every `csrc/tests/*.cu` into a host program (the kernels' CPU emulation tests), and every
//!    `csrc/tools/*.cu` into a GPU program (diagnostics the GPU bundle carries: compiled here so that a source
//!    that no longer compiles fails the build; never run here). Objects are cached in
//!    OUT_DIR by a hash of their source, the csrc headers and the flags, so only what changed recompiles.
//!    The library and the tools are copied next to the binaries (target/<profile>/), where `cuda_ext.rs`
//!    looks for the library at run time; it is loaded with dlopen, never linked, so every binary still runs without a GPU.
//!
//! Without the feature nothing CUDA is compiled and no CUDA compiler is needed.

mod link_libtorch {
    include!("../build-support/link_libtorch.rs");
    pub fn run() {
        main()
    }
}

fn main() {
    link_libtorch::run();
    println!("cargo::rustc-check-cfg=cfg(workbench_cuda)");
    println!("cargo:rerun-if-env-changed=WORKBENCH_CUDA");
    let enabled =
        std::env::var_os("CARGO_FEATURE_CUDA").is_some() || std::env::var("WORKBENCH_CUDA").is_ok_and(|v| v == "1");
    if enabled {
        cuda::build();
    }
}

mod cuda {
    use std::env;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};

    pub const LIBRARY: &str = "libworkbench_kernels.so";
    /// The GPU target: the H200 is Hopper, compute capability 9.0 (no sm_90a: nothing here needs wgmma).
    const GENCODE: &str = "-gencode=arch=compute_90,code=sm_90";

    struct Toolchain {
        nvcc: PathBuf,
        cuda_home: PathBuf,
        torch: PathBuf,
        csrc: PathBuf,
        out: PathBuf,
    }

    pub fn build() {
        let tc = toolchain();
        println!("cargo:rerun-if-changed={}", tc.csrc.display());
        let headers = header_digest(&tc.csrc);

        // The library: every csrc/*.cu and csrc/*.cpp.
        let sources = list(&tc.csrc, &["cu", "cpp"]);
        assert!(!sources.is_empty(), "kernels/csrc has no .cu or .cpp sources");
        let obj_dir = tc.out.join("obj");
        fs::create_dir_all(&obj_dir).expect("create OUT_DIR/obj");
        let log_dir = tc.out.join("logs");
        fs::create_dir_all(&log_dir).expect("create OUT_DIR/logs");
        let mut jobs = Vec::new();
        let mut objects = Vec::new();
        for src in &sources {
            let args = compile_args(&tc, src);
            let stem = file_name(src);
            let key = digest(&[&fs::read(src).expect("read source"), &headers, args.join("\u{1}").as_bytes()]);
            let obj = obj_dir.join(format!("{stem}-{key:016x}.o"));
            remove_stale(&obj_dir, &format!("{stem}-"), &obj);
            if !obj.exists() {
                let tmp = obj.with_extension("o.tmp");
                let mut cmd = Command::new(&tc.nvcc);
                cmd.args(&args).arg("-c").arg(src).arg("-o").arg(&tmp);
                jobs.push(Job { cmd, tmp, dest: obj.clone(), log: log_dir.join(format!("{stem}.log")) });
            }
            objects.push(obj);
        }

        // Host emulation tests: csrc/tests/*.cu, each compiled and linked into a program.
        let test_dir = tc.csrc.join("tests");
        let mut host_tests = Vec::new();
        let bin_dir = tc.out.join("host-tests");
        fs::create_dir_all(&bin_dir).expect("create OUT_DIR/host-tests");
        // The tests' own headers (tests/*.h) key their programs too.
        let test_headers = header_digest(&test_dir);
        let program = |src: &Path, args: &[String], key_parts: &[&[u8]], jobs: &mut Vec<Job>| {
            let stem = file_name(src);
            let source = fs::read(src).expect("read program source");
            let joined = args.join("\u{1}");
            let mut parts: Vec<&[u8]> = vec![&source, &headers, joined.as_bytes()];
            parts.extend_from_slice(key_parts);
            let exe = bin_dir.join(format!("{stem}-{:016x}", digest(&parts)));
            remove_stale(&bin_dir, &format!("{stem}-"), &exe);
            if !exe.exists() {
                let tmp = exe.with_extension("tmp");
                let mut cmd = Command::new(&tc.nvcc);
                cmd.args(args).arg(src).arg("-o").arg(&tmp);
                jobs.push(Job { cmd, tmp, dest: exe.clone(), log: log_dir.join(format!("{stem}.log")) });
            }
            (stem, exe)
        };
        for src in list(&test_dir, &["cu"]) {
            host_tests.push(program(&src, &host_test_args(&tc), &[&test_headers], &mut jobs).1);
        }
        // GPU tools: csrc/tools/*.cu, each a program for the GPU machine (scripts/gpu-bundle.sh).
        let mut tool_args = host_test_args(&tc);
        tool_args[1] = "-O3".into();
        // The tools' own headers (tools/*.h) key their programs too.
        let tool_headers = header_digest(&tc.csrc.join("tools"));
        let tools: Vec<(String, PathBuf)> = list(&tc.csrc.join("tools"), &["cu"])
            .iter()
            .map(|src| program(src, &tool_args, &[&tool_headers], &mut jobs))
            .collect();
        run_jobs(jobs);

        let lib = tc.out.join(LIBRARY);
        link(&tc, &objects, &lib);
        install_next_to_binaries(&tc.out, &lib, LIBRARY);
        for (stem, exe) in &tools {
            install_next_to_binaries(&tc.out, exe, &stem.trim_end_matches(".cu").replace('_', "-"));
        }

        println!("cargo:rustc-cfg=workbench_cuda");
        println!("cargo:rustc-env=WORKBENCH_KERNELS_SO={}", lib.display());
        let joined: Vec<String> = host_tests.iter().map(|p| p.display().to_string()).collect();
        println!("cargo:rustc-env=WORKBENCH_CUDA_HOST_TESTS={}", joined.join(";"));
    }

    fn toolchain() -> Toolchain {
        for var in ["LIBTORCH", "WORKBENCH_NVCC", "WORKBENCH_CUDA_HOME"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
        let torch = env::var_os("LIBTORCH").map(PathBuf::from).unwrap_or_else(|| manifest.join("../.deps/py/torch"));
        // The pip CUDA wheels sit beside torch in the same site-packages folder (.deps/py/nvidia/cu13).
        let cuda_home = env::var_os("WORKBENCH_CUDA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| torch.parent().unwrap_or(Path::new(".")).join("nvidia/cu13"));
        let nvcc = env::var_os("WORKBENCH_NVCC").map(PathBuf::from).unwrap_or_else(|| cuda_home.join("bin/nvcc"));
        if !nvcc.is_file() {
            panic!(
                "the `cuda` feature needs the pinned CUDA 13.0 compiler at {}: run `make setup-cuda` \
                 (scripts/setup-cuda.sh), or set WORKBENCH_NVCC",
                nvcc.display()
            );
        }
        if !torch.join("include/ATen/ATen.h").is_file() {
            panic!("no torch headers under {} (LIBTORCH): run `make setup`", torch.display());
        }
        Toolchain {
            nvcc,
            cuda_home,
            torch,
            csrc: manifest.join("csrc"),
            out: PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")),
        }
    }

    fn include_args(tc: &Toolchain) -> Vec<String> {
        let mut a = Vec::new();
        for dir in [
            tc.csrc.clone(),
            tc.torch.join("include"),
            tc.torch.join("include/torch/csrc/api/include"),
            tc.cuda_home.join("include"),
        ] {
            a.push("-I".to_string());
            a.push(dir.display().to_string());
        }
        a
    }

    fn compile_args(tc: &Toolchain, src: &Path) -> Vec<String> {
        let mut a: Vec<String> = [
            "-std=c++17",
            "-O3",
            "-Xcompiler",
            "-fPIC",
            // torch 2.11's libraries use the new libstdc++ ABI
            "-D_GLIBCXX_USE_CXX11_ABI=1",
            // line tables for compute-sanitizer and ncu source views; no effect on the generated code
            "-lineinfo",
        ]
        .map(String::from)
        .to_vec();
        if src.extension().is_some_and(|e| e == "cu") {
            // No --use_fast_math: it would also flush denormals and approximate every division; the kernels
            // ask for the fast exponential (__expf) where its 2-ulp error is harmless.
            a.extend([GENCODE, "-Xptxas", "-v"].map(String::from));
        }
        a.extend(include_args(tc));
        a
    }

    fn host_test_args(tc: &Toolchain) -> Vec<String> {
        let mut a: Vec<String> = ["-std=c++17", "-O2", GENCODE].map(String::from).to_vec();
        a.extend(include_args(tc));
        // the static CUDA runtime (the test launches nothing, but nvcc registers the translation unit)
        a.push(format!("-L{}", tc.cuda_home.join("lib").display()));
        a
    }

    struct Job {
        cmd: Command,
        tmp: PathBuf,
        dest: PathBuf,
        log: PathBuf,
    }

    /// Runs the compiler jobs, NUM_JOBS at a time; panics with the compiler's output on failure.
    fn run_jobs(jobs: Vec<Job>) {
        let parallel = env::var("NUM_JOBS").ok().and_then(|n| n.parse::<usize>().ok()).unwrap_or(2).max(1);
        let mut pending = jobs.into_iter();
        let mut running: Vec<(Job, Child)> = Vec::new();
        loop {
            while running.len() < parallel {
                let Some(mut job) = pending.next() else { break };
                let child = job
                    .cmd
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", job.cmd.get_program()));
                running.push((job, child));
            }
            if running.is_empty() {
                break;
            }
            let (job, child) = running.remove(0);
            let output = child.wait_with_output().expect("wait for nvcc");
            finish(job, output);
        }
    }

    fn finish(job: Job, output: Output) {
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        let _ = fs::write(&job.log, &text);
        if !output.status.success() {
            let _ = fs::remove_file(&job.tmp);
            panic!("CUDA compilation failed ({:?}):\n{text}", job.cmd);
        }
        for line in spill_warnings(&text) {
            println!("cargo:warning={line}");
        }
        fs::rename(&job.tmp, &job.dest).expect("move compiled object into place");
    }

    /// ptxas reports of register spills (slow local memory), as one line per kernel.
    fn spill_warnings(ptxas: &str) -> Vec<String> {
        let mut current = "";
        let mut out = Vec::new();
        for line in ptxas.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                current = rest.split('\'').next().unwrap_or("");
            }
            if line.contains("bytes spill stores") && !line.contains(" 0 bytes spill stores") {
                out.push(format!("register spills in {current}: {}", line.trim()));
            }
        }
        out
    }

    /// Links the shared library when its objects changed. It depends on libtorch_cuda (--no-as-needed: loading
    /// it also loads torch's CUDA backend) and on the shared CUDA runtime that torch itself uses.
    fn link(tc: &Toolchain, objects: &[PathBuf], lib: &Path) {
        let torch_lib = tc.torch.join("lib");
        let cuda_lib = tc.cuda_home.join("lib");
        let mut args: Vec<String> =
            vec!["-shared".into(), "-o".into(), lib.with_extension("so.tmp").display().to_string()];
        args.extend(objects.iter().map(|o| o.display().to_string()));
        args.extend([
            format!("-L{}", torch_lib.display()),
            format!("-L{}", cuda_lib.display()),
            "-Wl,--no-as-needed".into(),
            "-ltorch_cuda".into(),
            "-lc10_cuda".into(),
            "-ltorch_cpu".into(),
            "-lc10".into(),
            "-l:libcudart.so.13".into(),
            "-Wl,--as-needed".into(),
            // found here without LD_LIBRARY_PATH; on the GPU machine LD_LIBRARY_PATH (searched first) wins
            format!("-Wl,-rpath,{}:{}", torch_lib.display(), cuda_lib.display()),
        ]);
        let key = format!("{:016x}", digest(&[args.join("\u{1}").as_bytes()]));
        let key_file = lib.with_extension("so.key");
        if lib.exists() && fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
            return;
        }
        let cxx = env::var("CXX").unwrap_or_else(|_| "c++".into());
        let output = Command::new(&cxx).args(&args).output().unwrap_or_else(|e| panic!("cannot run {cxx}: {e}"));
        if !output.status.success() {
            panic!("linking {LIBRARY} failed ({cxx} {}):\n{}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        }
        fs::rename(lib.with_extension("so.tmp"), lib).expect("move library into place");
        fs::write(key_file, key).expect("write link key");
    }

    /// Copies the library to target/<profile>/ (OUT_DIR is target/<profile>/build/kernels-<hash>/out), beside
    /// `workbench` and one level above the test binaries in deps/. Replaced atomically: a running binary
    /// keeps its mapping of the old file.
    /// Copies `file` to target/<profile>/`name` (the library, the GPU tools), unless it is there already.
    fn install_next_to_binaries(out: &Path, file: &Path, name: &str) {
        let Some(profile_dir) = out.ancestors().nth(3) else { return };
        if !profile_dir.join("build").is_dir() {
            return;
        }
        let dest = profile_dir.join(name);
        if fs::read(&dest).ok() == fs::read(file).ok() {
            return;
        }
        let tmp = profile_dir.join(format!(".{name}.tmp"));
        fs::copy(file, &tmp).expect("copy next to the binaries");
        fs::rename(&tmp, &dest).expect("move next to the binaries");
    }

    fn list(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
        v.retain(|p| p.is_file() && p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)));
        v.sort();
        v
    }

    fn file_name(p: &Path) -> String {
        p.file_name().and_then(|n| n.to_str()).expect("UTF-8 file name").to_string()
    }

    /// Every header in csrc, in name order: a change to any of them recompiles every source.
    fn header_digest(csrc: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for h in list(csrc, &["h", "cuh", "hpp"]) {
            all.extend_from_slice(file_name(&h).as_bytes());
            all.extend_from_slice(&fs::read(&h).expect("read header"));
        }
        digest(&[&all]).to_le_bytes().to_vec()
    }

    /// FNV-1a, 64 bits: stable across Rust versions, and plenty for a build cache key.
    fn digest(parts: &[&[u8]]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in parts {
            for &b in part.iter().chain(&[0xffu8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// Deletes earlier versions (other hashes) of one cached output.
    fn remove_stale(dir: &Path, prefix: &str, keep: &Path) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            let name = file_name(&p);
            if name.starts_with(prefix) && p != keep && !name.ends_with(".log") {
                let _ = fs::remove_file(&p);
            }
        }
    }
}
