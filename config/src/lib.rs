//! The one TOML file that describes a callproof deployment.
//!
//! Every service may read the same file and uses its own sections, so one file can describe a
//! deployment (see `docs/configuration.md`). Loading is four steps, each refusing bad input with
//! the file, the line and the reason:
//! 1. parse with `deny_unknown_fields` everywhere, so a misspelt key is an error, not a default;
//! 2. drop the secrets of the other services ([`Service`]);
//! 3. resolve its own secrets (`${ENV}` references and `*_file` paths) into [`Secret`]s that
//!    never print;
//! 4. [`Config::validate`], pure checks of values and of how sections fit together, and the
//!    sections this service cannot run without.

mod console;
mod error;
mod evidence;
mod mcp;
pub mod policy;
mod processor;
mod secret;
mod sections;
mod service;

pub use console::ConsoleConfig;
pub use error::{ConfigError, ConfigErrorKind};
pub use evidence::EvidenceConfig;
pub use mcp::{
    McpConfig, McpProtocol, McpServerConfig, McpToolConfig, TOOL_NAME_SEPARATOR, is_mcp_server_name,
};
pub use policy::{Rule, RuleError};
pub use processor::{IndexConfig, LogConfig, ProcessorConfig, StorageConfig};
pub use secret::Secret;
pub use sections::*;
pub use service::Service;

use std::path::{Path, PathBuf};

impl Config {
    /// Reads the deployment file at `path` for `service`: parses it, drops the secrets of the
    /// other services, resolves its own, and validates.
    pub fn load(path: impl AsRef<Path>, service: Service) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|error| ConfigError {
            file: path.to_path_buf(),
            line: None,
            kind: ConfigErrorKind::Read(error.to_string()),
        })?;
        Config::from_toml(&source, path, service)
    }

    /// As [`Config::load`], from `source`; `file` names it in errors.
    pub fn from_toml(
        source: &str,
        file: impl Into<PathBuf>,
        service: Service,
    ) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(source, file, service, &|name| std::env::var(name).ok())
    }

    /// As [`Config::from_toml`], with `${ENV}` references looked up through `env` (tests).
    pub fn from_toml_with_env(
        source: &str,
        file: impl Into<PathBuf>,
        service: Service,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = file.into();
        let mut config: Config = toml::from_str(source).map_err(|error| ConfigError {
            file: file.clone(),
            line: error.span().map(|span| line_of_offset(source, span.start)),
            kind: ConfigErrorKind::Syntax(error.message().to_string()),
        })?;
        let locate = |key_path: &str| ConfigError::locate_key(source, key_path);
        config.drop_secrets_not_used_by(service);
        config
            .resolve_secrets(env)
            .map_err(|(key_path, kind)| ConfigError {
                file: file.clone(),
                line: locate(&key_path),
                kind,
            })?;
        config
            .validate()
            .and_then(|()| config.require_sections_of(service))
            .map_err(|(key_path, kind)| ConfigError {
                file: file.clone(),
                line: match &kind {
                    ConfigErrorKind::Rule { error, .. } => {
                        ConfigError::locate_in_value(source, &key_path, error.line)
                            .or_else(|| locate(&key_path))
                    }
                    _ => locate(&key_path),
                },
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
