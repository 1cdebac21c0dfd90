// Hyena's FFT long convolution: the kernels around cuFFT and their launchers (long_conv.h). No torch
// headers here; the FFTs and the autograd function live in ext_long_conv.cpp.
#include "long_conv.cuh"

namespace wb {
namespace long_conv {
namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads) forward_pack_kernel(const Params p) {
    __shared__ float tile[kTile][kTile + 1];
    forward_pack_load<T>(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
    __syncthreads();
    forward_pack_store(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) forward_unpack_kernel(const Params p) {
    __shared__ float tile[kTile][kTile + 1];
    unpack_load(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
    __syncthreads();
    forward_unpack_store<T>(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) backward_pack_kernel(const Params p) {
    __shared__ float tile_u[kTile][kTile + 1];
    __shared__ float tile_e[kTile][kTile + 1];
    __shared__ float red[kRows * kTile];
    backward_pack_load<T>(p, tile_u, tile_e, red, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
    __syncthreads();
    backward_pack_store(p, tile_u, tile_e, red, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) backward_unpack_kernel(const Params p) {
    __shared__ float tile[kTile][kTile + 1];
    unpack_load(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
    __syncthreads();
    backward_unpack_store<T>(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
}

__global__ void __launch_bounds__(kSpecThreads) forward_spectral_kernel(const Params p) {
    forward_spectral_thread(p, int64_t(blockIdx.x) * kSpecThreads + threadIdx.x);
}

__global__ void __launch_bounds__(kSpecThreads) backward_spectral_kernel(const Params p) {
    backward_spectral_thread(p, int64_t(blockIdx.x) * kSpecThreads + threadIdx.x);
}

// grid.y (channel tiles) and grid.z (batch rows) are limited to 65535.
const char* check_grid(const Params& p) {
    if (tiles(p.C) > 65535 || p.B > 65535) return "long_conv: B or C too large for one launch";
    const cudaError_t e = cudaGetLastError();  // an earlier asynchronous error would be misattributed
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

const char* launched() {
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

dim3 tile_grid(const Params& p, int64_t time_len) {
    return dim3(unsigned(tiles(time_len)), unsigned(tiles(p.C)), unsigned(p.B));
}

dim3 spec_grid(const Params& p) {
    return dim3(unsigned((p.C * bins(p.N) + kSpecThreads - 1) / kSpecThreads));
}

const dim3 kBlock(kTile, kRows);

}  // namespace

const char* forward_pack(const Params& p, DType dt, cudaStream_t s) {
    if (const char* err = check_grid(p)) return err;
    if (dt == DType::F32) {
        forward_pack_kernel<float><<<tile_grid(p, p.N), kBlock, 0, s>>>(p);
    } else {
        forward_pack_kernel<__nv_bfloat16><<<tile_grid(p, p.N), kBlock, 0, s>>>(p);
    }
    return launched();
}

const char* forward_spectral(const Params& p, cudaStream_t s) {
    if (const char* err = check_grid(p)) return err;
    forward_spectral_kernel<<<spec_grid(p), kSpecThreads, 0, s>>>(p);
    return launched();
}

const char* forward_unpack(const Params& p, DType dt, cudaStream_t s) {
    if (const char* err = check_grid(p)) return err;
    if (dt == DType::F32) {
        forward_unpack_kernel<float><<<tile_grid(p, p.T), kBlock, 0, s>>>(p);
    } else {
        forward_unpack_kernel<__nv_bfloat16><<<tile_grid(p, p.T), kBlock, 0, s>>>(p);
    }
    return launched();
}

const char* backward_pack(const Params& p, DType dt, cudaStream_t s) {
    if (const char* err = check_grid(p)) return err;
    if (dt == DType::F32) {
        backward_pack_kernel<float><<<tile_grid(p, p.N), kBlock, 0, s>>>(p);
    } else {
        backward_pack_kernel<__nv_bfloat16><<<tile_grid(p, p.N), kBlock, 0, s>>>(p);
    }
    return launched();
}

const char* backward_spectral(const Params& p, cudaStream_t s) {
    if (const char* err = check_grid(p)) return err;
    backward_spectral_kernel<<<spec_grid(p), kSpecThreads, 0, s>>>(p);
    return launched();
}

const char* backward_unpack(const Params& p, DType dt, cudaStream_t s) {
    if (const char* err = check_grid(p)) return err;
    if (dt == DType::F32) {
        backward_unpack_kernel<float><<<tile_grid(p, p.T), kBlock, 0, s>>>(p);
    } else {
        backward_unpack_kernel<__nv_bfloat16><<<tile_grid(p, p.T), kBlock, 0, s>>>(p);
    }
    return launched();
}

}  // namespace long_conv
}  // namespace wb
