//! `hotpage record`, assembled: the sources, the address resolver and a
//! recorder, without a hot map or a promoter, so it changes nothing that
//! `hotpage run` does and can run beside it (no control socket, no lock
//! unless asked to set the kernel's tiering mode).

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};

use super::{
    Shutdown,
    config::RunConfig,
    preflight::{Preflight, kernel_settings, preflight, tokio_runtime},
    recording::{self, RunKnobs},
    sources::Sources,
};
use crate::{
    collector::{Collector, EventConsumer},
    recording::{Recorder, Trailer},
    sources::AddressResolver,
    sys::clock::monotonic_ns,
};

/// What `hotpage record` was asked.
pub struct RecordRequest<'a> {
    pub output: &'a Path,
    pub duration: Option<f64>,
    /// Only this process's events.
    pub pid: Option<u32>,
    /// Hint faults without the kernel's own promotion while recording.
    pub set_tiering: bool,
}

/// Drops every event: the recorder is the only consumer that matters here.
struct Discard;

impl EventConsumer for Discard {
    fn consume(&mut self, _: &hotpage_common::HotpageEvent) {}
}

pub fn record(root: &Path, run_dir: &Path, cfg: RunConfig, req: RecordRequest<'_>) -> Result<()> {
    tokio_runtime()?.block_on(record_until_stopped(root, run_dir, cfg, req))
}

async fn record_until_stopped(
    root: &Path,
    run_dir: &Path,
    cfg: RunConfig,
    req: RecordRequest<'_>,
) -> Result<()> {
    let shutdown = Shutdown::install()?;
    let Preflight { topo, ranges, release, hook, .. } = preflight(root, "hotpage record", cfg.hint_faults)?;
    let sampler = cfg.samples.pick(root)?;
    // Restored when `_settings` drops, after the programs are gone.
    let _settings = kernel_settings(root, run_dir, req.set_tiering)?;
    let mut sources = Sources::attach(root, &cfg, hook.as_ref(), sampler, &ranges)?;
    let knobs = RunKnobs {
        hotmap: cfg.hotmap,
        hint_capacity: cfg.hint_capacity,
        promoter: &cfg.promoter,
        target_nid: cfg.target_nid,
        policy: None,
    };
    let header = recording::header(root, &topo, &release, knobs, req.pid, false, &sources.attached);
    let recorder = Recorder::to_file(Discard, req.output, &header, None)
        .with_context(|| format!("creating the recording {}", req.output.display()))?;
    let mut consumer = AddressResolver::new(recorder, root, &ranges);
    let budget = sources.spawn_budget(None);
    let mut collector =
        Collector::new(std::mem::take(&mut sources.rings), Duration::from_millis(cfg.drain_interval_ms))?;
    let limit = req.duration.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let result = collector.run(&mut consumer, shutdown.wait(limit, std::future::pending())).await;
    if let Some(b) = budget {
        b.abort();
        let _ = b.await;
    }
    let trailer = Trailer {
        end_ns: monotonic_ns(),
        sources_at_end: recording::source_counts(&sources.attached),
        ..Trailer::default()
    };
    drop(sources);
    let written = consumer.next_mut().finish(trailer).context("finishing the recording")?;
    result?;
    if let Some((path, events, bytes)) = written {
        eprintln!(
            "hotpage record: {events} events in {} ({:.1} bytes/event)",
            path.display(),
            bytes as f64 / events.max(1) as f64
        );
    }
    Ok(())
}
