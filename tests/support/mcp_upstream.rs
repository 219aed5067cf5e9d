//! A real upstream MCP server: `tests/mcp/upstream.py` under the official Python SDK (`mcp` on
//! PyPI), 1.x (legacy protocol revisions only) or 2.x (2026-07-28 and the legacy handshake), each
//! in its own virtualenv installed by `.ci/run`. Its tools are listed in the script's docstring.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// A major version of the Python SDK, with the interpreter of the virtualenv that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    V1,
    V2,
}

impl Sdk {
    /// `CALLPROOF_MCP1_PYTHON` / `CALLPROOF_MCP2_PYTHON` (exported by `.ci/run`), else where
    /// `.ci/run` puts the virtualenvs: `~/.cache/callproof-py/mcp{1,2}/bin/python`.
    pub fn python(self) -> PathBuf {
        let (variable, dir) = match self {
            Sdk::V1 => ("CALLPROOF_MCP1_PYTHON", "mcp1"),
            Sdk::V2 => ("CALLPROOF_MCP2_PYTHON", "mcp2"),
        };
        if let Some(path) = std::env::var_os(variable) {
            return PathBuf::from(path);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        home.join(".cache/callproof-py")
            .join(dir)
            .join("bin/python")
    }

    pub fn major(self) -> u8 {
        match self {
            Sdk::V1 => 1,
            Sdk::V2 => 2,
        }
    }
}

/// The upstream server process, killed when dropped.
pub struct McpUpstream {
    child: Child,
    /// `http://127.0.0.1:<port>/mcp`
    pub url: String,
    log: tempfile::NamedTempFile,
}

impl McpUpstream {
    /// Starts the server and waits for it to listen. `page_size`: tools per `tools/list` page.
    /// Fails, saying what is missing, when the SDK's virtualenv is not installed.
    pub fn start(sdk: Sdk, page_size: Option<usize>) -> anyhow::Result<McpUpstream> {
        let page_size = page_size.map(|size| size.to_string());
        let mut args = Vec::new();
        if let Some(page_size) = &page_size {
            args.extend(["--page-size", page_size.as_str()]);
        }
        McpUpstream::start_with(sdk, &args)
    }

    /// Starts the server with more arguments of `upstream.py` (`--json`: JSON answers, not SSE).
    pub fn start_with(sdk: Sdk, args: &[&str]) -> anyhow::Result<McpUpstream> {
        let python = sdk.python();
        if !python.exists() {
            bail!(
                "no Python with the MCP SDK {}.x at {}: run .ci/run (it installs the virtualenvs) \
                 or set CALLPROOF_MCP{}_PYTHON",
                sdk.major(),
                python.display(),
                sdk.major()
            );
        }
        let script = crate::workspace_root().join("tests/mcp/upstream.py");
        let log = tempfile::NamedTempFile::new()?;
        let mut command = Command::new(&python);
        command
            .arg(&script)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.reopen()?));
        command.args(args);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {} {}", python.display(), script.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(read.map(|_| line));
        });
        let mut upstream = McpUpstream {
            child,
            url: String::new(),
            log,
        };
        let line = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(line)) => line,
            Ok(Err(error)) => bail!(
                "reading the server's port: {error}; {}",
                upstream.log_text()
            ),
            Err(_) => bail!(
                "the server printed no port within 60 s; {}",
                upstream.log_text()
            ),
        };
        let Some(port) = line.trim().strip_prefix("PORT ") else {
            bail!(
                "the server printed {line:?} instead of its port; {}",
                upstream.log_text()
            );
        };
        upstream.url = format!("http://127.0.0.1:{port}/mcp");
        Ok(upstream)
    }

    /// Kills the server at once, as a crash would (calls in flight break off).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the server wrote to stderr so far, for failure messages.
    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        format!("server log:\n{text}")
    }
}

impl Drop for McpUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
