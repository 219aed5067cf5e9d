//! A configured function, compiled for the request path: its policy (subject and group lists,
//! the CEL allow rule), its masking rules and the credential the gateway adds on the way
//! upstream.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use callproof_config::policy::{Outcome, Vocabulary};
use callproof_config::{Credential, FunctionConfig, IngressConfig, PolicyConfig, Rule};
use callproof_masking::FieldRules;
use callproof_schemas::Decision;
use http::{HeaderName, HeaderValue, header};

use crate::approval::ApprovalPolicy;
use crate::rules::CallFacts;

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
    /// Empty: any agent (or none). Else the call must come through one of them.
    allow_agents: HashSet<String>,
    /// `policy.allow`, with its key (`functions.<name>.policy.allow`), which names it in the
    /// recorded decisions.
    allow: Option<(String, Rule)>,
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
        let vocabulary = Vocabulary {
            claims: &ingress.policy_claims,
        };
        Ok(Function {
            upstream,
            timeout: Duration::from_millis(config.timeout_ms.unwrap_or(ingress.default_timeout_ms)),
            max_request_bytes: config
                .max_request_bytes
                .unwrap_or(ingress.max_request_bytes),
            policy: Policy::compile(&format!("functions.{name}"), &config.policy, vocabulary)?,
            credential: credential_header(&config.credential)
                .map_err(|reason| anyhow::anyhow!("`functions.{name}.credential`: {reason}"))?,
            approval: config
                .approval
                .as_ref()
                .map(|approval| {
                    ApprovalPolicy::compile(&format!("functions.{name}"), approval, vocabulary)
                })
                .transpose()?,
        })
    }
}

impl Function {
    /// Whether a rule of this function reads `claims`: only then are they read from the token.
    pub fn reads_claims(&self) -> bool {
        let allow = self.policy.allow.as_ref().map(|(_, rule)| rule);
        let condition = self
            .approval
            .as_ref()
            .and_then(|approval| approval.condition.as_ref());
        allow
            .into_iter()
            .chain(condition)
            .any(|rule| rule.reads("claims"))
    }
}

impl Policy {
    /// Compiles `<prefix>.policy` (`functions.<name>`, `mcp.servers.<server>.tools.<tool>`).
    pub fn compile(
        prefix: &str,
        policy: &PolicyConfig,
        vocabulary: Vocabulary<'_>,
    ) -> anyhow::Result<Policy> {
        let allow = policy
            .allow
            .as_deref()
            .map(|source| {
                let key = format!("{prefix}.policy.allow");
                Rule::compile(source, vocabulary)
                    .map(|rule| (key.clone(), rule))
                    .map_err(|error| anyhow::anyhow!("`{key}` {error}"))
            })
            .transpose()?;
        Ok(Policy {
            id: format!("{prefix}.policy"),
            allow_subjects: policy.allow_subjects.iter().cloned().collect(),
            allow_groups: policy.allow_groups.iter().cloned().collect(),
            allow_agents: policy.allow_agents.iter().cloned().collect(),
            allow,
            mask_request: FieldRules::parse(&policy.mask_request)?,
            mask_response: FieldRules::parse(&policy.mask_response)?,
            detect: policy.detect,
        })
    }

    /// Deny by default, and only through the listed agents when `allow_agents` is set: see
    /// [`Policy::decide_caller`]. `None` when only the allow rule can decide and it reads the
    /// arguments, which are not read yet: the caller asks again with them.
    pub fn decide(&self, facts: &CallFacts<'_>) -> Option<Decision> {
        let decision = self.decide_caller(facts)?;
        if !decision.allowed || self.allow_agents.is_empty() {
            return Some(decision);
        }
        let principal = facts.principal;
        let agent = principal
            .actor
            .as_ref()
            .map(|actor| actor.subject.as_str())
            .or(principal.client_id.as_deref());
        Some(match agent {
            Some(agent) if self.allow_agents.contains(agent) => Decision {
                reason: format!("{}, through agent {agent}", decision.reason),
                ..decision
            },
            Some(agent) => self.denied(format!(
                "{}, but not through agent {agent}, which is not listed",
                decision.reason
            )),
            None => self.denied(format!(
                "{}, but only through listed agents and the token names none",
                decision.reason
            )),
        })
    }

