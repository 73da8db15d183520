//! The control socket: `hotpage stats`, `top` and `metrics` ask the running
//! daemon over a Unix socket in the run directory (mode 0600, root only).
//! One JSON request per line, one JSON reply per line, then the connection
//! closes. A malformed request gets an error reply; the daemon carries on.

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::UnixListener,
};

use super::server;
use crate::report::{Snapshot, SnapshotSource, render_prometheus};

pub const SOCKET_NAME: &str = "hotpage.sock";
/// Longest request line the daemon reads.
const MAX_REQUEST: usize = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Snapshot,
    Metrics,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Pong { pid: u32, version: String },
    Snapshot(Box<Snapshot>),
    Metrics(String),
    Error(String),
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error(
        "no hotpage daemon is running (nothing listens on {0}): start it with `hotpage run` or `systemctl start hotpage`"
    )]
    NotRunning(PathBuf),
    #[error("the control socket {0} is root-only: run this command with sudo")]
    PermissionDenied(PathBuf),
    #[error("talking to the daemon on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon's reply is not understood ({0}): is it another hotpage version?")]
    BadReply(String),
    #[error("the daemon refused the request: {0}")]
    Refused(String),
    #[error("another hotpage daemon{} is already running: stop it first", .0.map_or(String::new(), |p| format!(" (pid {p})")))]
    AlreadyRunning(Option<u32>),
    #[error(
        "the control socket {path} exists and did not answer as a hotpage daemon does ({detail}): if no \
         hotpage runs (pgrep -x hotpage), remove it"
    )]
    SocketInUse { path: PathBuf, detail: String },
}

pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// Sends one request to the daemon and returns its reply.
pub fn request(run_dir: &Path, req: &Request) -> Result<Response, ControlError> {
    let path = socket_path(run_dir);
    let io_err = |source: io::Error| ControlError::Io { path: path.clone(), source };
    let stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ControlError::NotRunning(path.clone()),
        io::ErrorKind::PermissionDenied => ControlError::PermissionDenied(path.clone()),
        _ => io_err(e),
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(io_err)?;
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::BadReply(e.to_string()))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io_err)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io_err)?;
    match serde_json::from_str(&reply) {
        Ok(Response::Error(e)) => Err(ControlError::Refused(e)),
        Ok(r) => Ok(r),
        Err(e) => Err(ControlError::BadReply(e.to_string())),
    }
}

