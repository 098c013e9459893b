//! A real `opencode serve` for tests: the version `tests/opencode` pins,
//! installed on demand, on a free loopback port, in its own temporary home.
//!
//! Self-contained (std, `nix`, `serde_json`, `url`, `tempfile`): include it
//! with `#[path = "support/opencode_server.rs"] mod opencode_server;` (or
//! `mod` it from a `support/mod.rs`). It talks to the server with its own
//! minimal HTTP/1.1 code, not with the client under test.
//!
//! - Install: if `tests/opencode/node_modules` lacks the pinned binary, it
//!   runs `npm ci --ignore-scripts=false --no-audit --no-fund` there (about
//!   6–10 s; the npm registry must be reachable), with opencode's XDG
//!   directories pointed at a temporary directory for its postinstall. A failing install fails
//!   the test: it never skips. Concurrent tests and test binaries wait for
//!   one another on a lock file.
//! - Start: `opencode serve --port N --hostname 127.0.0.1` with HOME,
//!   XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_CACHE_HOME and XDG_STATE_HOME in a
//!   temporary directory and an otherwise empty environment (PATH kept), so
//!   it never reads or writes the user's opencode config or data. Its
//!   working directory is a temporary directory too. Ready once
//!   `GET /global/health` answers `"healthy":true` (each try limited to 2 s,
//!   60 s in all); a fresh home boots in about 2.5 s here.
//! - Events: [`OpencodeServer::events`] reads `GET /global/event` on a
//!   thread of its own, for what the API shows only there (an instance
//!   disposed of, for one).
//! - Stop (on drop): SIGTERM to its process group (it leads one), up to 5 s
//!   to exit, then SIGKILL; always waited for.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The opencode version `tests/opencode/package.json` pins.
pub const OPENCODE_VERSION: &str = "1.18.33";

/// How long a server may take to answer its health check after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The limit on each request the harness makes (a loaded 2-core machine
/// has been seen to take over 2 s to create a session).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped server may take to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running `opencode serve`, stopped on drop.
pub struct OpencodeServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    pub pid: u32,
    /// The basic-auth password it was started with (user `opencode`).
    pub password: Option<String>,
    child: Child,
    /// HOME, XDG_* directories, working directory and log.
    home: tempfile::TempDir,
}

impl OpencodeServer {
    /// Starts a server without authentication.
    pub fn start() -> OpencodeServer {
        Self::start_with(None)
    }

