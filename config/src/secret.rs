use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::ConfigErrorKind;

/// A credential from the configuration: written as a literal, a `${ENV}` reference, or (through a
/// sibling `*_file` key) a file path, and resolved once at load. It never prints: `Debug` shows
/// `[secret]`, so it cannot leak through a log line or an error.
#[derive(Clone)]
pub struct Secret {
    /// What the file said: a literal or a `${ENV}` reference.
    written: String,
    resolved: Option<SecretString>,
}

impl Secret {
    /// The resolved value. Call only where the secret is used (an outgoing header), never to
    /// format a message.
    pub fn expose(&self) -> &str {
        self.resolved
            .as_ref()
            .map(|secret| secret.expose_secret())
            .unwrap_or_default()
    }

    pub fn from_value(value: impl Into<String>) -> Secret {
        let value = value.into();
        Secret {
            resolved: Some(SecretString::from(value.clone())),
            written: value,
        }
    }

    /// Resolves `${NAME}` references through `env`; anything else is taken literally.
    pub(crate) fn resolve(
        &mut self,
        key: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigErrorKind> {
        let value = expand_env(key, &self.written, env)?;
        self.resolved = Some(SecretString::from(value));
        Ok(())
    }

    /// Reads the secret from a file, trimming one trailing newline as editors and `echo` add it.
    pub(crate) fn from_file(key: &str, path: &str) -> Result<Secret, ConfigErrorKind> {
        let contents =
            std::fs::read_to_string(path).map_err(|error| ConfigErrorKind::SecretFile {
                key: key.to_string(),
                path: path.to_string(),
                reason: error.to_string(),
            })?;
        let value = contents
            .strip_suffix('\n')
            .map(|value| value.strip_suffix('\r').unwrap_or(value))
            .unwrap_or(&contents);
        Ok(Secret {
            written: format!("file:{path}"),
            resolved: Some(SecretString::from(value.to_string())),
        })
    }
}

/// The value of `written`, or of the environment variable it names when it is `${NAME}`.
pub(crate) fn expand_env(
    key: &str,
    written: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigErrorKind> {
    match env_reference(written) {
        Some(variable) => env(variable).ok_or_else(|| ConfigErrorKind::MissingEnv {
            key: key.to_string(),
            variable: variable.to_string(),
        }),
        None => Ok(written.to_string()),
    }
}

fn env_reference(written: &str) -> Option<&str> {
    written
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .filter(|name| !name.is_empty())
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[secret]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        Ok(Secret {
            written: String::deserialize(deserializer)?,
            resolved: None,
        })
    }
}
