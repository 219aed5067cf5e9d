//! The demo functions: a customer lookup that answers with PII (the gateway masks it on the way
//! back) and a refund that the quick start's policy holds for approval. Each refuses requests
//! without the credential the gateway injects, so a working call shows the injection worked.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

pub struct Functions {
    /// The bearer token the gateway holds for these functions.
    pub expected_token: String,
}

pub fn router(functions: Arc<Functions>) -> Router {
    Router::new()
        .route("/customers/lookup", post(lookup_customer))
        .route("/payments/refund", post(refund_payment))
        .with_state(functions)
}

fn authorized(functions: &Functions, headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let expected = format!("Bearer {}", functions.expected_token);
    let presented = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    if presented == Some(expected.as_str()) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong service credential"})),
        ))
    }
}

async fn lookup_customer(
    State(functions): State<Arc<Functions>>,
    headers: HeaderMap,
    Json(arguments): Json<Value>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    authorized(&functions, &headers)?;
    let id = arguments.get("customer_id").cloned().unwrap_or(json!(1));
    Ok(Json(json!({
        "customer_id": id,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "card_number": "4111 1111 1111 1111",
        "ssn": "219-09-9999",
        "tier": "gold",
        "called_by": headers.get("x-callproof-subject").and_then(|value| value.to_str().ok()),
    })))
}

async fn refund_payment(
    State(functions): State<Arc<Functions>>,
    headers: HeaderMap,
    Json(arguments): Json<Value>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    authorized(&functions, &headers)?;
    Ok(Json(json!({
        "refunded": arguments.get("amount").cloned().unwrap_or(json!(0)),
        "payment_id": arguments.get("payment_id").cloned().unwrap_or(Value::Null),
        "status": "refunded",
    })))
}
