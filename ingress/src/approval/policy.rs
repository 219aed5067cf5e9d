//! A function's approval rule, compiled from `[functions.<name>.approval]`.

use std::time::Duration;

use callproof_config::{ApprovalConfig, Condition};
use serde_json::Value;

pub struct ApprovalPolicy {
    pub id: String,
    /// `None`: every call needs approval.
    pub condition: Option<Condition>,
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
    pub fn compile(name: &str, config: &ApprovalConfig) -> anyhow::Result<ApprovalPolicy> {
        let condition = config
            .condition
            .as_deref()
            .map(Condition::parse)
            .transpose()
            .map_err(|error| anyhow::anyhow!("`functions.{name}.approval.condition` {error}"))?;
        let webhook = match &config.webhook_url {
            None => None,
            Some(secret) => {
                // The error deliberately does not repeat the URL: it is a credential.
                let url = reqwest::Url::parse(secret.expose())
                    .ok()
                    .filter(|url| matches!(url.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "`functions.{name}.approval.webhook_url` is not an http(s) URL"
                        )
                    })?;
                Some(WebhookUrl(url))
            }
        };
        Ok(ApprovalPolicy {
            id: format!("functions.{name}.approval"),
            condition,
            approver_groups: config.approver_groups.clone(),
            quorum: config.quorum,
            expiry: Duration::from_secs(config.expiry_secs),
            webhook,
        })
    }

    /// Why this call needs approval, or `None` if it does not. A condition that cannot be
    /// evaluated (a missing field compared with `>`) requires approval: fail closed.
    pub fn requirement(&self, arguments: &Value) -> Option<String> {
        let Some(condition) = &self.condition else {
            return Some("every call of this function needs approval".to_string());
        };
        match condition.evaluate(arguments) {
            Ok(true) => Some(format!("condition `{condition}` holds")),
            Ok(false) => None,
            Err(error) => Some(format!(
                "condition `{condition}` cannot be evaluated ({error}), so approval is required"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(condition: Option<&str>) -> ApprovalPolicy {
        let config = ApprovalConfig {
            condition: condition.map(str::to_string),
            approver_groups: vec!["treasury".into()],
            quorum: 1,
            expiry_secs: 900,
            webhook_url: None,
        };
        ApprovalPolicy::compile("transfer", &config).unwrap()
    }

    #[test]
    fn always_or_when_the_condition_holds_or_cannot_be_decided() {
        assert!(policy(None).requirement(&json!({})).is_some());
        let large = policy(Some("amount > 1000"));
        assert!(large.requirement(&json!({"amount": 5000})).is_some());
        assert!(large.requirement(&json!({"amount": 10})).is_none());
        let undecidable = large.requirement(&json!({"amount": "lots"})).unwrap();
        assert!(undecidable.contains("cannot be evaluated"), "{undecidable}");
        assert!(!undecidable.contains("lots"));
    }
}
