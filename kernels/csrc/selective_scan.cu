// Mamba's selective scan: kernels and launchers (selective_scan.h: math, shapes, work split;
// selective_scan.cuh: the per-thread work).
//
// Instantiated for float and bfloat16 and three (lanes per channel, states per lane) shapes: (4, 1) for
// N <= 4, (4, 4) for N <= 16, (16, 4) for N <= 64. For N <= 16 the forward pass is two-pass and the
// backward pass segmented (selective_scan_twopass.cuh) when the glue gives their workspaces.
#include "selective_scan.cuh"
#include "selective_scan_twopass.cuh"

namespace wb {
namespace selective_scan {
namespace {

// What threads share, on the GPU.
struct DeviceCtx {
    __device__ __forceinline__ float shfl_xor(float v, int off) { return __shfl_xor_sync(0xffffffffu, v, off); }
    __device__ __forceinline__ void sync() { __syncthreads(); }
};

// Blocks per multiprocessor the register budget is set for: a forward thread with one state fits in 64
// registers (4 blocks, 32 warps); four states, or the backward pass, need up to 128 (2 blocks).
template <typename T, int G, int NPL>
__global__ void __launch_bounds__(kThreads, NPL == 1 ? 4 : 2) forward_kernel(Params p) {
    __shared__ __align__(16) T stage[FwdStage<G, NPL, kThreads>::total];
    DeviceCtx ctx;
    forward_thread<T, G, NPL, kThreads>(p, ctx, stage, threadIdx.x, blockIdx.x, blockIdx.y);
}

// SEG: grid (tiles, B, nchunks), one chunk per block (the segmented backward, selective_scan.h). VEC: B and
// C as one vector load per lane and step (states_vec).
template <typename T, int G, int NPL, bool SEG = false, bool VEC = false>
__global__ void __launch_bounds__(kThreads, 2) backward_kernel(Params p) {
    __shared__ float smem[BwdSmem<G, NPL, kThreads>::total];
    DeviceCtx ctx;
    backward_thread<T, G, NPL, kThreads, SEG, VEC>(p, ctx, smem, threadIdx.x, blockIdx.x, blockIdx.y, blockIdx.z);
}

// The backward kernel for shape (G, NPL), with VEC loads where states_vec allows.
template <typename T, int G, int NPL, bool SEG>
void launch_backward(const Params& p, dim3 grid, cudaStream_t s) {
    if (states_vec(p, NPL)) {
        backward_kernel<T, G, NPL, SEG, NPL == 4><<<grid, kThreads, 0, s>>>(p);
    } else {
        backward_kernel<T, G, NPL, SEG, false><<<grid, kThreads, 0, s>>>(p);
    }
}

// The channel-per-thread passes of selective_scan_twopass.cuh, one thread per (segment, channel): the block
// stages its segment in shared memory, then each thread walks it.
template <typename T, bool VEC, Pass PASS>
__global__ void __launch_bounds__(kTwoPassThreads) segment_kernel(Params p) {
    __shared__ SegStage<T> st;
    const int64_t b = blockIdx.z, seg = blockIdx.y, d0 = int64_t(blockIdx.x) * kTwoPassThreads;
    stage_thread<T>(p, sources<T, PASS>(p), b, seg, d0, int(threadIdx.x), st);
    __syncthreads();
    walk_thread<T, VEC, PASS>(p, st, b, seg, d0, int(threadIdx.x));
}

// Grid (channel blocks, segments, batch rows); VEC where rows_vec allows.
template <typename T, Pass PASS>
void launch_segments(const Params& p, cudaStream_t s) {
    const dim3 grid(unsigned((p.D + kTwoPassThreads - 1) / kTwoPassThreads), unsigned(segments(p.T)), unsigned(p.B));
    if (rows_vec(p)) {
        segment_kernel<T, true, PASS><<<grid, kTwoPassThreads, 0, s>>>(p);
    } else {
        segment_kernel<T, false, PASS><<<grid, kTwoPassThreads, 0, s>>>(p);
    }
}

// Both combines (BWD: the segmented backward's): one thread per state of a channel and batch row.
template <bool BWD>
__global__ void __launch_bounds__(256) combine_kernel(Params p) {
    const int64_t idx = int64_t(blockIdx.x) * 256 + threadIdx.x;
    const int64_t n = idx % p.N, rest = idx / p.N, d = rest % p.D, b = rest / p.D;
    if (b >= p.B) return;
    if (BWD) {
        bwd_combine_thread(p, b, d, n);
    } else {
        combine_thread(p, b, d, n);
    }
}
unsigned combine_blocks(const Params& p) { return unsigned((p.B * p.D * p.N + 255) / 256); }

// The two-pass forward: local, combine, output.
template <typename T>
void launch_two_pass(const Params& p, cudaStream_t s) {
    launch_segments<T, Pass::Local>(p, s);
    combine_kernel<false><<<combine_blocks(p), 256, 0, s>>>(p);
    launch_segments<T, Pass::Output>(p, s);
}

// The segmented backward: local reverse scans, the combine, then the chunks' blocks.
template <typename T>
void launch_segmented_backward(const Params& p, cudaStream_t s) {
    launch_segments<T, Pass::BwdLocal>(p, s);
    combine_kernel<true><<<combine_blocks(p), 256, 0, s>>>(p);
    const dim3 chunks(unsigned(p.tiles), unsigned(p.B), unsigned(p.nchunks));
    if (pick_shape(p.N).NPL == 1) {
        launch_backward<T, 4, 1, true>(p, chunks, s);
    } else {
        launch_backward<T, 4, 4, true>(p, chunks, s);
    }
}

bool two_pass(const Params& p) {
    return p.N <= kTwoPassStates && p.seg_h != nullptr && p.seg_dt != nullptr && p.ckpt != nullptr &&
           segments(p.T) <= 65535;
}

template <bool BACKWARD, typename T>
void launch(const Params& p, cudaStream_t s) {
    if (!BACKWARD && two_pass(p)) {
        launch_two_pass<T>(p, s);
        return;
    }
    if (BACKWARD && segmentable(p.N, p.nchunks) && p.seg_g != nullptr && p.seg_dt != nullptr) {
        launch_segmented_backward<T>(p, s);
        return;
    }
    const dim3 grid(unsigned(p.tiles), unsigned(p.B));
    const Shape sh = pick_shape(p.N);
    if (sh.NPL == 1) {
        BACKWARD ? launch_backward<T, 4, 1, false>(p, grid, s) : forward_kernel<T, 4, 1><<<grid, kThreads, 0, s>>>(p);
    } else if (sh.G == 4) {
        BACKWARD ? launch_backward<T, 4, 4, false>(p, grid, s) : forward_kernel<T, 4, 4><<<grid, kThreads, 0, s>>>(p);
    } else {
        BACKWARD ? launch_backward<T, 16, 4, false>(p, grid, s) : forward_kernel<T, 16, 4><<<grid, kThreads, 0, s>>>(p);
    }
}

const char* check(const Params& p) {
    if (p.N < 1 || p.N > kMaxState) return "selective_scan: N must be in 1..=64";
    if (p.B > 65535 || p.tiles > 2147483647) return "selective_scan: B or D too large for one launch";
    if (p.nchunks != nchunks(p.T) || p.tiles != tiles(p.D, p.N, kThreads)) return "selective_scan: bad plan";
    const cudaError_t e = cudaGetLastError();  // an earlier asynchronous error would be misattributed
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

template <bool BACKWARD>
const char* run(const Params& p, DType dt, cudaStream_t stream) {
    if (const char* err = check(p)) return err;
    if (dt == DType::F32) {
        launch<BACKWARD, float>(p, stream);
    } else {
        launch<BACKWARD, __nv_bfloat16>(p, stream);
    }
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace

const char* forward(const Params& p, DType dt, cudaStream_t stream) { return run<false>(p, dt, stream); }
const char* backward(const Params& p, DType dt, cudaStream_t stream) { return run<true>(p, dt, stream); }

}  // namespace selective_scan
}  // namespace wb