    /// Deny by default: allowed when the subject or one of its groups is listed, or the allow
    /// rule holds.
    fn decide_caller(&self, facts: &CallFacts<'_>) -> Option<Decision> {
        let principal = facts.principal;
        let allowed = |reason: String| Decision {
            allowed: true,
            policy_id: Some(self.id.clone()),
            reason,
        };
        if self.allow_subjects.contains(&principal.subject) {
            return Some(allowed(format!("subject {} is allowed", principal.subject)));
        }
        if let Some(group) = principal
            .groups
            .iter()
            .find(|group| self.allow_groups.contains(*group))
        {
            return Some(allowed(format!("group {group} is allowed")));
        }
        let not_listed = format!(
            "neither subject {} nor its groups are allowed",
            principal.subject
        );
        let Some((key, rule)) = &self.allow else {
            return Some(self.denied(not_listed));
        };
        if rule.reads("args") && facts.arguments.is_none() {
            return None;
        }
        // The reason names the rule, never what it read: the arguments may be personal data.
        Some(match facts.evaluate(rule) {
            Outcome::Holds => allowed(format!("rule `{key}` holds")),
            Outcome::DoesNotHold => {
                self.denied(format!("{not_listed}, and rule `{key}` does not hold"))
            }
            Outcome::Undecided(why) => {
                tracing::info!(rule = %key, why, "allow rule could not be decided: denied");
                self.denied(format!(
                    "rule `{key}` could not be decided ({why}), so the call is denied"
                ))
            }
        })
    }

    fn denied(&self, reason: String) -> Decision {
        Decision {
            allowed: false,
            policy_id: Some(self.id.clone()),
            reason,
        }
    }
}

pub(crate) fn credential_header(
    credential: &Credential,
) -> Result<Option<(HeaderName, HeaderValue)>, String> {
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

#[cfg(test)]
mod tests {
    use callproof_config::PolicyConfig;
    use callproof_config::policy::Vocabulary;
    use callproof_schemas::{Actor, Principal};

    use super::Policy;
    use crate::rules::CallFacts;

    fn caller(actor: Option<&str>, client_id: Option<&str>) -> Principal {
        Principal {
            issuer: "https://issuer.example".into(),
            subject: "alice".into(),
            email: None,
            groups: vec!["support".into()],
            client_id: client_id.map(str::to_string),
            actor: actor.map(|subject| Actor {
                subject: subject.into(),
                issuer: None,
                client_id: None,
            }),
            authentication: None,
        }
    }

    fn decide(policy: &Policy, principal: &Principal) -> (bool, String) {
        let claims = serde_json::Map::new();
        let facts = CallFacts {
            principal,
            claims: &claims,
            function: "f",
            arguments: None,
            now: std::time::Duration::ZERO,
        };
        let decision = policy.decide(&facts).unwrap();
        (decision.allowed, decision.reason)
    }

    #[test]
    fn allow_agents_narrows_who_the_other_keys_allowed() {
        let config = PolicyConfig {
            allow_groups: vec!["support".into()],
            allow_agents: vec!["claude-code".into()],
            ..PolicyConfig::default()
        };
        let policy = Policy::compile("functions.f", &config, Vocabulary::default()).unwrap();
        let (allowed, reason) = decide(&policy, &caller(Some("claude-code"), None));
        assert!(allowed, "{reason}");
        assert!(reason.contains("through agent claude-code"), "{reason}");
        // Without an actor the token's client is the agent.
        assert!(decide(&policy, &caller(None, Some("claude-code"))).0);
        let (allowed, reason) = decide(&policy, &caller(Some("rogue-bot"), None));
        assert!(!allowed);
        assert!(reason.contains("rogue-bot"), "{reason}");
        let (allowed, reason) = decide(&policy, &caller(None, None));
        assert!(!allowed);
        assert!(reason.contains("names none"), "{reason}");
        // It never allows on its own: a listed agent acting for someone not allowed is refused.
        let mut outsider = caller(Some("claude-code"), None);
        outsider.groups = vec!["sales".into()];
        assert!(!decide(&policy, &outsider).0);
    }
}
