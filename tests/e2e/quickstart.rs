//! The quick start tried as a new user would: run `scripts/quickstart`, wait for its banner, run
//! the commands it prints exactly as printed, press Ctrl-C, then start it again on the same data.
//!
//! The script starts its own Tansu broker (with its data in `.data/`), so the second run also
//! shows that the broker, the log, the index and the keys survive a restart. It listens on the
//! fixed ports the printed commands name (8080, 8081, 9400, 9500, 9464), so nothing else in the
//! suite may use them; every other test takes free ports.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use callproof_tests::broker::free_port;
use callproof_tests::process::binary;
use callproof_tests::workspace_root;

const BANNER_START: &str = "Try these commands in another terminal:";
const BANNER_END: &str = "Press Ctrl-C to stop everything.";
/// What the demo function answers for customer 42 before the gateway masks it.
const RAW_CUSTOMER_VALUES: [&str; 3] = ["4111 1111 1111 1111", "219-09-9999", "ada@example.com"];
const QUICKSTART_PORTS: [u16; 5] = [8080, 8081, 9400, 9500, 9464];

#[test]
fn quickstart_prints_commands_that_work_and_a_second_run_reuses_the_data() {
    let home = tempfile::tempdir().unwrap();
    let broker_port = free_port().unwrap();

    let mut first = Quickstart::start(home.path(), broker_port);
    let commands = first.wait_for_banner();
    assert!(
        first.stderr().contains("generating the log signing key"),
        "the first run makes the key:\n{}",
        first.stderr()
    );

    let work = home.path().join("user");
    std::fs::create_dir_all(&work).unwrap();
    let output = run_commands(&commands, &work, &first);
    for raw in RAW_CUSTOMER_VALUES {
        assert!(
            !output.contains(raw),
            "{raw:?} came back unmasked:\n{output}"
        );
    }
    for expected in [
        // 1. the answer, masked
        "[REDACTED:CREDIT_CARD]",
        "[REDACTED:US_SSN]",
        // 2. the search found the call in the log
        "\"log_index\"",
        // 3. the held refund, listed for bob, then executed once approved
        "\"refund_payment\"",
        "\"status\":\"completed\"",
        // 5. the report
        "CC6.1",
        "CC8.1",
    ] {
        assert!(output.contains(expected), "no {expected:?} in:\n{output}");
    }
    // 4 and 6 ran `callproof-verify`, whose non-zero exit would have stopped the script; the
    // files it checked are where the commands put them.
    for file in ["entry.json", "proof.txt", "report.html", "evidence.tar.gz"] {
        let length = std::fs::metadata(work.join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(length > 0, "{file} was not downloaded");
    }
    let verifier_key = verifier_key_in(&commands);

    first.ctrl_c();
    for port in QUICKSTART_PORTS.into_iter().chain([broker_port]) {
        assert!(!listening(port), "port {port} still open after Ctrl-C");
    }

    let mut second = Quickstart::start(home.path(), broker_port);
    let commands = second.wait_for_banner();
    assert!(
        !second.stderr().contains("generating the log signing key"),
        "the second run made a new key:\n{}",
        second.stderr()
    );
    assert_eq!(verifier_key_in(&commands), verifier_key);
    // The calls of the first run are still searchable: the index and the log were kept. Only
    // the token and search lines of the printed commands run, so nothing new is logged first.
    let search_only: String = commands
        .lines()
        .filter(|line| line.starts_with("AUDITOR=") || line.contains("/v1/search?function="))
        .filter(|line| !line.starts_with("until") && !line.starts_with("HIT="))
        .collect::<Vec<_>>()
        .join("\n");
    let output = run_commands(&search_only, &work, &second);
    assert!(
        output.contains("\"log_index\""),
        "the first run's call is gone:\n{output}"
    );
    second.ctrl_c();
}

/// `scripts/quickstart` running in its own process group, as in a terminal.
struct Quickstart {
    child: Option<Child>,
    stdout_lines: mpsc::Receiver<String>,
    stderr_log: PathBuf,
    data: PathBuf,
}

impl Quickstart {
    fn start(home: &Path, broker_port: u16) -> Quickstart {
        use std::os::unix::process::CommandExt;
        let bin_dir = binary("callproof-ingress")
            .parent()
            .map(Path::to_path_buf)
            .unwrap();
        let stderr_log = home.join(format!("quickstart-{}.err", unique_suffix()));
        let mut child = Command::new("bash")
            .arg(workspace_root().join("scripts/quickstart"))
            .env("CALLPROOF_BIN_DIR", bin_dir)
            .env("CALLPROOF_HOME", home)
            .env("TANSU_PORT", broker_port.to_string())
            // A new user has no broker: the script starts its own.
            .env_remove("KAFKA_BROKERS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr_log).unwrap()))
            .process_group(0)
            .spawn()
            .expect("bash runs scripts/quickstart");
        let stdout = child.stdout.take().unwrap();
        let (sender, stdout_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Quickstart {
            child: Some(child),
            stdout_lines,
            stderr_log,
            data: home.join(".data"),
        }
    }

    /// The commands between the banner's first and last line, once every service is ready.
    fn wait_for_banner(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut in_banner = false;
        let mut commands = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) if line == BANNER_START => in_banner = true,
                Ok(line) if line == BANNER_END => return commands.join("\n"),
                Ok(line) if in_banner => commands.push(line),
                Ok(_) => {}
                Err(_) => panic!("no banner from the quick start:\n{}", self.diagnostics()),
            }
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The script's own output and the tail of every service's log.
    fn diagnostics(&self) -> String {
        let mut text = format!("quick start stderr:\n{}", self.stderr());
        if let Ok(entries) = std::fs::read_dir(self.data.join("logs")) {
            for entry in entries.flatten() {
                let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                text.push_str(&format!("\n--- {}\n", entry.path().display()));
                for line in tail.into_iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }

    /// SIGINT to the whole group, as Ctrl-C in a terminal; the script must stop everything.
    fn ctrl_c(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
        panic!(
            "the quick start did not stop on Ctrl-C:\n{}",
            self.diagnostics()
        );
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
        }
    }
}

/// Runs the printed commands as one shell script that stops at the first failing command.
fn run_commands(commands: &str, work: &Path, quickstart: &Quickstart) -> String {
    let script = work.join("commands.sh");
    std::fs::write(&script, format!("set -euo pipefail\n{commands}\n")).unwrap();
    let output = Command::new("timeout")
        .args(["180", "bash"])
        .arg(&script)
        .current_dir(work)
        .output()
        .expect("bash runs the printed commands");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the printed commands failed ({}):\n{commands}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{}",
        output.status,
        quickstart.diagnostics()
    );
    format!("{stdout}\n{stderr}")
}

/// The verifier key the banner passes to `callproof-verify`.
fn verifier_key_in(commands: &str) -> String {
    commands
        .split("--key '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .map(str::to_string)
        .expect("the banner names the verifier key")
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default()
}
