//! Which binary reads the deployment file: each one requires its own sections and holds only its
//! own secrets.
//!
//! One file may describe the whole deployment, secrets included (as `${ENV}` references or
//! `*_file` paths). A service must not hold what it does not use: a compromised gateway must not
//! have the key that signs the evidence against it, nor the evidence API the functions'
//! credentials. So before anything is resolved, the secrets of the other services are dropped:
//! their environment variables are never looked up, their files never opened, and nothing of
//! them is kept in the loaded [`Config`].

use crate::sections::KeyError;
use crate::{Config, ConfigErrorKind, Credential};

/// The binary that loads the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `callproof-ingress`: `[ingress]`, `[oidc]`, `[kafka]`, `[masking]` and `[functions.*]`
    /// with their credentials and approval webhooks.
    Ingress,
    /// `callproof-processor`: `[processor]`, `[kafka]`, `[masking]`, `[storage]` with its
    /// options, `[log]` with the signing key, `[index]`, and the functions' masking rules.
    Processor,
    /// `callproof-evidence`: `[evidence]` (its own `storage_options` for reading the store),
    /// `[oidc]`, `[storage]`'s URL, `[index]`, and the functions' policies for the report.
    Evidence,
    /// `callproof-console`: `[console]` with its client secret, and `[oidc]`'s issuer.
    Console,
    /// `callproof-indexer`: `[storage]` with its options (it writes the index splits),
    /// `[index]` with the logs' verifier key; never the signing key, Kafka or masking secrets.
    Indexer,
}

impl Service {
    pub fn binary(self) -> &'static str {
        match self {
            Service::Ingress => "callproof-ingress",
            Service::Processor => "callproof-processor",
            Service::Evidence => "callproof-evidence",
            Service::Console => "callproof-console",
            Service::Indexer => "callproof-indexer",
        }
    }
}

impl Config {
    /// Forgets every secret `service` does not use. Runs before resolution, so nothing of them
    /// is read.
    pub(crate) fn drop_secrets_not_used_by(&mut self, service: Service) {
        if service != Service::Ingress {
            for function in self.functions.values_mut() {
                function.credential = Credential::None;
                if let Some(approval) = &mut function.approval {
                    approval.webhook_url = None;
                }
            }
            self.drop_mcp_secrets();
        }
        if service != Service::Processor {
            // The signing key: the indexer checks checkpoints with the public half.
            self.log = None;
        }
        if !matches!(service, Service::Processor | Service::Indexer) {
            // The store's write credentials.
            self.storage.options.clear();
        }
        if service != Service::Indexer {
            self.index.verifier_key = None;
            self.index.verifier_key_file = None;
        }
        if service != Service::Console {
            self.console = None;
        } else {
            self.drop_what_the_console_does_not_use();
        }
        if service != Service::Evidence {
            self.evidence = None;
        }
        if matches!(service, Service::Evidence | Service::Indexer) {
            // Neither talks to Kafka nor masks: they must not need those variables set to start.
            self.kafka.properties.clear();
            self.kafka.brokers = crate::KafkaConfig::default().brokers;
            self.masking.hmac_key = None;
        }
    }

