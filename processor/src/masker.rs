//! Masker: every event is masked here before it goes anywhere.
//!
//! The gateway already masked bodies inline per policy, but the processor does not trust
//! that: it runs every detector again over the request and response bodies (as JSON when they
//! parse, as text otherwise) and over the free-text fields (request path, failure message,
//! decision reason, approval comment, and the MCP method, JSON-RPC id and client a caller
//! sent through `/mcp`), and applies the function's policy field rules. Masking
//! is idempotent, so values the gateway already replaced are left alone. Findings are added
//! to the event's `masking` list with pointers prefixed by the field they were found in.
//!
//! Identity fields (principal, acting agent, approvers, reviewer) are not masked: they are
//! what the evidence is about. Neither are the MCP server and tool, set by the gateway from its
//! configuration and the upstream's catalog.

use std::collections::HashMap;

use callproof_config::Config;
use callproof_masking::{FieldRules, Finding, MaskingError};
use callproof_schemas::{CallEvent, MaskingFinding};
use serde_json::Value;

/// The masking stage.
pub struct Masker {
    engine: callproof_masking::Masker,
    /// Per function: the request and response field rules of its policy.
    rules: HashMap<String, (FieldRules, FieldRules)>,
    no_rules: FieldRules,
}

impl Masker {
    pub fn new(config: &Config) -> Result<Masker, MaskingError> {
        let engine = callproof_masking::Masker::new(&config.masking)?;
        let mut rules = HashMap::new();
        for (name, function) in &config.functions {
            rules.insert(
                name.clone(),
                (
                    FieldRules::parse(&function.policy.mask_request)?,
                    FieldRules::parse(&function.policy.mask_response)?,
                ),
            );
        }
        Ok(Masker {
            engine,
            rules,
            no_rules: FieldRules::empty(),
        })
    }

    /// Masks an event in place and appends what was found to `event.masking`.
    pub fn mask(&self, event: &mut CallEvent) {
        let (request_rules, response_rules) = self
            .rules
            .get(&event.function)
            .map(|(request, response)| (request, response))
            .unwrap_or((&self.no_rules, &self.no_rules));
        let mut findings = Vec::new();
        if let Some(request) = &mut event.request {
            if let Some(body) = &mut request.body {
                self.mask_body(body, request_rules, "/request/body", &mut findings);
            }
            self.mask_field(&mut request.path, "/request/path", &mut findings);
        }
        if let Some(response) = &mut event.response
            && let Some(body) = &mut response.body
        {
            self.mask_body(body, response_rules, "/response/body", &mut findings);
        }
        if let Some(failure) = &mut event.failure {
            self.mask_field(&mut failure.message, "/failure/message", &mut findings);
        }
        if let Some(decision) = &mut event.decision {
            self.mask_field(&mut decision.reason, "/decision/reason", &mut findings);
        }
        if let Some(approval) = &mut event.approval
            && let Some(comment) = &mut approval.comment
        {
            self.mask_field(comment, "/approval/comment", &mut findings);
        }
        if let Some(mcp) = &mut event.mcp {
            // Chosen by the client, like the path: the method is recorded as sent even when
            // it is refused, the id is any JSON value, and `clientInfo` any strings.
            self.mask_field(&mut mcp.method, "/mcp/method", &mut findings);
            if let Some(jsonrpc_id) = &mut mcp.jsonrpc_id {
                self.mask_field(jsonrpc_id, "/mcp/jsonrpc_id", &mut findings);
            }
            if let Some(client) = &mut mcp.client {
                self.mask_field(client, "/mcp/client", &mut findings);
            }
        }
        event.masking.extend(findings);
    }

    fn mask_body(
        &self,
        body: &mut String,
        rules: &FieldRules,
        at: &str,
        findings: &mut Vec<MaskingFinding>,
    ) {
        // A body too deep to walk as JSON is masked as text below, which still finds every
        // detector's values (field rules need the structure, so they cannot apply then).
        if let Ok(mut document) = serde_json::from_str::<Value>(body)
            && let Ok(found) = self.engine.mask_json(&mut document, rules, true)
        {
            if !found.is_empty() {
                // Compact JSON: the body's original spacing is not evidence. `to_string` writes
                // through a byte buffer; `Display` through a formatter, measurably slower.
                *body = serde_json::to_string(&document).unwrap_or_else(|_| document.to_string());
                push_findings(findings, at, found);
            }
            return;
        }
        self.mask_field(body, at, findings);
    }

    fn mask_field(&self, text: &mut String, at: &str, findings: &mut Vec<MaskingFinding>) {
        let (masked, found) = self.engine.mask_text(text);
        if found.is_empty() {
            return;
        }
        let masked = masked.into_owned();
        *text = masked;
        push_findings(findings, at, found);
    }
}

fn push_findings(findings: &mut Vec<MaskingFinding>, at: &str, found: Vec<Finding>) {
    findings.extend(found.into_iter().map(|finding| MaskingFinding {
        detector: finding.detector,
        path: format!("{at}{}", finding.path),
        count: i32::try_from(finding.count).unwrap_or(i32::MAX),
    }));
}