    /// Starts a server that wants basic auth: user `opencode`, `password`
    /// (its `OPENCODE_SERVER_PASSWORD`).
    pub fn start_with_password(password: &str) -> OpencodeServer {
        Self::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> OpencodeServer {
        let binary = opencode_binary();
        // The port is found free and then given to the server: another
        // process may take it in between, so a server that exits at once
        // is retried on a new port.
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(binary, password) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("opencode serve did not start (3 tries); its output:\n{last_log}");
    }

    fn try_start(binary: &Path, password: Option<&str>) -> Result<OpencodeServer, String> {
        let home = tempfile::Builder::new()
            .prefix("opencode-home-")
            .tempdir()
            .expect("temporary home");
        let h = home.path();
        for dir in ["config", "data", "cache", "state", "work"] {
            std::fs::create_dir_all(h.join(dir)).expect("create home directories");
        }
        let log_path = h.join("serve.log");
        let log = std::fs::File::create(&log_path).expect("create serve.log");
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .args([
                "serve",
                "--port",
                &port.to_string(),
                "--hostname",
                "127.0.0.1",
            ])
            .current_dir(h.join("work"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", h)
            .env("XDG_CONFIG_HOME", h.join("config"))
            .env("XDG_DATA_HOME", h.join("data"))
            .env("XDG_CACHE_HOME", h.join("cache"))
            .env("XDG_STATE_HOME", h.join("state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        if let Some(password) = password {
            command.env("OPENCODE_SERVER_PASSWORD", password);
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let mut server = OpencodeServer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            pid: child.id(),
            password: password.map(str::to_owned),
            child,
            home,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", server.log()));
            }
            if let Ok((200, body)) = server.request("GET", "/global/health", None) {
                if body.contains("\"healthy\":true") {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                let log = server.log();
                drop(server);
                panic!(
                    "opencode serve on port {port} did not answer /global/health within {START_TIMEOUT:?}; its output:\n{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("serve.log")).unwrap_or_default()
    }

    /// A fresh directory under the server's temporary home, for sessions.
    pub fn directory(&self, name: &str) -> PathBuf {
        let dir = self.home.path().join("dirs").join(name);
        std::fs::create_dir_all(&dir).expect("create session directory");
        dir
    }

    /// Creates a session working in `directory` (`POST /session?directory=`)
    /// and returns its id.
    pub fn create_session(&self, directory: &Path) -> String {
        self.create(directory, "{}")
    }

    /// Creates a child session of `parent` in `directory` (the body's
    /// `parentID`) and returns its id.
    pub fn create_child_session(&self, directory: &Path, parent: &str) -> String {
        self.create(
            directory,
            &serde_json::json!({ "parentID": parent }).to_string(),
        )
    }

    fn create(&self, directory: &Path, body: &str) -> String {
        let path = format!("/session?directory={}", encode(directory));
        let (status, answer) = self
            .request("POST", &path, Some(body))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert_eq!(status, 200, "POST {path}: {answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).expect("session JSON");
        v["id"].as_str().expect("session id").to_owned()
    }

    /// Whether the server knows the session (`GET /session/{id}`: 200 or 404).
    pub fn session_exists(&self, id: &str) -> bool {
        let path = format!("/session/{id}");
        match self.request("GET", &path, None) {
            Ok((200, _)) => true,
            Ok((404, _)) => false,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    /// Starts reading `GET /global/event` (every instance's events) on a
    /// thread of its own; returns once an event the server sent after
    /// subscribing has come through, so that every event from then on is
    /// seen.
    pub fn events(&self) -> Events {
        let mut stream = self.connect().expect("connect for /global/event");
        let mut head = format!(
            "GET /global/event HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n",
            self.port
        );
        head.push_str(&self.authorization());
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .expect("send GET /global/event");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = stream.try_clone().expect("clone the event stream");
        let sink = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || read_events(reader, &sink));
        let events = Events { seen, stream };
        // The server sends `server.connected` before it subscribes the
        // stream to its events: an event in that gap is lost. Disposing of
        // a directory nothing uses emits one; once one comes through, the
        // stream is subscribed.
        let probe = self.home.path().join("events-probe");
        let probed = |e: &serde_json::Value| {
            e["payload"]["type"] == "server.instance.disposed"
                && e["payload"]["properties"]["directory"] == probe.to_str().unwrap()
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let path = format!("/instance/dispose?directory={}", encode(&probe));
            if let Ok((status, body)) = self.request("POST", &path, None) {
                assert_eq!(status, 200, "POST {path}: {body}");
            }
            if events
                .wait_for(Duration::from_millis(500), probed)
                .is_some()
            {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "/global/event sent nothing within {START_TIMEOUT:?}: {:?}",
                events.all()
            );
        }
    }

    /// A connection to the server, given [`REQUEST_TIMEOUT`] to open.
    fn connect(&self) -> std::io::Result<TcpStream> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)
    }

    /// The `Authorization` header line for the server's password, if it
    /// has one; else nothing.
    fn authorization(&self) -> String {
        match &self.password {
            Some(password) => format!(
                "Authorization: Basic {}\r\n",
                base64(format!("opencode:{password}").as_bytes())
            ),
            None => String::new(),
        }
    }

    /// One HTTP/1.1 request with `Connection: close`; the status and body.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        json_body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut stream = self.connect().map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let body = json_body.unwrap_or("");
        let mut head = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if json_body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&self.authorization());
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()))
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if Instant::now() > deadline {
                return Err("timed out reading the answer".into());
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
            // The server may keep the connection open despite
            // `Connection: close`: stop once the answer is complete.
            if is_complete(&raw) {
                break;
            }
        }
        parse_response(&raw)
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // The server leads its own process group (process_group(0)), whose
        // id is its pid.
        let group = nix::unistd::Pid::from_raw(-(self.pid as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for OpencodeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The events of `GET /global/event`, as they arrive: each
/// `{"directory":…,"payload":{"type":…,"properties":…}}`. The stream is
/// closed on drop.
pub struct Events {
    seen: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    stream: TcpStream,
}

impl Events {
    /// Every event so far.
    pub fn all(&self) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().clone()
    }

    /// The first event that `matches`, waiting up to `within` for it.
    pub fn wait_for(
        &self,
        within: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.all().into_iter().find(|e| matches(e)) {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads a server-sent event stream (chunked or not) until it ends, adding
/// each `data:` line's JSON to `seen`.
fn read_events(mut stream: TcpStream, seen: &std::sync::Mutex<Vec<serde_json::Value>>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut in_body = false;
    let mut chunked = false;
    // The de-chunked body not yet split into events.
    let mut text = Vec::new();
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if !in_body {
            let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            chunked = head
                .lines()
                .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
            in_body = true;
            raw.drain(..split + 4);
        }
        if chunked {
            while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
                let size = String::from_utf8_lossy(&raw[..end]);
                let Ok(size) =
                    usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                else {
                    return;
                };
                if size == 0 {
                    return;
                }
                if raw.len() < end + 2 + size + 2 {
                    break;
                }
                text.extend_from_slice(&raw[end + 2..end + 2 + size]);
                raw.drain(..end + 2 + size + 2);
            }
        } else {
            text.append(&mut raw);
        }
        while let Some(end) = text.windows(2).position(|w| w == b"\n\n") {
            let event = String::from_utf8_lossy(&text[..end]).into_owned();
            text.drain(..end + 2);
            for line in event.lines() {
                if let Some(json) = line.strip_prefix("data:") {
                    if let Ok(v) = serde_json::from_str(json.trim()) {
                        seen.lock().unwrap().push(v);
                    }
                }
            }
        }
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// `tests/opencode`.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opencode")
}

/// The pinned `opencode` binary, installed with `npm ci` if missing; its
/// `--version` is checked once per process.
pub fn opencode_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = package_dir();
        let binary = dir.join("node_modules/opencode-ai/bin/opencode.exe");
        let lock = std::fs::File::create(dir.join(".install.lock")).expect("create lock file");
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock tests/opencode/.install.lock");
        if !binary.exists() || version(&binary).as_deref() != Some(OPENCODE_VERSION) {
            npm_ci(&dir);
        }
        if version(&binary).is_none() {
            // npm runs opencode-ai's postinstall (which puts the platform's
            // binary in place) unless scripts are disabled; run it by hand.
            run(
                Command::new("node")
                    .arg("postinstall.mjs")
                    .current_dir(dir.join("node_modules/opencode-ai")),
                "node postinstall.mjs in tests/opencode/node_modules/opencode-ai",
            );
        }
        let found = version(&binary);
        assert_eq!(
            found.as_deref(),
            Some(OPENCODE_VERSION),
            "{} --version",
            binary.display()
        );
        binary
    })
}

fn npm_ci(dir: &Path) {
    let started = Instant::now();
    // opencode-ai's postinstall runs `opencode --version`, which sets up
    // opencode's XDG directories: point them away from the user's (npm
    // itself keeps HOME, for its own configuration and cache).
    let xdg = tempfile::tempdir().expect("temporary XDG directories");
    run(
        Command::new("npm")
            .args(["ci", "--ignore-scripts=false", "--no-audit", "--no-fund"])
            .env("XDG_CONFIG_HOME", xdg.path().join("config"))
            .env("XDG_DATA_HOME", xdg.path().join("data"))
            .env("XDG_CACHE_HOME", xdg.path().join("cache"))
            .env("XDG_STATE_HOME", xdg.path().join("state"))
            .current_dir(dir),
        "npm ci in tests/opencode (installs the pinned opencode; needs the npm registry)",
    );
    eprintln!(
        "opencode_server: npm ci in {} took {:.1?}",
        dir.display(),
        started.elapsed()
    );
}

/// Runs `command`; panics with its output when it fails.
fn run(command: &mut Command, what: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed with {}:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `binary --version`, `None` when it does not run.
fn version(binary: &Path) -> Option<String> {
    // Even --version sets up opencode's data directories: keep them out of
    // the user's home.
    let home = tempfile::tempdir().ok()?;
    let out = Command::new(binary)
        .arg("--version")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A path as a query value.
fn encode(path: &Path) -> String {
    url::form_urlencoded::byte_serialize(path.to_str().expect("UTF-8 path").as_bytes()).collect()
}

/// Whether `raw` holds a whole answer: headers and `Content-Length` bytes
/// of body, or the last chunk of a chunked body.
fn is_complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    for line in head.lines() {
        if let Some(n) = line.strip_prefix("content-length:") {
            return n.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

/// Status and body of a raw HTTP/1.1 answer (Content-Length, chunked, or
/// read to the end).
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("bad chunk")?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .map_err(|e| e.to_string())?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size).ok_or("short chunk")?);
            rest = rest.get(size + 2..).ok_or("short chunk")?;
        }
        body = out;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
