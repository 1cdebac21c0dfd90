// Chunked linear attention with a scalar decay: kernels and launchers (chunk_linear.h: math, shapes, work
// split; chunk_linear.cuh: the float32 path's per-thread work; chunk_linear_tc.cuh: the bfloat16 path's
// tensor-core blocks). Float32 inputs take the float32 path, bfloat16 inputs the tensor-core path.
#include "chunk_linear_pk.cuh"

namespace wb {
namespace chunk_linear {
namespace {

__global__ void cumsum_kernel(Params p) { cumsum_thread(p, int64_t(blockIdx.x) * blockDim.x + threadIdx.x); }
__global__ void cumsum_key_kernel(Params p) { cumsum_key_any(p, int64_t(blockIdx.x) * blockDim.x + threadIdx.x); }
__global__ void dg_key_kernel(Params p) { dg_key_thread(p, int64_t(blockIdx.x) * blockDim.x + threadIdx.x); }
__global__ void gdot_kernel(Params p) { gdot_thread(p, int64_t(blockIdx.x) * blockDim.x + threadIdx.x); }

__global__ void pass_kernel(Params p, float* buf, const float* start, float* end, bool reverse) {
    pass_thread(p, buf, start, end, reverse, int64_t(blockIdx.x) * blockDim.x + threadIdx.x);
}

// Per-chunk kernels: grid (N, B * H), kThreads threads, dynamic shared memory.
template <typename T>
__global__ void __launch_bounds__(kThreads) scores_kernel(Params p, const T* X, const T* Y, int64_t D, float* out) {
    extern __shared__ float smem[];
    const Chunk c = chunk_of(p, blockIdx.x, blockIdx.y);
    scores_load(p, c, X, Y, D, smem, threadIdx.x);
    __syncthreads();
    scores_compute(p, c, D, out, smem, threadIdx.x);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) update_kernel(Params p, const T* X, Scale s, const T* Y, float* out) {
    extern __shared__ float smem[];
    const Chunk c = chunk_of(p, blockIdx.x, blockIdx.y);
    update_load(p, c, X, s, Y, smem, threadIdx.x);
    __syncthreads();
    update_compute(p, c, out, smem, threadIdx.x);
}

template <typename T, typename TO>
__global__ void __launch_bounds__(kThreads) rowmix_kernel(Params p, RowMix m, const T* Z, const T* R, TO* out) {
    extern __shared__ float smem[];
    const Chunk c = chunk_of(p, blockIdx.x, blockIdx.y);
    rowmix_load(p, c, m, Z, R, smem, threadIdx.x);
    __syncthreads();
    rowmix_compute(p, c, m, out, smem, threadIdx.x);
}

// The executor of chunk_linear_tc.cuh's blocks: every thread runs a `threads` step, every warp's lanes
// run a `warps` step together; a barrier after each.
// Built with WB_STEP_PROFILE (tools/profile_chunk_linear.cu, never the library), thread 0 of every block adds
// the clock cycles of each step (its start to its barrier) into g_step_cycles[step]: where a block's time goes.
#if defined(WB_STEP_PROFILE)
constexpr int kProfiledSteps = 32;
__device__ unsigned long long g_step_cycles[kProfiledSteps];
#endif
struct DeviceBlock {
#if defined(WB_STEP_PROFILE)
    int step = 0;
    long long t0 = 0;
    __device__ __forceinline__ void mark() {
#if defined(__CUDA_ARCH__)
        long long now;  // a memory clobber: clock64() alone may move past the first step's barrier
        asm volatile("mov.u64 %0, %%clock64;" : "=l"(now)::"memory");
        if (threadIdx.x == 0 && step > 0)  // steps past the last slot add into it
            atomicAdd(&g_step_cycles[min(step, kProfiledSteps) - 1], (unsigned long long)(now - t0));
        t0 = now;
        ++step;
#endif
    }
    __device__ __forceinline__ void start() {  // the clock's start, before the first step
        if (step == 0) mark();
    }
#else
    __device__ __forceinline__ void mark() {}
    __device__ __forceinline__ void start() {}
#endif
    template <class F>
    __device__ __forceinline__ void threads(F&& f) {
        start();
        f(int(threadIdx.x));
        __syncthreads();
        mark();
    }
    template <class F>
    __device__ __forceinline__ void warps(F&& f) {
        start();
        f(int(threadIdx.x) / 32);
        __syncthreads();
        mark();
    }
    // A warp step with no barrier after it (the next step's barrier orders it); inside it, lanes(w, g) runs
    // g(tid) for the warp's threads, syncwarp() orders them, and PerWarp / PerThread hold what a warp or a
    // thread keeps from one step to the next (on the GPU, its registers).
    template <class F>
    __device__ __forceinline__ void warps_free(F&& f) {
        start();
        f(int(threadIdx.x) / 32);
        mark();
    }
    template <class F>
    __device__ __forceinline__ void lanes(int, F&& f) {
        f(int(threadIdx.x));
    }
    __device__ __forceinline__ void syncwarp() { __syncwarp(); }
    template <class S>
    struct PerWarp {
        S s;
        __device__ __forceinline__ S& at(int) { return s; }
    };
    template <class S>
    using PerThread = PerWarp<S>;
};

// Tensor-core kernels: scan grid (ceil(Dv / COLS), B * H); mix grid (N, B * H).
// (minimum 2 blocks per SM: without it ptxas held the scan to 64 registers and spilled)
template <int COLS>
__global__ void __launch_bounds__(kThreads, 2) scan_kernel(Params p, ScanArgs a, int rows) {
    extern __shared__ __align__(128) unsigned char smem_tc[];
    DeviceBlock blk;
    const int64_t col_tiles = (p.Dv + COLS - 1) / COLS;
    const int64_t row0 = int64_t(blockIdx.x) / col_tiles * rows, col0 = int64_t(blockIdx.x) % col_tiles * COLS;
    scan_block<COLS>(blk, p, a, blockIdx.y, row0, rows, col0, smem_tc);
}

template <typename TO>
__global__ void __launch_bounds__(kThreads, 3) mix_kernel(Params p, MixTc m, TO* out) {
    extern __shared__ __align__(128) unsigned char smem_tc[];
    DeviceBlock blk;
    const Chunk c = chunk_of(p, blockIdx.x, blockIdx.y);
    mix_block(blk, p, c, m, out, smem_tc);
}

__global__ void __launch_bounds__(kThreads) mix_pk_kernel(Params p, MixPk m, bf16* out) {
    extern __shared__ __align__(128) unsigned char smem_tc[];
    DeviceBlock blk;
    const Chunk c = chunk_of(p, blockIdx.x, blockIdx.y);
    mix_pk_block(blk, p, c, m, out, smem_tc);
}

constexpr int kCumsumThreads = 32;  // the scalar decay's cumsum, per block
constexpr int kCumsumKeyThreads = 64;  // the per-key cumsum (8 keys a thread: 12K threads at GLA's training shape)

struct Launch {
    const Params& p;
    cudaStream_t s;
    const char* err = nullptr;

