//! The gated linear RNNs with element-wise or delta-rule state updates: `hgrn` (HGRN), `rglru` (Griffin's
//! recurrent block with the RG-LRU), `deltanet` and `gated_deltanet`. One file per mixer family under `rnn/`.
//! The element-wise recurrences run on `kernels::selective_scan::linear_scan`, the delta rule on
//! `kernels::delta_rule`. (RetNet and GLA, the other gated RNNs, live with chunked linear attention.)

pub mod deltanet;
pub mod hgrn;
pub mod rglru;
