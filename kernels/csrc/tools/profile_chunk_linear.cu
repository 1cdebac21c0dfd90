// Where the chunked linear-attention kernels spend their time, per launch and per block step: runs the
// bfloat16 forward and backward launch sequences (no decay, scalar and per-key decays) on the GPU with random inputs,
// times every launch with CUDA events and, built with WB_STEP_PROFILE, reads how many clock cycles a block
// spent between consecutive barriers (chunk_linear.cu's DeviceBlock). A diagnostic, not a test: it checks
// no values (the GPU tests and the host emulation do). kernels/build.rs compiles it (target/release/
// profile-chunk-linear), scripts/gpu-bundle.sh carries it and `gpu-run.sh BUNDLE steps` runs it:
//   profile-chunk-linear [T=2048] [Dk=128] [Dv=Dk] [B=8] [H=16]
#define WB_STEP_PROFILE
#include "../chunk_linear.cu"
#include "profile_common.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace wb::chunk_linear;

namespace prof {

// One launch's record: name, ms, blocks, resident blocks per multiprocessor, cycles per block step.
struct Record {
    std::string name;
    float ms = 0.f;
    int64_t blocks = 0;
    int per_sm = 0;
    std::vector<double> steps;
};

// A launcher for run_forward_pk & co. that forwards to chunk_linear.cu's Launch and records each launch.
struct Timed {
    Launch l;
    bool record = false;
    std::vector<Record> out;
    cudaEvent_t a, b;

    Timed(const Params& p) : l{p, 0} {
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
    }

    template <class F, class K>
    void op(const std::string& name, int64_t blocks, K kernel, int threads, int64_t smem, F&& f) {
        if (!record) {
            f();
            return;
        }
        unsigned long long zeros[kProfiledSteps] = {};
        CK(cudaMemcpyToSymbol(g_step_cycles, zeros, sizeof(zeros)));
        CK(cudaEventRecord(a));
        f();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        if (l.err != nullptr) {
            std::fprintf(stderr, "%s: %s\n", name.c_str(), l.err);
            std::exit(1);
        }
        CK(cudaGetLastError());
        Record r;
        r.name = name;
        CK(cudaEventElapsedTime(&r.ms, a, b));
        r.blocks = blocks;
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&r.per_sm, kernel, threads, size_t(smem)));
        unsigned long long cyc[kProfiledSteps];
        CK(cudaMemcpyFromSymbol(cyc, g_step_cycles, sizeof(cyc)));
        for (int s = 0; s < kProfiledSteps && cyc[s] != 0; ++s) r.steps.push_back(double(cyc[s]) / double(blocks));
        out.push_back(r);
    }

    const Params& p() const { return l.p; }
    int64_t chunk_blocks() const { return p().N * p().B * p().H; }

    void cumsum() {
        const int64_t n = p().per_key ? cumsum_key_threads(p()) : p().B * p().H * p().N;
        const int t = p().per_key ? kCumsumKeyThreads : kCumsumThreads;
        op("cumsum", (n + t - 1) / t, p().per_key ? cumsum_key_kernel : cumsum_kernel, t, 0, [&] { l.cumsum(); });
    }
    void gdot() {
        const int64_t n = p().B * p().H * p().N * p().Dk * 32;
        op("gdot", (n + 255) / 256, gdot_kernel, 256, 0, [&] { l.gdot(); });
    }
    void dg_key() {
        const int64_t n = p().B * p().H * p().N * p().Dk;
        op("dg_key", (n + 255) / 256, dg_key_kernel, 256, 0, [&] { l.dg_key(); });
    }
    void scan(const ScanArgs& a) {
        const ScanTile t = scan_tile(p().B * p().H, p().Dk, p().Dv);
        const int64_t blocks = (p().Dv + t.cols - 1) / t.cols * ((p().Dk + t.rows - 1) / t.rows) * p().B * p().H;
        const int64_t bytes = scan_smem(p().Dk, t.cols, t.rows).bytes;
        const std::string name = std::string(a.reverse ? "scan reverse" : "scan forward") + " cols " +
                                 std::to_string(t.cols) + " rows " + std::to_string(t.rows);
        if (t.cols == 64) {
            op(name, blocks, scan_kernel<64>, kThreads, bytes, [&] { l.scan(a); });
        } else {
            op(name, blocks, scan_kernel<32>, kThreads, bytes, [&] { l.scan(a); });
        }
    }
    template <typename TO>
    void mix(const MixTc& m, TO* o) {
        const int64_t bytes = mix_smem(m.D1, m.D2, m.ht).bytes;
        op("mix " + std::to_string(bytes / 1024) + " KiB", chunk_blocks(), mix_kernel<TO>, kThreads, bytes,
           [&] { l.template mix<TO>(m, o); });
    }
    void mix_pk(const MixPk& m, bf16* o) {
        const int64_t bytes = pk_smem(p(), m).bytes;
        const char* what = m.grad ? (m.mt ? "mix_pk dK" : "mix_pk dQ") : (m.mt ? "mix_pk dV" : "mix_pk O");
        op(std::string(what) + " " + std::to_string(bytes / 1024) + " KiB", chunk_blocks(), mix_pk_kernel, kThreads,
           bytes, [&] { l.mix_pk(m, o); });
    }
};

