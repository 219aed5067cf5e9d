//! The evidence API's section: `[evidence]`.
//!
//! The evidence API also reads `[oidc]` (who its callers are), `storage.url` (the logs, read with
//! its own `evidence.storage_options`; the index splits under `index/` too), `index.gc_grace_secs`
//! (to check that a replaced split outlives its refresh) and `[functions.*]` (the policies in
//! force, for the SOC 2 report). It never holds the log's
//! signing key (`verifier_key` is the public half), the store's write credentials or the
//! functions' credentials (see [`crate::Service`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sections::KeyError;
use crate::{Config, ConfigErrorKind};

/// `[evidence]`: where the auditors' API listens and who may read it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL auditors reach the API at; links in reports and bundles start with it. Without
    /// it links are relative (`/v1/...`).
    pub public_url: Option<String>,
    /// Members of any of these groups (from the `[oidc]` groups claim) may read; everyone else is
    /// refused with 403.
    #[serde(default = "default_auditor_groups")]
    pub auditor_groups: Vec<String>,
    /// The logs' verifier key (`name+keyid+base64`, printed by `callproof-processor keygen`). Set
    /// this or `verifier_key_file`.
    pub verifier_key: Option<String>,
    /// A file holding the verifier key.
    pub verifier_key_file: Option<String>,
    /// The most events one `GET /v1/export` packs; a larger period is refused with 400 so that a
    /// bundle is never cut silently.
    #[serde(default = "default_max_export_events")]
    pub max_export_events: usize,
    /// The most hits one search page returns.
    #[serde(default = "default_max_page_size")]
    pub max_page_size: usize,
    /// The evidence API's own options for the store at `storage.url` (read-only credentials, endpoint,
    /// region), by `object_store` key as `storage.options`, which it never reads: those are the
    /// processor's write credentials. Values may be `${ENV}` references and never print.
    #[serde(default)]
    pub storage_options: std::collections::BTreeMap<String, crate::Secret>,
    /// A local directory of this evidence API's own (never shared with another process) where
    /// the index splits it searches are kept once downloaded from the store.
    #[serde(default = "default_index_cache_dir")]
    pub index_cache_dir: PathBuf,
    /// The most MiB of splits kept in `index_cache_dir`; the least recently used go first.
    #[serde(default = "default_index_cache_mb")]
    pub index_cache_mb: u64,
    /// How often the published splits are listed again: a new split is searchable within this.
    #[serde(default = "default_index_refresh_ms")]
    pub index_refresh_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn default_auditor_groups() -> Vec<String> {
    vec!["auditor".to_string()]
}
fn default_max_export_events() -> usize {
    100_000
}
fn default_max_page_size() -> usize {
    1_000
}
fn default_index_cache_dir() -> PathBuf {
    PathBuf::from("/var/lib/callproof/evidence-cache")
}
fn default_index_cache_mb() -> u64 {
    1_024
}
fn default_index_refresh_ms() -> u64 {
    2_000
}

