//! All YAML reading goes through here (serde_yaml is archived upstream; one module makes a swap cheap).
//! Errors carry `file:line:column` and serde's description of the field and what it expected.

use crate::error::UsageError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads and deserialises a YAML file; any problem is a [`UsageError`] naming the file and position.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<(T, String), UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError::new(format!("{}: cannot read the file: {e}", path.display())))?;
    let value = parse(&text, path)?;
    Ok((value, text))
}

/// Deserialises YAML text; errors name `path:line:column`.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, UsageError> {
    serde_yaml::from_str(text).map_err(|e| {
        let msg = e.to_string();
        // serde_yaml appends " at line L column C"; we put the position in front instead.
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        match e.location() {
            Some(loc) => UsageError::new(format!("{}:{}:{}: {msg}", path.display(), loc.line(), loc.column())),
            None => UsageError::new(format!("{}: {msg}", path.display())),
        }
    })
}

/// Serialises a value as YAML (for echoing resolved settings).
pub fn to_string<T: serde::Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).unwrap_or_else(|e| format!("# could not serialise: {e}\n"))
}

/// The 1-based line of the first line at or after `from_line` whose trimmed text starts with `key:` or
/// `- key:`, for pointing semantic errors (found after parsing) at the right place.
pub fn line_of_key(text: &str, key: &str, from_line: usize) -> Option<usize> {
    let needle = format!("{key}:");
    text.lines().enumerate().skip(from_line.saturating_sub(1)).find_map(|(i, l)| {
        let t = l.trim_start().trim_start_matches("- ").trim_start();
        t.starts_with(&needle).then_some(i + 1)
    })
}

/// A check that a top-level section deserialises on its own (see [`relocate`]).
pub type SectionCheck = fn(&serde_yaml::Value) -> bool;

/// True when `v` deserialises as a `T`.
pub fn fits<T: DeserializeOwned>(v: &serde_yaml::Value) -> bool {
    serde_yaml::from_value::<T>(v.clone()).is_ok()
}

/// serde reads an internally tagged section (`kind: ...`, `strategy: ...`) whole before it knows its type,
/// so errors inside one arrive at line 1, column 1. This finds the first of `sections` that fails on its
/// own and points the error at it (at the offending key, for an unknown field).
pub fn relocate(err: UsageError, text: &str, path: &Path, sections: &[(&str, SectionCheck)]) -> UsageError {
    let prefix = format!("{}:1:1: ", path.display());
    let Some(msg) = err.0.strip_prefix(&prefix) else { return err };
    let Ok(serde_yaml::Value::Mapping(top)) = serde_yaml::from_str::<serde_yaml::Value>(text) else { return err };
    for (key, fits) in sections {
        let Some(v) = top.get(*key) else { continue };
        if fits(v) {
            continue;
        }
        let from = line_of_key(text, key, 1).unwrap_or(1);
        let field = msg.strip_prefix("unknown field `").and_then(|m| m.split('`').next());
        let line = field.and_then(|f| line_of_key(text, f, from)).unwrap_or(from);
        return UsageError::new(format!("{}:{line}: {key}: {msg}", path.display()));
    }
    err
}
