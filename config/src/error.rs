use std::path::PathBuf;

/// A configuration file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {kind}", file.display(), line.map(|line| format!(":{line}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line of the offending key, when it can be found.
    pub line: Option<usize>,
    pub kind: ConfigErrorKind,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    #[error("cannot read the file: {0}")]
    Read(String),
    #[error("{0}")]
    Syntax(String),
    #[error("`{key}` refers to environment variable `{variable}`, which is not set")]
    MissingEnv { key: String, variable: String },
    #[error("`{key}`: cannot read secret file {path}: {reason}")]
    SecretFile {
        key: String,
        path: String,
        reason: String,
    },
    #[error("`{key}` {reason}")]
    Invalid { key: String, reason: String },
    /// A policy expression that cannot be used (`docs/policy.md`); the error's line and column
    /// are within the expression, the [`ConfigError`]'s line the file's.
    #[error("`{key}` {error}")]
    Rule {
        key: String,
        error: crate::RuleError,
    },
    #[error("the `[{section}]` section is required by {binary}")]
    MissingSection {
        section: String,
        binary: &'static str,
    },
}

impl ConfigError {
    /// The file line of line `line_in_value` (1-based) of the string at `key_path`: a
    /// multi-line string (`'''` or `"""`) spreads its lines over the file, and TOML drops a
    /// newline right after the opening quotes. Any other value is on its key's line.
    pub(crate) fn locate_in_value(
        source: &str,
        key_path: &str,
        line_in_value: usize,
    ) -> Option<usize> {
        let document: toml_edit::ImDocument<&str> = toml_edit::ImDocument::parse(source).ok()?;
        let mut item = document.as_item();
        for segment in key_path.split('.') {
            item = item.as_table_like()?.get(segment)?;
        }
        let span = item.as_value()?.span()?;
        let raw = source.get(span.clone())?;
        let value_line = super::line_of_offset(source, span.start);
        if !(raw.starts_with("'''") || raw.starts_with("\"\"\"")) {
            return Some(value_line);
        }
        let after_quotes = &raw[3..];
        let skipped_newline = after_quotes.starts_with('\n') || after_quotes.starts_with("\r\n");
        Some(value_line + usize::from(skipped_newline) + line_in_value.saturating_sub(1))
    }

    /// Finds the line of a dotted key path (`functions.refund.upstream`) in the source, falling back
    /// to the closest enclosing table that exists.
    pub(crate) fn locate_key(source: &str, key_path: &str) -> Option<usize> {
        let document: toml_edit::ImDocument<&str> = toml_edit::ImDocument::parse(source).ok()?;
        let mut item = document.as_item();
        let mut best_span = None;
        for segment in key_path.split('.') {
            let next = match segment.parse::<usize>() {
                Ok(index) => item
                    .as_array_of_tables()
                    .and_then(|tables| tables.get(index))
                    .map(|table| (table.span(), None))
                    .or_else(|| {
                        item.as_array()
                            .and_then(|array| array.get(index))
                            .map(|value| (value.span(), None))
                    }),
                Err(_) => item
                    .as_table_like()
                    .and_then(|table| table.get_key_value(segment))
                    .map(|(key, value)| (key.span(), Some(value))),
            };
            match next {
                Some((span, value)) => {
                    best_span = span.or(best_span);
                    match value {
                        Some(value) => item = value,
                        None => break,
                    }
                }
                None => break,
            }
        }
        best_span.map(|span| super::line_of_offset(source, span.start))
    }
}
