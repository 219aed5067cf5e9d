//! The quick start tried as a new user would: run `scripts/quickstart`, wait for its banner, run
//! the commands it prints exactly as printed, sign in to the console it names as the people it
//! names (through the demo issuer's sign-in page, over plain HTTP, as a browser without
//! JavaScript would), press Ctrl-C, then start it again on the same data. The printed commands
//! include an MCP agent's, curl against the gateway's `/mcp` in front of the demo MCP server:
//! list, a masked lookup, a refund held until bob approves it, and its evidence.
//!
//! The script starts its own Tansu broker (with its data in `.data/`), so the second run also
//! shows that the broker, the log, the index and the keys survive a restart. It listens on the
//! fixed ports the printed commands name (8080, 8081, 8082, 9400, 9500, 9600, 9464), so nothing else in
//! the suite may use them; every other test takes free ports.

use std::collections::HashMap;
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
/// What the demo function (and the demo MCP server's `lookup_customer`) answers for customer 42
/// before the gateway masks it.
const RAW_CUSTOMER_VALUES: [&str; 3] = ["4111 1111 1111 1111", "219-09-9999", "ada@example.com"];
const QUICKSTART_PORTS: [u16; 7] = [8080, 8081, 8082, 9400, 9500, 9600, 9464];
const CONSOLE: &str = "http://127.0.0.1:8082";
const ISSUER: &str = "http://127.0.0.1:9400";
const GATEWAY: &str = "http://127.0.0.1:8080";

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
    the_printed_mcp_commands_list_mask_hold_and_prove(&output, &first.data);

    // The console, and who to sign in as, are named before the commands.
    let preamble = first.preamble.join("\n");
    for expected in [
        format!("The console, for approvers and auditors: {CONSOLE}"),
        "bob     approves the refunds held in steps 3 and 7".into(),
        "audrey  audits it".into(),
    ] {
        assert!(
            preamble.contains(&expected),
            "no {expected:?} in:\n{preamble}"
        );
    }
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(the_console_signs_in_the_people_the_banner_names());

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

/// Step 7's answers, as the printed curl commands got them from `/mcp` (each on its own line:
/// a JSON body, or an SSE `data:` line): the list, the masked lookup, the refund held and then
/// its result; the timeline the evidence API gave for it; and what the demo MCP server saw.
fn the_printed_mcp_commands_list_mask_hold_and_prove(output: &str, data: &Path) {
    let answers: HashMap<u64, serde_json::Value> = output
        .lines()
        .map(|line| line.strip_prefix("data:").unwrap_or(line).trim())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["jsonrpc"] == "2.0")
        .filter_map(|message| Some((message["id"].as_u64()?, message)))
        .collect();
    let answer = |id: u64| {
        answers
            .get(&id)
            .map(|message| &message["result"])
            .unwrap_or_else(|| panic!("no answer to MCP request {id} in:\n{output}"))
    };

    let mut tools: Vec<&str> = answer(1)["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{output}"))
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    tools.sort_unstable();
    assert_eq!(
        tools,
        ["demo__echo", "demo__lookup_customer", "demo__refund"]
    );

    // Masked in structuredContent and in the text (the raw values appear nowhere in the
    // output: checked with the other steps').
    let lookup = answer(2);
    assert_ne!(lookup["isError"], true, "{lookup}");
    let record = &lookup["structuredContent"];
    assert_eq!(record["customer_id"], 42, "{lookup}");
    for field in ["card_number", "email"] {
        let value = record[field].as_str().unwrap_or_default();
        assert!(value.starts_with("[REDACTED"), "{field} unmasked: {lookup}");
    }
    let text = lookup["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Ada Lovelace") && text.contains("[REDACTED"),
        "{lookup}"
    );

    // Held: a tool error naming the call, pending approval; then, approved, the one result.
    let held = answer(3);
    assert_eq!(held["isError"], true, "{held}");
    assert_eq!(held["_meta"]["dev.callproof/status"], "pending_approval");
    let call_id = held["_meta"]["dev.callproof/call_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no call id: {held}"));
    let done = answer(4);
    assert_ne!(done["isError"], true, "{done}");
    assert_eq!(done["structuredContent"]["status"], "refunded", "{done}");
    assert_eq!(done["structuredContent"]["refunded"], 500);
    assert_eq!(done["_meta"]["dev.callproof/call_id"], call_id);

    // The evidence API's timeline of that call: held, approved by bob, forwarded, completed.
    let timeline = output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line.trim()).ok())
        .find(|value| {
            value.to_string().contains("approval_decided") && value.to_string().contains(call_id)
        })
        .unwrap_or_else(|| panic!("no timeline of {call_id} in:\n{output}"))
        .to_string();
    for expected in [
        "approval_requested",
        "call_forwarded",
        "call_completed",
        "MCP refund checked",
        "mcp:demo__refund",
    ] {
        assert!(timeline.contains(expected), "no {expected:?} in {timeline}");
    }

    // The demo MCP server ran the refund once, and never saw a request without the gateway's
    // credential (alice's token would have been one).
    let log = std::fs::read_to_string(data.join("logs/mcp.log")).unwrap_or_default();
    let refunds = log
        .lines()
        .filter(|line| line.contains("refund executed") && line.contains("ord_7"))
        .count();
    assert_eq!(refunds, 1, "{log}");
    assert!(!log.contains("refused"), "{log}");
}

