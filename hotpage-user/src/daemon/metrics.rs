//! Where the Prometheus text goes besides the CLI: a node_exporter textfile
//! (written to a temporary file in the same directory, then renamed, 0644)
//! and an HTTP `/metrics` endpoint (bound to 127.0.0.1 unless told otherwise).

use std::{
    fs,
    io::{self, Write},
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{
    report::SnapshotSource,
    report::{CONTENT_TYPE, render_prometheus},
};

pub const TEXTFILE_NAME: &str = "hotpage.prom";

pub fn textfile_path(dir: &Path) -> PathBuf {
    dir.join(TEXTFILE_NAME)
}

/// Writes the text atomically: readers see the old file or the new one.
pub fn write_textfile(dir: &Path, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{TEXTFILE_NAME}.{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&tmp, textfile_path(dir))
}

/// Renders `source`'s snapshot and writes it as the textfile.
pub fn write_snapshot(dir: &Path, source: &dyn SnapshotSource) -> io::Result<()> {
    write_textfile(dir, &render_prometheus(&source.snapshot()))
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve_http(listener: TcpListener, source: Arc<dyn SnapshotSource>) {
    super::server::serve("metrics endpoint", &listener, |mut stream| {
        let source = source.clone();
        async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            // Read the request head (we never need a body).
            let head = async {
                while n < buf.len() {
                    let m = stream.read(&mut buf[n..]).await?;
                    if m == 0 {
                        break;
                    }
                    n += m;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                io::Result::Ok(())
            };
            if tokio::time::timeout(std::time::Duration::from_secs(5), head).await.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&buf[..n]);
            let first = line.lines().next().unwrap_or_default();
            let response = if first.starts_with("GET /metrics ") || first == "GET /metrics" {
                match tokio::task::spawn_blocking(move || source.snapshot()).await {
                    Ok(snap) => {
                        let body = render_prometheus(&snap);
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    // A failed scrape, not an all-zero one (counter resets).
                    Err(e) => {
                        let body = format!("building the snapshot failed: {e}\n");
                        format!(
                            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                }
            } else {
                let body = "hotpage serves /metrics only\n";
                format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
}

/// Binds the HTTP listener (so a busy port fails at start, not later).
pub async fn bind_http(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    struct Fixed;

    impl SnapshotSource for Fixed {
        fn snapshot(&self) -> crate::report::Snapshot {
            crate::report::fixture::snapshot()
        }
    }

    #[test]
    fn the_textfile_is_replaced_whole_and_world_readable() {
        let dir = std::env::temp_dir().join(format!("hotpage-textfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        write_textfile(&dir, "a 1\n").unwrap();
        write_textfile(&dir, "b 2\n").unwrap();
        let p = textfile_path(&dir);
        assert_eq!(fs::read_to_string(&p).unwrap(), "b 2\n");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn http_serves_metrics_and_404s_the_rest() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(bind_http("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(serve_http(listener, Arc::new(Fixed)));
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"));
        assert!(ok.contains("hotpage_build_info"));
        assert!(get("/").starts_with("HTTP/1.1 404"));
    }

    struct Panicking;

    impl SnapshotSource for Panicking {
        fn snapshot(&self) -> crate::report::Snapshot {
            panic!("a bug while building the snapshot")
        }
    }

    #[test]
    fn a_snapshot_that_panics_is_a_500_not_zeros() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(bind_http("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(serve_http(listener, Arc::new(Panicking)));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 500"), "{out}");
        assert!(!out.contains("hotpage_promoted_bytes_total"), "{out}");
    }
}
