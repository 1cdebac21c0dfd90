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
