//! Clear start-up errors, and `keygen`.

use std::process::Command;

use crate::support::{Deployment, free_port};

fn run_processor(args: &[&str], config: Option<&std::path::Path>) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callproof-processor"));
    command.args(args);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let output = command.output().expect("run processor");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_unreachable_broker_unwritable_store_and_missing_topic_are_named() {
    let deployment = Deployment::new(1).await;
    let write = |name: &str, text: String| {
        let path = deployment.dir.path().join(name);
        std::fs::write(&path, text).expect("config");
        path
    };
    let base = deployment.config_text(&deployment.group, free_port(), "");

    // A signing key that is not one: refused, and never echoed.
    let bad_key = "PRIVATE+KEY+oops+12345678+c2VjcmV0LXNlZWQtbWF0ZXJpYWw=";
    std::fs::write(deployment.dir.path().join("log.key"), bad_key).expect("key");
    let (ok, _, stderr) = run_processor(&[], Some(&write("bad-key.toml", base.clone())));
    assert!(!ok);
    assert!(
        stderr.contains("`log.signing_key` is not a usable log signing key"),
        "{stderr}"
    );
    assert!(!stderr.contains("c2VjcmV0LXNlZWQtbWF0ZXJpYWw"), "{stderr}");

    // Everything else with a good key.
    let out = deployment.dir.path().join("good.key");
    let (ok, verifier, _) = run_processor(
        &[
            "keygen",
            "--name",
            "test.callproof/log",
            "--out",
            out.to_str().unwrap_or_default(),
        ],
        None,
    );
    assert!(ok);
    assert!(verifier.starts_with("test.callproof/log+"), "{verifier}");
    let base = base.replace(
        &deployment.dir.path().join("log.key").display().to_string(),
        &out.display().to_string(),
    );

    let port = free_port();
    let unreachable = base
        .replace(&crate::support::brokers(), &format!("127.0.0.1:{port}"))
        .replace("[processor]\n", "[processor]\nstartup_timeout_ms = 2000\n");
    let (ok, _, stderr) = run_processor(&[], Some(&write("unreachable.toml", unreachable)));
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "cannot reach the Kafka brokers at 127.0.0.1:{port}"
        )),
        "{stderr}"
    );

    let unwritable = base.replace(
        &format!("file://{}", deployment.store_dir().display()),
        "file:///proc/callproof-store",
    );
    let (ok, _, stderr) = run_processor(&[], Some(&write("unwritable.toml", unwritable)));
    assert!(!ok);
    assert!(
        stderr.contains("the object store at file:///proc/callproof-store is not writable"),
        "{stderr}"
    );

    let missing = base.replace(
        &format!("calls_topic = \"{}\"", deployment.topic),
        "calls_topic = \"no-such-topic-for-callproof\"",
    );
    let (ok, _, stderr) = run_processor(&[], Some(&write("missing.toml", missing)));
    assert!(!ok);
    assert!(
        stderr.contains("topic no-such-topic-for-callproof does not exist"),
        "{stderr}"
    );

    let unknown = base.replace("[processor]\n", "[processor]\nbatch_size = 3\n");
    let (ok, _, stderr) = run_processor(&[], Some(&write("unknown.toml", unknown)));
    assert!(!ok);
    assert!(
        stderr.contains("unknown.toml:") && stderr.contains("unknown field `batch_size`"),
        "{stderr}"
    );
}

#[test]
fn keygen_writes_a_private_key_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("signing.key");
    let (ok, verifier, _) = run_processor(
        &[
            "keygen",
            "--name",
            "audit.example.com/log",
            "--out",
            out.to_str().unwrap_or_default(),
        ],
        None,
    );
    assert!(ok);
    let key = std::fs::read_to_string(&out).expect("key file");
    assert!(key.starts_with("PRIVATE+KEY+audit.example.com/log+"));
    assert!(!verifier.contains("PRIVATE"));
    let signer: callproof_tlog::note::NoteSigner = key.trim().parse().expect("signer parses");
    assert_eq!(signer.verifier().to_string(), verifier.trim());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never overwrites a key.
    let (ok, _, stderr) = run_processor(
        &[
            "keygen",
            "--name",
            "x",
            "--out",
            out.to_str().unwrap_or_default(),
        ],
        None,
    );
    assert!(!ok, "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).expect("key"), key);
}
