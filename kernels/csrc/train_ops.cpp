// Training-step helpers that libtorch has and tch does not bind: libtorch's fused AdamW, the autocast
// dtype, the CUDA caching allocator's statistics, and the Kineto profiler (torch.profiler's engine). No kernels of our own here: each function calls
// the ATen/c10 implementation that PyTorch itself uses, so the GPU training path runs the same code as
// `torch.optim.AdamW(fused=True)` and `torch.autocast("cuda", torch.bfloat16)`.
//
// Same conventions as extension.cpp: tensors in as `at::Tensor*`, errors out as a malloc'd message that
// the caller frees with wb_free_string (std::free), no exception crosses into Rust. Loaded by
// kernels/src/train_ops.rs, which looks its symbols up separately from the kernels' (so the two sets of
// functions can change independently).

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "ext_common.h"

namespace {

using wb::ext::guarded;

std::vector<at::Tensor> list(at::Tensor** ts, int32_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int32_t i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

}  // namespace

// Version of this file's functions; train_ops.rs refuses a library with another.
WB_EXPORT int32_t wb_train_abi_version() { return 2; }

// One AdamW update of `n` parameters with libtorch's multi-tensor fused kernel (`at::_fused_adamw_`):
// p <- p (1 - lr wd); m, v updated; p <- p - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), with bc from
// `steps` (float32 tensors on the parameters' device, one per parameter, already incremented for this
// update, as torch.optim.AdamW does). `grads` must be the parameters' gradients (same shapes).
WB_EXPORT char* wb_train_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                                           at::Tensor** exp_avg_sqs, at::Tensor** steps, int32_t n, double lr,
                                           double beta1, double beta2, double weight_decay, double eps) {
  return guarded([&] {
    if (n == 0) return;
    auto p = list(params, n), g = list(grads, n), m = list(exp_avgs, n), v = list(exp_avg_sqs, n),
         s = list(steps, n);
    at::_fused_adamw_(p, g, m, v, /*max_exp_avg_sqs=*/{}, s, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  });
}

// Sets the dtype CUDA autocast casts to (libtorch's default is float16; we train in bfloat16).
// `kind` is a c10::ScalarType code (tch's Kind::c_int: 15 for bfloat16, 5 for float16).
WB_EXPORT char* wb_train_set_autocast_dtype(int32_t kind) {
  return guarded([&] { at::autocast::set_autocast_dtype(at::kCUDA, static_cast<at::ScalarType>(kind)); });
}

// The caching allocator's counters for `device`, in bytes: currently allocated, peak allocated since the
// last reset, and reserved (held from the driver).
WB_EXPORT char* wb_train_memory_stats(int32_t device, int64_t* allocated, int64_t* peak, int64_t* reserved) {
  return guarded([&] {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = stats.allocated_bytes[agg].current;
    *peak = stats.allocated_bytes[agg].peak;
    *reserved = stats.reserved_bytes[agg].current;
  });
}

// Starts the peak counters of `device` over (torch.cuda.reset_peak_memory_stats).
WB_EXPORT char* wb_train_reset_peak(int32_t device) {
  return guarded(
      [&] { c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device)); });
}

// Hands cached blocks back to the driver (torch.cuda.empty_cache), e.g. after an out-of-memory step.
WB_EXPORT char* wb_train_empty_cache() {
  return guarded([&] { c10::cuda::CUDACachingAllocator::emptyCache(); });
}

// Starts libtorch's Kineto profiler (what torch.profiler.profile runs) for host-side ops and CUDA kernels.
WB_EXPORT char* wb_train_profile_start() {
  return guarded([&] {
    namespace impl = torch::profiler::impl;
    const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
    const std::set<impl::ActivityType> activities{impl::ActivityType::CPU, impl::ActivityType::CUDA};
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
  });
}

// Stops the profiler and writes its Chrome trace (JSON; one event per op and per kernel) to `path`.
WB_EXPORT char* wb_train_profile_stop(const char* path) {
  return guarded([&] {
    auto result = torch::autograd::profiler::disableProfiler();
    if (!result) throw std::runtime_error("the profiler was not running");
    result->save(path);
  });
}
