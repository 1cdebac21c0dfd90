//! Every trial's final numbers as CSV, embedded in the report as a `data:` URI link (no network).
//!
//! The columns are [`CSV_COLUMNS`]; `tokens` is `tokens_seen`, `flops` is `flops_spent`, `loss` the final eval
//! loss (empty when there is none) and `status` one of `completed`, `diverged`, `failed`. The file can be fitted
//! directly with `workbench fit` (see [`mod@crate::fit_csv`]: rows that did not complete are skipped).

use crate::result::{Status, TrialResult};

/// The header of the CSV.
pub const CSV_COLUMNS: [&str; 10] =
    ["arch", "label", "task", "params", "non_embedding_params", "flops_per_token", "tokens", "flops", "loss", "status"];

/// One row per trial, in the order given, with [`CSV_COLUMNS`] as header. Fields are quoted where needed.
pub fn results_csv(results: &[TrialResult]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(CSV_COLUMNS);
    for r in results {
        let status = match r.status {
            Status::Completed => "completed",
            Status::Diverged => "diverged",
            Status::Failed => "failed",
        };
        let _ = w.write_record([
            r.arch.clone(),
            r.label.clone(),
            r.task.clone(),
            r.params.to_string(),
            r.non_embedding_params.to_string(),
            r.flops_per_token.to_string(),
            r.tokens_seen.to_string(),
            r.flops_spent.to_string(),
            r.final_eval_loss.map(|l| l.to_string()).unwrap_or_default(),
            status.to_string(),
        ]);
    }
    // Writing to a Vec cannot fail, and every field is UTF-8.
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// `data:<mime>;charset=utf-8,<text percent-encoded>`: everything but ASCII letters, digits and `-_.~,` is
/// escaped, so the URI is also safe inside a double-quoted HTML attribute.
pub fn data_uri(mime: &str, text: &str) -> String {
    let mut out = format!("data:{mime};charset=utf-8,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded string (the inverse of the encoding in [`data_uri`]); for tests and tools.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%').then(|| s.get(i + 1..i + 3)).flatten();
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_round_trips_through_the_uri() {
        let mut a = crate::test_support::minimal("i", "t", "x");
        a.label = "x, \"big\"".into();
        a.final_eval_loss = Some(2.5);
        a.tokens_seen = 1000;
        a.flops_spent = 6e11;
        let mut b = crate::test_support::minimal("j", "t", "y");
        b.status = Status::Failed;
        let csv = results_csv(&[a, b]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "arch,label,task,params,non_embedding_params,flops_per_token,tokens,flops,loss,status");
        assert_eq!(lines[1], "x,\"x, \"\"big\"\"\",t,100000,80000,600000,1000,600000000000,2.5,completed");
        assert_eq!(lines[2], "y,y d64 x2,t,100000,80000,600000,0,0,,failed");
        let uri = data_uri("text/csv", &csv);
        assert!(!uri.contains('"') && !uri.contains('<') && !uri.contains('\n') && !uri.contains(' '));
        assert_eq!(percent_decode(uri.strip_prefix("data:text/csv;charset=utf-8,").unwrap()), csv);
    }
}
