//! The console's section: `[console]`.
//!
//! The console (`callproof-console`) signs people in with the organisation's identity provider,
//! the issuer of `[oidc]`, as a confidential (or, without a secret, public) OpenID Connect
//! client with PKCE, and calls the gateway's approvals API and the evidence API with the
//! signed-in person's own access token. It reads `[console]` and `[oidc]` only: it holds its own
//! client secret and none of the other services' secrets, nor Kafka's or the masking key (see
//! [`crate::Service`]).

use std::net::SocketAddr;

use serde::Deserialize;

use crate::sections::KeyError;
use crate::{Config, ConfigErrorKind, Secret};

/// `[console]`: where the console listens, how it signs people in, which APIs it calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL people reach the console at. The sign-in redirect URL registered at the identity
    /// provider is this plus `/auth/callback`. It must be `https://`, except on a loopback host
    /// (`127.0.0.1`, `[::1]`, `localhost`), where cookies are then sent without `Secure`.
    pub public_url: String,
    /// The console's client id at the identity provider; ID tokens must be for it (`aud`).
    pub client_id: String,
    /// The client secret (`client_secret_basic`), literal or `${ENV}`; or set
    /// `client_secret_file`; or neither for a public client (PKCE only).
    pub client_secret: Option<Secret>,
    pub client_secret_file: Option<String>,
    /// Scopes asked for at sign-in; `openid` is always sent.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// An RFC 8707 resource indicator sent with the authorization and token requests, so the
    /// access token is issued for the gateway and the evidence API (one of `oidc.audiences`).
    pub resource: Option<String>,
    /// The gateway's base URL, for `GET /v1/approvals` and `POST /v1/approvals/{id}`.
    pub ingress_url: String,
    /// The evidence API's base URL; without it the auditor pages are not offered.
    pub evidence_url: Option<String>,
    /// A session unused this long ends.
    #[serde(default = "default_session_idle_secs")]
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in, however busy.
    #[serde(default = "default_session_max_secs")]
    pub session_max_secs: u64,
    /// How often the live inbox asks the gateway for the pending calls.
    #[serde(default = "default_refresh_secs")]
    pub inbox_refresh_secs: u64,
    #[serde(default = "default_http_timeout_ms")]
    pub http_timeout_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8082))
}
fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}
fn default_session_idle_secs() -> u64 {
    30 * 60
}
fn default_session_max_secs() -> u64 {
    12 * 60 * 60
}
fn default_refresh_secs() -> u64 {
    2
}
fn default_http_timeout_ms() -> u64 {
    10_000
}

/// The longest `console.session_max_secs`: a week.
pub const MAX_CONSOLE_SESSION_SECS: u64 = 7 * 24 * 60 * 60;

impl ConsoleConfig {
    /// The redirect URL registered at the identity provider.
    pub fn redirect_url(&self) -> String {
        format!("{}/auth/callback", self.public_url.trim_end_matches('/'))
    }

    /// Whether the console is reached on a loopback host, where cookies may go without
    /// `Secure` (browsers treat `http://127.0.0.1` as a secure context, but not for cookies).
    pub fn is_loopback(&self) -> bool {
        host_of(&self.public_url).is_some_and(|host| {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
    }
}

fn host_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next();
    }
    authority.split(':').next()
}

impl Config {
    /// What the console never uses, cleared so that nothing of it is looked up: Kafka's
    /// brokers and properties and the masking key.
    pub(crate) fn drop_what_the_console_does_not_use(&mut self) {
        self.kafka.properties.clear();
        self.kafka.brokers = crate::KafkaConfig::default().brokers;
        self.masking.hmac_key = None;
    }

