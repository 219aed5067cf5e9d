//! Nothing unmasked reaches the object store, the index, the SIEM topic or the logs.

use std::path::Path;
use std::time::Duration;

use callproof_schemas::{Approval, EventKind, Failure, Mcp};
use rand::SeedableRng;
use serde_json::Value;

use crate::support::events::{PLANTED, call_event, secret_part};
use crate::support::{Deployment, produce, producer, read_topic_with_python, spawn_processor};

/// Every event carries every detector's value in its request and response (as JSON fields,
/// in free text, and as a non-JSON body), path, failure message, decision reason, approval
/// comment and MCP client, JSON-RPC id and method, as if the gateway had masked nothing.
fn planted_events() -> Vec<callproof_schemas::CallEvent> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let all_values: Vec<&str> = PLANTED.iter().map(|(_, value)| *value).collect();
    let text = all_values.join(" and ");
    (0..40u64)
        .map(|sequence| {
            let mut event = call_event(&mut rng, sequence, 200);
            let mut fields = serde_json::Map::new();
            for (detector, value) in PLANTED {
                fields.insert(detector.to_lowercase(), Value::String(value.to_string()));
            }
            fields.insert("notes".into(), Value::String(text.clone()));
            let json_body = Value::Object(fields).to_string();
            if let Some(request) = event.request.as_mut() {
                request.body = Some(json_body.clone());
                request.path = format!("/v1/functions/get_customer/invoke?email={}", PLANTED[3].1);
            }
            if let Some(response) = event.response.as_mut() {
                // Odd events answer with plain text, even ones with JSON.
                response.body = Some(if sequence % 2 == 0 {
                    json_body
                } else {
                    text.clone()
                });
            }
            if let Some(decision) = event.decision.as_mut() {
                decision.reason = format!("allowed for {}", PLANTED[4].1);
            }
            event.failure = Some(Failure {
                code: "upstream".into(),
                message: format!("upstream said: {text}"),
            });
            event.approval = Some(Approval {
                approvers: vec!["leads".into()],
                quorum: 1,
                reviewer: Some("lead-1".into()),
                decision: None,
                comment: Some(format!("ok, card {}", PLANTED[0].1)),
                expires_at: None,
                arguments_sha256: None,
            });
            // A call through `/mcp`: the client names itself, and picks the request id and
            // the method (recorded as sent, even when refused).
            event.mcp = Some(Mcp {
                method: format!("tools/call {}", PLANTED[8].1),
                server: Some("crm".into()),
                tool: Some("get_customer".into()),
                jsonrpc_id: Some(format!("\"{}\"", PLANTED[3].1)),
                client: Some(format!("agent-cli/1.0 {text}")),
                ..Mcp::default()
            });
            if sequence == 5 {
                event.kind = EventKind::CallFailed;
            }
            event
        })
        .collect()
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for (detector, value) in PLANTED {
        let secret = secret_part(value);
        assert!(
            !text.contains(secret),
            "{detector} value leaked into {what}"
        );
    }
    // The PEM body also never appears with its newlines escaped.
    assert!(
        !text.contains("plantedKEYmaterial"),
        "PRIVATE_KEY leaked into {what}"
    );
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_value_reaches_store_index_siem_or_logs() {
    let deployment = Deployment::new(2).await;
    let events = planted_events();
    produce(&producer(), &deployment.topic, &events).await;
    let config = deployment.write_config("deploy.toml", "");
    let stderr = deployment.dir.path().join("processor.log");
    // Debug logs: the most the processor ever says.
    let mut processor = spawn_processor(&config, &stderr, "debug");
    deployment
        .wait_for_logged(events.len() as u64, Duration::from_secs(60))
        .await;
    deployment
        .wait_for_indexed(events.len(), Duration::from_secs(60))
        .await;
    processor.stop();

    // The object store: every file, byte for byte.
    let mut files = Vec::new();
    files_under(&deployment.store_dir(), &mut files);
    assert!(files.len() > 4);
    for file in &files {
        assert_no_secret(
            &file.display().to_string(),
            &std::fs::read(file).expect("read"),
        );
    }
    // The stored events carry the findings of every detector (never the values).
    let logs = deployment.read_logs().await;
    let entries: Vec<&Value> = logs.values().flatten().collect();
    assert_eq!(entries.len(), events.len());
    for entry in &entries {
        let findings = entry
            .pointer("/event/masking")
            .and_then(Value::as_array)
            .expect("findings");
        for (detector, _) in PLANTED {
            for prefix in [
                "/request/body",
                "/response/body",
                "/failure/message",
                "/mcp/client",
            ] {
                assert!(
                    findings
                        .iter()
                        .any(|finding| finding["detector"] == detector
                            && finding["path"]
                                .as_str()
                                .is_some_and(|path| path.starts_with(prefix))),
                    "no {detector} finding under {prefix}"
                );
            }
        }
        let body = entry
            .pointer("/event/request/body")
            .and_then(Value::as_str)
            .expect("body");
        assert!(body.contains("[REDACTED:CREDIT_CARD]"), "{body}");
        // The MCP record keeps what is not secret: the client's name, the method's, the
        // server and tool.
        let mcp = &entry["event"]["mcp"];
        let client = mcp["client"].as_str().expect("mcp client");
        assert!(client.starts_with("agent-cli/1.0 "), "{client}");
        assert!(client.contains("[REDACTED:EMAIL]"), "{client}");
        assert_eq!(mcp["jsonrpc_id"], "\"[REDACTED:EMAIL]\"");
        let method = mcp["method"].as_str().expect("mcp method");
        assert!(method.starts_with("tools/call "), "{method}");
        assert_eq!(
            (&mcp["server"], &mcp["tool"]),
            (&"crm".into(), &"get_customer".into())
        );
        for (path, detector) in [
            ("/mcp/jsonrpc_id", "EMAIL"),
            ("/mcp/method", "BEARER_TOKEN"),
        ] {
            assert!(
                findings
                    .iter()
                    .any(|finding| finding["detector"] == detector && finding["path"] == path),
                "no {detector} finding at {path}"
            );
        }
    }

    // The index: no phrase of any planted value is searchable, and no index file holds one.
    for (detector, value) in PLANTED {
        let phrase = secret_part(value).replace('\n', " ");
        let hits = deployment.search(&format!("body:\"{phrase}\""));
        assert!(
            hits.is_empty(),
            "{detector} value is searchable in the index"
        );
    }
    assert_eq!(deployment.search("detectors:IBAN").len(), events.len());
    let mut index_files = Vec::new();
    files_under(&deployment.splits_dir(), &mut index_files);
    assert!(!index_files.is_empty(), "no split written");
    for file in &index_files {
        assert_no_secret(
            &file.display().to_string(),
            &std::fs::read(file).expect("read"),
        );
    }

    // The SIEM stream, read by an independent client: OCSF API Activity records that point
    // back to their log entries.
    let raw_records = read_topic_with_python(&deployment.siem_topic, events.len());
    assert_no_secret("the SIEM topic", raw_records.as_bytes());
    let records: Vec<Value> = raw_records
        .lines()
        .map(|line| serde_json::from_str(line).expect("SIEM record is JSON"))
        .collect();
    assert_eq!(records.len(), events.len());
    for record in &records {
        assert_eq!(record["class_uid"], 6003);
        assert_eq!(record["category_uid"], 6);
        assert_eq!(record["type_uid"], 600399);
        assert!(record["time"].as_i64().is_some_and(|time| time > 0));
        assert_eq!(record["api"]["operation"], "get_customer");
        assert_eq!(
            record["actor"]["user"]["uid"]
                .as_str()
                .map(|s| s.starts_with("user-")),
            Some(true)
        );
        let partition = record["unmapped"]["callproof"]["log"]["partition"]
            .as_i64()
            .expect("partition");
        let index = record["unmapped"]["callproof"]["log"]["index"]
            .as_u64()
            .expect("index");
        let entry = &logs[&(partition as i32)][index as usize];
        assert_eq!(entry["event"]["event_id"], record["metadata"]["uid"]);
    }

    // The processor's own logs.
    let log_text = std::fs::read(&stderr).expect("processor log");
    assert!(!log_text.is_empty());
    assert_no_secret("the processor's logs", &log_text);
}
