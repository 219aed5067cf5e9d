//! A Kafka broker reached only over TLS, with SCRAM-SHA-512 authentication: Tansu (with
//! `--authentication`) behind Debian's `stunnel4`, which terminates TLS with a certificate of a
//! test CA made here by the `openssl` command. Tansu advertises the terminator's address, so
//! every connection a client makes after bootstrap goes through TLS too. A second CA, which
//! signed nothing the broker shows, is there for the "wrong CA" case.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::broker::free_port;
use crate::process::wait_for_port;

/// The SCRAM user every client of the broker authenticates as.
pub const SCRAM_USER: &str = "callproof";

pub struct TlsBroker {
    /// `127.0.0.1:<port>` of the TLS listener, the only address clients are given.
    pub bootstrap: String,
    /// The CA that signed the broker's certificate (PEM).
    pub ca: PathBuf,
    /// A CA that signed nothing the broker shows (PEM).
    pub other_ca: PathBuf,
    _dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl TlsBroker {
    /// Starts the broker with one SCRAM user, [`SCRAM_USER`] with `password`.
    pub fn start(password: &str) -> anyhow::Result<TlsBroker> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        let path = |name: &str| root.join(name);
        make_ca(&path("ca"))?;
        make_ca(&path("other-ca"))?;
        make_server_certificate(&path("ca"), &path("broker"))?;

        let tls_port = free_port()?;
        let plain_port = free_port()?;
        let mut broker = TlsBroker {
            bootstrap: format!("127.0.0.1:{tls_port}"),
            ca: path("ca.pem"),
            other_ca: path("other-ca.pem"),
            children: Vec::new(),
            _dir: dir,
        };
        // Tansu keeps users in its storage and refuses every request of an unauthenticated
        // client once `--authentication` is on: the user is made first, on a broker without
        // it, in a store that outlives it (sqlite, in the test's directory).
        let tansu = |authentication: bool| {
            let mut command = Command::new("tansu");
            command
                .current_dir(&root)
                .args(["broker", "--listener-url"])
                .arg(format!("tcp://127.0.0.1:{plain_port}"))
                .arg("--advertised-listener-url")
                .arg(format!("tcp://127.0.0.1:{tls_port}"))
                .args(["--storage-engine", "sqlite://tansu.db"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if authentication {
                command.arg("--authentication");
            }
            command
                .spawn()
                .context("cannot start `tansu` (is it installed? .ci/run installs it)")
        };
        let mut setup = tansu(false)?;
        wait_for_port(plain_port, Duration::from_secs(20))?;
        let created = Command::new("tansu")
            .args(["user", "create", "--mechanism", "scram512", "--broker"])
            .arg(format!("tcp://127.0.0.1:{plain_port}"))
            .args([SCRAM_USER, password])
            .output()
            .context("cannot run `tansu user create`")?;
        let _ = setup.kill();
        let _ = setup.wait();
        if !created.status.success() {
            bail!(
                "tansu user create: {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        broker.children.push(tansu(true)?);

        let stunnel_config = path("stunnel.conf");
        std::fs::write(
            &stunnel_config,
            format!(
                "foreground = yes\npid =\nsyslog = no\noutput = {log}\n\n[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{plain_port}\ncert = {cert}\nkey = {key}\n",
                log = path("stunnel.log").display(),
                cert = path("broker.pem").display(),
                key = path("broker.key").display(),
            ),
        )?;
        let stunnel = Command::new("stunnel4")
            .arg(&stunnel_config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `stunnel4` (Debian's stunnel4; .ci/run installs it)")?;
        broker.children.push(stunnel);
        wait_for_port(plain_port, Duration::from_secs(20))?;
        wait_for_port(tls_port, Duration::from_secs(20))?;
        Ok(broker)
    }

    /// The librdkafka properties of a client that trusts `ca` and authenticates as
    /// [`SCRAM_USER`] with `password`, as `(key, value)` pairs.
    pub fn client_properties(ca: &Path, password: &str) -> Vec<(&'static str, String)> {
        vec![
            ("security.protocol", "sasl_ssl".to_string()),
            ("ssl.ca.location", ca.display().to_string()),
            ("sasl.mechanism", "SCRAM-SHA-512".to_string()),
            ("sasl.username", SCRAM_USER.to_string()),
            ("sasl.password", password.to_string()),
        ]
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .context("cannot run `openssl`")?;
    if !output.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// `<stem>.pem` and `<stem>.key`: a self-signed P-256 CA valid for a day.
fn make_ca(stem: &Path) -> anyhow::Result<()> {
    let (pem, key) = (stem.with_extension("pem"), stem.with_extension("key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=callproof test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &key.display().to_string(),
        "-out",
        &pem.display().to_string(),
    ])
}

/// `<stem>.pem` and `<stem>.key`: a certificate for 127.0.0.1 and localhost signed by the CA at
/// `<ca>.pem`, as librdkafka verifies the broker's name by default.
fn make_server_certificate(ca: &Path, stem: &Path) -> anyhow::Result<()> {
    let (pem, key, csr) = (
        stem.with_extension("pem"),
        stem.with_extension("key"),
        stem.with_extension("csr"),
    );
    let extensions = stem.with_extension("ext");
    std::fs::write(
        &extensions,
        "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n",
    )?;
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &key.display().to_string(),
        "-out",
        &csr.display().to_string(),
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        &csr.display().to_string(),
        "-CA",
        &ca.with_extension("pem").display().to_string(),
        "-CAkey",
        &ca.with_extension("key").display().to_string(),
        "-CAcreateserial",
        "-extfile",
        &extensions.display().to_string(),
        "-out",
        &pem.display().to_string(),
    ])
}
