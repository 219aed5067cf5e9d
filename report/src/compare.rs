//! Comparing a report as delivered (`report.json`, `report.html`) with the one recomputed from
//! the entries, naming what differs: the section and figure, with both values.

use serde_json::Value;

use crate::{Report, render_html};

/// What differs between `recomputed` and `delivered` (a report's JSON, as parsed), one line a
/// difference, by section and figure label. Empty when they agree.
pub fn differences(recomputed: &Report, delivered: &Value) -> Vec<String> {
    let expected = serde_json::to_value(recomputed).unwrap_or_default();
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    let expected_fields = expected.as_object().unwrap_or(&empty);
    let Some(delivered_fields) = delivered.as_object() else {
        return vec!["it is not a JSON object".into()];
    };
    for (name, value) in expected_fields {
        if name == "sections" {
            continue;
        }
        let other = delivered_fields.get(name).unwrap_or(&Value::Null);
        if other != value {
            out.push(format!(
                "`{name}` is {}, the entries give {}",
                short(other),
                short(value)
            ));
        }
    }
    for name in delivered_fields.keys() {
        if !expected_fields.contains_key(name) {
            out.push(format!("`{name}` is not part of a report"));
        }
    }
    let sections = |report: &Value| -> Vec<Value> {
        report
            .get("sections")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (expected_sections, delivered_sections) = (sections(&expected), sections(delivered));
    let id = |section: &Value| {
        section
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    for section in &expected_sections {
        let section_id = id(section);
        let Some(other) = delivered_sections
            .iter()
            .find(|other| id(other) == section_id)
        else {
            out.push(format!("section {section_id} is missing"));
            continue;
        };
        compare_section(&section_id, section, other, &mut out);
    }
    for other in &delivered_sections {
        let other_id = id(other);
        if !expected_sections
            .iter()
            .any(|section| id(section) == other_id)
        {
            out.push(format!("section {other_id} is not one the entries give"));
        }
    }
    if out.is_empty() && expected != *delivered {
        out.push("it differs from the report the entries give".into());
    }
    out
}

fn compare_section(section_id: &str, expected: &Value, delivered: &Value, out: &mut Vec<String>) {
    let figures = |section: &Value| -> Vec<Value> {
        section
            .get("figures")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let label = |figure: &Value| {
        figure
            .get("label")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let (expected_figures, delivered_figures) = (figures(expected), figures(delivered));
    for figure in &expected_figures {
        let figure_label = label(figure);
        match delivered_figures
            .iter()
            .find(|other| label(other) == figure_label)
        {
            None => out.push(format!(
                "{section_id}: figure {figure_label:?} ({}) is missing",
                short(&figure["value"])
            )),
            Some(other) => {
                for field in ["value", "search", "counts", "proofs"] {
                    let (mine, theirs) = (
                        figure.get(field).unwrap_or(&Value::Null),
                        other.get(field).unwrap_or(&Value::Null),
                    );
                    if mine != theirs {
                        out.push(format!(
                            "{section_id}: figure {figure_label:?}: its {field} is {}, the entries give {}",
                            short(theirs),
                            short(mine)
                        ));
                    }
                }
            }
        }
    }
    for other in &delivered_figures {
        let other_label = label(other);
        if !expected_figures
            .iter()
            .any(|figure| label(figure) == other_label)
        {
            out.push(format!(
                "{section_id}: figure {other_label:?} ({}) is not one the entries give",
                short(&other["value"])
            ));
        }
    }
    for field in ["title", "criterion", "evidence", "exceptions"] {
        let (mine, theirs) = (
            expected.get(field).unwrap_or(&Value::Null),
            delivered.get(field).unwrap_or(&Value::Null),
        );
        if mine != theirs {
            out.push(format!(
                "{section_id}: its {field} are {}, the entries give {}",
                short(theirs),
                short(mine)
            ));
        }
    }
    if figure_order(&expected_figures) != figure_order(&delivered_figures) {
        out.push(format!("{section_id}: the figures are in another order"));
    }
}

fn figure_order(figures: &[Value]) -> Vec<String> {
    figures
        .iter()
        .map(|figure| figure["label"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// A value in a message: its JSON, cut at 200 characters.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// Where `delivered` (a `report.html`) differs from the page of `recomputed`: the first line
/// that differs, both ways. `None` when they are the same bytes.
pub fn html_difference(recomputed: &Report, delivered: &[u8]) -> Option<String> {
    let expected = render_html(recomputed);
    // A page of an earlier renderer is as good: the same data in other markup. Without this,
    // every bundle made before a change to the page would stop verifying.
    if expected.as_bytes() == delivered
        || crate::html_v1::render_html(recomputed).as_bytes() == delivered
    {
        return None;
    }
    let delivered = String::from_utf8_lossy(delivered);
    let mut expected_lines = expected.lines();
    let mut delivered_lines = delivered.lines();
    let mut number = 0;
    loop {
        number += 1;
        match (expected_lines.next(), delivered_lines.next()) {
            (Some(mine), Some(theirs)) if mine == theirs => continue,
            (Some(mine), Some(theirs)) => {
                return Some(format!(
                    "line {number} is {}, the entries give {}",
                    cut(theirs),
                    cut(mine)
                ));
            }
            (Some(mine), None) => {
                return Some(format!(
                    "it ends at line {number}; the entries give more, from {}",
                    cut(mine)
                ));
            }
            (None, Some(theirs)) => {
                return Some(format!(
                    "line {number} ({}) is more than the entries give",
                    cut(theirs)
                ));
            }
            (None, None) => {
                return Some("it differs from the page the entries give (line ends)".into());
            }
        }
    }
}

fn cut(line: &str) -> String {
    if line.chars().count() > 200 {
        format!("{:?}…", line.chars().take(200).collect::<String>())
    } else {
        format!("{line:?}")
    }
}
