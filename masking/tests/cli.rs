//! The `callproof-mask` dry-run binary.

use std::io::Write;
use std::process::{Command, Stdio};

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

#[test]
fn masks_json_lines_and_never_echoes_rejected_ones() {
    let input = b"{\"to\":\"ann@example.com\",\"password\":\"hunter2\"}\nann@example.com is not json\n\xffbob@example.com\n";
    let (code, stdout, stderr) = run(&["--field", "password"], input);
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        "{\"password\":\"[REDACTED:FIELD]\",\"to\":\"[REDACTED:EMAIL]\"}\n"
    );
    assert!(stderr.contains("line 2: rejected: not JSON"));
    assert!(stderr.contains("line 3: rejected: input is not valid UTF-8"));
    assert!(stderr.contains("3 lines, 2 rejected; findings: EMAIL=1 FIELD=1"));
    assert!(!stderr.contains("example.com") && !stderr.contains("hunter2"));
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
