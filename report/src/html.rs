//! The report as a self-contained HTML page: values as text (never JSON), every figure with
//! its search and proofs, every exception with its link. Rendered from `askama` templates
//! (`report/templates/`), which escape everything they print; readable on a phone, with no
//! script and no external resource.

use askama::Template;
use serde_json::Value;

use crate::{Counts, Figure, Report};

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage<'a> {
    report: &'a Report,
}

impl ReportPage<'_> {
    /// The text of a figure's search link: what to count in it.
    fn search_text(&self, figure: &Figure) -> &'static str {
        match figure.counts {
            Some(Counts::Events) | None => "search",
            Some(Counts::Calls) => "search (count its calls)",
            Some(Counts::Principals) => "search (count its principals)",
            Some(Counts::Agents) => "search (count its agents)",
        }
    }

    /// The text of an exception's link: a call's timeline, or other evidence.
    fn link_text(&self, link: &str) -> &'static str {
        if link.contains("/v1/calls/") {
            "timeline"
        } else {
            "evidence"
        }
    }
}

/// A value as text: numbers and strings as they are, yes/no, a dash for nothing, lists
/// separated by commas, objects as a list of `name: value`.
#[derive(Template)]
#[template(path = "value.html")]
struct ValueHtml<'a> {
    value: &'a Value,
}

/// Its template escapes every text it prints, so the page that includes it must not escape it
/// again.
impl askama::filters::HtmlSafe for ValueHtml<'_> {}

/// How a value is shown.
enum Shape<'a> {
    Text(String),
    List(Vec<ValueHtml<'a>>),
    Fields(Vec<(String, ValueHtml<'a>)>),
}

impl<'a> ValueHtml<'a> {
    fn new(value: &'a Value) -> Self {
        ValueHtml { value }
    }

    fn shape(&self) -> Shape<'a> {
        match self.value {
            Value::Null => Shape::Text("—".into()),
            Value::Bool(true) => Shape::Text("yes".into()),
            Value::Bool(false) => Shape::Text("no".into()),
            Value::Number(number) => Shape::Text(number.to_string()),
            Value::String(text) => Shape::Text(text.clone()),
            Value::Array(items) if items.is_empty() => Shape::Text("none".into()),
            Value::Array(items) => Shape::List(items.iter().map(ValueHtml::new).collect()),
            Value::Object(fields) => Shape::Fields(
                fields
                    .iter()
                    .map(|(name, field)| (name.replace('_', " "), ValueHtml::new(field)))
                    .collect(),
            ),
        }
    }
}

/// The report as a self-contained HTML page (no script, no external resource). Deterministic:
/// `callproof-verify` renders it again from a bundle's entries and compares the bytes.
pub fn render_html(report: &Report) -> String {
    // Rendering into a String fails only if a value's Display does, which none here can.
    ReportPage { report }.render().unwrap_or_else(|error| {
        format!("<!doctype html>\n<p>the report page failed: {error}</p>\n")
    })
}
