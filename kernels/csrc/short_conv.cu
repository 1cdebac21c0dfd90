// Short causal depthwise convolution fused with its activation: kernels and launchers (see short_conv.h for
// the math and shapes, short_conv.cuh for the per-thread work).
//
// Instantiated for float and bfloat16, K = 1..4, identity and SiLU, and two vector widths per pass (the
// widest that fits, and 1 for channel counts or addresses that do not allow it).
#include <atomic>

#include "short_conv.cuh"

namespace wb {
namespace short_conv {
namespace {

template <typename T, int K, int VEC, bool SILU>
__global__ void __launch_bounds__(kThreads, 2) forward_kernel(Params p) {
    __shared__ Pack<T, VEC> ring[kFwdStages * kThreads];  // Ring<T, VEC, kFwdStages>'s slots
    forward_thread<T, K, VEC, SILU>(p, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z, ring);
}

template <typename T, int K, int VEC, bool SILU>
__global__ void __launch_bounds__(kThreads, 2) backward_kernel(Params p) {
    __shared__ alignas(16) unsigned char smem[backward_smem_bytes<T, K, VEC>()];
    float acc[K + 1][VEC];
    backward_thread<T, K, VEC, SILU>(p, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z,
                                     smem, acc);
    __syncthreads();  // the stash reuses the other threads' ring slots
    float* stash_smem = reinterpret_cast<float*>(smem);
    stash<K, VEC>(stash_smem, threadIdx.x, threadIdx.y, acc);
    __syncthreads();
    reduce<K, VEC>(p, stash_smem, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, blockIdx.z, gridDim.y);
}

template <typename T, int K>
__global__ void __launch_bounds__(kFinishX * kFinishY) finish_kernel(Params p) {
    __shared__ float smem[(K + 1) * kFinishY * kFinishX];
    finish_stash<K>(p, smem, threadIdx.x, threadIdx.y, blockIdx.x);
    __syncthreads();
    finish_write<T, K>(p, smem, threadIdx.x, threadIdx.y, blockIdx.x);
}

template <typename T, int VEC, bool SILU>
void launch_forward(int K, const Params& p, dim3 grid, cudaStream_t s) {
    const dim3 block(kThreadsX, kThreadsY);
    switch (K) {
        case 1: forward_kernel<T, 1, VEC, SILU><<<grid, block, 0, s>>>(p); break;
        case 2: forward_kernel<T, 2, VEC, SILU><<<grid, block, 0, s>>>(p); break;
        case 3: forward_kernel<T, 3, VEC, SILU><<<grid, block, 0, s>>>(p); break;
        default: forward_kernel<T, 4, VEC, SILU><<<grid, block, 0, s>>>(p); break;
    }
}

template <typename T, int K, int VEC, bool SILU>
void launch_backward_k(const Params& p, dim3 grid, cudaStream_t s) {
    backward_kernel<T, K, VEC, SILU><<<grid, dim3(kThreadsX, kThreadsY), 0, s>>>(p);
    const unsigned fx = unsigned((p.C + kFinishX - 1) / kFinishX);
    finish_kernel<T, K><<<fx, dim3(kFinishX, kFinishY), 0, s>>>(p);
}

template <typename T, int VEC, bool SILU>
void launch_backward(int K, const Params& p, dim3 grid, cudaStream_t s) {
    switch (K) {
        case 1: launch_backward_k<T, 1, VEC, SILU>(p, grid, s); break;
        case 2: launch_backward_k<T, 2, VEC, SILU>(p, grid, s); break;
        case 3: launch_backward_k<T, 3, VEC, SILU>(p, grid, s); break;
        default: launch_backward_k<T, 4, VEC, SILU>(p, grid, s); break;
    }
}

// Runtime (dtype, vec, act) -> template instantiation; vec is either the pass's full width or 1.
template <bool BACKWARD, typename T, int FULL>
void launch_typed(int vec, bool silu, int K, const Params& p, dim3 grid, cudaStream_t s) {
    if constexpr (BACKWARD) {
        if (vec == FULL) {
            silu ? launch_backward<T, FULL, true>(K, p, grid, s) : launch_backward<T, FULL, false>(K, p, grid, s);
        } else {
            silu ? launch_backward<T, 1, true>(K, p, grid, s) : launch_backward<T, 1, false>(K, p, grid, s);
        }
    } else {
        if (vec == FULL) {
            silu ? launch_forward<T, FULL, true>(K, p, grid, s) : launch_forward<T, FULL, false>(K, p, grid, s);
        } else {
            silu ? launch_forward<T, 1, true>(K, p, grid, s) : launch_forward<T, 1, false>(K, p, grid, s);
        }
    }
}

std::atomic<int64_t> g_chunk_override{0};

int num_sms() {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 132;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 132;
    return n;
}

const char* check_launch(const Plan& plan, int K) {
    if (K < 1 || K > kMaxTaps) return "short_conv: kernel size must be in 1..=4";
    if (plan.grid_y > 65535 || plan.grid_z > 65535) return "short_conv: B or T too large for one launch";
    const cudaError_t e = cudaGetLastError();  // an earlier asynchronous error would be misattributed
    if (e != cudaSuccess) return cudaGetErrorString(e);
    return nullptr;
}

}  // namespace

void set_chunk_override(int64_t chunk) { g_chunk_override.store(chunk > 0 ? chunk : 0); }

Plan forward_plan(DType dt, int64_t B, int64_t T, int64_t C, bool aligned16) {
    return make_plan(B, T, C, pick_vec(dt, C, aligned16, kFwdVecBytes), num_sms(), g_chunk_override.load(),
                     kFwdMinChunk);
}

Plan backward_plan(DType dt, int64_t B, int64_t T, int64_t C, bool aligned16) {
    return make_plan(B, T, C, pick_vec(dt, C, aligned16, kBwdVecBytes), num_sms(), g_chunk_override.load(),
                     kBwdMinChunk);
}

const char* forward(const Params& p, const Plan& plan, DType dt, int K, bool silu, cudaStream_t stream) {
    if (const char* err = check_launch(plan, K)) return err;
    const dim3 grid(unsigned(plan.grid_x), unsigned(plan.grid_y), unsigned(plan.grid_z));
    if (dt == DType::F32) {
        launch_typed<false, float, kFwdVecBytes / 4>(plan.vec, silu, K, p, grid, stream);
    } else {
        launch_typed<false, __nv_bfloat16, kFwdVecBytes / 2>(plan.vec, silu, K, p, grid, stream);
    }
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

const char* backward(const Params& p, const Plan& plan, DType dt, int K, bool silu, cudaStream_t stream) {
    if (const char* err = check_launch(plan, K)) return err;
    if (p.partial_rows != plan.partial_rows || p.partial == nullptr || p.dw == nullptr)
        return "short_conv: backward needs the plan's partial rows and a dw output";
    const dim3 grid(unsigned(plan.grid_x), unsigned(plan.grid_y), unsigned(plan.grid_z));
    if (dt == DType::F32) {
        launch_typed<true, float, kBwdVecBytes / 4>(plan.vec, silu, K, p, grid, stream);
    } else {
        launch_typed<true, __nv_bfloat16, kBwdVecBytes / 2>(plan.vec, silu, K, p, grid, stream);
    }
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace short_conv
}  // namespace wb
