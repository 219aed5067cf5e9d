//! A function's approval rule, compiled from `[functions.<name>.approval]`.

use std::time::Duration;

use callproof_config::policy::{Outcome, Vocabulary};
use callproof_config::{ApprovalConfig, Rule};

use crate::rules::CallFacts;

pub struct ApprovalPolicy {
    pub id: String,
    /// `None`: every call needs approval.
    pub condition: Option<Rule>,
    /// `functions.<name>.approval.condition`: names the condition in the recorded reasons.
    condition_key: String,
    pub approver_groups: Vec<String>,
    pub quorum: u32,
    pub expiry: Duration,
    pub webhook: Option<WebhookUrl>,
}

/// An incoming-webhook URL. Such URLs carry their own credential, so it never prints.
pub struct WebhookUrl(pub reqwest::Url);

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[webhook url]")
    }
}

impl ApprovalPolicy {
    /// Compiles `<prefix>.approval` (`functions.<name>`, `mcp.servers.<server>.tools.<tool>`).
    pub fn compile(
        prefix: &str,
        config: &ApprovalConfig,
        vocabulary: Vocabulary<'_>,
    ) -> anyhow::Result<ApprovalPolicy> {
        let condition_key = format!("{prefix}.approval.condition");
        let condition = config
            .condition
            .as_deref()
            .map(|source| Rule::compile(source, vocabulary))
            .transpose()
            .map_err(|error| anyhow::anyhow!("`{condition_key}` {error}"))?;
        let webhook = match &config.webhook_url {
            None => None,
            Some(secret) => {
                // The error deliberately does not repeat the URL: it is a credential.
                let url = reqwest::Url::parse(secret.expose())
                    .ok()
                    .filter(|url| matches!(url.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        anyhow::anyhow!("`{prefix}.approval.webhook_url` is not an http(s) URL")
                    })?;
                Some(WebhookUrl(url))
            }
        };
        Ok(ApprovalPolicy {
            id: format!("{prefix}.approval"),
            condition,
            condition_key,
            approver_groups: config.approver_groups.clone(),
            quorum: config.quorum,
            expiry: Duration::from_secs(config.expiry_secs),
            webhook,
        })
    }

    /// Why this call needs approval, or `None` if it does not. A condition that cannot be
    /// decided (a missing field, a string compared with a number) requires approval: fail
    /// closed. The reason names the condition, never what it read.
    pub fn requirement(&self, facts: &CallFacts<'_>) -> Option<String> {
        let Some(condition) = &self.condition else {
            return Some("every call needs approval".to_string());
        };
        let key = &self.condition_key;
        match facts.evaluate(condition) {
            Outcome::Holds => Some(format!("condition `{key}` holds")),
            Outcome::DoesNotHold => None,
            Outcome::Undecided(why) => Some(format!(
                "condition `{key}` could not be decided ({why}), so approval is required"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callproof_schemas::Principal;
    use serde_json::{Map, Value, json};

    fn policy(condition: Option<&str>) -> ApprovalPolicy {
        let config = ApprovalConfig {
            condition: condition.map(str::to_string),
            approver_groups: vec!["treasury".into()],
            quorum: 1,
            expiry_secs: 900,
            webhook_url: None,
        };
        ApprovalPolicy::compile("functions.transfer", &config, Vocabulary::default()).unwrap()
    }

    fn requirement(policy: &ApprovalPolicy, arguments: Value) -> Option<String> {
        let principal = Principal {
            issuer: "https://issuer.example".into(),
            subject: "alice".into(),
            email: None,
            groups: vec![],
            client_id: None,
            actor: None,
            authentication: None,
        };
        policy.requirement(&CallFacts {
            principal: &principal,
            claims: &Map::new(),
            function: "transfer",
            arguments: Some(&arguments),
            now: std::time::Duration::ZERO,
        })
    }

    #[test]
    fn always_or_when_the_condition_holds_or_cannot_be_decided() {
        assert!(requirement(&policy(None), json!({})).is_some());
        let large = policy(Some("args.amount > 1000"));
        let holds = requirement(&large, json!({"amount": 5000})).unwrap();
        assert_eq!(
            holds,
            "condition `functions.transfer.approval.condition` holds"
        );
        assert!(requirement(&large, json!({"amount": 10})).is_none());
        for undecidable in [json!({"amount": "4111 1111 1111 1111"}), json!({})] {
            let reason = requirement(&large, undecidable).unwrap();
            assert!(reason.contains("could not be decided"), "{reason}");
            assert!(
                reason.contains("functions.transfer.approval.condition"),
                "{reason}"
            );
            assert!(!reason.contains("4111"), "{reason}");
        }
    }
}
