//! The `callproof-mask` dry-run binary: one `{"masked": …, "findings": […]}` line out per
//! line in (issue 4, item 8).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callproof-mask"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (
        output.status.code().unwrap(),
        text(output.stdout),
        text(output.stderr),
    )
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn each_line_becomes_masked_and_findings() {
    let input = b"{\"to\":\"ann@example.com\",\"password\":\"hunter2\"}\n{\"n\":1}\n";
    let (code, stdout, stderr) = run(&["--field", "password"], input);
    assert_eq!(code, 0, "{stderr}");
    let first = stdout.lines().next().unwrap();
    assert!(first.starts_with("{\"masked\":"), "{first}");
    assert_eq!(
        lines(&stdout),
        [
            json!({
                "masked": {"password": "[REDACTED:FIELD]", "to": "[REDACTED:EMAIL]"},
                "findings": [
                    {"detector": "FIELD", "path": "/password", "count": 1},
                    {"detector": "EMAIL", "path": "/to", "count": 1},
                ],
            }),
            json!({"masked": {"n": 1}, "findings": []}),
        ]
    );
    assert!(stderr.contains("2 lines, 0 rejected; findings: EMAIL=1 FIELD=1"));
}

#[test]
fn a_line_that_is_not_json_is_masked_as_text_and_still_gets_its_line() {
    let input = b"ann@example.com is not json\n\n{\"a\": \"call 212-555-0123\"}\r\n";
    let (code, stdout, stderr) = run(&[], input);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        lines(&stdout),
        [
            json!({
                "masked": "[REDACTED:EMAIL] is not json",
                "findings": [{"detector": "EMAIL", "path": "", "count": 1}],
            }),
            json!({"masked": "", "findings": []}),
            json!({
                "masked": {"a": "call [REDACTED:PHONE]"},
                "findings": [{"detector": "PHONE", "path": "/a", "count": 1}],
            }),
        ]
    );
}

#[test]
fn text_mode_masks_json_looking_lines_as_text() {
    let (code, stdout, _) = run(&["--text"], b"{\"to\":\"ann@example.com\"}\n");
    assert_eq!(code, 0);
    assert_eq!(
        lines(&stdout),
        [json!({
            "masked": "{\"to\":\"[REDACTED:EMAIL]\"}",
            "findings": [{"detector": "EMAIL", "path": "", "count": 1}],
        })]
    );
}

#[test]
fn invalid_utf8_is_rejected_with_a_clear_error_and_never_echoed() {
    let input = b"\xffbob@example.com\n{\"to\":\"ann@example.com\"}\n";
    let (code, stdout, stderr) = run(&[], input);
    assert_eq!(code, 1);
    let error = "input is not valid UTF-8 (first invalid byte at offset 0)";
    assert_eq!(
        lines(&stdout),
        [
            json!({"error": error}),
            json!({
                "masked": {"to": "[REDACTED:EMAIL]"},
                "findings": [{"detector": "EMAIL", "path": "/to", "count": 1}],
            }),
        ]
    );
    assert!(
        stderr.contains(&format!("line 1: rejected: {error}")),
        "{stderr}"
    );
    assert!(stderr.contains("2 lines, 1 rejected; findings: EMAIL=1"));
    assert!(!stderr.contains("example.com") && !stdout.contains("bob@"));
}

#[test]
fn bad_config_names_the_file_and_the_reason_without_quoting_it() {
    let dir = std::env::temp_dir().join(format!("callproof-mask-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("deploy.toml");
    std::fs::write(
        &path,
        "[other]\nx = 1\n[masking]\nhmac_key = 12345678901234567\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["--config", path.to_str().unwrap()], b"");
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("invalid config {}: line 4:", path.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("12345678901234567"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