    dim3 chunks() const { return dim3(unsigned(p.N), unsigned(p.B * p.H)); }

    // Opts a kernel into more than 48 KiB of dynamic shared memory.
    template <typename K>
    bool smem(K kernel, int64_t floats) {
        return smem_bytes(kernel, floats * int64_t(sizeof(float)));
    }
    template <typename K>
    bool smem_bytes(K kernel, int64_t bytes) {
        if (err != nullptr) return false;
        const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
        if (e != cudaSuccess) err = cudaGetErrorString(e);
        return err == nullptr;
    }

    void cumsum() {
        if (p.g == nullptr || err != nullptr) return;
        const int64_t n = p.per_key ? cumsum_key_threads(p) : p.B * p.H * p.N;
        if (p.per_key) {
            cumsum_key_kernel<<<unsigned((n + kCumsumKeyThreads - 1) / kCumsumKeyThreads), kCumsumKeyThreads, 0, s>>>(p);
        } else {
            // one warp per block: a thread per (batch x head, chunk) is 4096 threads at B 8, H 16, T 2048,
            // which 256-thread blocks put on 16 of the 132 SMs (0.035 ms)
            cumsum_kernel<<<unsigned((n + kCumsumThreads - 1) / kCumsumThreads), kCumsumThreads, 0, s>>>(p);
        }
    }
    void gdot() {
        if (err != nullptr) return;
        const int64_t n = p.B * p.H * p.N * p.Dk * 32;
        gdot_kernel<<<unsigned((n + 255) / 256), 256, 0, s>>>(p);
    }
    void dg_key() {
        if (err != nullptr) return;
        const int64_t n = p.B * p.H * p.N * p.Dk;
        dg_key_kernel<<<unsigned((n + 255) / 256), 256, 0, s>>>(p);
    }
    void pass(float* buf, const float* start, float* end, bool reverse) {
        if (err != nullptr) return;
        const int64_t n = p.B * p.H * p.Dk * p.Dv;
        pass_kernel<<<unsigned((n + 255) / 256), 256, 0, s>>>(p, buf, start, end, reverse);
    }
    template <typename T>
    void scores(const void* X, const void* Y, int64_t D, float* out) {
        const int64_t f = smem_scores(D);
        if (smem(scores_kernel<T>, f))
            scores_kernel<T><<<chunks(), kThreads, f * sizeof(float), s>>>(p, static_cast<const T*>(X),
                                                                            static_cast<const T*>(Y), D, out);
    }
    template <typename T>
    void update(const void* X, Scale sc, const void* Y, float* out) {
        const int64_t f = smem_update(p.Dk, p.Dv);
        if (smem(update_kernel<T>, f))
            update_kernel<T><<<chunks(), kThreads, f * sizeof(float), s>>>(p, static_cast<const T*>(X), sc,
                                                                            static_cast<const T*>(Y), out);
    }
    template <int COLS>
    void scan_cols(const ScanArgs& a, int rows) {
        const int64_t bytes = scan_smem(p.Dk, COLS, rows).bytes;
        const dim3 grid(unsigned((p.Dv + COLS - 1) / COLS * ((p.Dk + rows - 1) / rows)), unsigned(p.B * p.H));
        if (smem_bytes(scan_kernel<COLS>, bytes)) scan_kernel<COLS><<<grid, kThreads, bytes, s>>>(p, a, rows);
    }
    void scan(const ScanArgs& a) {
        const ScanTile t = scan_tile(p.B * p.H, p.Dk, p.Dv);
        t.cols == 64 ? scan_cols<64>(a, t.rows) : scan_cols<32>(a, t.rows);
    }
    template <typename TO>
    void mix(const MixTc& m, TO* out) {
        const int64_t bytes = mix_smem(m.D1, m.D2, m.ht).bytes;
        if (smem_bytes(mix_kernel<TO>, bytes)) mix_kernel<TO><<<chunks(), kThreads, bytes, s>>>(p, m, out);
    }
    void mix_pk(const MixPk& m, bf16* out) {
        const int64_t bytes = pk_smem(p, m).bytes;
        if (smem_bytes(mix_pk_kernel, bytes)) mix_pk_kernel<<<chunks(), kThreads, bytes, s>>>(p, m, out);
    }
    template <typename T, typename TO>
    void rowmix(const RowMix& m, const void* Z, const void* R, TO* out) {
        const int64_t f = smem_rowmix(m.D1, m.D2);
        if (smem(rowmix_kernel<T, TO>, f))
            rowmix_kernel<T, TO><<<chunks(), kThreads, f * sizeof(float), s>>>(p, m, static_cast<const T*>(Z),
                                                                                static_cast<const T*>(R), out);
    }
};

const char* check(const Params& p) {
    if (!fits(p.Dk, p.Dv, p.per_key))
        return "chunk_linear: Dk and Dv must be in 1..=128 (with per-key decays Dv up to 256 where its blocks fit)";
    if (p.B < 1 || p.H < 1 || p.T < 1 || p.N != nchunks(p.T)) return "chunk_linear: bad shape or plan";
    if (p.B * p.H > 65535 || p.N > 2147483647) return "chunk_linear: B * H must be at most 65535";
    const cudaError_t e = cudaGetLastError();  // an earlier asynchronous error would be misattributed
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

template <bool BACKWARD>
const char* run(const Params& p, DType dt, cudaStream_t stream) {
    if (const char* err = check(p)) return err;
    Launch l{p, stream};
    if (p.per_key) {
        if (dt != DType::BF16 || p.g == nullptr) return "chunk_linear: per-key decays need bfloat16 q, k, v and g";
        if (p.kg16 == nullptr || p.scores16 == nullptr || (BACKWARD && p.qg16 == nullptr))
            return "chunk_linear: per-key decays need kg16, scores16 (and qg16)";
        BACKWARD ? run_backward_pk(l, p) : run_forward_pk(l, p);
    } else if (dt == DType::F32) {
        BACKWARD ? run_backward<float>(l, p) : run_forward<float>(l, p);
    } else {
        BACKWARD ? run_backward_tc(l, p) : run_forward_tc(l, p);
    }
    if (l.err != nullptr) return l.err;
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace

bool fits(int64_t Dk, int64_t Dv, bool per_key) {
    if (Dk < 1 || Dk > kMaxDim || Dv < 1) return false;
    if (Dv <= kMaxDim) return true;
    return per_key && Dv <= kMaxValueDimPerKey && pk_fits(Dk, Dv);
}

const char* forward(const Params& p, DType dt, cudaStream_t stream) { return run<false>(p, dt, stream); }
const char* backward(const Params& p, DType dt, cudaStream_t stream) { return run<true>(p, dt, stream); }

}  // namespace chunk_linear
}  // namespace wb
