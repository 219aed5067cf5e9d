//! The report's page as callproof wrote it until 2026-12-02, by hand, before the askama
//! templates (`html.rs`). Kept, unchanged, only so that `callproof-verify` still accepts the
//! pages of bundles made then: the data is the same, the markup differs. Never used to write.

use std::fmt::Write as _;

use serde_json::Value;

use crate::{Counts, Report};

/// The report as a self-contained HTML page (no script, no external resource).
pub(crate) fn render_html(report: &Report) -> String {
    let mut html = String::with_capacity(16 * 1024);
    html.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(html, "<title>{}</title>", escape(&report.title));
    html.push_str(
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}\
         th{background:#f4f4f4}blockquote{color:#555;border-left:3px solid #ccc;margin:0;padding-left:1rem}\
         ul.values{margin:0;padding-left:1rem}\
         .ok{color:#1a7f37}.bad{color:#cf222e}code{font-size:.85em;word-break:break-all}</style></head><body>\n",
    );
    let _ = write!(
        html,
        "<h1>{}</h1>\n<p>Period <b>{}</b> to <b>{}</b> (end excluded). Generated {}. {} events; {} calls begun in the period.</p>\n<p>Log verifier key: <code>{}</code></p>\n",
        escape(&report.title),
        escape(&report.from),
        escape(&report.to),
        escape(&report.generated_at),
        report.events,
        report.calls,
        escape(&report.verifier_key),
    );
    for section in &report.sections {
        let _ = write!(
            html,
            "<h2>{} — {}</h2>\n<blockquote>{}</blockquote>\n<p>{}</p>\n",
            escape(&section.id),
            escape(&section.title),
            escape(&section.criterion),
            escape(&section.evidence)
        );
        html.push_str("<table><tr><th>Figure</th><th>Value</th><th>Evidence</th></tr>\n");
        for figure in &section.figures {
            let mut links = Vec::new();
            if let Some(search) = &figure.search {
                let text = match figure.counts {
                    Some(Counts::Events) | None => "search",
                    Some(Counts::Calls) => "search (count its calls)",
                    Some(Counts::Principals) => "search (count its principals)",
                    Some(Counts::Agents) => "search (count its agents)",
                };
                links.push(format!("<a href=\"{}\">{text}</a>", escape(search)));
            }
            for (position, proof) in figure.proofs.iter().enumerate() {
                links.push(format!(
                    "<a href=\"{}\">{}</a>",
                    escape(proof),
                    position + 1
                ));
            }
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&figure.label),
                value_html(&figure.value),
                links.join(" ")
            );
        }
        html.push_str("</table>\n");
        if section.exceptions.is_empty() {
            html.push_str("<p class=\"ok\">No exceptions.</p>\n");
        } else {
            html.push_str("<p class=\"bad\">Exceptions:</p><ul>\n");
            for exception in &section.exceptions {
                match &exception.link {
                    Some(link) => {
                        let text = if link.contains("/v1/calls/") {
                            "timeline"
                        } else {
                            "evidence"
                        };
                        let _ = writeln!(
                            html,
                            "<li>{} (<a href=\"{}\">{text}</a>)</li>",
                            escape(&exception.text),
                            escape(link)
                        );
                    }
                    None => {
                        let _ = writeln!(html, "<li>{}</li>", escape(&exception.text));
                    }
                }
            }
            html.push_str("</ul>\n");
        }
    }
    html.push_str("</body></html>\n");
    html
}

/// A value as text: numbers and strings as they are, yes/no, a dash for nothing, lists
/// separated by commas, objects as a list of `name: value`.
fn value_html(value: &Value) -> String {
    match value {
        Value::Null => "—".to_string(),
        Value::Bool(true) => "yes".to_string(),
        Value::Bool(false) => "no".to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => escape(text),
        Value::Array(items) if items.is_empty() => "none".to_string(),
        Value::Array(items) => items.iter().map(value_html).collect::<Vec<_>>().join(", "),
        Value::Object(fields) => {
            let mut html = String::from("<ul class=\"values\">");
            for (name, field) in fields {
                let _ = write!(
                    html,
                    "<li>{}: {}</li>",
                    escape(&name.replace('_', " ")),
                    value_html(field)
                );
            }
            html.push_str("</ul>");
            html
        }
    }
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}
