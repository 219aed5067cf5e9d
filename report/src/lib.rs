//! The SOC 2 report of a period, computed from log entries alone: the evidence the logs hold,
//! mapped to the Trust Services Criteria (AICPA TSC 2017, revised points of focus 2022).
//!
//! [`build`] takes the events of the log entries (each read with [`ReportEvent::from_entry`])
//! and the [`Inputs`] the entries do not hold (the period, the policies in force, the state of
//! each log when the report was made, the prefix of links), and gives a [`Report`];
//! [`render_html`] gives its page. Both are pure and deterministic, so the evidence API (which
//! serves the report and puts it in bundles) and `callproof-verify bundle` (which recomputes it
//! from the bundle's entries and compares, [`differences`]) agree byte for byte.
//!
//! Every figure links the search that lists exactly what it counts, and says what to count in
//! that search's hits ([`Counts`]): the hits themselves, or their distinct calls, principals or
//! agents. A set that no filter names (incomplete calls, self-approvals) is searched by naming
//! its calls or events one by one in the query.
//!
//! No I/O, no async runtime: the crate depends on serde, serde_json and time only.

mod compare;
mod html;
mod html_v1;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use compare::{differences, html_difference};
pub use html::render_html;

/// The report's title.
pub const TITLE: &str = "callproof SOC 2 evidence report";

/// How many single events a figure lists with their proofs, and how many exceptions of one
/// kind are listed one by one (the figure's search lists them all).
pub const SAMPLE: usize = 20;

/// The kinds that end a call whatever they hold; an `approval_decided` that denies also does
/// ([`ends_call`]).
pub const FINAL_KINDS: [&str; 4] = [
    "call_completed",
    "call_failed",
    "call_denied",
    "approval_expired",
];

/// Whether an event of `kind` (with its `approval.decision`, if any) is a call's last: a
/// result, a refusal (`call_denied` is a refused call's first and only event), an expired
/// approval, or an approval a reviewer denied.
pub fn ends_call(kind: &str, approval_decision: Option<&str>) -> bool {
    FINAL_KINDS.contains(&kind) || (kind == "approval_decided" && approval_decision == Some("deny"))
}

/// The kinds that begin a call: `call_received`, or `call_denied` for a refused call (which
/// has no other event).
pub const FIRST_KINDS: [&str; 2] = ["call_received", "call_denied"];

/// One event as the report reads it from its log entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportEvent {
    pub partition: i32,
    pub log_index: u64,
    pub time_micros: i64,
    pub event_id: Option<String>,
    pub call_id: Option<String>,
    pub seq: Option<i64>,
    pub kind: String,
    pub subject: Option<String>,
    pub agent: Option<String>,
    pub function: Option<String>,
    /// `decision.allowed`: the policy's decision (or, on `approval_decided`, whether the
    /// reviewer approved), as the index's `decision` field holds it (`allow`/`deny`).
    pub allowed: Option<bool>,
    pub reviewer: Option<String>,
    /// `approval.decision`: `approve` or `deny`.
    pub approval_decision: Option<String>,
    /// The distinct masking detectors that found something.
    pub detectors: BTreeSet<String>,
}

impl ReportEvent {
    /// Reads an entry (`{"event":…,"source":…}`, its blobs put back); `None` when it holds no
    /// event (a message that was not a call event) or no time.
    pub fn from_entry(partition: i32, log_index: u64, entry: &Value) -> Option<ReportEvent> {
        let event = entry.get("event").filter(|event| event.is_object())?;
        let text = |pointer: &str| {
            event
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Some(ReportEvent {
            partition,
            log_index,
            time_micros: event.get("time").and_then(Value::as_i64)?,
            event_id: text("/event_id"),
            call_id: text("/call_id"),
            seq: event.get("seq").and_then(Value::as_i64),
            kind: text("/kind").unwrap_or_default(),
            subject: text("/principal/subject"),
            agent: text("/principal/actor/subject"),
            function: text("/function"),
            allowed: event.pointer("/decision/allowed").and_then(Value::as_bool),
            reviewer: text("/approval/reviewer"),
            approval_decision: text("/approval/decision"),
            detectors: event
                .get("masking")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|finding| finding.get("detector").and_then(Value::as_str))
                .map(str::to_string)
                .collect(),
        })
    }
}