    /// The sections `service` cannot run without.
    pub(crate) fn require_sections_of(&self, service: Service) -> Result<(), KeyError> {
        let missing = |section: &str| {
            (
                section.to_string(),
                ConfigErrorKind::MissingSection {
                    section: section.to_string(),
                    binary: service.binary(),
                },
            )
        };
        match service {
            Service::Ingress if self.oidc.is_none() => Err(missing("oidc")),
            Service::Processor if self.log.is_none() => Err(missing("log")),
            Service::Evidence if self.oidc.is_none() => Err(missing("oidc")),
            Service::Evidence if self.evidence.is_none() => Err(missing("evidence")),
            Service::Console if self.oidc.is_none() => Err(missing("oidc")),
            Service::Console if self.console.is_none() => Err(missing("console")),
            Service::Indexer if self.index.verifier_key.is_none() => Err((
                "index.verifier_key".to_string(),
                ConfigErrorKind::Invalid {
                    key: "index.verifier_key".to_string(),
                    reason: "is missing: callproof-indexer checks each checkpoint with the logs' verifier key; set `verifier_key` or `verifier_key_file` (`callproof-processor keygen` prints it)".into(),
                },
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigError;

    /// One file for the whole deployment. Every secret names a variable or a file that does not
    /// exist, so a service that touched another's secret would fail to load.
    const SHARED: &str = r#"
[oidc]
issuer = "http://127.0.0.1:9000"
audiences = ["callproof"]

[kafka]
brokers = "${KAFKA_BROKERS}"
properties = { "sasl.password" = "${KAFKA_PASSWORD}" }

[masking]
replacement = "hmac"
hmac_key = "${MASKING_KEY}"

[functions.refund]
upstream = "http://127.0.0.1:9100/refund"
credential = { kind = "bearer", token = "${REFUND_TOKEN}" }

[functions.refund.approval]
approver_groups = ["finance"]
webhook_url = "${APPROVAL_WEBHOOK}"

[functions.legacy]
upstream = "http://127.0.0.1:9100/legacy"
credential = { kind = "basic", username = "svc", password_file = "/nonexistent/legacy-password" }

[storage]
url = "s3://evidence/logs"
options = { aws_secret_access_key = "${WRITER_SECRET}" }

[log]
signing_key_file = "/nonexistent/log.key"

[evidence]
verifier_key = "example.com/log+1a2b3c4d+AQsV8bnJmO9QA3fWq0fKqKh7JdVmb9cNE8lqEGpu6UTh"
storage_options = { aws_secret_access_key = "${READER_SECRET}" }
"#;

    /// Loads `SHARED` for `service` with only the variables in `set` defined, and records every
    /// variable the load looked up.
    fn load_with(service: Service, set: &[&str]) -> (Result<Config, ConfigError>, Vec<String>) {
        let looked_up = std::cell::RefCell::new(Vec::new());
        let env = |name: &str| {
            looked_up.borrow_mut().push(name.to_string());
            set.contains(&name).then(|| format!("value-of-{name}"))
        };
        let result = Config::from_toml_with_env(SHARED, "deploy.toml", service, &env);
        (result, looked_up.into_inner())
    }

    #[test]
    fn the_gateway_holds_function_credentials_and_nothing_of_the_log_or_the_store() {
        let set = [
            "KAFKA_BROKERS",
            "KAFKA_PASSWORD",
            "MASKING_KEY",
            "REFUND_TOKEN",
            "APPROVAL_WEBHOOK",
        ];
        // The basic credential's file does not exist: the gateway fails on its own secret.
        let (config, _) = load_with(Service::Ingress, &set);
        let error = config.unwrap_err().to_string();
        assert!(error.contains("legacy-password"), "{error}");

        let source = SHARED.replace(
            "password_file = \"/nonexistent/legacy-password\"",
            "password = \"p\"",
        );
        let looked_up = std::cell::RefCell::new(Vec::new());
        let env = |name: &str| {
            looked_up.borrow_mut().push(name.to_string());
            set.contains(&name).then(|| format!("value-of-{name}"))
        };
        let config =
            Config::from_toml_with_env(&source, "deploy.toml", Service::Ingress, &env).unwrap();
        // Exactly its own variables, none of the processor's or the evidence API's.
        let mut looked_up = looked_up.into_inner();
        looked_up.sort();
        let mut expected = set.map(String::from).to_vec();
        expected.sort();
        assert_eq!(looked_up, expected);
        assert!(config.log.is_none());
        assert!(config.evidence.is_none());
        assert!(config.storage.options.is_empty());
        let Credential::Bearer(bearer) = &config.functions["refund"].credential else {
            panic!("the gateway keeps the bearer credential");
        };
        assert_eq!(
            bearer.token.as_ref().unwrap().expose(),
            "value-of-REFUND_TOKEN"
        );
    }

    #[test]
    fn the_processor_holds_the_signing_key_and_write_credentials_only() {
        let (config, looked_up) = load_with(
            Service::Processor,
            &[
                "KAFKA_BROKERS",
                "KAFKA_PASSWORD",
                "MASKING_KEY",
                "WRITER_SECRET",
            ],
        );
        // Its own key file is missing, and that is the error, not a function's credential.
        let error = config.unwrap_err().to_string();
        assert!(error.contains("log.signing_key"), "{error}");
        for foreign in ["REFUND_TOKEN", "APPROVAL_WEBHOOK", "READER_SECRET"] {
            assert!(
                !looked_up.iter().any(|name| name == foreign),
                "{looked_up:?}"
            );
        }

        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("log.key");
        std::fs::write(&key, "PRIVATE+KEY+example\n").unwrap();
        let source = SHARED.replace("/nonexistent/log.key", key.to_str().unwrap());
        let env = |name: &str| {
            [
                "KAFKA_BROKERS",
                "KAFKA_PASSWORD",
                "MASKING_KEY",
                "WRITER_SECRET",
            ]
            .contains(&name)
            .then(|| format!("value-of-{name}"))
        };
        let config =
            Config::from_toml_with_env(&source, "deploy.toml", Service::Processor, &env).unwrap();
        assert!(
            config
                .functions
                .values()
                .all(|function| matches!(function.credential, Credential::None))
        );
        assert!(
            config.functions["refund"]
                .approval
                .as_ref()
                .unwrap()
                .webhook_url
                .is_none()
        );
        assert!(config.evidence.is_none());
        assert_eq!(
            config.storage.options["aws_secret_access_key"].expose(),
            "value-of-WRITER_SECRET"
        );
        assert_eq!(
            config.log.unwrap().signing_key.unwrap().expose(),
            "PRIVATE+KEY+example"
        );
    }

    #[test]
    fn the_evidence_api_holds_its_read_credentials_only() {
        let (config, looked_up) = load_with(Service::Evidence, &["READER_SECRET"]);
        let config = config.unwrap();
        assert_eq!(looked_up, ["READER_SECRET"]);
        assert!(config.log.is_none());
        assert!(config.kafka.properties.is_empty());
        assert!(config.masking.hmac_key.is_none());
        assert!(
            config
                .functions
                .values()
                .all(|function| matches!(function.credential, Credential::None))
        );
        // The functions' policies stay: the SOC 2 report lists them.
        assert_eq!(config.functions.len(), 2);
        assert!(config.storage.options.is_empty());
        assert_eq!(
            config.evidence.unwrap().storage_options["aws_secret_access_key"].expose(),
            "value-of-READER_SECRET"
        );
    }

    #[test]
    fn each_service_names_the_section_it_cannot_run_without() {
        let env = |_: &str| None;
        for (source, service, section) in [
            ("", Service::Ingress, "[oidc]"),
            ("", Service::Processor, "[log]"),
            (
                "[oidc]\nissuer = \"http://x\"\naudiences = [\"a\"]\n",
                Service::Evidence,
                "[evidence]",
            ),
        ] {
            let error = Config::from_toml_with_env(source, "deploy.toml", service, &env)
                .unwrap_err()
                .to_string();
            assert!(error.contains(section), "{service:?}: {error}");
            assert!(error.contains(service.binary()), "{service:?}: {error}");
        }
    }

    #[test]
    fn the_indexer_holds_write_credentials_and_the_verifier_key_never_the_signing_key() {
        // The shared file names the signing key in a file that does not exist: an indexer that
        // read it would fail. It needs the public key instead.
        let (config, looked_up) = load_with(Service::Indexer, &["WRITER_SECRET"]);
        let error = config.unwrap_err().to_string();
        assert!(error.contains("index.verifier_key"), "{error}");
        assert!(error.contains("callproof-processor keygen"), "{error}");
        assert_eq!(looked_up, ["WRITER_SECRET"]);

        let key = "example.com/log+1a2b3c4d+AQsV8bnJmO9QA3fWq0fKqKh7JdVmb9cNE8lqEGpu6UTh";
        let source = format!("{SHARED}\n[index]\nverifier_key = \"{key}\"\n");
        let looked_up = std::cell::RefCell::new(Vec::new());
        let env = |name: &str| {
            looked_up.borrow_mut().push(name.to_string());
            (name == "WRITER_SECRET").then(|| format!("value-of-{name}"))
        };
        let config =
            Config::from_toml_with_env(&source, "deploy.toml", Service::Indexer, &env).unwrap();
        // Only the store's write credentials were looked up: no Kafka, masking or function
        // secret, and the signing key's file was never opened (it does not exist).
        assert_eq!(looked_up.into_inner(), ["WRITER_SECRET"]);
        assert!(config.log.is_none());
        assert!(config.evidence.is_none());
        assert!(config.kafka.properties.is_empty());
        assert!(config.masking.hmac_key.is_none());
        assert_eq!(config.index.verifier_key.as_deref(), Some(key));
        assert_eq!(
            config.storage.options["aws_secret_access_key"].expose(),
            "value-of-WRITER_SECRET"
        );

        // Other services never keep it, nor open its file.
        let source = format!("{SHARED}\n[index]\nverifier_key_file = \"/nonexistent/verifier\"\n");
        let config =
            Config::from_toml_with_env(&source, "deploy.toml", Service::Evidence, &|name| {
                (name == "READER_SECRET").then(|| "r".to_string())
            })
            .unwrap();
        assert!(config.index.verifier_key.is_none());
        let error = Config::from_toml_with_env(&source, "deploy.toml", Service::Indexer, &|name| {
            (name == "WRITER_SECRET").then(|| "w".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("/nonexistent/verifier"), "{error}");
    }
}
