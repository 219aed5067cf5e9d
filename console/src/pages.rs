//! The pages, as `askama` templates (`console/templates/`), escaped by default. Each page struct
//! names the template it fills; [`render`] turns one into an answer.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::AppState;
use crate::audit::{LogView, ProofView, SearchForm, SearchHit, TimelineView};
use crate::auth::SignedIn;
use crate::error::ConsoleError;
use crate::inbox::CallCard;

/// What every signed-in page shows around its content.
pub struct Layout {
    pub name: String,
    pub subject: String,
    pub issuer: String,
    pub csrf: String,
    pub auditor_pages: bool,
}

impl Layout {
    pub async fn new(
        app: &AppState,
        user: &SignedIn,
        session: &Session,
    ) -> Result<Layout, ConsoleError> {
        Ok(Layout {
            name: user.display_name().to_string(),
            subject: user.subject.clone(),
            issuer: user.issuer.clone(),
            csrf: crate::csrf::token(session).await?,
            auditor_pages: app.upstream.evidence_url.is_some(),
        })
    }
}

/// A message for the next page, kept in the session (post/redirect/get).
#[derive(Serialize, Deserialize)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

const FLASH: &str = "flash";

pub async fn set_flash(session: &Session, ok: bool, text: &str) -> Result<(), ConsoleError> {
    session
        .insert(
            FLASH,
            Flash {
                ok,
                text: text.to_string(),
            },
        )
        .await
        .map_err(|_| ConsoleError::Internal)
}

pub async fn take_flash(session: &Session) -> Option<Flash> {
    session.remove::<Flash>(FLASH).await.ok().flatten()
}

pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut response = Html(html).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        Err(error) => {
            tracing::error!(error = %error, "a page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub fn render_string(page: &impl Template) -> Option<String> {
    page.render()
        .inspect_err(|error| tracing::error!(error = %error, "a fragment failed to render"))
        .ok()
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct Signin<'a> {
    pub message: Option<String>,
    pub return_to: &'a str,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOut {}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub sign_in: bool,
}

#[derive(Template)]
#[template(path = "inbox_list.html")]
pub struct InboxList {
    pub calls: Vec<CallCard>,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "inbox.html")]
pub struct Inbox {
    pub layout: Layout,
    pub list: InboxList,
    pub decided: Vec<CallCard>,
    pub flash: Option<Flash>,
}

#[derive(Template)]
#[template(path = "call.html")]
pub struct CallPage<'a> {
    pub layout: Layout,
    pub call_id: &'a str,
    pub card: Option<CallCard>,
    pub refusal: Option<String>,
    pub flash: Option<Flash>,
}

#[derive(Template)]
#[template(path = "search.html")]
pub struct Search {
    pub layout: Layout,
    pub form: SearchForm,
    pub hits: Vec<SearchHit>,
    pub searched: bool,
    pub next: Option<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "timeline.html")]
pub struct Timeline {
    pub layout: Layout,
    pub timeline: TimelineView,
}

#[derive(Template)]
#[template(path = "proof.html")]
pub struct Proof {
    pub layout: Layout,
    pub proof: ProofView,
}

#[derive(Template)]
#[template(path = "logs.html")]
pub struct Logs {
    pub layout: Layout,
    pub logs: Vec<LogView>,
    pub verifier_key: String,
    pub integrity: Option<crate::audit::IntegrityView>,
}

#[derive(Template)]
#[template(path = "report.html")]
pub struct Report {
    pub layout: Layout,
    pub from: String,
    pub to: String,
    pub links: Option<crate::audit::ReportLinks>,
}
