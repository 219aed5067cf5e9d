//! The search index's schema and documents, shared by the indexer (which writes the splits),
//! `reindex` and the evidence API (which searches them).
//!
//! The index is a derived view: every document comes from one log entry, built by
//! [`IndexFields::document`] from the stored entry. It lives as immutable splits in the object
//! store (`crate::split`), each covering a range of one partition's log, so
//! `callproof-processor reindex` can rebuild it from the logs alone.
//!
//! | field | type | options | holds |
//! |---|---|---|---|
//! | `event_id` | string (raw) | indexed, stored | the event's UUIDv7 |
//! | `call_id` | string (raw) | indexed, stored | the call the event belongs to |
//! | `kind` | string (raw) | indexed, stored, fast | `call_received`, `call_denied`, … (`undecodable` for a message that was not an event) |
//! | `time` | date (µs) | indexed, stored, fast | the event's time; sort and range-filter on it |
//! | `subject` | string (raw) | indexed, stored | the principal's subject (the user) |
//! | `groups` | string (raw), many | indexed, stored | the principal's groups |
//! | `agent` | string (raw) | indexed, stored | the acting agent's subject (RFC 8693 `act`), if any |
//! | `function` | string (raw) | indexed, stored, fast | the function called |
//! | `decision` | string (raw) | indexed, stored | `allow` or `deny`, when the event carries a decision |
//! | `reviewer` | string (raw) | indexed, stored | the approval's reviewer, if any |
//! | `detectors` | string (raw), many | indexed, stored | distinct masking detectors found in the event (`EMAIL`, `FIELD`, …) |
//! | `status` | i64 | indexed, stored, fast | the response's HTTP status, if any |
//! | `partition` | u64 | indexed, stored, fast | the log (= Kafka partition) holding the entry |
//! | `log_index` | u64 | indexed, stored, fast | the entry's index in that log: fetch it and its proof with `LogReader` |
//! | `body` | text (default tokenizer, positions), many | indexed | masked request and response bodies, failure message, decision reason, approval comment |
//! | `mcp_method` | string (raw) | indexed, stored | the JSON-RPC method of a call through `/mcp` (`tools/call`, …) |
//! | `mcp_server` | string (raw) | indexed, stored | the upstream MCP server's configured name |
//! | `mcp_tool` | string (raw) | indexed, stored | the tool's name at that server |
//! | `mcp_outcome` | string (raw) | indexed, stored | `result`, `tool_error`, `jsonrpc_error` or `transport_error` |
//!
//! Bodies are not stored: the log entry at (`partition`, `log_index`) is the record.

use std::collections::BTreeSet;

use serde_json::Value;

use callproof_schemas::CallEvent;

use crate::entry::field;
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, INDEXED, STORED, STRING, Schema, TEXT,
    TantivyDocument, Value as _,
};
use tantivy::{DateTime, Index, Order};

/// Bumped when the schema changes; an index with another version must be rebuilt
/// (`callproof-processor reindex`). 2: the `mcp_*` fields.
pub const SCHEMA_VERSION: u32 = 2;

/// The fields of the index, resolved against its schema.
#[derive(Clone, Debug)]
pub struct IndexFields {
    pub schema: Schema,
    pub event_id: Field,
    pub call_id: Field,
    pub kind: Field,
    pub time: Field,
    pub subject: Field,
    pub groups: Field,
    pub agent: Field,
    pub function: Field,
    pub decision: Field,
    pub reviewer: Field,
    pub detectors: Field,
    pub status: Field,
    pub partition: Field,
    pub log_index: Field,
    pub body: Field,
    pub mcp_method: Field,
    pub mcp_server: Field,
    pub mcp_tool: Field,
    pub mcp_outcome: Field,
}