impl Config {
    /// Resolves `evidence.storage_options` and reads `evidence.verifier_key_file` into
    /// `evidence.verifier_key`.
    pub(crate) fn resolve_evidence_files(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), KeyError> {
        let Some(evidence) = &mut self.evidence else {
            return Ok(());
        };
        for (name, value) in &mut evidence.storage_options {
            let key_path = format!("evidence.storage_options.{name}");
            value
                .resolve(&key_path, env)
                .map_err(|kind| (key_path, kind))?;
        }
        let key_path = "evidence.verifier_key".to_string();
        let invalid = |reason: String| {
            (
                key_path.clone(),
                ConfigErrorKind::Invalid {
                    key: key_path.clone(),
                    reason,
                },
            )
        };
        match (&evidence.verifier_key, &evidence.verifier_key_file) {
            (Some(_), None) => Ok(()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    invalid(format!("cannot read `verifier_key_file` {path}: {error}"))
                })?;
                evidence.verifier_key = Some(text.trim().to_string());
                Ok(())
            }
            (Some(_), Some(_)) => Err(invalid(
                "and `verifier_key_file` are both set; set one".into(),
            )),
            (None, None) => Err(invalid(
                "is missing: set `verifier_key` or `verifier_key_file`".into(),
            )),
        }
    }

    /// Checks the evidence API's values; no I/O.
    pub(crate) fn validate_evidence(&self) -> Result<(), KeyError> {
        let Some(evidence) = &self.evidence else {
            return Ok(());
        };
        let invalid = |key: &str, reason: &str| {
            (
                key.to_string(),
                ConfigErrorKind::Invalid {
                    key: key.to_string(),
                    reason: reason.to_string(),
                },
            )
        };
        if evidence.auditor_groups.is_empty()
            || evidence
                .auditor_groups
                .iter()
                .any(|group| group.trim().is_empty())
        {
            return Err(invalid(
                "evidence.auditor_groups",
                "must name at least one non-empty group",
            ));
        }
        if let Some(url) = &evidence.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid("evidence.public_url", "must be an http(s) URL"));
        }
        // The format is checked by the evidence API with the log's own parser; here only what
        // can be told without it: a verifier key is `name+keyid+base64` (base64 may hold `+`).
        if let Some(key) = &evidence.verifier_key
            && key.splitn(3, '+').count() != 3
        {
            return Err(invalid(
                "evidence.verifier_key",
                "must be a verifier key `name+keyid+base64`, as printed by `callproof-processor keygen`",
            ));
        }
        if evidence.max_export_events == 0 {
            return Err(invalid("evidence.max_export_events", "must be positive"));
        }
        if evidence.max_page_size == 0 {
            return Err(invalid("evidence.max_page_size", "must be positive"));
        }
        if evidence.index_cache_dir.as_os_str().is_empty() {
            return Err(invalid("evidence.index_cache_dir", "must not be empty"));
        }
        if evidence.index_cache_mb == 0 {
            return Err(invalid("evidence.index_cache_mb", "must be positive"));
        }
        if !(100..=60_000).contains(&evidence.index_refresh_ms) {
            return Err(invalid(
                "evidence.index_refresh_ms",
                "must be between 100 and 60000 (ms)",
            ));
        }
        // A reader may still use a split it listed up to a refresh (and a query) ago: the
        // indexers must keep a replaced split longer than that.
        if self.index.gc_grace_secs * 1_000 < 2 * evidence.index_refresh_ms {
            return Err(invalid(
                "index.gc_grace_secs",
                "must be at least twice evidence.index_refresh_ms: an evidence API may still search a replaced split that long",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const KEY: &str = "example.com/log+1a2b3c4d+AQsV8bnJmO9QA3fWq0fKqKh7JdVmb9cNE8lqEGpu6UTh";

    fn load(source: &str) -> Result<Config, crate::ConfigError> {
        let source = format!("{source}[oidc]\nissuer = \"http://i\"\naudiences = [\"a\"]\n");
        Config::from_toml_with_env(&source, "deploy.toml", crate::Service::Evidence, &|_| None)
    }

    #[test]
    fn evidence_section_has_defaults() {
        let config = load(&format!("[evidence]\nverifier_key = \"{KEY}\"\n")).unwrap();
        let evidence = config.evidence.unwrap();
        assert_eq!(evidence.auditor_groups, ["auditor"]);
        assert_eq!(evidence.listen.port(), 8081);
        assert_eq!(evidence.verifier_key.as_deref(), Some(KEY));
        assert_eq!(evidence.index_refresh_ms, 2_000);
        assert_eq!(evidence.index_cache_mb, 1_024);
    }

    #[test]
    fn evidence_section_refuses_bad_values_naming_the_key() {
        for (source, key) in [
            ("[evidence]\n", "evidence.verifier_key"),
            (
                "[evidence]\nverifier_key = \"nope\"\n",
                "evidence.verifier_key",
            ),
            (
                &format!("[evidence]\nverifier_key = \"{KEY}\"\nauditor_groups = []\n"),
                "evidence.auditor_groups",
            ),
            (
                &format!("[evidence]\nverifier_key = \"{KEY}\"\npublic_url = \"ftp://x\"\n"),
                "evidence.public_url",
            ),
            (
                &format!("[evidence]\nverifier_key = \"{KEY}\"\nlisten_on = \"x\"\n"),
                "listen_on",
            ),
            (
                &format!("[evidence]\nverifier_key = \"{KEY}\"\nindex_cache_mb = 0\n"),
                "evidence.index_cache_mb` must be positive",
            ),
            (
                &format!("[evidence]\nverifier_key = \"{KEY}\"\nindex_refresh_ms = 10\n"),
                "evidence.index_refresh_ms` must be between",
            ),
            (
                &format!(
                    "[evidence]\nverifier_key = \"{KEY}\"\nindex_refresh_ms = 5000\n[index]\ngc_grace_secs = 9\n"
                ),
                "index.gc_grace_secs` must be at least twice",
            ),
        ] {
            let error = load(source).unwrap_err().to_string();
            assert!(error.contains(key), "{source:?}: {error}");
        }
    }

    #[test]
    fn verifier_key_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.vkey");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        let source = format!(
            "[evidence]\nverifier_key_file = {:?}\n",
            path.display().to_string()
        );
        let config = load(&source).unwrap();
        assert_eq!(config.evidence.unwrap().verifier_key.as_deref(), Some(KEY));
    }
}