/// The period: `from` included, `to` excluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    pub from: String,
    pub to: String,
    pub from_micros: i64,
    pub to_micros: i64,
}

impl Period {
    /// From RFC 3339 times, as reports and manifests write them.
    pub fn parse(from: &str, to: &str) -> Result<Period, String> {
        Ok(Period {
            from: from.to_string(),
            to: to.to_string(),
            from_micros: parse_micros(from).ok_or_else(|| format!("{from:?} is not RFC 3339"))?,
            to_micros: parse_micros(to).ok_or_else(|| format!("{to:?} is not RFC 3339"))?,
        })
    }

    /// From µs since the epoch.
    pub fn from_micros(from_micros: i64, to_micros: i64) -> Period {
        Period {
            from: format_micros(from_micros),
            to: format_micros(to_micros),
            from_micros,
            to_micros,
        }
    }

    pub fn contains(&self, micros: i64) -> bool {
        self.from_micros <= micros && micros < self.to_micros
    }
}

/// RFC 3339 into µs since the epoch.
pub fn parse_micros(text: &str) -> Option<i64> {
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000).ok()
}

/// µs since the epoch as RFC 3339 (UTC).
pub fn format_micros(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

/// What the report says that the entries do not hold. It is written into the report
/// ([`Report::context`]) so that the report can be recomputed from it and the entries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// The prefix of every link (the evidence API's public URL; empty for relative links).
    pub link_base: String,
    /// The policy of each function in the configuration the API ran with.
    pub policies: BTreeMap<String, Value>,
    /// Each log the period's events are in.
    pub logs: Vec<LogState>,
}

/// One partition's log: which entries the report counted, and the API's integrity check of the
/// whole log when the report was made (which a bundle cannot repeat: it holds only the period).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogState {
    pub partition: i32,
    /// The report read every entry at positions `entries_from..entries_to`: from the last
    /// kept checkpoint before the period (its size; 0 when there is none) to the first that
    /// covers the period (the latest checkpoint when no kept one does).
    pub entries_from: u64,
    pub entries_to: u64,
    /// The latest checkpoint's size and root (base64).
    pub log_size: u64,
    pub root_hash: String,
    /// The integrity check of the whole log as stored, when the report was made.
    pub verified: bool,
    pub entries_checked: u64,
    pub tiles_checked: u64,
    pub kept_checkpoints_checked: u64,
    pub failure: Option<String>,
}

/// Everything [`build`] needs besides the events.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    pub period: Period,
    pub generated_at: String,
    pub verifier_key: String,
    pub context: Context,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    pub from: String,
    pub to: String,
    pub generated_at: String,
    pub verifier_key: String,
    /// Events of the period (as the log entries hold them).
    pub events: usize,
    /// Calls begun in the period (their `call_received` or `call_denied` is in it).
    pub calls: usize,
    pub sections: Vec<Section>,
    pub context: Context,
}

impl Report {
    /// The inputs the report was built from (with the events).
    pub fn inputs(&self) -> Result<Inputs, String> {
        Ok(Inputs {
            period: Period::parse(&self.from, &self.to)?,
            generated_at: self.generated_at.clone(),
            verifier_key: self.verifier_key.clone(),
            context: self.context.clone(),
        })
    }
}

/// The evidence for one criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub id: String,
    pub title: String,
    /// The criterion, as the TSC word it.
    pub criterion: String,
    /// What callproof records that bears on it.
    pub evidence: String,
    pub figures: Vec<Figure>,
    /// Exceptions an auditor should look at; empty when there are none.
    pub exceptions: Vec<Exception>,
}

/// What to count in a figure's search to get its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counts {
    /// The hits.
    Events,
    /// The distinct `call_id`s of the hits.
    Calls,
    /// The distinct `principal`s of the hits.
    Principals,
    /// The distinct `agent`s of the hits (hits without one are not counted).
    Agents,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub label: String,
    pub value: Value,
    /// The search that lists what the figure counts (or, for a figure that is not a count,
    /// the evidence behind it).
    pub search: Option<String>,
    /// What to count in the search's hits to get `value`; absent when `value` is not a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// Proofs of the single events the figure names (at most [`SAMPLE`]), or the checkpoints
    /// and consistency proofs behind a log's figure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proofs: Vec<String>,
}

/// Something an auditor should look at, with a link to it (a call's timeline, a search, the
/// integrity check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exception {
    pub text: String,
    pub link: Option<String>,
}

