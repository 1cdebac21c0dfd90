// Hyena's long convolution on tensor cores (bfloat16): the kernels and launchers of long_conv_tc.cuh's
// per-thread and per-warp code. No torch headers; ext_long_conv.cpp calls the launchers.
#include "long_conv_tc_pack.cuh"

namespace wb {
namespace long_conv {
namespace {

using bf16 = __nv_bfloat16;

__global__ void __launch_bounds__(kThreads) tc_forward_pack_kernel(const Params p) {
    __shared__ __align__(16) tc::PackTile tile;
    tc::forward_pack_load<bf16>(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
    __syncthreads();
    tc::pack_store(p, tile, p.ut, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
}

__global__ void __launch_bounds__(kThreads) tc_backward_pack_kernel(const Params p) {
    __shared__ __align__(16) tc::PackTile tile;
    tc::backward_pack_load<bf16>(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
    __syncthreads();
    tc::pack_store(p, tile, p.et, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
}

__global__ void __launch_bounds__(kThreads) tc_forward_unpack_kernel(const Params p) {
    __shared__ __align__(16) tc::ZTile tile;
    tc::unpack_load(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
    __syncthreads();
    tc::forward_unpack_store<bf16>(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
}

__global__ void __launch_bounds__(kThreads) tc_backward_unpack_kernel(const Params p) {
    __shared__ __align__(16) tc::ZTile tile;
    tc::unpack_load(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
    __syncthreads();
    tc::backward_unpack_store<bf16>(p, tile, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z);
}

// One block per (channel, group): the channel's input rows and the filter's pair table staged, then the
// warps' windows of output tiles.
template <bool ANTI>
__global__ void __launch_bounds__(tc::kConvWarps * 32) tc_conv_kernel(const Params p) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int64_t c = blockIdx.x, g = blockIdx.y, row = (g * p.C + c) * p.Tp;
    uint16_t* xs = reinterpret_cast<uint16_t*>(smem);
    uint32_t* kp = reinterpret_cast<uint32_t*>(smem + 16 * (p.Tp + tc::kGroupPad));
    const int tid = threadIdx.x, threads = tc::kConvWarps * 32;
    const uint4* src = static_cast<const uint4*>(ANTI ? p.et : p.ut) + row;
    tc::stage_rows(reinterpret_cast<uint4*>(xs), src, p.Tp, 0, tc::kGroupPad, tid, threads);
    tc::stage_pairs<ANTI>(kp, p.kf + c * p.T, p.T, p.Tp, tid, threads);
    __syncthreads();
    const int n = int(p.Tp / 16), windows = (n + tc::kP - 1) / tc::kP, warp = tid / 32;
    for (int i = 0;; ++i) {
        const int w = tc::snake_window(i, warp, tc::kConvWarps, windows);
        if (w == -2) break;
        if (w >= 0) tc::conv_window<1, ANTI>(xs, kp, static_cast<uint32_t*>(p.zt) + row * 4, n, w * tc::kP, tid % 32);
    }
}

// WARPS: tc_dk_warps (long_conv.h), 8 with two blocks per multiprocessor or 16 with one.
template <int WARPS>
__global__ void __launch_bounds__(WARPS * 32, 16 / WARPS) tc_dk_kernel(const Params p) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int64_t c = blockIdx.x, g = blockIdx.y, row = (g * p.C + c) * p.Tp;
    const int pad = tc::kGroupPad;
    uint16_t* es = reinterpret_cast<uint16_t*>(smem);
    uint16_t* us = reinterpret_cast<uint16_t*>(smem + 16 * (p.Tp + pad));
    float* dks = reinterpret_cast<float*>(smem + 16 * (p.Tp + pad) + 16 * (p.Tp + 2 * pad));
    const int tid = threadIdx.x, threads = WARPS * 32;
    tc::stage_rows(reinterpret_cast<uint4*>(es), static_cast<const uint4*>(p.et) + row, p.Tp, 0, pad, tid, threads);
    tc::stage_rows(reinterpret_cast<uint4*>(us), static_cast<const uint4*>(p.ut) + row, p.Tp, pad, pad, tid, threads);
    for (int64_t i = tid; i < p.Tp; i += threads) dks[i] = 0.0f;
    __syncthreads();
    const int n = int(p.Tp / 16), windows = (n + tc::kP - 1) / tc::kP, warp = tid / 32;
    for (int i = 0;; ++i) {
        const int w = tc::snake_window(i, warp, WARPS, windows);
        if (w == -2) break;
        if (w >= 0) tc::dk_window<1>(es, us + 8 * pad, dks, n, p.T, w * tc::kP, tid % 32);
    }
    __syncthreads();
    float* out = p.dk_part + (g * p.C + c) * p.T;
    for (int64_t i = tid; i < p.T; i += threads) out[i] = dks[i];
}

const char* launched() {
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

// An earlier asynchronous error would be misattributed to these launches; grids: channel tiles, G <= 65535.
const char* check(const Params& p) {
    if (tc::x_tiles_c(p.C) > 65535 || p.G > 65535 || p.G != tc_groups(p.B) || p.Tp != tc_padded(p.T) ||
        p.Tp > kTcMaxT)
        return "long_conv (tensor cores): bad shape for one launch";
    return launched();
}

dim3 tile_grid(const Params& p, int64_t time_len) {
    return dim3(unsigned(tc::x_tiles_t(time_len)), unsigned(tc::x_tiles_c(p.C)), unsigned(p.G));
}

const dim3 kBlock(kTile, kRows);

}  // namespace

const char* tc_forward_pack(const Params& p, cudaStream_t s) {
    if (const char* err = check(p)) return err;
    tc_forward_pack_kernel<<<tile_grid(p, p.Tp), kBlock, 0, s>>>(p);
    return launched();
}

const char* tc_backward_pack(const Params& p, cudaStream_t s) {
    if (const char* err = check(p)) return err;
    tc_backward_pack_kernel<<<tile_grid(p, p.Tp), kBlock, 0, s>>>(p);
    return launched();
}

const char* tc_forward_unpack(const Params& p, cudaStream_t s) {
    if (const char* err = check(p)) return err;
    tc_forward_unpack_kernel<<<tile_grid(p, p.T), kBlock, 0, s>>>(p);
    return launched();
}

const char* tc_backward_unpack(const Params& p, cudaStream_t s) {
    if (const char* err = check(p)) return err;
    tc_backward_unpack_kernel<<<tile_grid(p, p.T), kBlock, 0, s>>>(p);
    return launched();
}

template <bool ANTI>
const char* conv_launch(const Params& p, cudaStream_t s) {
    const int bytes = int(tc_conv_smem(p.Tp));
    if (cudaFuncSetAttribute(tc_conv_kernel<ANTI>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess)
        return launched();
    tc_conv_kernel<ANTI><<<dim3(unsigned(p.C), unsigned(p.G)), tc::kConvWarps * 32, bytes, s>>>(p);
    return launched();
}

template <int WARPS>
const char* dk_launch(const Params& p, cudaStream_t s) {
    const int bytes = int(tc_dk_smem(p.Tp));
    if (cudaFuncSetAttribute(tc_dk_kernel<WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess)
        return launched();
    tc_dk_kernel<WARPS><<<dim3(unsigned(p.C), unsigned(p.G)), WARPS * 32, bytes, s>>>(p);
    return launched();
}

const char* tc_conv(const Params& p, bool anti, cudaStream_t s) {
    if (const char* err = check(p)) return err;
    return anti ? conv_launch<true>(p, s) : conv_launch<false>(p, s);
}

const char* tc_dk(const Params& p, cudaStream_t s) {
    if (const char* err = check(p)) return err;
    return tc_dk_warps(p.Tp) == 8 ? dk_launch<8>(p, s) : dk_launch<16>(p, s);
}

}  // namespace long_conv
}  // namespace wb
