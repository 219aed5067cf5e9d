//! A configured function, compiled for the request path: its policy, its masking rules and the
//! credential the gateway adds on the way upstream.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use callproof_config::{Credential, FunctionConfig, IngressConfig};
use callproof_masking::FieldRules;
use callproof_schemas::{Decision, Principal};
use http::{HeaderName, HeaderValue, header};

use crate::approval::ApprovalPolicy;

pub struct Function {
    pub upstream: reqwest::Url,
    pub timeout: Duration,
    pub max_request_bytes: usize,
    pub policy: Policy,
    /// Marked sensitive, so `Debug` of the header map never shows it.
    pub credential: Option<(HeaderName, HeaderValue)>,
    /// Set when some or all calls need approval before they run.
    pub approval: Option<ApprovalPolicy>,
}

pub struct Policy {
    pub id: String,
    allow_subjects: HashSet<String>,
    allow_groups: HashSet<String>,
    pub mask_request: FieldRules,
    pub mask_response: FieldRules,
    pub detect: bool,
}

impl Function {
    pub fn compile(
        name: &str,
        config: &FunctionConfig,
        ingress: &IngressConfig,
    ) -> anyhow::Result<Function> {
        let upstream = reqwest::Url::parse(&config.upstream)
            .map_err(|error| anyhow::anyhow!("`functions.{name}.upstream`: {error}"))?;
        let policy = &config.policy;
        Ok(Function {
            upstream,
            timeout: Duration::from_millis(config.timeout_ms.unwrap_or(ingress.default_timeout_ms)),
            max_request_bytes: config
                .max_request_bytes
                .unwrap_or(ingress.max_request_bytes),
            policy: Policy {
                id: format!("functions.{name}.policy"),
                allow_subjects: policy.allow_subjects.iter().cloned().collect(),
                allow_groups: policy.allow_groups.iter().cloned().collect(),
                mask_request: FieldRules::parse(&policy.mask_request)?,
                mask_response: FieldRules::parse(&policy.mask_response)?,
                detect: policy.detect,
            },
            credential: credential_header(&config.credential)
                .map_err(|reason| anyhow::anyhow!("`functions.{name}.credential`: {reason}"))?,
            approval: config
                .approval
                .as_ref()
                .map(|approval| ApprovalPolicy::compile(name, approval))
                .transpose()?,
        })
    }
}

impl Policy {
    /// Deny by default: allowed only when the subject or one of its groups is listed.
    pub fn decide(&self, principal: &Principal) -> Decision {
        let reason = if self.allow_subjects.contains(&principal.subject) {
            Some(format!("subject {} is allowed", principal.subject))
        } else {
            principal
                .groups
                .iter()
                .find(|group| self.allow_groups.contains(*group))
                .map(|group| format!("group {group} is allowed"))
        };
        Decision {
            allowed: reason.is_some(),
            policy_id: Some(self.id.clone()),
            reason: reason.unwrap_or_else(|| {
                format!(
                    "neither subject {} nor its groups are allowed",
                    principal.subject
                )
            }),
        }
    }
}

fn credential_header(credential: &Credential) -> Result<Option<(HeaderName, HeaderValue)>, String> {
    let secret_of = |secret: &Option<callproof_config::Secret>| {
        secret
            .as_ref()
            .map(|secret| secret.expose().to_string())
            .unwrap_or_default()
    };
    let (name, value) = match credential {
        Credential::None => return Ok(None),
        Credential::Bearer(bearer) => (
            header::AUTHORIZATION,
            format!("Bearer {}", secret_of(&bearer.token)),
        ),
        Credential::Basic(basic) => {
            let pair = format!("{}:{}", basic.username, secret_of(&basic.password));
            (
                header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            )
        }
        Credential::Header(custom) => (
            HeaderName::from_bytes(custom.name.as_bytes())
                .map_err(|_| format!("{:?} is not a valid header name", custom.name))?,
            secret_of(&custom.value),
        ),
    };
    // The reason deliberately does not include the value.
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| "the credential contains characters not allowed in a header".to_string())?;
    value.set_sensitive(true);
    Ok(Some((name, value)))
}
