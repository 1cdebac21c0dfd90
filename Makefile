# One-command set-up: every target installs what is missing first (scripts/setup.sh), so a fresh
# machine needs only `make demo` or `make test`.
SHELL := /bin/bash
CARGO ?= cargo
WORKBENCH := target/release/workbench

.PHONY: setup setup-cuda build build-cuda check-cuda demo test test-gpu test-gpu-train bench-gpu gpu-bundle gpu-train-bundle lint fmt clean-runs

## Install what is missing: libtorch (torch 2.11.0 CPU libraries, into .deps/py), the bundled corpus
## (data/kjv.txt) and, for the browser tests, Debian's chromium.
setup:
	@bash scripts/setup.sh

## Release binary at target/release/workbench (tests use the same profile, so dependencies build once).
build: setup
	$(CARGO) build --release --workspace

## The pinned CUDA 13.0 compiler from PyPI (nvcc 13.0.88 with its nvvm, crt, cccl) into .deps/py.
setup-cuda: setup
	@bash scripts/setup-cuda.sh

## Everything with our CUDA kernels: kernels/csrc -> target/release/libworkbench_kernels.so (sm_90),
## loaded at run time for CUDA tensors. Runs anywhere; the kernels need an H100/H200.
build-cuda: setup-cuda
	$(CARGO) build --release --workspace --features kernels/cuda

## CI's CUDA check, no GPU needed: compiles every CUDA source, the GPU tests and the benchmark, and runs
## the kernels crate's CPU tests with the feature, including the host emulation of every kernel.
check-cuda: setup-cuda
	$(CARGO) build --release -p kernels --features cuda --all-targets
	$(CARGO) test --release -p kernels --features cuda --lib

## The quickstart sweep on CPU; prints where the report is.
demo: build
	$(WORKBENCH) sweep experiments/quickstart.yaml --out runs/quickstart --force --resume

## Every test (unit, integration, browser) in the release profile, and the CUDA compile check.
test: build check-cuda
	$(CARGO) test --release --workspace

## On a GPU machine with the Rust toolchain: the kernels against their float64 references.
test-gpu: build-cuda
	WORKBENCH_CHUNK_LINEAR_KERNEL=1 $(CARGO) test --release -p kernels --features cuda --test gpu -- --ignored gpu_ --test-threads=1

## On a GPU machine with the Rust toolchain: the training path (fused AdamW, bf16 autocast, prefetch, OOM).
test-gpu-train: build-cuda
	$(CARGO) test --release -p workbench --features kernels/cuda --test gpu_train -- --ignored gpu_ --test-threads=1

## On a GPU machine with the Rust toolchain: kernel timings (Markdown tables).
bench-gpu: build-cuda
	$(CARGO) bench -p kernels --features cuda --bench short_conv_gpu
	$(CARGO) bench -p kernels --features cuda --bench selective_scan_gpu
	$(CARGO) bench -p kernels --features cuda --bench long_conv_gpu
	$(CARGO) bench -p kernels --features cuda --bench chunk_linear_gpu

## For a GPU machine without Rust: the GPU tests, the benchmark, the kernel library and the workbench
## binary in .carry/gpu (git-ignored); run there with `bash scripts/gpu-run.sh .carry/gpu`.
gpu-bundle: build-cuda
	@bash scripts/gpu-bundle.sh

## For a GPU machine without Rust: the training path's tests, `bench-train`, the PyTorch comparison and the
## GPU isoFLOP study in .carry/gpu-train; run there with `bash .carry/gpu-train/gpu-train.sh .carry/gpu-train`.
gpu-train-bundle: build-cuda
	@bash scripts/gpu-train-bundle.sh

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	bash scripts/setup-cuda.sh
	$(CARGO) clippy --release -p kernels --features cuda --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-runs:
	rm -rf runs
