//! JSON-RPC 2.0 as MCP uses it over HTTP: one message per POST, and the errors the specification
//! names for each way a message can be wrong.
//!
//! The envelope is read from a `serde_json::Value` rather than with rmcp's
//! `ClientJsonRpcMessage`: its untagged enums cannot tell a parse error (-32700) from an invalid
//! request (-32600), an unknown method (-32601) or bad params (-32602), and the gateway must
//! answer (and record) each precisely.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const METHOD_NOT_FOUND: i32 = -32601;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL_ERROR: i32 = -32603;
/// 2026-07-28: an `Mcp-*` header or `MCP-Protocol-Version` disagrees with the body.
pub const HEADER_MISMATCH: i32 = -32020;
/// 2026-07-28: the requested protocol version is not one the server speaks.
pub const UNSUPPORTED_PROTOCOL_VERSION: i32 = -32022;

// callproof's own codes, outside the range JSON-RPC reserves (-32768 to -32000).
/// The audit log cannot record the request, so nothing was done.
pub const AUDIT_UNAVAILABLE: i32 = -31001;
pub const TOO_MANY_REQUESTS: i32 = -31002;
pub const ISSUER_UNAVAILABLE: i32 = -31003;
/// The upstream MCP server could not be reached or answered something unusable.
pub const UPSTREAM_FAILED: i32 = -31004;
pub const UPSTREAM_TIMEOUT: i32 = -31005;

/// One incoming message.
#[derive(Debug)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Map<String, Value>>,
    },
    Notification {
        method: String,
        params: Option<Map<String, Value>>,
    },
    /// A client's answer to a server-to-client request; the gateway sends none, so it is only
    /// acknowledged.
    Response,
}

impl Message {
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response => None,
        }
    }
}

/// A JSON-RPC error with the HTTP status it travels with.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub status: StatusCode,
    pub code: i32,
    pub message: String,
    pub data: Option<Value>,
    /// The id of the request it answers; `null` when the request was not read that far.
    pub id: Value,
}

impl RpcError {
    pub fn new(status: StatusCode, code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            status,
            code,
            message: message.into(),
            data: None,
            id: Value::Null,
        }
    }

    pub fn with_id(mut self, id: &Value) -> RpcError {
        self.id = id.clone();
        self
    }

    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, message)
    }

    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::OK, INVALID_PARAMS, message)
    }

    pub fn header_mismatch(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::BAD_REQUEST, HEADER_MISMATCH, message)
    }

    pub fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        json!({"jsonrpc": "2.0", "id": self.id, "error": error})
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.to_json())).into_response()
    }
}

/// A successful answer to request `id`.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A notification the gateway sends (progress).
pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// Reads one message. Batches are refused: the protocol has had none since 2025-06-18.
pub fn parse(body: &[u8]) -> Result<Message, RpcError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        // serde_json's message names line and column, never the content.
        RpcError::new(
            StatusCode::BAD_REQUEST,
            PARSE_ERROR,
            format!("parse error: {error}"),
        )
    })?;
    let Value::Object(mut object) = value else {
        let what = if value.is_array() {
            "a batch; send one message per request"
        } else {
            "not a JSON-RPC message"
        };
        return Err(RpcError::invalid_request(format!("the body is {what}")));
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::invalid_request(r#"`jsonrpc` must be "2.0""#));
    }
    let id = object.remove("id");
    if let Some(id) = &id
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return Err(RpcError::invalid_request(
            "`id` must be a string or an integer",
        ));
    }
    let params = match object.remove("params") {
        None => None,
        Some(Value::Object(params)) => Some(params),
        Some(_) => {
            let error = RpcError::invalid_request("`params` must be an object");
            return Err(match &id {
                Some(id) => error.with_id(id),
                None => error,
            });
        }
    };
    match (object.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(Message::Request { id, method, params }),
        (Some(Value::String(method)), None) => Ok(Message::Notification { method, params }),
        (Some(_), id) => {
            let error = RpcError::invalid_request("`method` must be a string");
            Err(match id {
                Some(id) => error.with_id(&id),
                None => error,
            })
        }
        (None, Some(_)) if object.contains_key("result") || object.contains_key("error") => {
            Ok(Message::Response)
        }
        (None, _) => Err(RpcError::invalid_request(
            "neither a request, a notification nor a response",
        )),
    }
}

/// The id as recorded in events: its JSON text, `7` or `"a"`.
pub fn id_text(id: &Value) -> String {
    id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_malformed_message_gets_the_error_the_specification_names() {
        for (body, code, id) in [
            (&b"{not json"[..], PARSE_ERROR, Value::Null),
            (b"[]", INVALID_REQUEST, Value::Null),
            (
                br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (br#"{"id":1,"method":"ping"}"#, INVALID_REQUEST, Value::Null),
            (
                br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                br#"{"jsonrpc":"2.0","id":3,"method":7}"#,
                INVALID_REQUEST,
                json!(3),
            ),
            (
                br#"{"jsonrpc":"2.0","id":"a","method":"x","params":[1]}"#,
                INVALID_REQUEST,
                json!("a"),
            ),
            (br#"{"jsonrpc":"2.0"}"#, INVALID_REQUEST, Value::Null),
        ] {
            let error = parse(body).unwrap_err();
            assert_eq!(error.code, code, "{}", String::from_utf8_lossy(body));
            assert_eq!(error.id, id, "{}", String::from_utf8_lossy(body));
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn requests_notifications_and_responses_are_told_apart() {
        let request = parse(br#"{"jsonrpc":"2.0","id":"r1","method":"tools/list","params":{}}"#);
        assert!(matches!(
            request,
            Ok(Message::Request { id, method, params: Some(_) }) if id == json!("r1") && method == "tools/list"
        ));
        let notification = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(matches!(notification, Ok(Message::Notification { .. })));
        let response = parse(br#"{"jsonrpc":"2.0","id":4,"result":{}}"#);
        assert!(matches!(response, Ok(Message::Response)));
    }
}
