//! Held-out metrics beyond the loss, computed by `evaluate` over the whole evaluation set.
//!
//! - `accuracy` (every task): per example, the fraction of its labelled positions (targets other than `IGNORE`)
//!   whose argmax equals the label; then the mean over the examples that have a labelled position. This is
//!   Zoology's MQAR accuracy.
//! - `macro_accuracy` (MAD tasks): over every labelled position of the set, per class `c` (a token id), the
//!   fraction of the positions labelled `c` that are predicted `c`; then the mean over the classes that occur
//!   as a label or as a prediction at a labelled position (a class only ever predicted, never a label, scores 0).
//!   This is `torchmetrics`' `MulticlassAccuracy` with its default `average="macro"` over the epoch, the metric
//!   of the MAD reference (`mad/metrics.py`), so MAD scores here mean what they mean in the paper.

use tch::{Kind, Tensor};

/// Per-class counts for [`MacroAccuracy::value`].
#[derive(Debug, Clone)]
pub struct MacroAccuracy {
    /// Labelled positions with label `c` predicted `c`.
    hits: Vec<u64>,
    /// Labelled positions with label `c`.
    labels: Vec<u64>,
    /// Labelled positions predicted `c`.
    predicted: Vec<u64>,
}

impl MacroAccuracy {
    /// Counts for token ids `0..classes`.
    pub fn new(classes: usize) -> MacroAccuracy {
        MacroAccuracy { hits: vec![0; classes], labels: vec![0; classes], predicted: vec![0; classes] }
    }

    /// Adds labelled positions: `pred[i]` was predicted where the label is `target[i]` (ids outside the classes
    /// are ignored).
    pub fn add(&mut self, pred: &[i64], target: &[i64]) {
        let n = self.labels.len();
        let class = |v: i64| usize::try_from(v).ok().filter(|&c| c < n);
        for (&p, &t) in pred.iter().zip(target) {
            if let Some(t) = class(t) {
                self.labels[t] += 1;
                if p == t as i64 {
                    self.hits[t] += 1;
                }
            }
            if let Some(p) = class(p) {
                self.predicted[p] += 1;
            }
        }
    }

    /// Adds the positions where `mask` is set from `pred` and `target` (same shape, any device).
    pub fn add_tensors(&mut self, pred: &Tensor, target: &Tensor, mask: &Tensor) {
        let to_vec = |t: &Tensor| -> Vec<i64> {
            let flat = t.masked_select(mask).to_kind(Kind::Int64).to_device(tch::Device::Cpu);
            Vec::<i64>::try_from(&flat).expect("int64 tensor to Vec")
        };
        self.add(&to_vec(pred), &to_vec(target));
    }

    /// The macro accuracy; NaN when no position was labelled.
    pub fn value(&self) -> f64 {
        let (mut sum, mut classes) = (0.0, 0usize);
        for c in 0..self.labels.len() {
            if self.labels[c] > 0 || self.predicted[c] > 0 {
                classes += 1;
                if self.labels[c] > 0 {
                    sum += self.hits[c] as f64 / self.labels[c] as f64;
                }
            }
        }
        if classes == 0 {
            f64::NAN
        } else {
            sum / classes as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_accuracy_averages_recall_over_classes_seen() {
        let mut m = MacroAccuracy::new(5);
        assert!(m.value().is_nan());
        // Class 1: 3 labels, 2 hit; class 2: 1 label, 1 hit; class 3: predicted once, never a label (scores 0).
        m.add(&[1, 1, 3, 2], &[1, 1, 1, 2]);
        let want = (2.0 / 3.0 + 1.0 + 0.0) / 3.0;
        assert!((m.value() - want).abs() < 1e-12, "{}", m.value());
        // Per-example (micro) accuracy would be 3/4 here: the two differ when classes are unbalanced.
        let t = Tensor::from_slice(&[4i64, 0, 4, 7]);
        let mask = Tensor::from_slice(&[true, false, true, true]);
        m.add_tensors(&Tensor::from_slice(&[4i64, 0, 0, 7]), &t, &mask);
        // Class 4: 2 labels, 1 hit; class 0: predicted once; id 7 is outside the classes.
        let want = (2.0 / 3.0 + 1.0 + 0.0 + 0.5 + 0.0) / 5.0;
        assert!((m.value() - want).abs() < 1e-12, "{}", m.value());
    }
}
