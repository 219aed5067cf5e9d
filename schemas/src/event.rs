//! Rust mirror of `call_event.avsc`. Field names and order follow the schema exactly, because the
//! Avro serde bridge matches record fields by name.

use serde::{Deserialize, Serialize};

/// One step in the lifecycle of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    pub event_id: String,
    pub call_id: String,
    pub seq: i32,
    pub kind: EventKind,
    /// Microseconds since the Unix epoch (Avro `timestamp-micros`).
    pub time: i64,
    pub gateway: String,
    /// What was called: a function as named in the request path; an MCP tool call as
    /// `mcp:<server>__<tool>`; `mcp` for an MCP request refused before a tool is known.
    pub function: String,
    pub principal: Option<Principal>,
    pub request: Option<Request>,
    pub response: Option<Response>,
    pub decision: Option<Decision>,
    pub approval: Option<Approval>,
    pub failure: Option<Failure>,
    pub masking: Vec<MaskingFinding>,
    /// The MCP facts of a call made through `/mcp`; `None` on the HTTP function path.
    ///
    /// Left out of the event's JSON when `None` (a field added after v1): a log entry is the
    /// canonical JSON of its event, and entries of events without it must stay byte for byte
    /// what they were before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Mcp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    CallReceived,
    CallDenied,
    ApprovalRequested,
    ApprovalDecided,
    ApprovalExpired,
    CallForwarded,
    CallCompleted,
    CallFailed,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::CallReceived,
        EventKind::CallDenied,
        EventKind::ApprovalRequested,
        EventKind::ApprovalDecided,
        EventKind::ApprovalExpired,
        EventKind::CallForwarded,
        EventKind::CallCompleted,
        EventKind::CallFailed,
    ];

    /// The schema's symbol for this kind, e.g. `call_received`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CallReceived => "call_received",
            EventKind::CallDenied => "call_denied",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::ApprovalDecided => "approval_decided",
            EventKind::ApprovalExpired => "approval_expired",
            EventKind::CallForwarded => "call_forwarded",
            EventKind::CallCompleted => "call_completed",
            EventKind::CallFailed => "call_failed",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller, as established from a verified token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub client_id: Option<String>,
    /// The agent acting for the subject (RFC 8693 `act` claim).
    pub actor: Option<Actor>,
    pub authentication: Option<Authentication>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub subject: String,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authentication {
    pub method: String,
    pub algorithm: String,
    pub key_id: Option<String>,
    pub token_id: Option<String>,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The body as forwarded, after inline masking.
    pub body: Option<String>,
    /// Size of the body as received from the caller.
    pub body_bytes: i64,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub status: i32,
    /// The body as returned to the caller, after inline masking.
    pub body: Option<String>,
    /// Size of the body as received from the function.
    pub body_bytes: i64,
    pub latency_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub policy_id: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Groups whose members may decide.
    pub approvers: Vec<String>,
    pub quorum: i32,
    pub reviewer: Option<String>,
    pub decision: Option<ApprovalDecision>,
    pub comment: Option<String>,
    pub expires_at: Option<i64>,
    /// SHA-256 (hex) of the exact arguments the approval is for.
    pub arguments_sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approve,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

/// What masking found at one place; never the matched value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskingFinding {
    pub detector: String,
    /// JSON pointer, prefixed by `/request/body` or `/response/body`.
    pub path: String,
    pub count: i32,
}

/// What a call through the MCP endpoint adds to its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mcp {
    /// The JSON-RPC method, e.g. `tools/call`.
    pub method: String,
    /// The configured upstream server's name.
    pub server: Option<String>,
    /// The tool's name at the upstream server.
    pub tool: Option<String>,
    /// The request id as JSON text: `7` or `"a"`.
    pub jsonrpc_id: Option<String>,
    /// The first 16 hex digits of the SHA-256 of the gateway's session id: the id itself is a
    /// bearer handle and is never recorded.
    pub session: Option<String>,
    pub protocol_version: Option<String>,
    /// The client's self-reported `clientInfo`, as `name/version`.
    pub client: Option<String>,
    pub outcome: Option<McpOutcome>,
    /// The JSON-RPC error code when `outcome` is `jsonrpc_error`.
    pub error_code: Option<i32>,
}

/// How the upstream answered a tool call. Variant order is the schema's symbol order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpOutcome {
    /// A result.
    Result,
    /// A result with `isError: true`: the tool ran and reported an error.
    ToolError,
    /// A JSON-RPC error response.
    JsonrpcError,
    /// No answer: the connection failed or timed out.
    TransportError,
}

impl McpOutcome {
    pub const ALL: [McpOutcome; 4] = [
        McpOutcome::Result,
        McpOutcome::ToolError,
        McpOutcome::JsonrpcError,
        McpOutcome::TransportError,
    ];

    /// The schema's symbol for this outcome, e.g. `tool_error`.
    pub fn as_str(self) -> &'static str {
        match self {
            McpOutcome::Result => "result",
            McpOutcome::ToolError => "tool_error",
            McpOutcome::JsonrpcError => "jsonrpc_error",
            McpOutcome::TransportError => "transport_error",
        }
    }
}

impl std::fmt::Display for McpOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
