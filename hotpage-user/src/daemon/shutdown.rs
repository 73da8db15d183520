//! SIGINT/SIGTERM/SIGHUP handling. Installed before hotpage changes anything,
//! so a signal that arrives during start-up still ends in a clean stop
//! (settings restored) instead of the default action killing the process.
//! SIGHUP is a closed terminal: the run stops as it would on Ctrl-C.

use std::{future::Future, time::Duration};

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Shutdown {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Shutdown {
    /// Must run inside the tokio runtime.
    pub fn install() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Completes on the first SIGINT, SIGTERM or SIGHUP, after `limit` if given, or
    /// when `also` completes.
    pub async fn wait(mut self, limit: Option<Duration>, also: impl Future<Output = ()>) {
        let deadline = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT: stopping"),
            _ = self.term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = self.hup.recv() => tracing::warn!("SIGHUP (the terminal closed?): stopping"),
            _ = deadline => {}
            _ = also => {}
        }
    }
}