impl Default for IndexFields {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexFields {
    /// Builds the schema.
    pub fn new() -> IndexFields {
        let mut builder = Schema::builder();
        let time_options = DateOptions::default()
            .set_indexed()
            .set_stored()
            .set_fast()
            .set_precision(DateTimePrecision::Microseconds);
        let event_id = builder.add_text_field("event_id", STRING | STORED);
        let call_id = builder.add_text_field("call_id", STRING | STORED);
        let kind = builder.add_text_field("kind", STRING | STORED | FAST);
        let time = builder.add_date_field("time", time_options);
        let subject = builder.add_text_field("subject", STRING | STORED);
        let groups = builder.add_text_field("groups", STRING | STORED);
        let agent = builder.add_text_field("agent", STRING | STORED);
        let function = builder.add_text_field("function", STRING | STORED | FAST);
        let decision = builder.add_text_field("decision", STRING | STORED);
        let reviewer = builder.add_text_field("reviewer", STRING | STORED);
        let detectors = builder.add_text_field("detectors", STRING | STORED);
        let status = builder.add_i64_field("status", INDEXED | STORED | FAST);
        let partition = builder.add_u64_field("partition", INDEXED | STORED | FAST);
        let log_index = builder.add_u64_field("log_index", INDEXED | STORED | FAST);
        let body = builder.add_text_field("body", TEXT);
        // Added last, so the fields before keep their ids.
        let mcp_method = builder.add_text_field("mcp_method", STRING | STORED);
        let mcp_server = builder.add_text_field("mcp_server", STRING | STORED);
        let mcp_tool = builder.add_text_field("mcp_tool", STRING | STORED);
        let mcp_outcome = builder.add_text_field("mcp_outcome", STRING | STORED);
        IndexFields {
            schema: builder.build(),
            event_id,
            call_id,
            kind,
            time,
            subject,
            groups,
            agent,
            function,
            decision,
            reviewer,
            detectors,
            status,
            partition,
            log_index,
            body,
            mcp_method,
            mcp_server,
            mcp_tool,
            mcp_outcome,
        }
    }

    /// The fields a free-text query searches when it names none.
    pub fn default_query_fields(&self) -> Vec<Field> {
        vec![
            self.body,
            self.event_id,
            self.call_id,
            self.subject,
            self.agent,
            self.function,
        ]
    }

    /// The document of one log entry, resolved (blobs put back), for `reindex`: it takes the
    /// same [`Indexed`] values the processor takes from the event it has just masked
    /// ([`IndexFields::event_document`]), so a rebuilt index is the same index. Lenient: a field
    /// an entry lacks is left out of its document.
    pub fn document(&self, entry: &Value, partition: i32, log_index: u64) -> TantivyDocument {
        match entry.get("event").filter(|event| event.is_object()) {
            Some(event) => self.indexed_document(&Indexed::of_value(event), partition, log_index),
            None => self.undecodable_document(partition, log_index),
        }
    }

    /// The document of a masked event.
    pub fn event_document(
        &self,
        event: &CallEvent,
        partition: i32,
        log_index: u64,
    ) -> TantivyDocument {
        self.indexed_document(&Indexed::of_event(event), partition, log_index)
    }

    fn indexed_document(
        &self,
        indexed: &Indexed<'_>,
        partition: i32,
        log_index: u64,
    ) -> TantivyDocument {
        let mut document = self.position_document(partition, log_index);
        for (field, value) in [
            (self.event_id, indexed.event_id),
            (self.call_id, indexed.call_id),
            (self.kind, indexed.kind),
            (self.subject, indexed.subject),
            (self.agent, indexed.agent),
            (self.function, indexed.function),
            (self.reviewer, indexed.reviewer),
            (self.mcp_method, indexed.mcp_method),
            (self.mcp_server, indexed.mcp_server),
            (self.mcp_tool, indexed.mcp_tool),
            (self.mcp_outcome, indexed.mcp_outcome),
        ] {
            if let Some(value) = value {
                document.add_text(field, value);
            }
        }
        if let Some(micros) = indexed.time_micros {
            document.add_date(self.time, DateTime::from_timestamp_micros(micros));
        }
        for group in &indexed.groups {
            document.add_text(self.groups, group);
        }
        if let Some(allowed) = indexed.allowed {
            document.add_text(self.decision, if allowed { "allow" } else { "deny" });
        }
        for detector in &indexed.detectors {
            document.add_text(self.detectors, detector);
        }
        if let Some(status) = indexed.status {
            document.add_i64(self.status, status);
        }
        for text in indexed.texts.into_iter().flatten() {
            document.add_text(self.body, text);
        }
        document
    }

    /// The document of a message that was not a call event.
    pub fn undecodable_document(&self, partition: i32, log_index: u64) -> TantivyDocument {
        let mut document = self.position_document(partition, log_index);
        document.add_text(self.kind, "undecodable");
        document
    }