void report(const char* title, const std::vector<Record>& rs) {
    float total = 0.f;
    for (const Record& r : rs) total += r.ms;
    std::printf("\n## %s: %.3f ms in %zu launches\n", title, total, rs.size());
    for (const Record& r : rs) {
        double sum = 0.0;
        for (double s : r.steps) sum += s;
        std::printf("%-28s %8.3f ms  %7lld blocks  %d/SM  %9.0f cycles/block:", r.name.c_str(), r.ms,
                    (long long)r.blocks, r.per_sm, sum);
        for (double s : r.steps) std::printf(" %.0f", s);
        std::printf("\n");
    }
}

}  // namespace prof

using namespace prof;

int main(int argc, char** argv) {
    const int64_t T = argc > 1 ? std::atoll(argv[1]) : 2048;
    const int64_t Dk = argc > 2 ? std::atoll(argv[2]) : 128;
    const int64_t Dv = argc > 3 ? std::atoll(argv[3]) : Dk;
    const int64_t B = argc > 4 ? std::atoll(argv[4]) : 8;
    const int64_t H = argc > 5 ? std::atoll(argv[5]) : 16;
    if (T < 1 || !fits(Dk, Dv, true) || B < 1 || H < 1) {
        std::fprintf(stderr, "profile-chunk-linear: bad shape (T %lld, Dk %lld, Dv %lld, B %lld, H %lld)\n", (long long)T,
                     (long long)Dk, (long long)Dv, (long long)B, (long long)H);
        return 2;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    std::printf("# %s, %d SMs; B %lld H %lld T %lld Dk %lld Dv %lld, bfloat16\n", prop.name, prop.multiProcessorCount,
                (long long)B, (long long)H, (long long)T, (long long)Dk, (long long)Dv);
    for (int mode = 0; mode < 3; ++mode) {  // no decay, a scalar decay, per-key decays
        const int per_key = mode == 2;
        if (!per_key && !fits(Dk, Dv, false)) continue;  // Dv > 128: per-key decays only
        Params p;
        p.B = B, p.H = H, p.T = T, p.Dk = Dk, p.Dv = Dv, p.N = nchunks(T), p.per_key = per_key != 0;
        const int64_t nq = B * H * T * Dk, nv = B * H * T * Dv, ng = per_key ? nq : B * H * T;
        const int64_t ns = B * H * p.N * Dk * Dv;
        bf16 *q = alloc<bf16>(nq), *k = alloc<bf16>(nq), *v = alloc<bf16>(nv), *dout = alloc<bf16>(nv);
        float* g = alloc<float>(ng);
        fill<bf16><<<1024, 256>>>(q, nq, 1, -1.f, 1.f);
        fill<bf16><<<1024, 256>>>(k, nq, 2, -1.f, 1.f);
        fill<bf16><<<1024, 256>>>(v, nv, 3, -1.f, 1.f);
        fill<bf16><<<1024, 256>>>(dout, nv, 4, -1.f, 1.f);
        fill<float><<<1024, 256>>>(g, ng, 5, -0.1f, 0.f);
        p.q = q, p.k = k, p.v = v, p.g = mode == 0 ? nullptr : g, p.dout = dout;
        p.o = alloc<bf16>(nv);
        p.sT = alloc<float>(B * H * Dk * Dv);
        p.bcum = alloc<float>(ng);
        p.states = alloc<float>(ns);
        p.states16 = alloc<bf16>(ns);
        p.gstates16 = alloc<bf16>(ns);
        p.gstates = alloc<float>(1);
        p.dq16 = alloc<bf16>(nq), p.dk16 = alloc<bf16>(nq), p.dv16 = alloc<bf16>(nv);
        p.qdq = alloc<float>(per_key ? nq : B * H * T);
        p.kdk = alloc<float>(per_key ? nq : B * H * T);
        p.ds0 = alloc<float>(B * H * Dk * Dv);
        p.dgk = alloc<float>(nq);
        p.gdot = alloc<float>(B * H * p.N * Dk);
        p.kg16 = per_key ? alloc<bf16>(nq) : nullptr;
        p.qg16 = per_key ? alloc<bf16>(nq) : nullptr;
        p.scores16 = per_key ? alloc<bf16>(B * H * p.N * kChunk * kChunk) : nullptr;
        CK(cudaDeviceSynchronize());
        for (int backward = 0; backward < 2; ++backward) {
            Params pp = p;
            if (!backward) pp.qg16 = nullptr;  // as the torch glue: only the backward pass needs q * exp(b)
            pp.bcum_ready = backward && per_key;  // and it is given the forward pass's per-key bcum
            Timed t(pp);
            for (int rep = 0; rep < 4; ++rep) {
                t.record = rep == 3;
                if (per_key) {
                    backward ? run_backward_pk(t, pp) : run_forward_pk(t, pp);
                } else {
                    backward ? run_backward_tc(t, pp) : run_forward_tc(t, pp);
                }
                CK(cudaDeviceSynchronize());
            }
            const std::string title =
                std::string(mode == 2 ? "per-key" : mode == 1 ? "scalar" : "no decay") + (backward ? " backward" : " forward");
            report(title.c_str(), t.out);
        }
        for (void* x : {(void*)q, (void*)k, (void*)v, (void*)dout, (void*)g, p.o, (void*)p.sT, (void*)p.bcum,
                        (void*)p.states, p.states16, p.gstates16, (void*)p.gstates, p.dq16, p.dk16, p.dv16,
                        (void*)p.qdq, (void*)p.kdk, (void*)p.ds0, (void*)p.dgk, (void*)p.gdot, p.kg16, p.qg16, p.scores16})
            CK(cudaFree(x));
    }
    return 0;
}
