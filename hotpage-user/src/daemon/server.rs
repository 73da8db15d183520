//! The one accept loop behind the control socket and the HTTP `/metrics`
//! endpoint: each connection is answered on its own task; an accept error
//! (out of file descriptors, say) is logged and waited out instead of
//! retried at once in a hot loop.

use std::{future::Future, io, time::Duration};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// How long to wait after a failed accept before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket.
pub trait Accept {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    async fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Accepts connections until the task is dropped; `answer` handles each.
pub async fn serve<L, F>(what: &str, listener: &L, answer: impl Fn(L::Stream) -> F)
where
    L: Accept + Sync,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept_one().await {
            Ok(stream) => {
                tokio::spawn(answer(stream));
            }
            Err(e) => {
                tracing::warn!("{what}: accepting a connection: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
