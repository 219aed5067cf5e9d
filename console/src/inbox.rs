//! The approver inbox: the held calls this person may decide on (as the gateway's
//! `GET /v1/approvals?status=pending` says with their token), one call's page, and the decision
//! form, which sends `POST /v1/approvals/{call_id}` bound to the arguments' hash the page showed.
//! `/inbox/events` keeps an open inbox current over server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower_sessions::Session;

use crate::AppState;
use crate::auth::{User, now_secs};
use crate::error::ConsoleError;
use crate::pages::{self, Layout};
use crate::upstream::{Answer, GATEWAY, encode};

/// A held call as the gateway shows it to a reviewer (`GET /v1/approvals`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct HeldCallView {
    pub call_id: String,
    pub function: String,
    pub status: String,
    pub caller: CallerView,
    #[serde(default)]
    pub arguments: Value,
    pub arguments_sha256: String,
    #[serde(default)]
    pub approver_groups: Vec<String>,
    pub quorum: u32,
    #[serde(default)]
    pub approvals: Vec<VoteView>,
    pub denial: Option<VoteView>,
    pub requested_at: String,
    pub expires_at: String,
    /// Why the call needs approval (the condition that held), when the gateway says.
    #[serde(default)]
    pub reason: Option<String>,
    /// The approval condition in force for the function (CEL), when it has one.
    #[serde(default)]
    pub condition: Option<String>,
    /// The MCP record of a held `tools/call`, should the gateway's view carry it (today it
    /// names the tool only in `function`, `mcp:<server>__<tool>`).
    #[serde(default)]
    pub mcp: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CallerView {
    pub subject: String,
    pub actor: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct VoteView {
    pub reviewer: String,
    pub comment: Option<String>,
    pub time: String,
}

#[derive(Deserialize)]
struct ApprovalList {
    approvals: Vec<HeldCallView>,
}

/// A held call as a card shows it.
pub struct CallCard {
    pub call: HeldCallView,
    pub arguments: String,
    pub pending: bool,
    pub status_words: String,
    pub time_left: String,
    pub approvals_so_far: usize,
    /// The MCP tool, for a call through the gateway's `/mcp`.
    pub mcp: Option<pages::McpTool>,
}

impl CallCard {
    pub fn new(call: HeldCallView, now: i64) -> CallCard {
        let arguments = serde_json::to_string_pretty(&call.arguments)
            .unwrap_or_else(|_| call.arguments.to_string());
        let pending = call.status == "pending_approval";
        let time_left = match parse_rfc3339(&call.expires_at) {
            Some(expires) if pending => describe_time_left(expires - now),
            Some(_) => String::new(),
            None => "unknown".into(),
        };
        CallCard {
            mcp: pages::McpTool::of(&call.function, call.mcp.as_ref()),
            arguments,
            pending,
            status_words: status_words(&call.status).to_string(),
            time_left,
            approvals_so_far: call.approvals.len(),
            call,
        }
    }

    /// What was called, in words: the MCP tool, or the function's name.
    pub fn what(&self) -> String {
        match &self.mcp {
            Some(tool) => tool.to_string(),
            None => self.call.function.clone(),
        }
    }
}

/// What a status means for the person looking at it.
pub fn status_words(status: &str) -> &'static str {
    match status {
        "pending_approval" => "waiting for approval",
        "approved" => "approved: the gateway runs it now",
        "executing" => "approved and running",
        "completed" => "approved, run and completed",
        "failed" => "approved, but the function failed",
        "denied" => "denied: the function was not run",
        "expired" => "expired: no decision in time, the function was not run",
        _ => "in an unknown state",
    }
}

fn describe_time_left(seconds: i64) -> String {
    if seconds <= 0 {
        return "expired".into();
    }
    let (hours, minutes, secs) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if hours > 0 {
        format!("{hours} h {minutes} min left")
    } else if minutes > 0 {
        format!("{minutes} min {secs} s left")
    } else {
        format!("{secs} s left")
    }
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|at| at.unix_timestamp())
}