    fn position_document(&self, partition: i32, log_index: u64) -> TantivyDocument {
        let mut document = TantivyDocument::default();
        document.add_u64(self.partition, u64::try_from(partition).unwrap_or_default());
        document.add_u64(self.log_index, log_index);
        document
    }
}

/// What the index takes from an event, borrowed from the event or from its entry's JSON.
struct Indexed<'a> {
    event_id: Option<&'a str>,
    call_id: Option<&'a str>,
    kind: Option<&'a str>,
    function: Option<&'a str>,
    time_micros: Option<i64>,
    subject: Option<&'a str>,
    agent: Option<&'a str>,
    groups: Vec<&'a str>,
    reviewer: Option<&'a str>,
    allowed: Option<bool>,
    detectors: BTreeSet<&'a str>,
    status: Option<i64>,
    mcp_method: Option<&'a str>,
    mcp_server: Option<&'a str>,
    mcp_tool: Option<&'a str>,
    mcp_outcome: Option<&'a str>,
    /// Full text: request body, response body, failure message, decision reason, approval
    /// comment.
    texts: [Option<&'a str>; 5],
}

impl<'a> Indexed<'a> {
    fn of_event(event: &'a CallEvent) -> Indexed<'a> {
        let principal = event.principal.as_ref();
        let approval = event.approval.as_ref();
        let mcp = event.mcp.as_ref();
        Indexed {
            event_id: Some(&event.event_id),
            call_id: Some(&event.call_id),
            kind: Some(event.kind.as_str()),
            function: Some(&event.function),
            time_micros: Some(event.time),
            subject: principal.map(|principal| principal.subject.as_str()),
            agent: principal
                .and_then(|principal| principal.actor.as_ref())
                .map(|actor| actor.subject.as_str()),
            groups: principal
                .into_iter()
                .flat_map(|principal| &principal.groups)
                .map(String::as_str)
                .collect(),
            reviewer: approval.and_then(|approval| approval.reviewer.as_deref()),
            allowed: event.decision.as_ref().map(|decision| decision.allowed),
            detectors: event
                .masking
                .iter()
                .map(|finding| finding.detector.as_str())
                .collect(),
            status: event
                .response
                .as_ref()
                .map(|response| i64::from(response.status)),
            mcp_method: mcp.map(|mcp| mcp.method.as_str()),
            mcp_server: mcp.and_then(|mcp| mcp.server.as_deref()),
            mcp_tool: mcp.and_then(|mcp| mcp.tool.as_deref()),
            mcp_outcome: mcp
                .and_then(|mcp| mcp.outcome)
                .map(|outcome| outcome.as_str()),
            texts: [
                event
                    .request
                    .as_ref()
                    .and_then(|request| request.body.as_deref()),
                event
                    .response
                    .as_ref()
                    .and_then(|response| response.body.as_deref()),
                event
                    .failure
                    .as_ref()
                    .map(|failure| failure.message.as_str()),
                event
                    .decision
                    .as_ref()
                    .map(|decision| decision.reason.as_str()),
                approval.and_then(|approval| approval.comment.as_deref()),
            ],
        }
    }

    fn of_value(event: &'a Value) -> Indexed<'a> {
        let text = |path: &[&str]| field(event, path).and_then(Value::as_str);
        Indexed {
            event_id: text(&["event_id"]),
            call_id: text(&["call_id"]),
            kind: text(&["kind"]),
            function: text(&["function"]),
            time_micros: event.get("time").and_then(Value::as_i64),
            subject: text(&["principal", "subject"]),
            agent: text(&["principal", "actor", "subject"]),
            groups: field(event, &["principal", "groups"])
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect(),
            reviewer: text(&["approval", "reviewer"]),
            allowed: field(event, &["decision", "allowed"]).and_then(Value::as_bool),
            detectors: event
                .get("masking")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|finding| finding.get("detector").and_then(Value::as_str))
                .collect(),
            status: field(event, &["response", "status"]).and_then(Value::as_i64),
            mcp_method: text(&["mcp", "method"]),
            mcp_server: text(&["mcp", "server"]),
            mcp_tool: text(&["mcp", "tool"]),
            mcp_outcome: text(&["mcp", "outcome"]),
            texts: [
                text(&["request", "body"]),
                text(&["response", "body"]),
                text(&["failure", "message"]),
                text(&["decision", "reason"]),
                text(&["approval", "comment"]),
            ],
        }
    }
}

/// One search hit: where the entry is in the logs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub time_micros: i64,
    pub partition: i32,
    pub log_index: u64,
    pub event_id: Option<String>,
}

/// Searches indexes (splits, opened) with a tantivy query string (`function:get_customer AND
/// detectors:EMAIL`, free text searches [`IndexFields::default_query_fields`]) and returns up
/// to `limit` hits per index, newest first overall.
pub fn search(indexes: &[(i32, Index)], query: &str, limit: usize) -> tantivy::Result<Vec<Hit>> {
    let fields = IndexFields::new();
    let mut hits = Vec::new();
    for (_, index) in indexes {
        let reader = index.reader()?;
        let searcher = reader.searcher();
        let parser = QueryParser::for_index(index, fields.default_query_fields());
        let query = parser.parse_query(query)?;
        let top = searcher.search(
            &query,
            &TopDocs::with_limit(limit.max(1)).order_by_fast_field::<DateTime>("time", Order::Desc),
        )?;
        for (_, address) in top {
            let document: TantivyDocument = searcher.doc(address)?;
            let u64_of = |field| document.get_first(field).and_then(|v| v.as_u64());
            hits.push(Hit {
                time_micros: document
                    .get_first(fields.time)
                    .and_then(|v| v.as_datetime())
                    .map(|time| time.into_timestamp_micros())
                    .unwrap_or_default(),
                partition: u64_of(fields.partition)
                    .and_then(|p| i32::try_from(p).ok())
                    .unwrap_or_default(),
                log_index: u64_of(fields.log_index).unwrap_or_default(),
                event_id: document
                    .get_first(fields.event_id)
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            });
        }
    }
    hits.sort_by(|a, b| b.cmp(a));
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::tests::full_event;
    use tantivy::Document as _;

    /// `reindex` builds documents from stored entries, the pipeline from the masked event: both
    /// must index the same values.
    #[test]
    fn an_entry_and_its_event_give_the_same_document() {
        let fields = IndexFields::new();
        let mut sparse = full_event();
        sparse.principal = None;
        sparse.approval = None;
        sparse.decision = None;
        sparse.masking.clear();
        sparse.mcp = None;
        for event in [full_event(), sparse] {
            let entry = serde_json::json!({"event": serde_json::to_value(&event).unwrap()});
            let from_entry = fields.document(&entry, 3, 17).to_json(&fields.schema);
            let from_event = fields.event_document(&event, 3, 17).to_json(&fields.schema);
            assert_eq!(from_entry, from_event);
            assert!(from_event.contains("\"call_id\""), "{from_event}");
        }
        let full = fields
            .event_document(&full_event(), 3, 17)
            .to_json(&fields.schema);
        for expected in [
            "\"agent\"",
            "\"reviewer\"",
            "\"deny\"",
            "\"EMAIL\"",
            "\"support\"",
            "\"mcp_method\":[\"tools/call\"]",
            "\"mcp_server\":[\"crm\"]",
            "\"mcp_tool\":[\"get_customer\"]",
            "\"mcp_outcome\":[\"jsonrpc_error\"]",
        ] {
            assert!(full.contains(expected), "{expected} missing from {full}");
        }
    }

    #[test]
    fn an_mcp_call_is_found_by_its_server_tool_and_outcome() {
        let fields = IndexFields::new();
        let index = Index::create_in_ram(fields.schema.clone());
        let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut plain = full_event();
        plain.event_id = "plain".into();
        plain.mcp = None;
        writer
            .add_document(fields.event_document(&full_event(), 0, 0))
            .unwrap();
        writer
            .add_document(fields.event_document(&plain, 0, 1))
            .unwrap();
        writer.commit().unwrap();
        let indexes = [(0, index)];
        let found = |query: &str| -> Vec<Option<String>> {
            search(&indexes, query, 10)
                .unwrap()
                .into_iter()
                .map(|hit| hit.event_id)
                .collect()
        };
        let mcp_event = vec![Some(full_event().event_id)];
        assert_eq!(found("mcp_tool:get_customer"), mcp_event);
        assert_eq!(
            found("mcp_server:crm AND mcp_method:\"tools/call\" AND mcp_outcome:jsonrpc_error"),
            mcp_event
        );
        assert!(found("mcp_tool:get_customers").is_empty());
        assert_eq!(found("function:refund").len(), 2);
    }
}