/// The listening socket; removed from the file system when dropped.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `<run_dir>/hotpage.sock`, mode 0600. Only a dead socket (nothing
    /// listens: connection refused) is replaced; one that answers a ping is
    /// another daemon, and one that answers anything else, or not in time, is
    /// left alone: it may be a busy or different hotpage.
    pub fn bind(run_dir: &Path) -> Result<Self, ControlError> {
        let path = socket_path(run_dir);
        let io_err = |source: io::Error| ControlError::Io { path: path.clone(), source };
        if path.exists() {
            match request(run_dir, &Request::Ping) {
                Ok(Response::Pong { pid, .. }) => return Err(ControlError::AlreadyRunning(Some(pid))),
                Err(ControlError::NotRunning(_)) => std::fs::remove_file(&path).map_err(io_err)?,
                Ok(other) => {
                    let detail = format!("it replied {other:?}");
                    return Err(ControlError::SocketInUse { path, detail });
                }
                Err(e) => return Err(ControlError::SocketInUse { path, detail: e.to_string() }),
            }
        }
        std::fs::create_dir_all(run_dir).map_err(io_err)?;
        let listener = UnixListener::bind(&path).map_err(io_err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        Ok(Self { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until the task is dropped.
    pub async fn serve(&self, source: Arc<dyn SnapshotSource>) {
        server::serve("control socket", &self.listener, |stream| {
            let source = source.clone();
            async move {
                if let Err(e) = answer(stream, source).await {
                    tracing::debug!("control connection: {e}");
                }
            }
        })
        .await;
    }
}

/// One request line, or why it is not one (a single line, for the reply).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice::<Request>(line).map_err(|e| format!("malformed request: {e}").replace('\n', " "))
}

async fn answer(stream: tokio::net::UnixStream, source: Arc<dyn SnapshotSource>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
    let reply = match tokio::time::timeout(Duration::from_secs(5), reader.read_until(b'\n', &mut line)).await
    {
        Err(_) => Response::Error("request not received within 5 s".into()),
        Ok(Err(e)) => Response::Error(format!("reading the request: {e}")),
        Ok(Ok(_)) => match parse_request(&line) {
            Err(e) => Response::Error(e),
            Ok(Request::Ping) => {
                Response::Pong { pid: std::process::id(), version: env!("CARGO_PKG_VERSION").into() }
            }
            // A snapshot that could not be built is an error, never an empty
            // snapshot: Prometheus would take its zeros for counter resets.
            Ok(req) => match tokio::task::spawn_blocking(move || source.snapshot()).await {
                Err(e) => Response::Error(format!("building the snapshot failed: {e}")),
                Ok(snap) => match req {
                    Request::Metrics => Response::Metrics(render_prometheus(&snap)),
                    _ => Response::Snapshot(Box::new(snap)),
                },
            },
        },
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"error\":\"encoding\"}".to_vec());
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    struct Fixed;

    impl SnapshotSource for Fixed {
        fn snapshot(&self) -> Snapshot {
            crate::report::fixture::snapshot()
        }
    }

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "hotpage-control-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    struct Panicking;

    impl SnapshotSource for Panicking {
        fn snapshot(&self) -> Snapshot {
            panic!("a bug while building the snapshot")
        }
    }

    fn with_server(test: impl FnOnce(&Path) + Send + 'static) {
        with_source(Arc::new(Fixed), test)
    }

    fn with_source(source: Arc<dyn SnapshotSource>, test: impl FnOnce(&Path) + Send + 'static) {
        let dir = temp_dir();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = rt.block_on(async { ControlServer::bind(&dir) }).unwrap();
        let mode = std::fs::metadata(server.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let server = Arc::new(server);
        let s2 = server.clone();
        rt.spawn(async move { s2.serve(source).await });
        let d2 = dir.clone();
        std::thread::spawn(move || test(&d2)).join().unwrap();
        drop(rt);
        drop(server);
        assert!(!socket_path(&dir).exists(), "the socket is removed with the server");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn snapshot_metrics_and_ping_round_trip() {
        with_server(|dir| {
            let Response::Snapshot(s) = request(dir, &Request::Snapshot).unwrap() else { panic!() };
            assert_eq!(*s, crate::report::fixture::snapshot());
            let Response::Metrics(m) = request(dir, &Request::Metrics).unwrap() else { panic!() };
            assert!(m.contains("hotpage_promoted_bytes_total"));
            assert!(matches!(request(dir, &Request::Ping).unwrap(), Response::Pong { .. }));
        });
    }

    #[test]
    fn malformed_requests_get_an_error_and_the_server_lives_on() {
        with_server(|dir| {
            for junk in ["nonsense\n", "{\"command\":\"reboot\"}\n", "\n", "{\n"] {
                let s = UnixStream::connect(socket_path(dir)).unwrap();
                (&s).write_all(junk.as_bytes()).unwrap();
                let mut reply = String::new();
                BufReader::new(&s).read_line(&mut reply).unwrap();
                let r: Response = serde_json::from_str(&reply).unwrap();
                assert!(matches!(r, Response::Error(ref e) if e.contains("malformed")), "{junk:?} → {r:?}");
            }
            // A client that connects and says nothing does not block others.
            let _idle = UnixStream::connect(socket_path(dir)).unwrap();
            assert!(request(dir, &Request::Snapshot).is_ok());
        });
    }

    #[test]
    fn a_second_daemon_is_refused_and_a_stale_socket_replaced() {
        with_server(|dir| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let err = rt.block_on(async { ControlServer::bind(dir) }).err().unwrap();
            assert!(matches!(err, ControlError::AlreadyRunning(Some(_))), "{err}");
        });
        let dir = temp_dir();
        std::fs::write(socket_path(&dir), b"").unwrap(); // left by a crash
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async { ControlServer::bind(&dir) }).unwrap();
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_snapshot_that_panics_is_an_error_not_zeros() {
        with_source(Arc::new(Panicking), |dir| {
            let e = request(dir, &Request::Metrics).unwrap_err();
            assert!(
                matches!(e, ControlError::Refused(ref m) if m.contains("building the snapshot failed")),
                "{e}"
            );
            // The daemon still answers.
            assert!(matches!(request(dir, &Request::Ping).unwrap(), Response::Pong { .. }));
        });
    }

    #[test]
    fn a_socket_that_answers_otherwise_is_left_alone() {
        // Something live but not a hotpage of this version: it answers junk.
        let dir = temp_dir();
        let listener = std::os::unix::net::UnixListener::bind(socket_path(&dir)).unwrap();
        let answerer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            s.write_all(b"{\"something\":\"else\"}\n").unwrap();
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let err = rt.block_on(async { ControlServer::bind(&dir) }).err().unwrap();
        answerer.join().unwrap();
        assert!(matches!(err, ControlError::SocketInUse { .. }), "{err}");
        assert!(err.to_string().contains("pgrep"), "{err}");
        assert!(socket_path(&dir).exists(), "a live socket is never removed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest::proptest! {
        /// Any bytes: a request or a one-line refusal, never a panic.
        #[test]
        fn any_bytes_are_a_request_or_a_one_line_refusal(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Err(e) = parse_request(&bytes) {
                proptest::prop_assert!(e.starts_with("malformed request") && !e.contains('\n'), "{e:?}");
            }
        }

        /// Near misses of real requests.
        #[test]
        fn mangled_requests_are_refused_in_one_line(s in r#"\{"command": ?"[a-z_]{0,10}"[ -~]{0,20}\}?\n?"#) {
            if let Err(e) = parse_request(s.as_bytes()) {
                proptest::prop_assert!(!e.contains('\n'), "{e:?}");
            }
        }
    }

    #[test]
    fn no_daemon_is_one_clear_error() {
        let e = request(Path::new("/nonexistent-run-dir"), &Request::Snapshot).unwrap_err();
        assert!(e.to_string().contains("no hotpage daemon is running"), "{e}");
        assert!(e.to_string().contains("hotpage run"));
    }
}
