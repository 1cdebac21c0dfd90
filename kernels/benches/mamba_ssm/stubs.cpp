// Definitions for the instantiations of mamba-ssm's selective scan that scripts/mamba-ssm-objects.sh does not
// compile. Its pybind module (selective_scan.cpp) dispatches over every input dtype (float, half, bfloat16)
// and weight type (float, complex); only the bfloat16 forward (both weight types, one source file) and the
// bfloat16 real-weight backward are built, because those are what the benchmark times and each file costs
// about a minute of nvcc. These raise a clear error instead of leaving the module's symbols unresolved.
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>
#include <cuda_runtime_api.h>

#include "selective_scan.h"

template <typename input_t, typename weight_t>
void selective_scan_fwd_cuda(SSMParamsBase& params, cudaStream_t stream);
template <typename input_t, typename weight_t>
void selective_scan_bwd_cuda(SSMParamsBwd& params, cudaStream_t stream);

#define MAMBA_SSM_NOT_BUILT(KIND, PARAMS, INPUT, WEIGHT)                                              \
    template <>                                                                                      \
    void selective_scan_##KIND##_cuda<INPUT, WEIGHT>(PARAMS&, cudaStream_t) {                        \
        TORCH_CHECK(false, "mamba-ssm selective_scan_" #KIND " for " #INPUT ", " #WEIGHT " was not built " \
                           "(scripts/mamba-ssm-objects.sh builds bfloat16 with float weights only)");   \
    }

using complex_f = c10::complex<float>;
MAMBA_SSM_NOT_BUILT(fwd, SSMParamsBase, float, float)
MAMBA_SSM_NOT_BUILT(fwd, SSMParamsBase, float, complex_f)
MAMBA_SSM_NOT_BUILT(fwd, SSMParamsBase, c10::Half, float)
MAMBA_SSM_NOT_BUILT(fwd, SSMParamsBase, c10::Half, complex_f)
MAMBA_SSM_NOT_BUILT(bwd, SSMParamsBwd, float, float)
MAMBA_SSM_NOT_BUILT(bwd, SSMParamsBwd, float, complex_f)
MAMBA_SSM_NOT_BUILT(bwd, SSMParamsBwd, c10::Half, float)
MAMBA_SSM_NOT_BUILT(bwd, SSMParamsBwd, c10::Half, complex_f)
MAMBA_SSM_NOT_BUILT(bwd, SSMParamsBwd, c10::BFloat16, complex_f)
