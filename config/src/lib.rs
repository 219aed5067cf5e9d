//! The one TOML file that describes a callproof deployment.
//!
//! Every service reads the same file and uses its own sections, so one file describes a
//! deployment (see `docs/configuration.md`). Loading is three steps, each refusing bad input with
//! the file, the line and the reason:
//! 1. parse with `deny_unknown_fields` everywhere, so a misspelt key is an error, not a default;
//! 2. resolve secrets (`${ENV}` references and `*_file` paths) into [`Secret`]s that never print;
//! 3. [`Config::validate`], pure checks of values and of how sections fit together.

pub mod condition;
mod error;
mod evidence;
mod processor;
mod secret;
mod sections;

pub use condition::Condition;
pub use error::{ConfigError, ConfigErrorKind};
pub use evidence::EvidenceConfig;
pub use processor::{IndexConfig, LogConfig, ProcessorConfig, StorageConfig};
pub use secret::Secret;
pub use sections::*;

use std::path::{Path, PathBuf};

impl Config {
    /// Reads, resolves and validates the deployment file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|error| ConfigError {
            file: path.to_path_buf(),
            line: None,
            kind: ConfigErrorKind::Read(error.to_string()),
        })?;
        Config::from_toml(&source, path)
    }

    /// Parses, resolves and validates `source`; `file` names it in errors.
    pub fn from_toml(source: &str, file: impl Into<PathBuf>) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(source, file, &|name| std::env::var(name).ok())
    }

    /// As [`Config::from_toml`], with `${ENV}` references looked up through `env` (tests).
    pub fn from_toml_with_env(
        source: &str,
        file: impl Into<PathBuf>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = file.into();
        let mut config: Config = toml::from_str(source).map_err(|error| ConfigError {
            file: file.clone(),
            line: error.span().map(|span| line_of_offset(source, span.start)),
            kind: ConfigErrorKind::Syntax(error.message().to_string()),
        })?;
        let locate = |key_path: &str| ConfigError::locate_key(source, key_path);
        config
            .resolve_secrets(env)
            .map_err(|(key_path, kind)| ConfigError {
                file: file.clone(),
                line: locate(&key_path),
                kind,
            })?;
        config.validate().map_err(|(key_path, kind)| ConfigError {
            file: file.clone(),
            line: locate(&key_path),
            kind,
        })?;
        Ok(config)
    }
}

fn line_of_offset(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|&byte| byte == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;