/// `scripts/quickstart` running in its own process group, as in a terminal.
struct Quickstart {
    child: Option<Child>,
    stdout_lines: mpsc::Receiver<String>,
    /// What it printed before the commands.
    preamble: Vec<String>,
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
            preamble: Vec::new(),
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
                Ok(line) => self.preamble.push(line),
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

/// A refund of alice's, held; bob signs in to the console at the demo issuer, finds it in his
/// inbox and approves it there, and it runs; audrey signs in, sees the logs, finds the call and
/// its timeline.
async fn the_console_signs_in_the_people_the_banner_names() {
    let http = reqwest::Client::new();
    let alice = http
        .get(format!(
            "{ISSUER}/token?sub=alice&groups=support&act=support-copilot"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let held = http
        .post(format!("{GATEWAY}/v1/functions/refund_payment/invoke"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"payment_id": "pay_console", "amount": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), reqwest::StatusCode::ACCEPTED);
    let call_id = held.json::<serde_json::Value>().await.unwrap()["call_id"]
        .as_str()
        .unwrap()
        .to_string();

    let bob = Browser::new();
    let inbox = bob.sign_in("bob", "/").await;
    assert_eq!(inbox.url, format!("{CONSOLE}/"), "{}", inbox.body);
    assert!(
        inbox.body.contains(&format!("id=\"call-{call_id}\""))
            && inbox.body.contains("refund_payment"),
        "the held refund is not in bob's inbox:\n{}",
        inbox.body
    );
    assert!(
        inbox.body.contains(">Bob<"),
        "signed in as Bob:\n{}",
        inbox.body
    );

    // Approved with the form of its card, bound to the arguments' hash the card shows.
    let card = inbox
        .body
        .split(&format!("id=\"call-{call_id}\""))
        .nth(1)
        .unwrap();
    let decided = bob
        .go(
            &format!("{CONSOLE}/approvals/{call_id}"),
            Some(vec![
                ("csrf".into(), input_value(card, "csrf")),
                (
                    "arguments_sha256".into(),
                    input_value(card, "arguments_sha256"),
                ),
                ("comment".into(), "checked in the console".into()),
                ("decision".into(), "approve".into()),
            ]),
        )
        .await;
    assert!(
        decided.body.contains("Your approval is recorded"),
        "{}",
        decided.body
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let call = http
            .get(format!("{GATEWAY}/v1/calls/{call_id}"))
            .bearer_auth(&alice)
            .header("prefer", "wait=10")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if call.contains("\"status\":\"completed\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the approved refund did not run: {call}"
        );
    }

    let audrey = Browser::new();
    let logs = audrey.sign_in("audrey", "/audit/logs").await;
    assert_eq!(logs.url, format!("{CONSOLE}/audit/logs"), "{}", logs.body);
    assert!(
        logs.body.contains("Logs and checkpoints") && logs.body.contains("Partition"),
        "{}",
        logs.body
    );
    // Once logged and indexed, she finds the refund's end and its timeline names bob's
    // approval. (Waiting for it also lets the processor finish before Ctrl-C.)
    let search = format!("{CONSOLE}/audit?call_id={call_id}&kind=call_completed");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = audrey.go(&search, None).await;
        if page.body.contains(">call_completed</a>") {
            break;
        }
        assert!(Instant::now() < deadline, "not found: {}", page.body);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let timeline = audrey
        .go(&format!("{CONSOLE}/audit/calls/{call_id}"), None)
        .await;
    assert!(
        timeline.body.contains("checked in the console") && timeline.body.contains("bob"),
        "{}",
        timeline.body
    );
}

/// A page as the browser ended on it, and every address it went through.
struct Page {
    url: String,
    body: String,
    visited: Vec<String>,
}

/// A browser as far as signing in needs: it follows redirects and keeps cookies (by hand: one
/// host, 127.0.0.1, whose cookies every port shares, as in a browser).
struct Browser {
    http: reqwest::Client,
    cookies: std::sync::Mutex<HashMap<String, String>>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A GET, or a POST of `form`, then every redirect (as a GET), to the page at the end.
    async fn go(&self, url: &str, form: Option<Vec<(String, String)>>) -> Page {
        let mut url = reqwest::Url::parse(url).unwrap();
        let mut form = form;
        let mut visited = Vec::new();
        for _ in 0..10 {
            visited.push(url.to_string());
            let cookie = self
                .cookies
                .lock()
                .unwrap()
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ");
            let mut request = match form.take() {
                Some(form) => self.http.post(url.clone()).form(&form),
                None => self.http.get(url.clone()),
            };
            if !cookie.is_empty() {
                request = request.header("cookie", cookie);
            }
            let response = request.send().await.unwrap();
            for set in response.headers().get_all("set-cookie") {
                let pair = set.to_str().unwrap().split(';').next().unwrap();
                let (name, value) = pair.split_once('=').unwrap();
                self.cookies
                    .lock()
                    .unwrap()
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
            if response.status().is_redirection() {
                let location = response.headers()["location"].to_str().unwrap();
                url = url.join(location).unwrap();
                continue;
            }
            assert!(
                response.status().is_success(),
                "{url}: {}",
                response.status()
            );
            return Page {
                url: url.to_string(),
                body: response.text().await.unwrap(),
                visited,
            };
        }
        panic!("too many redirects: {visited:?}");
    }

    /// Signs in at the console through the demo issuer's page, choosing `user`; the page
    /// `return_to` the console lands on.
    async fn sign_in(&self, user: &str, return_to: &str) -> Page {
        // Not signed in, the console sends the browser to its sign-in page.
        let signin = self.go(&format!("{CONSOLE}{return_to}"), None).await;
        assert!(
            signin.url.starts_with(&format!("{CONSOLE}/signin")),
            "{}",
            signin.url
        );
        let login = format!("{CONSOLE}/auth/login?return_to={}", url_encode(return_to));
        let chooser = self.go(&login, None).await;
        assert!(
            chooser.url.starts_with(&format!("{ISSUER}/authorize?")),
            "{}",
            chooser.url
        );
        assert!(
            chooser.url.contains("code_challenge_method=S256"),
            "{}",
            chooser.url
        );
        assert!(
            chooser
                .body
                .contains("A demo issuer, not an identity provider")
                && chooser
                    .body
                    .contains(&format!("name=\"user\" value=\"{user}\"")),
            "{}",
            chooser.body
        );
        let mut form = hidden_inputs(&chooser.body);
        form.push(("user".into(), user.into()));
        let landed = self.go(&format!("{ISSUER}/authorize"), Some(form)).await;
        assert!(
            landed
                .visited
                .iter()
                .any(|url| url.starts_with(&format!("{CONSOLE}/auth/callback?code="))),
            "{:?}",
            landed.visited
        );
        landed
    }
}

fn url_encode(text: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", [("v", text)])
        .unwrap()
        .query()
        .unwrap_or_default()
        .trim_start_matches("v=")
        .to_string()
}

/// The hidden fields of a page's form.
fn hidden_inputs(page: &str) -> Vec<(String, String)> {
    page.split("<input type=\"hidden\" name=\"")
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once('"').unwrap();
            let value = rest
                .split_once("value=\"")
                .and_then(|(_, value)| value.split_once('"'))
                .map(|(value, _)| value)
                .unwrap();
            (name.to_string(), unescape(value))
        })
        .collect()
}

/// The value of the first input named `name` in `html`.
fn input_value(html: &str, name: &str) -> String {
    hidden_inputs(html)
        .into_iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no input {name} in {html}"))
}

fn unescape(text: &str) -> String {
    text.replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
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