async fn pending_calls(app: &AppState, token: &str) -> Result<Vec<HeldCallView>, ConsoleError> {
    let url = format!("{}/v1/approvals?status=pending", app.upstream.ingress_url);
    let list: ApprovalList = app.upstream.get(GATEWAY, &url, token).await?;
    Ok(list.approvals)
}

/// `GET /`: the inbox.
pub async fn inbox(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
) -> Result<Response, ConsoleError> {
    let layout = Layout::new(&app, &user, &session).await?;
    let pending = pending_calls(&app, &user.access_token).await?;
    let url = format!("{}/v1/approvals?status=all", app.upstream.ingress_url);
    let all: ApprovalList = app.upstream.get(GATEWAY, &url, &user.access_token).await?;
    let now = now_secs();
    let mut decided: Vec<CallCard> = all
        .approvals
        .into_iter()
        .filter(|call| call.status != "pending_approval")
        .map(|call| CallCard::new(call, now))
        .collect();
    decided.sort_by(|a, b| b.call.requested_at.cmp(&a.call.requested_at));
    decided.truncate(20);
    let flash = pages::take_flash(&session).await;
    Ok(pages::render(&pages::Inbox {
        list: pages::InboxList {
            calls: pending
                .into_iter()
                .map(|call| CallCard::new(call, now))
                .collect(),
            csrf: layout.csrf.clone(),
        },
        decided,
        flash,
        layout,
    }))
}

