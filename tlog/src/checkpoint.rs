//! C2SP `tlog-checkpoint`: the note text of a signed tree head.

use crate::hash::{Hash, from_base64, to_base64};
use crate::tile::parse_decimal;
use crate::{Error, Result};

/// A checkpoint body: origin, tree size, root hash and optional extension lines.
///
/// This is only the note text; see [`crate::note`] for the signatures around it. A
/// checkpoint must never be trusted before its note signature has been verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root_hash: Hash,
    /// Opaque, non-empty lines after the root hash (callproof records its Kafka offset here).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// Parses a checkpoint body: `origin\nsize\nbase64-root\n[extension\n]...`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: String| Error::malformed("checkpoint", reason);
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the text does not end with a newline".into()))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("the origin line is empty".into()));
        }
        let size_line = lines
            .next()
            .ok_or_else(|| bad("no tree size line".into()))?;
        let size = parse_decimal(size_line).ok_or_else(|| {
            bad(format!(
                "the tree size must be a decimal without leading zeroes, but it is {size_line:?}"
            ))
        })?;
        let root_line = lines
            .next()
            .ok_or_else(|| bad("no root hash line".into()))?;
        let root_hash = from_base64(root_line, "checkpoint root hash")?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("an extension line is empty".into()));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root_hash,
            extensions,
        })
    }

    /// Formats the checkpoint body (the note text that gets signed).
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            to_base64(&self.root_hash)
        );
        for extension in &self.extensions {
            text.push_str(extension);
            text.push('\n');
        }
        text
    }

    /// Checks the fields can be formatted into a body that [`Checkpoint::parse`] accepts
    /// (no newline inside a line, no empty line), before anything gets signed.
    pub fn validate(&self) -> Result<()> {
        let bad_line = |line: &str| line.is_empty() || line.contains('\n');
        if bad_line(&self.origin) {
            return Err(Error::malformed(
                "checkpoint",
                "the origin must be one non-empty line",
            ));
        }
        if self.extensions.iter().any(|line| bad_line(line)) {
            return Err(Error::malformed(
                "checkpoint",
                "each extension must be one non-empty line",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        let text =
            "example.com/log\n15\nrKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs=\nkafka 3:42\n";
        let checkpoint = Checkpoint::parse(text).unwrap();
        assert_eq!(checkpoint.size, 15);
        assert_eq!(checkpoint.extensions, vec!["kafka 3:42".to_owned()]);
        assert_eq!(checkpoint.to_text(), text);
    }

    #[test]
    fn refuses_malformed_bodies() {
        let root = "rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs=";
        for text in [
            String::new(),
            "example.com/log\n15\n".to_owned(),
            format!("example.com/log\n15\n{root}"),
            format!("\n15\n{root}\n"),
            format!("o\n015\n{root}\n"),
            format!("o\n+15\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n15\n{root}\n\n"),
            "o\n15\nAAAA\n".to_owned(),
        ] {
            assert!(Checkpoint::parse(&text).is_err(), "{text:?}");
        }
    }
}