/// Links into the evidence API, all for the report's period.
struct Links<'a> {
    base: &'a str,
    from: &'a str,
    to: &'a str,
}

impl Links<'_> {
    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/v1/search` of the period and `pairs`.
    fn search(&self, pairs: &[(&str, &str)]) -> Option<String> {
        let mut query = vec![
            format!("from={}", url_encode(self.from)),
            format!("to={}", url_encode(self.to)),
        ];
        query.extend(
            pairs
                .iter()
                .map(|(key, value)| format!("{key}={}", url_encode(value))),
        );
        Some(self.path(&format!("/v1/search?{}", query.join("&"))))
    }

    fn timeline(&self, call_id: &str) -> String {
        self.path(&format!("/v1/calls/{}", url_encode(call_id)))
    }

    fn proof(&self, event: &ReportEvent) -> String {
        self.path(&format!(
            "/v1/proofs/{}/{}",
            event.partition, event.log_index
        ))
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn url_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Everything but RFC 3986's unreserved characters is escaped in a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A search query (tantivy syntax) matching any of `values` in `field`; one that matches
/// nothing (`event_id:"none"`) for none.
pub fn any_of<'a>(field: &str, values: impl IntoIterator<Item = &'a str>) -> String {
    let terms: Vec<String> = values
        .into_iter()
        .map(|value| {
            let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{field}:\"{quoted}\"")
        })
        .collect();
    if terms.is_empty() {
        "event_id:\"none\"".to_string()
    } else {
        terms.join(" OR ")
    }
}

fn figure(
    label: impl Into<String>,
    value: impl Into<Value>,
    search: Option<String>,
    counts: Option<Counts>,
) -> Figure {
    Figure {
        label: label.into(),
        value: value.into(),
        search,
        counts,
        proofs: Vec::new(),
    }
}

/// One call's events in the period.
struct Call<'a> {
    events: Vec<&'a ReportEvent>,
}

impl Call<'_> {
    fn has(&self, kind: &str) -> bool {
        self.events.iter().any(|event| event.kind == kind)
    }

    fn begun(&self) -> bool {
        FIRST_KINDS.iter().any(|kind| self.has(kind))
    }

    /// Why a call begun in the period is not complete in it, if it is not.
    fn incomplete(&self) -> Option<String> {
        let mut seqs: Vec<i64> = self.events.iter().filter_map(|event| event.seq).collect();
        seqs.sort_unstable();
        let mut expected = 0;
        for seq in seqs {
            if seq > expected {
                return Some(if seq - 1 == expected {
                    format!("event {expected} is missing")
                } else {
                    format!("events {expected} to {} are missing", seq - 1)
                });
            }
            if seq < expected {
                return Some(format!("event {seq} is recorded twice"));
            }
            expected = seq + 1;
        }
        // The last event must end the call, as in the evidence API's timeline: an event after
        // the final one is as much an anomaly as no final event.
        let last = self.events.iter().max_by_key(|event| {
            (
                event.seq.unwrap_or(i64::MAX),
                event.partition,
                event.log_index,
            )
        });
        let ends =
            last.is_some_and(|event| ends_call(&event.kind, event.approval_decision.as_deref()));
        (!ends).then(|| "no final event in the period, or an event after it".to_string())
    }

    fn caller(&self) -> Option<&str> {
        self.events
            .iter()
            .find(|event| FIRST_KINDS.contains(&event.kind.as_str()))
            .and_then(|event| event.subject.as_deref())
    }
}

fn decision_of(event: &ReportEvent) -> Option<&str> {
    event.approval_decision.as_deref()
}

/// Builds the report of `inputs.period` from `events` (those outside the period are left out).
pub fn build(inputs: &Inputs, events: &[ReportEvent]) -> Report {
    let period = &inputs.period;
    let mut events: Vec<&ReportEvent> = events
        .iter()
        .filter(|event| period.contains(event.time_micros))
        .collect();
    events.sort_by_key(|event| (event.time_micros, event.partition, event.log_index));
    let links = Links {
        base: &inputs.context.link_base,
        from: &period.from,
        to: &period.to,
    };
    let of_kind = |kind: &str| -> Vec<&ReportEvent> {
        events
            .iter()
            .copied()
            .filter(|event| event.kind == kind)
            .collect()
    };
    let mut calls: BTreeMap<&str, Call> = BTreeMap::new();
    for event in &events {
        if let Some(call_id) = event.call_id.as_deref() {
            calls
                .entry(call_id)
                .or_insert_with(|| Call { events: Vec::new() })
                .events
                .push(event);
        }
    }
    let begun: BTreeSet<&str> = calls
        .iter()
        .filter(|(_, call)| call.begun())
        .map(|(call_id, _)| *call_id)
        .collect();

    let sections = vec![
        Section {
            id: "CC6.1".into(),
            title: "Logical access: identification and authentication".into(),
            criterion: "The entity implements logical access security software, infrastructure, and architectures over protected information assets to protect them from security events to meet the entity's objectives.".into(),
            evidence: "Every call is authenticated by a verified OIDC bearer token before anything else happens; the call_received event records the principal (issuer, subject, groups, client) and the agent acting for it, and how the token was verified (algorithm, key id). A call refused before it is received (no or bad token, policy, limits) is recorded by its call_denied event alone (CC6.2 / CC6.3).".into(),
            figures: Vec::new(),
            exceptions: Vec::new(),
        },
        Section {
            id: "CC6.2 / CC6.3".into(),
            title: "Authorization: policies in force and refused calls".into(),
            criterion: "CC6.2: Prior to issuing system credentials and granting system access, the entity registers and authorizes new internal and external users whose access is administered by the entity. CC6.3: The entity authorizes, modifies, or removes access to data, software, functions, and other protected information assets based on roles, responsibilities, or the system design and changes, giving consideration to the concepts of least privilege and segregation of duties, to meet the entity's objectives.".into(),
            evidence: "Functions are deny-by-default: only the groups and subjects a function's policy names may call it, and the gateway holds the functions' credentials. Every decision is recorded with the policy and the reason; the policies listed are those of the configuration the evidence API ran with when the report was made.".into(),
            figures: Vec::new(),
            exceptions: Vec::new(),
        },
        Section {
            id: "CC7.2".into(),
            title: "Monitoring: every call recorded, logs intact".into(),
            criterion: "The entity monitors system components and the operation of those components for anomalies that are indicative of malicious acts, natural disasters, and errors affecting the entity's ability to meet its objectives; anomalies are analyzed to determine whether they represent security events.".into(),
            evidence: "The gateway does not make a call whose events the broker has not acknowledged; the processor appends every event to a signed Merkle log per partition. The figures are counted from every log entry between the last kept checkpoint before the period and the first covering it. Each log was verified as stored when this report was made: every checkpoint signature, every entry and tile, and that every kept checkpoint is a prefix of the latest (the log only grew). The checkpoints and consistency proofs are linked.".into(),
            figures: Vec::new(),
            exceptions: Vec::new(),
        },
        Section {
            id: "CC8.1".into(),
            title: "High-risk calls approved".into(),
            criterion: "The entity authorizes, designs, develops or acquires, configures, documents, tests, approves, and implements changes to infrastructure, data, software, and procedures to meet its objectives.".into(),
            evidence: "Functions whose policy requires approval are held until a member of an approver group decides; the caller can never approve its own call. approval_requested, approval_decided and approval_expired events record who decided, what and when.".into(),
            figures: Vec::new(),
            exceptions: Vec::new(),
        },
        Section {
            id: "C1.1".into(),
            title: "Confidential information identified and protected".into(),
            criterion: "The entity identifies and maintains confidential information to meet the entity's objectives related to confidentiality.".into(),
            evidence: "Request and response bodies are masked by the gateway and again by the processor before anything is stored; events record which detector found what where, never the value.".into(),
            figures: Vec::new(),
            exceptions: Vec::new(),
        },
    ];
    let mut sections = sections;
    let [cc61, cc62, cc72, cc81, c11] = &mut sections[..] else {
        unreachable!("five sections")
    };

    // CC6.1: who called, and how they were identified.
    let received = of_kind("call_received");
    let mut by_principal: BTreeMap<&str, usize> = BTreeMap::new();
    let mut agents: BTreeSet<&str> = BTreeSet::new();
    let mut via_agent = 0;
    for event in &received {
        if let Some(subject) = event.subject.as_deref() {
            *by_principal.entry(subject).or_default() += 1;
        }
        if let Some(agent) = event.agent.as_deref() {
            agents.insert(agent);
            via_agent += 1;
        }
    }
    let mut principals: Vec<(&str, usize)> = by_principal.into_iter().collect();
    principals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let agent_query = any_of("agent", agents.iter().copied());
    cc61.figures = vec![
        figure(
            "calls received (authenticated and allowed by policy)",
            received.len(),
            links.search(&[("kind", "call_received")]),
            Some(Counts::Events),
        ),
        figure(
            "distinct principals (token subjects) of the calls received",
            principals.len(),
            links.search(&[("kind", "call_received")]),
            Some(Counts::Principals),
        ),
        figure(
            "distinct acting agents (RFC 8693 `act`) of the calls received",
            agents.len(),
            links.search(&[("kind", "call_received"), ("q", &agent_query)]),
            Some(Counts::Agents),
        ),
        figure(
            "calls received from an agent acting for a user",
            via_agent,
            links.search(&[("kind", "call_received"), ("q", &agent_query)]),
            Some(Counts::Events),
        ),
    ];
    for (subject, count) in principals.iter().take(SAMPLE) {
        cc61.figures.push(figure(
            format!("calls received from {subject}"),
            *count,
            links.search(&[("kind", "call_received"), ("principal", subject)]),
            Some(Counts::Events),
        ));
    }
    for event in received.iter().filter(|event| event.subject.is_none()) {
        let call_id = event.call_id.as_deref().unwrap_or("?");
        cc61.exceptions.push(Exception {
            text: format!("call {call_id} was received without a principal"),
            link: Some(links.timeline(call_id)),
        });
    }

    // CC6.2 / CC6.3: the policies in force and what they refused.
    for (name, policy) in &inputs.context.policies {
        cc62.figures.push(figure(
            format!("policy of {name}"),
            policy.clone(),
            links.search(&[("function", name)]),
            None,
        ));
    }
    let allowed = received
        .iter()
        .filter(|event| event.allowed == Some(true))
        .count();
    cc62.figures.push(figure(
        "calls allowed by policy",
        allowed,
        links.search(&[("kind", "call_received"), ("decision", "allow")]),
        Some(Counts::Events),
    ));
    let refused = of_kind("call_denied");
    let mut refused_figure = figure(
        "calls refused (no valid token, policy, limits: call_denied)",
        refused.len(),
        links.search(&[("kind", "call_denied")]),
        Some(Counts::Events),
    );
    refused_figure.proofs = refused
        .iter()
        .take(SAMPLE)
        .map(|event| links.proof(event))
        .collect();
    cc62.figures.push(refused_figure);
    let mut refused_by_function: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &refused {
        if let Some(function) = event.function.as_deref() {
            *refused_by_function.entry(function).or_default() += 1;
        }
    }
    for (function, count) in refused_by_function {
        cc62.figures.push(figure(
            format!("calls to {function} refused"),
            count,
            links.search(&[("kind", "call_denied"), ("function", function)]),
            Some(Counts::Events),
        ));
    }
    let unknown_functions: BTreeSet<&str> = received
        .iter()
        .filter_map(|event| event.function.as_deref())
        .filter(|function| !inputs.context.policies.contains_key(*function))
        .collect();
    for function in unknown_functions {
        cc62.exceptions.push(Exception {
            text: format!("calls to {function} were received, but the configuration in force does not name it (a policy since removed?)"),
            link: links.search(&[("kind", "call_received"), ("function", function)]),
        });
    }

    // CC7.2: every call recorded from start to end, and the logs intact.
    let mut incomplete: Vec<(&str, String)> = Vec::new();
    for call_id in &begun {
        if let Some(reason) = calls[call_id].incomplete() {
            incomplete.push((*call_id, reason));
        }
    }
    let earlier: Vec<&str> = calls
        .iter()
        .filter(|(_, call)| !call.begun())
        .map(|(call_id, _)| *call_id)
        .collect();
    let begun_query = format!("kind:{} OR kind:{}", FIRST_KINDS[0], FIRST_KINDS[1]);
    cc72.figures = vec![
        figure(
            "events recorded",
            events.len(),
            links.search(&[]),
            Some(Counts::Events),
        ),
        figure(
            "calls begun (call_received, or call_denied for a refused call)",
            begun.len(),
            links.search(&[("q", &begun_query)]),
            Some(Counts::Calls),
        ),
        figure(
            "calls begun without their final event in the period, or with events missing",
            incomplete.len(),
            links.search(&[(
                "q",
                &any_of("call_id", incomplete.iter().map(|(call_id, _)| *call_id)),
            )]),
            Some(Counts::Calls),
        ),
        figure(
            "calls begun before the period with events in it",
            earlier.len(),
            links.search(&[("q", &any_of("call_id", earlier.iter().copied()))]),
            Some(Counts::Calls),
        ),
    ];
    for (call_id, reason) in incomplete.iter().take(SAMPLE) {
        cc72.exceptions.push(Exception {
            text: format!("call {call_id} is incomplete in the period: {reason}"),
            link: Some(links.timeline(call_id)),
        });
    }
    if incomplete.len() > SAMPLE {
        cc72.exceptions.push(Exception {
            text: format!(
                "and {} more incomplete calls (the figure's search lists them all)",
                incomplete.len() - SAMPLE
            ),
            link: None,
        });
    }
    for log in &inputs.context.logs {
        let partition = log.partition;
        let mut proofs = vec![links.path(&format!("/logs/{partition}/checkpoint"))];
        if log.entries_from > 0 {
            proofs.push(links.path(&format!(
                "/logs/{partition}/checkpoints/{}",
                log.entries_from
            )));
        }
        if log.entries_to < log.log_size {
            proofs.push(links.path(&format!("/logs/{partition}/checkpoints/{}", log.entries_to)));
        }
        for (old, new) in [
            (log.entries_from, log.entries_to),
            (log.entries_to, log.log_size),
        ] {
            if old > 0 && old < new {
                proofs.push(links.path(&format!(
                    "/v1/logs/{partition}/consistency?old={old}&new={new}"
                )));
            }
        }
        if let Some(failure) = &log.failure {
            cc72.exceptions.push(Exception {
                text: format!("the log of partition {partition} does not verify: {failure}"),
                link: Some(links.path(&format!("/v1/integrity?partition={partition}"))),
            });
        }
        let mut log_figure = figure(
            format!("log of partition {partition}"),
            json!({
                "entries_read": format!("{}..{}", log.entries_from, log.entries_to),
                "checkpoint_before_period": log.entries_from,
                "checkpoint_covering_period": log.entries_to,
                "log_size": log.log_size,
                "root_hash": log.root_hash,
                "verified_when_generated": log.verified,
                "entries_checked": log.entries_checked,
                "tiles_checked": log.tiles_checked,
                "kept_checkpoints_checked": log.kept_checkpoints_checked,
            }),
            Some(links.path(&format!("/v1/integrity?partition={partition}"))),
            None,
        );
        log_figure.proofs = proofs;
        cc72.figures.push(log_figure);
    }

    // CC8.1: high-risk calls went through approval.
    let requested = of_kind("approval_requested");
    let decided = of_kind("approval_decided");
    let expired = of_kind("approval_expired");
    let approved: Vec<&ReportEvent> = decided
        .iter()
        .copied()
        .filter(|event| decision_of(event) == Some("approve"))
        .collect();
    let denied = decided
        .iter()
        .filter(|event| decision_of(event) == Some("deny"))
        .count();
    let mut waits: Vec<i64> = Vec::new();
    let mut self_approved: Vec<&ReportEvent> = Vec::new();
    let mut reviewers: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &decided {
        if let Some(reviewer) = event.reviewer.as_deref() {
            *reviewers.entry(reviewer).or_default() += 1;
        }
        let call = event.call_id.as_deref().and_then(|id| calls.get(id));
        // The decision event carries the caller's principal; the call's first event too.
        let caller = call.and_then(Call::caller).or(event.subject.as_deref());
        if decision_of(event) == Some("approve")
            && event.reviewer.is_some()
            && event.reviewer.as_deref() == caller
        {
            self_approved.push(*event);
        }
        if let Some(request) = call.and_then(|call| {
            call.events
                .iter()
                .find(|other| other.kind == "approval_requested")
        }) {
            waits.push(event.time_micros - request.time_micros);
        }
        let approves = decision_of(event) == Some("approve");
        if event.allowed.is_some_and(|allowed| allowed != approves) {
            cc81.exceptions.push(Exception {
                text: format!(
                    "the approval decision of call {} at partition {} index {} records approval.decision {:?} but decision.allowed {:?}: the searches by `decision` count it on the other side",
                    event.call_id.as_deref().unwrap_or("?"),
                    event.partition,
                    event.log_index,
                    decision_of(event).unwrap_or("none"),
                    event.allowed
                ),
                link: Some(links.proof(event)),
            });
        }
    }
    waits.sort_unstable();
    let seconds = |micros: Option<&i64>| micros.map(|micros| *micros as f64 / 1e6);
    let mut forwarded_unapproved: Vec<&str> = Vec::new();
    for (call_id, call) in &calls {
        let approved_here = call
            .events
            .iter()
            .any(|event| event.kind == "approval_decided" && decision_of(event) == Some("approve"));
        if call.has("approval_requested") && call.has("call_forwarded") && !approved_here {
            forwarded_unapproved.push(*call_id);
        }
    }
    let mut self_figure = figure(
        "self-approved calls (reviewer is the caller)",
        self_approved.len(),
        links.search(&[(
            "q",
            &any_of(
                "event_id",
                self_approved
                    .iter()
                    .filter_map(|event| event.event_id.as_deref()),
            ),
        )]),
        Some(Counts::Events),
    );
    self_figure.proofs = self_approved
        .iter()
        .take(SAMPLE)
        .map(|event| links.proof(event))
        .collect();
    cc81.figures = vec![
        figure(
            "approvals requested",
            requested.len(),
            links.search(&[("kind", "approval_requested")]),
            Some(Counts::Events),
        ),
        figure(
            "approved by a reviewer",
            approved.len(),
            links.search(&[("kind", "approval_decided"), ("decision", "allow")]),
            Some(Counts::Events),
        ),
        figure(
            "denied by a reviewer",
            denied,
            links.search(&[("kind", "approval_decided"), ("decision", "deny")]),
            Some(Counts::Events),
        ),
        figure(
            "expired undecided",
            expired.len(),
            links.search(&[("kind", "approval_expired")]),
            Some(Counts::Events),
        ),
        figure(
            "time from request to decision",
            json!({
                "decisions_timed": waits.len(),
                "median_seconds": seconds(waits.get(waits.len() / 2)),
                "max_seconds": seconds(waits.last()),
            }),
            links.search(&[("kind", "approval_decided")]),
            None,
        ),
        self_figure,
        figure(
            "calls forwarded without an approval in the period",
            forwarded_unapproved.len(),
            links.search(&[(
                "q",
                &any_of("call_id", forwarded_unapproved.iter().copied()),
            )]),
            Some(Counts::Calls),
        ),
    ];
    for (reviewer, count) in &reviewers {
        cc81.figures.push(figure(
            format!("decisions by {reviewer}"),
            *count,
            links.search(&[("kind", "approval_decided"), ("reviewer", reviewer)]),
            Some(Counts::Events),
        ));
    }
    for event in &self_approved {
        let call_id = event.call_id.as_deref().unwrap_or("?");
        cc81.exceptions.push(Exception {
            text: format!("call {call_id} was approved by its own caller"),
            link: Some(links.timeline(call_id)),
        });
    }
    for call_id in &forwarded_unapproved {
        cc81.exceptions.push(Exception {
            text: format!("call {call_id} was forwarded without an approval in the period"),
            link: Some(links.timeline(call_id)),
        });
    }

    // C1.1: confidential data found and masked.
    let mut by_detector: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &events {
        for detector in &event.detectors {
            *by_detector.entry(detector.as_str()).or_default() += 1;
        }
    }
    let with_findings = events
        .iter()
        .filter(|event| !event.detectors.is_empty())
        .count();
    c11.figures = vec![figure(
        "events in which masking found confidential data",
        with_findings,
        links.search(&[("q", &any_of("detectors", by_detector.keys().copied()))]),
        Some(Counts::Events),
    )];
    for (detector, count) in by_detector {
        c11.figures.push(figure(
            format!("events with {detector} masked"),
            count,
            links.search(&[("detector", detector)]),
            Some(Counts::Events),
        ));
    }

    Report {
        title: TITLE.into(),
        from: period.from.clone(),
        to: period.to.clone(),
        generated_at: inputs.generated_at.clone(),
        verifier_key: inputs.verifier_key.clone(),
        events: events.len(),
        calls: begun.len(),
        sections,
        context: inputs.context.clone(),
    }
}

#[cfg(test)]
mod tests;