/// `GET /approvals/{call_id}`: one held call (the gateway's webhook message names it), with the
/// decision form while it is pending, or why this person may not decide on it.
pub async fn show(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
    Path(call_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let layout = Layout::new(&app, &user, &session).await?;
    let flash = pages::take_flash(&session).await;
    let url = format!(
        "{}/v1/approvals/{}",
        app.upstream.ingress_url,
        encode(&call_id)
    );
    let answer: Answer<HeldCallView> = app
        .upstream
        .get_answer(GATEWAY, &url, &user.access_token)
        .await?;
    let (card, refusal) = match answer {
        Answer::Ok(call) => (Some(CallCard::new(call, now_secs())), None),
        Answer::Refused { status: 401, .. } => {
            return Err(ConsoleError::Upstream {
                service: GATEWAY,
                status: 401,
                message: "the gateway no longer accepts your sign-in; sign in again".into(),
            });
        }
        Answer::Refused { status, refusal } => (None, Some(refusal_words(status, &refusal))),
    };
    Ok(pages::render(&pages::CallPage {
        call_id: &call_id,
        card,
        refusal,
        flash,
        layout,
    }))
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: Option<String>,
    decision: Option<String>,
    #[serde(default)]
    comment: String,
    arguments_sha256: Option<String>,
}

#[derive(Deserialize)]
struct DecisionAnswer {
    status: String,
    #[serde(default)]
    approvals: Option<u32>,
    #[serde(default)]
    quorum: Option<u32>,
}

/// `POST /approvals/{call_id}`: approve or deny, bound to the hash of the arguments the page
/// showed; then back to the call's page, which says what was recorded and what came of it.
pub async fn decide(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
    Path(call_id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Result<Response, ConsoleError> {
    crate::csrf::verify(&session, form.csrf.as_deref()).await?;
    let back = format!("/approvals/{}", encode(&call_id));
    let decision = match form.decision.as_deref() {
        Some("approve") => "approve",
        Some("deny") => "deny",
        _ => return Err(ConsoleError::BadRequest("choose approve or deny".into())),
    };
    let comment = form.comment.trim();
    if decision == "deny" && comment.is_empty() {
        pages::set_flash(
            &session,
            false,
            "A deny needs a comment saying why: nothing was recorded.",
        )
        .await?;
        return Ok(Redirect::to(&back).into_response());
    }
    let Some(arguments_sha256) = form.arguments_sha256.filter(|hash| !hash.is_empty()) else {
        return Err(ConsoleError::BadRequest(
            "the form did not say which arguments were reviewed; reload the page".into(),
        ));
    };
    let mut body = json!({"decision": decision, "arguments_sha256": arguments_sha256});
    if !comment.is_empty() {
        body["comment"] = Value::String(comment.to_string());
    }
    let url = format!(
        "{}/v1/approvals/{}",
        app.upstream.ingress_url,
        encode(&call_id)
    );
    let answer: Answer<DecisionAnswer> = app
        .upstream
        .post(GATEWAY, &url, &user.access_token, &body)
        .await?;
    let verb = if decision == "approve" {
        "approval"
    } else {
        "denial"
    };
    let (ok, message) = match answer {
        Answer::Ok(answer) if answer.status == "recorded" => (
            true,
            format!(
                "Your {verb} is recorded; the gateway has not yet confirmed what it did to the call. This page shows the call as it is now."
            ),
        ),
        Answer::Ok(answer) => {
            let progress = match (answer.approvals, answer.quorum) {
                (Some(approvals), Some(quorum)) if answer.status == "pending_approval" => {
                    format!(" ({approvals} of {quorum} approvals)")
                }
                _ => String::new(),
            };
            (
                true,
                format!(
                    "Your {verb} is recorded. The call is {}{progress}.",
                    status_words(&answer.status)
                ),
            )
        }
        Answer::Refused { status, refusal } => {
            tracing::info!(call_id, code = %refusal.code, "decision refused by the gateway");
            (
                false,
                format!("Nothing was recorded. {}", refusal_words(status, &refusal)),
            )
        }
    };
    pages::set_flash(&session, ok, &message).await?;
    Ok(Redirect::to(&back).into_response())
}

/// The gateway's refusal, in words for the person who met it.
pub fn refusal_words(status: u16, refusal: &crate::upstream::ApiRefusal) -> String {
    let message = refusal.message.as_str();
    match (status, refusal.code.as_str()) {
        (_, "approval_expired") => {
            "This call expired before a decision: it can no longer be approved or denied.".into()
        }
        (403, _) if message.contains("caller cannot decide") => format!(
            "You cannot decide on this call because you made it: no one approves their own call (the gateway says: {message})."
        ),
        (403, _) if message.contains("agent acting") => format!(
            "Decisions are made by a person, not by an agent acting for one (the gateway says: {message})."
        ),
        (403, _) => format!("You may not decide on this call (the gateway says: {message})."),
        (404, _) => "The gateway holds no call with this id: it may have been decided and forgotten, or the link is wrong.".into(),
        (409, _) if message.contains("already approved") => {
            "You have already approved this call; a second vote by the same person does not count.".into()
        }
        (409, _) if message.contains("arguments_sha256") => format!(
            "The page you decided on is out of date: the held arguments are not the ones it showed (the gateway says: {message}). Review the call again."
        ),
        (409, _) if message.contains("no longer pending") => format!(
            "The page you decided on is out of date: {message}."
        ),
        (409, _) => format!("The decision did not count (the gateway says: {message})."),
        (401, _) => "The gateway no longer accepts your sign-in; sign in again.".into(),
        (503, _) => format!("The gateway cannot record decisions right now; try again shortly (the gateway says: {message})."),
        _ => format!("The gateway refused (the gateway says: {message})."),
    }
}

/// `GET /inbox/events`: the inbox list again, as an `inbox` event, whenever the pending calls
/// change; an `ended` event when the session ends. The gateway is asked every
/// `console.inbox_refresh_secs` with the person's token, as the page itself would.
pub async fn events(
    State(app): State<Arc<AppState>>,
    User(user): User,
    session: Session,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ConsoleError> {
    let csrf = crate::csrf::token(&session).await?;
    let ends_at = user.ends_at(app.config.session_max_secs);
    let period = Duration::from_secs(app.config.inbox_refresh_secs);
    struct Poll {
        app: Arc<AppState>,
        token: String,
        csrf: String,
        last: Option<Vec<HeldCallView>>,
        first: bool,
        done: bool,
    }
    let state = Poll {
        app,
        token: user.access_token,
        csrf,
        last: None,
        first: true,
        done: false,
    };
    let stream = futures::stream::unfold(state, move |mut poll| async move {
        loop {
            if poll.done {
                return None;
            }
            if !poll.first {
                tokio::time::sleep(period).await;
            }
            poll.first = false;
            if now_secs() >= ends_at {
                poll.done = true;
                return Some((
                    Ok(Event::default().event("ended").data("session ended")),
                    poll,
                ));
            }
            match pending_calls(&poll.app, &poll.token).await {
                Ok(calls) if poll.last.as_ref() != Some(&calls) => {
                    let now = now_secs();
                    let list = pages::InboxList {
                        calls: calls
                            .iter()
                            .cloned()
                            .map(|call| CallCard::new(call, now))
                            .collect(),
                        csrf: poll.csrf.clone(),
                    };
                    poll.last = Some(calls);
                    match pages::render_string(&list) {
                        Some(html) => {
                            return Some((Ok(Event::default().event("inbox").data(html)), poll));
                        }
                        None => continue,
                    }
                }
                Ok(_) => continue,
                Err(ConsoleError::Upstream { status: 401, .. }) => {
                    poll.done = true;
                    return Some((Ok(Event::default().event("ended").data("signed out")), poll));
                }
                Err(error) => {
                    tracing::debug!(error = %error, "live inbox refresh failed");
                    continue;
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_in_words() {
        assert_eq!(describe_time_left(-5), "expired");
        assert_eq!(describe_time_left(42), "42 s left");
        assert_eq!(describe_time_left(14 * 60 + 3), "14 min 3 s left");
        assert_eq!(describe_time_left(3 * 3600 + 120), "3 h 2 min left");
    }

    fn held(function: &str) -> HeldCallView {
        serde_json::from_value(json!({
            "call_id": "c-1", "function": function, "status": "pending_approval",
            "caller": {"subject": "alice", "actor": "claude"},
            "arguments": {"message": "refund [REDACTED:CREDIT_CARD]"},
            "arguments_sha256": "ab", "approver_groups": ["treasury"], "quorum": 1,
            "approvals": [], "denial": null,
            "requested_at": "2026-03-01T10:00:00Z", "expires_at": "2026-03-01T10:15:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn a_held_mcp_tool_call_is_shown_as_the_tool() {
        let card = |call| {
            pages::render_string(&pages::InboxList {
                calls: vec![CallCard::new(call, 0)],
                csrf: "t".into(),
            })
            .unwrap()
        };
        let html = card(held("mcp:crm__refund"));
        for expected in [
            r#"MCP tool <code class="mcp-tool">refund</code> on <code class="mcp-server">crm</code>"#,
            "<code>mcp:crm__refund</code>",
            r#"<dd class="caller">alice</dd>"#,
            r#"<dd class="agent">claude</dd>"#,
            "[REDACTED:CREDIT_CARD]",
            "the tool's approval rule",
        ] {
            assert!(html.contains(expected), "{expected} not in {html}");
        }
        // A function called over HTTP keeps its name, and no MCP line.
        let html = card(held("refund"));
        assert!(html.contains("<h3><code>refund</code>"), "{html}");
        assert!(!html.contains("MCP tool"), "{html}");
    }

    #[test]
    fn refusals_are_worded_for_the_person() {
        let refusal = |code: &str, message: &str| crate::upstream::ApiRefusal {
            code: code.into(),
            message: message.into(),
        };
        let words = refusal_words(
            403,
            &refusal("forbidden", "the caller cannot decide on its own call"),
        );
        assert!(words.contains("because you made it"), "{words}");
        let words = refusal_words(
            409,
            &refusal("conflict", "you have already approved this call"),
        );
        assert!(words.contains("second vote"), "{words}");
        let words = refusal_words(403, &refusal("approval_expired", "approval expired"));
        assert!(words.contains("expired"), "{words}");
        let words = refusal_words(
            409,
            &refusal("conflict", "the call is no longer pending: it is denied"),
        );
        assert!(words.contains("out of date"), "{words}");
    }
}