    /// Resolves `console.client_secret` (`${ENV}`) or reads `console.client_secret_file`.
    pub(crate) fn resolve_console_secrets(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), KeyError> {
        let Some(console) = &mut self.console else {
            return Ok(());
        };
        let key_path = "console.client_secret".to_string();
        match (&mut console.client_secret, &console.client_secret_file) {
            (Some(_), Some(_)) => Err((
                key_path.clone(),
                ConfigErrorKind::Invalid {
                    key: key_path,
                    reason: "and `client_secret_file` are both set; set one".into(),
                },
            )),
            (Some(secret), None) => secret
                .resolve(&key_path, env)
                .map_err(|kind| (key_path, kind)),
            (None, Some(path)) => {
                console.client_secret =
                    Some(Secret::from_file(&key_path, path).map_err(|kind| (key_path, kind))?);
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    /// Checks the console's values; no I/O.
    pub(crate) fn validate_console(&self) -> Result<(), KeyError> {
        let Some(console) = &self.console else {
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
        let is_http_url = |url: &str| {
            (url.starts_with("https://") || url.starts_with("http://"))
                && host_of(url).is_some_and(|host| !host.is_empty())
        };
        if !is_http_url(&console.public_url) {
            return Err(invalid("console.public_url", "must be an http(s) URL"));
        }
        if console.public_url.starts_with("http://") && !console.is_loopback() {
            return Err(invalid(
                "console.public_url",
                "must be https:// (plain http is accepted on a loopback host only: session cookies would travel in clear)",
            ));
        }
        if console.client_id.trim().is_empty() {
            return Err(invalid("console.client_id", "must not be empty"));
        }
        if !is_http_url(&console.ingress_url) {
            return Err(invalid("console.ingress_url", "must be an http(s) URL"));
        }
        if let Some(url) = &console.evidence_url
            && !is_http_url(url)
        {
            return Err(invalid("console.evidence_url", "must be an http(s) URL"));
        }
        if let Some(resource) = &console.resource
            && !resource.contains(':')
        {
            return Err(invalid(
                "console.resource",
                "must be an absolute URI (RFC 8707), such as the gateway's `https://…` address",
            ));
        }
        if console.scopes.iter().any(|scope| {
            scope.is_empty() || scope.contains(|c: char| c.is_whitespace() || c == '"')
        }) {
            return Err(invalid(
                "console.scopes",
                "must be scope tokens without spaces or quotes",
            ));
        }
        if console.session_idle_secs == 0 {
            return Err(invalid("console.session_idle_secs", "must be positive"));
        }
        if !(1..=MAX_CONSOLE_SESSION_SECS).contains(&console.session_max_secs) {
            return Err(invalid(
                "console.session_max_secs",
                "must be between 1 and 604800 (a week)",
            ));
        }
        if console.session_idle_secs > console.session_max_secs {
            return Err(invalid(
                "console.session_idle_secs",
                "must not exceed `session_max_secs`",
            ));
        }
        if !(1..=60).contains(&console.inbox_refresh_secs) {
            return Err(invalid(
                "console.inbox_refresh_secs",
                "must be between 1 and 60",
            ));
        }
        if console.http_timeout_ms == 0 {
            return Err(invalid("console.http_timeout_ms", "must be positive"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Service};

    const OIDC: &str = "[oidc]\nissuer = \"http://127.0.0.1:9000\"\naudiences = [\"callproof\"]\n";

    fn load(source: &str, env: &[(&str, &str)]) -> Result<Config, crate::ConfigError> {
        let source = format!("{source}{OIDC}");
        Config::from_toml_with_env(&source, "deploy.toml", Service::Console, &|name| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    const MINIMAL: &str = "[console]\npublic_url = \"https://console.example.com\"\nclient_id = \"callproof-console\"\ningress_url = \"https://gw.example.com\"\n";

    #[test]
    fn console_section_has_defaults_and_a_redirect_url() {
        let config = load(MINIMAL, &[]).unwrap();
        let console = config.console.unwrap();
        assert_eq!(console.listen.port(), 8082);
        assert_eq!(
            console.redirect_url(),
            "https://console.example.com/auth/callback"
        );
        assert!(!console.is_loopback());
        assert_eq!(console.scopes, ["openid", "profile", "email"]);
        assert!(console.client_secret.is_none());
        assert_eq!(console.session_idle_secs, 1800);
        assert_eq!(console.session_max_secs, 43200);
    }

    #[test]
    fn the_client_secret_comes_from_the_environment_or_a_file_and_never_prints() {
        let source = format!("{MINIMAL}client_secret = \"${{CONSOLE_SECRET}}\"\n");
        let config = load(&source, &[("CONSOLE_SECRET", "s3cr3t")]).unwrap();
        let console = config.console.unwrap();
        assert_eq!(console.client_secret.as_ref().unwrap().expose(), "s3cr3t");
        assert!(!format!("{console:?}").contains("s3cr3t"));

        let error = load(&source, &[]).unwrap_err().to_string();
        assert!(error.contains("CONSOLE_SECRET"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let source = format!(
            "{MINIMAL}client_secret_file = {:?}\n",
            path.display().to_string()
        );
        let config = load(&source, &[]).unwrap();
        assert_eq!(
            config.console.unwrap().client_secret.unwrap().expose(),
            "from-file"
        );
    }

    #[test]
    fn plain_http_is_accepted_on_loopback_only() {
        for (url, loopback) in [
            ("http://127.0.0.1:8082", true),
            ("http://localhost:8082/", true),
            ("http://[::1]:8082", true),
        ] {
            let source = MINIMAL.replace("https://console.example.com", url);
            let console = load(&source, &[]).unwrap().console.unwrap();
            assert_eq!(console.is_loopback(), loopback, "{url}");
        }
        for url in [
            "http://console.example.com",
            "http://127.0.0.1.example.com",
            "http://localhost.example.com",
        ] {
            let source = MINIMAL.replace("https://console.example.com", url);
            let error = load(&source, &[]).unwrap_err().to_string();
            assert!(error.contains("console.public_url"), "{url}: {error}");
        }
    }

    #[test]
    fn console_section_refuses_bad_values_naming_the_key() {
        for (extra, key) in [
            ("session_idle_secs = 0\n", "console.session_idle_secs"),
            ("session_max_secs = 0\n", "console.session_max_secs"),
            (
                "session_idle_secs = 100\nsession_max_secs = 50\n",
                "console.session_idle_secs",
            ),
            ("inbox_refresh_secs = 0\n", "console.inbox_refresh_secs"),
            ("evidence_url = \"ftp://x\"\n", "console.evidence_url"),
            ("resource = \"callproof\"\n", "console.resource"),
            ("scopes = [\"openid email\"]\n", "console.scopes"),
            ("redirect = \"x\"\n", "redirect"),
            (
                "client_secret = \"a\"\nclient_secret_file = \"/x\"\n",
                "console.client_secret",
            ),
        ] {
            let error = load(&format!("{MINIMAL}{extra}"), &[])
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{extra:?}: {error}");
        }
        let error = load("", &[]).unwrap_err().to_string();
        assert!(error.contains("console"), "{error}");
    }

    #[test]
    fn the_console_holds_its_own_secret_and_nothing_else() {
        let source = format!(
            r#"{MINIMAL}client_secret = "${{CONSOLE_SECRET}}"

[kafka]
brokers = "${{KAFKA_BROKERS}}"
properties = {{ "sasl.password" = "${{KAFKA_PASSWORD}}" }}

[masking]
replacement = "hmac"
hmac_key = "${{MASKING_KEY}}"

[functions.refund]
upstream = "http://127.0.0.1:9100/refund"
credential = {{ kind = "bearer", token = "${{REFUND_TOKEN}}" }}

[functions.refund.approval]
approver_groups = ["finance"]
webhook_url = "${{APPROVAL_WEBHOOK}}"

[storage]
url = "s3://evidence/logs"
options = {{ aws_secret_access_key = "${{WRITER_SECRET}}" }}

[log]
signing_key_file = "/nonexistent/log.key"

[evidence]
verifier_key = "example.com/log+1a2b3c4d+AQsV8bnJmO9QA3fWq0fKqKh7JdVmb9cNE8lqEGpu6UTh"
storage_options = {{ aws_secret_access_key = "${{READER_SECRET}}" }}
"#
        );
        let looked_up = std::cell::RefCell::new(Vec::new());
        let source = format!("{source}{OIDC}");
        let config =
            Config::from_toml_with_env(&source, "deploy.toml", Service::Console, &|name| {
                looked_up.borrow_mut().push(name.to_string());
                Some(format!("value-of-{name}"))
            })
            .unwrap();
        assert_eq!(looked_up.into_inner(), ["CONSOLE_SECRET"]);
        assert!(config.log.is_none());
        assert!(config.evidence.is_none());
        assert!(config.storage.options.is_empty());
        assert!(config.kafka.properties.is_empty());
        assert!(config.masking.hmac_key.is_none());
        assert!(matches!(
            config.functions["refund"].credential,
            crate::Credential::None
        ));

        // And the gateway neither looks the console's secret up nor keeps the section.
        let source = format!("{MINIMAL}client_secret = \"${{CONSOLE_SECRET}}\"\n{OIDC}");
        let looked_up = std::cell::RefCell::new(Vec::new());
        let config =
            Config::from_toml_with_env(&source, "deploy.toml", Service::Ingress, &|name| {
                looked_up.borrow_mut().push(name.to_string());
                None
            })
            .unwrap();
        assert!(config.console.is_none());
        assert!(looked_up.into_inner().is_empty());
    }
}
