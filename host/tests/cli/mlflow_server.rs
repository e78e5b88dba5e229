//! A real `mlflow server` on a free loopback port, and a small fake MLflow server for failure
//! cases. Both stop when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pretext::tracking::client::Client;
use pretext::tracking::{Credentials, MlflowTarget};

/// Maximum time a fresh server may take to respond to `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The `mlflow` executable of `PRETEXT_PYTHON`'s venv, when it is installed.
fn mlflow_executable() -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var_os("PRETEXT_PYTHON")?);
    let mlflow = python.parent()?.join("mlflow");
    mlflow.is_file().then_some(mlflow)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// Returns a command for `program` that runs only on `cpus` (a `taskset` CPU list) when given.
pub fn command_on(program: &std::path::Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["--cpu-list", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// An `mlflow server` with a SQLite store and served artifacts in a temporary folder.
pub struct MlflowServer {
    child: Option<Child>,
    executable: PathBuf,
    /// CPUs the server and its workers are confined to (a `taskset` list), if any.
    cpus: Option<String>,
    pub port: u16,
    pub uri: String,
    folder: tempfile::TempDir,
}

impl MlflowServer {
    /// Starts a server, or returns `None` (and the test skips) when mlflow is not installed.
    pub fn start() -> Option<Self> {
        Self::start_on(None)
    }

    /// Starts a server whose processes run only on `cpus` (a `taskset` CPU list such as `1` or
    /// `2-3`) when given, so that a benchmark can keep it off the CPUs it measures.
    pub fn start_on(cpus: Option<&str>) -> Option<Self> {
        let Some(executable) = mlflow_executable() else {
            println!("skipped: no mlflow in PRETEXT_PYTHON's venv (run scripts/setup.sh)");
            return None;
        };
        let port = free_port();
        let mut server = Self {
            child: None,
            executable,
            cpus: cpus.map(str::to_owned),
            port,
            uri: format!("http://127.0.0.1:{port}"),
            folder: tempfile::tempdir().expect("temporary folder"),
        };
        server.resume();
        Some(server)
    }

    /// Starts the server again on the same port and store after [`MlflowServer::kill`].
    pub fn resume(&mut self) {
        let db = self.folder.path().join("mlflow.db");
        let artifacts = self.folder.path().join("artifacts");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.folder.path().join("server.log"))
            .expect("server log");
        let child = command_on(&self.executable, self.cpus.as_deref())
            .args(["server", "--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", db.display()))
            .arg("--artifacts-destination")
            .arg(&artifacts)
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .current_dir(self.folder.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            // Its own process group, so that `kill` also stops the workers it forks.
            .process_group(0)
            .spawn()
            .expect("start mlflow server");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if get_status(self.port, "/health") == Some(200) {
                return;
            }
            if let Some(status) =
                self.child.as_mut().and_then(|child| child.try_wait().ok()).flatten()
            {
                panic!("mlflow server exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("mlflow server not healthy after {START_TIMEOUT:?}:\n{}", self.log());
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.folder.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server and its workers with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals the process group this helper created; no memory is involved.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// A REST client for checks.
    pub fn client(&self) -> Client {
        Client::new(&target(&self.uri)).expect("client")
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A target for `uri` with short retries, for tests that drive the writer directly.
pub fn target(uri: &str) -> MlflowTarget {
    MlflowTarget {
        uri: uri.to_owned(),
        experiment: "tests".to_owned(),
        credentials: Credentials::None,
        retry_budget: Duration::from_secs(30),
        request_timeout: Duration::from_secs(10),
    }
}

/// The status of a GET on loopback, or `None` when nothing responds.
fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One request the fake server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: String,
}

/// The fake server's response function: status and JSON body for a request, given how many came before.
pub type Responder = dyn Fn(usize, &Received) -> (u16, String) + Send + Sync;

/// A fake MLflow server on loopback: one thread per connection, one request per connection
/// (`Connection: close`).
pub struct FakeServer {
    pub uri: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeServer {
    pub fn start(responder: Box<Responder>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log, flag) = (Arc::clone(&received), Arc::clone(&stop));
        let responder: Arc<Responder> = Arc::from(responder);
        std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (log, responder) = (Arc::clone(&log), Arc::clone(&responder));
                        std::thread::spawn(move || serve_one(stream, &log, &*responder));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { uri: format!("http://127.0.0.1:{port}"), received, stop }
    }

    /// Requests received so far whose path ends with `suffix`.
    pub fn requests(&self, suffix: &str) -> Vec<Received> {
        self.received.lock().unwrap().iter().filter(|r| r.path.ends_with(suffix)).cloned().collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn serve_one(stream: TcpStream, log: &Mutex<Vec<Received>>, responder: &Responder) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace().skip(1);
    let path = parts.next().unwrap_or_default().split('?').next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Received { path, body: String::from_utf8_lossy(&body).into_owned() };
    let index = {
        let mut log = log.lock().unwrap();
        log.push(request.clone());
        log.len() - 1
    };
    let (status, body) = responder(index, &request);
    let reason = if status < 400 { "OK" } else { "Error" };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// What a working MLflow server answers to the requests the writer makes.
pub fn mlflow_answer(request: &Received) -> (u16, String) {
    let path = request.path.as_str();
    let body = if path.ends_with("experiments/get-by-name") {
        r#"{"experiment":{"experiment_id":"1"}}"#
    } else if path.ends_with("runs/search") {
        "{}"
    } else if path.ends_with("runs/create") {
        r#"{"run":{"info":{"run_id":"fake","artifact_uri":"mlflow-artifacts:/1/fake/artifacts"}}}"#
    } else {
        "{}"
    };
    (200, body.to_owned())
}
