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
    #[error("another hotpage daemon (pid {0}) is already running: stop it first")]
    AlreadyRunning(u32),
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
    /// Binds `<run_dir>/hotpage.sock`, mode 0600. A socket left by a dead
    /// daemon is replaced; a live one means another daemon runs.
    pub fn bind(run_dir: &Path) -> Result<Self, ControlError> {
        let path = socket_path(run_dir);
        let io_err = |source: io::Error| ControlError::Io { path: path.clone(), source };
        if path.exists() {
            match request(run_dir, &Request::Ping) {
                Ok(Response::Pong { pid, .. }) => return Err(ControlError::AlreadyRunning(pid)),
                _ => std::fs::remove_file(&path).map_err(io_err)?,
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

async fn answer(stream: tokio::net::UnixStream, source: Arc<dyn SnapshotSource>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
    let reply = match tokio::time::timeout(Duration::from_secs(5), reader.read_until(b'\n', &mut line)).await
    {
        Err(_) => Response::Error("request not received within 5 s".into()),
        Ok(Err(e)) => Response::Error(format!("reading the request: {e}")),
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
            Err(e) => Response::Error(format!("malformed request: {e}")),
            Ok(Request::Ping) => {
                Response::Pong { pid: std::process::id(), version: env!("CARGO_PKG_VERSION").into() }
            }
            Ok(req) => {
                let snap = tokio::task::spawn_blocking(move || source.snapshot()).await.unwrap_or_default();
                match req {
                    Request::Metrics => Response::Metrics(render_prometheus(&snap)),
                    _ => Response::Snapshot(Box::new(snap)),
                }
            }
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

    fn with_server(test: impl FnOnce(&Path) + Send + 'static) {
        let dir = temp_dir();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = rt.block_on(async { ControlServer::bind(&dir) }).unwrap();
        let mode = std::fs::metadata(server.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let server = Arc::new(server);
        let s2 = server.clone();
        rt.spawn(async move { s2.serve(Arc::new(Fixed)).await });
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
            assert!(matches!(err, ControlError::AlreadyRunning(_)), "{err}");
        });
        let dir = temp_dir();
        std::fs::write(socket_path(&dir), b"").unwrap(); // left by a crash
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async { ControlServer::bind(&dir) }).unwrap();
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_daemon_is_one_clear_error() {
        let e = request(Path::new("/nonexistent-run-dir"), &Request::Snapshot).unwrap_err();
        assert!(e.to_string().contains("no hotpage daemon is running"), "{e}");
        assert!(e.to_string().contains("hotpage run"));
    }
}
