//! Policy expressions on the request path: the variables of one call (`docs/policy.md`), and a
//! rule's outcome for it.
//!
//! A rule is compiled once, when the gateway starts ([`callproof_config::Rule`]); per call, a
//! context is made from the shared environment (an `Arc` clone) and given only the variables
//! the rule reads, each built by borrowing from the call: strings are not copied.

use std::collections::HashMap;
use std::time::Duration;

use callproof_config::Rule;
use callproof_config::policy::{self, Outcome};
use callproof_schemas::Principal;
use cel::Context;
use cel::common::types::{CelList, CelMap, CelMapKey, CelString};
use cel::common::value::Val;
use serde_json::{Map, Value};

/// What a rule may read of one call.
pub struct CallFacts<'v> {
    pub principal: &'v Principal,
    /// The claims named in `ingress.policy_claims`, from the verified token.
    pub claims: &'v Map<String, Value>,
    pub function: &'v str,
    /// `None` until the body has been read: a rule that reads `args` is not decided before.
    pub arguments: Option<&'v Value>,
    /// When the gateway decides, since the Unix epoch.
    pub now: Duration,
}

impl<'v> CallFacts<'v> {
    /// Runs `rule` over this call. A rule that reads the arguments before they were read is
    /// undecided, which fails closed like any other error.
    pub fn evaluate(&self, rule: &Rule) -> Outcome {
        let mut context = Context::with_env(policy::environment());
        if rule.reads("args") {
            let Some(arguments) = self.arguments else {
                return Outcome::Undecided("the arguments were not read yet");
            };
            context.add_variable_as_val("args", policy::json_val(arguments));
        }
        if rule.reads("principal") {
            context.add_variable_as_val("principal", principal_val(self.principal));
        }
        if rule.reads("claims") {
            context.add_variable_as_val("claims", policy::json_map_val(self.claims));
        }
        if rule.reads("call") {
            let mut call = Record::default();
            call.insert("function", Box::new(CelString::from(self.function)));
            context.add_variable_as_val("call", call.into_val());
        }
        if rule.reads("now") {
            context.add_variable_as_val("now", policy::time_val(self.now));
        }
        rule.evaluate(&context)
    }
}

/// `principal`: fields the token does not have are absent, so `has(principal.actor)` tells an
/// agent acting for a user from the user.
fn principal_val(principal: &Principal) -> Box<dyn Val + '_> {
    let mut record = Record::default();
    record.insert("sub", string(&principal.subject));
    record.insert("iss", string(&principal.issuer));
    let groups: Vec<Box<dyn Val + '_>> = principal.groups.iter().map(|g| string(g)).collect();
    record.insert("groups", Box::new(CelList::from(groups)));
    if let Some(email) = &principal.email {
        record.insert("email", string(email));
    }
    if let Some(client_id) = &principal.client_id {
        record.insert("client_id", string(client_id));
    }
    if let Some(actor) = &principal.actor {
        let mut agent = Record::default();
        agent.insert("sub", string(&actor.subject));
        if let Some(issuer) = &actor.issuer {
            agent.insert("iss", string(issuer));
        }
        if let Some(client_id) = &actor.client_id {
            agent.insert("client_id", string(client_id));
        }
        record.insert("actor", agent.into_val());
    }
    record.into_val()
}

fn string(text: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(text))
}

/// A CEL map with string keys, built field by field.
#[derive(Default)]
struct Record<'v>(HashMap<CelMapKey<'v>, Box<dyn Val + 'v>>);

impl<'v> Record<'v> {
    fn insert(&mut self, key: &'static str, value: Box<dyn Val + 'v>) {
        self.0.insert(CelMapKey::from(key), value);
    }

    fn into_val(self) -> Box<dyn Val + 'v> {
        Box::new(CelMap::from(self.0))
    }
}

/// The claims named in `names` from a token that the authenticator has just verified: its
/// payload is read again here rather than kept by the `oidc` crate, and only when a rule reads
/// `claims`. A payload that cannot be read gives no claims (the rule then fails closed).
pub fn selected_claims(token: &str, names: &[String]) -> Map<String, Value> {
    use base64::Engine;
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .unwrap_or_default();
    names
        .iter()
        .filter_map(|name| Some((name.clone(), payload.get(name)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use callproof_config::policy::Vocabulary;
    use callproof_schemas::Actor;
    use serde_json::json;

    fn rule(source: &str) -> Rule {
        let claims = vec!["tenant".to_string()];
        Rule::compile(source, Vocabulary { claims: &claims }).unwrap()
    }

    fn alice(actor: Option<&str>) -> Principal {
        Principal {
            issuer: "https://issuer.example".into(),
            subject: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: vec!["support".into()],
            client_id: None,
            actor: actor.map(|subject| Actor {
                subject: subject.into(),
                issuer: None,
                client_id: None,
            }),
            authentication: None,
        }
    }

    #[test]
    fn every_documented_variable_reaches_the_rule() {
        let principal = alice(Some("agent-7"));
        let claims = Map::from_iter([("tenant".to_string(), json!("acme"))]);
        let arguments = json!({"amount": 1500, "env": "prod"});
        let facts = CallFacts {
            principal: &principal,
            claims: &claims,
            function: "refund",
            arguments: Some(&arguments),
            // 2026-03-04T10:30:00Z, a Wednesday
            now: Duration::from_secs(1_772_620_200),
        };
        for source in [
            r#"principal.sub == "alice" && principal.iss == "https://issuer.example""#,
            r#""support" in principal.groups && principal.email.endsWith("@example.com")"#,
            r#"has(principal.actor) && principal.actor.sub == "agent-7""#,
            r#"!has(principal.client_id) && !has(principal.actor.iss)"#,
            r#"claims.tenant == "acme""#,
            r#"call.function == "refund""#,
            r#"args.amount > 1000 && args.env == "prod""#,
            r#"now.getHours("Europe/Paris") == 11 && now.getDayOfWeek() == 3"#,
        ] {
            assert_eq!(facts.evaluate(&rule(source)), Outcome::Holds, "{source}");
        }
        let user = alice(None);
        let as_user = CallFacts {
            principal: &user,
            ..facts
        };
        assert_eq!(
            as_user.evaluate(&rule("has(principal.actor)")),
            Outcome::DoesNotHold
        );
    }

    #[test]
    fn a_rule_over_the_arguments_is_undecided_before_they_are_read() {
        let principal = alice(None);
        let claims = Map::new();
        let facts = CallFacts {
            principal: &principal,
            claims: &claims,
            function: "refund",
            arguments: None,
            now: Duration::ZERO,
        };
        assert!(matches!(
            facts.evaluate(&rule("args.amount > 1")),
            Outcome::Undecided(_)
        ));
    }

    #[test]
    fn only_the_selected_claims_of_the_token_are_kept() {
        use base64::Engine;
        let payload = json!({"sub": "alice", "tenant": "acme", "secret_hint": "x"});
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
        let token = format!("header.{encoded}.signature");
        let names = ["tenant".to_string(), "acr".to_string()];
        let claims = selected_claims(&token, &names);
        assert_eq!(serde_json::Value::Object(claims), json!({"tenant": "acme"}));
        assert!(selected_claims("not-a-token", &names).is_empty());
    }
}
