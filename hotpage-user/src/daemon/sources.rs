//! The sources of a run, attached: the hint-fault program and the sample
//! source, each with its ring for the collector and its counters for the
//! reports. Shared by `hotpage run` and `hotpage record`.

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use hotpage_common::PfnRange;

use super::config::RunConfig;
use crate::{
    kernel::HintFaultHook,
    report::AttachedSource,
    sources::{
        LoadedSource, SourceCounters, SourceKind,
        samples::{SampleSource, Sampler},
    },
    sys::thread_time::thread_cpu_time,
};

pub struct Sources {
    pub rings: Vec<RingBuf<MapData>>,
    pub attached: Vec<AttachedSource>,
    /// Detaches the hint-fault program when dropped (shared with the
    /// memory hot-plug watch, which updates its tier filter).
    pub hint_faults: Arc<Mutex<Option<LoadedSource>>>,
    pub samples: Option<SampleSource>,
}

impl Sources {
    /// Attaches the hint-fault program to `hook` (when given) and starts the
    /// sample source with `sampler` (when given), both filtered to `ranges`.
    pub fn attach(
        root: &Path,
        cfg: &RunConfig,
        hook: Option<&HintFaultHook>,
        sampler: Option<Sampler>,
        ranges: &[PfnRange],
    ) -> Result<Self> {
        let mut rings = Vec::new();
        let mut attached = Vec::new();
        let hint_faults = match hook {
            Some(hook) => {
                let (src, ring, counters) = LoadedSource::hint_faults(&cfg.load, ranges, hook)?;
                rings.push(ring);
                attached.push(AttachedSource {
                    name: SourceKind::HintFault.name().into(),
                    attached_to: format!("fentry/{}", hook.function),
                    counters: Arc::new(counters),
                    id: SourceKind::HintFault.id(),
                });
                Some(src)
            }
            None => None,
        };
        let samples = match sampler {
            Some(sampler) => {
                let (src, ring, counters) =
                    SampleSource::start(root, sampler, &cfg.load, ranges, cfg.cpu_budget, cfg.sample_period)
                        .context("starting the sample source")?;
                rings.push(ring);
                attached.push(AttachedSource {
                    name: SourceKind::HwSample.name().into(),
                    attached_to: format!(
                        "perf_event/{} on {} CPUs",
                        src.events().sampler().pmu,
                        src.events().cpus()
                    ),
                    counters,
                    id: SourceKind::HwSample.id(),
                });
                tracing::info!("sampling: {}", src.status().description);
                Some(src)
            }
            None => None,
        };

        Ok(Self { rings, attached, hint_faults: Arc::new(Mutex::new(hint_faults)), samples })
    }

    fn counters(&self, kind: SourceKind) -> Option<Arc<SourceCounters>> {
        self.attached.iter().find(|a| a.id == kind.id()).map(|a| a.counters.clone())
    }

    /// Starts the sample source's CPU budget on the current runtime (the
    /// task owns the source: aborting it detaches the source). New
    /// lower-tier ranges sent on `layout` (memory hot-plug) reach its filter.
    pub fn spawn_budget(&mut self, layout: Option<Layout>) -> Option<tokio::task::JoinHandle<()>> {
        let (samples, hint_faults) =
            (self.counters(SourceKind::HwSample), self.counters(SourceKind::HintFault));
        self.samples.take().map(|src| tokio::spawn(budget_loop(src, samples, hint_faults, layout)))
    }

    /// Detaches the hint-fault program now.
    pub fn detach_hint_faults(&self) {
        drop(self.hint_faults.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// The lower-tier ranges after memory hot-plug.
pub type Layout = tokio::sync::watch::Receiver<Arc<Vec<PfnRange>>>;

/// Once a second: the sample source's cost against its budget, and CPUs that
/// came online. The collector's thread CPU time is the consumer's cost,
/// shared out by events per source.
async fn budget_loop(
    mut src: SampleSource,
    samples: Option<Arc<SourceCounters>>,
    hint_faults: Option<Arc<SourceCounters>>,
    mut layout: Option<Layout>,
) {
    let emitted =
        |c: &Option<Arc<SourceCounters>>| c.as_ref().and_then(|c| c.read().ok()).map_or(0, |s| s.emitted);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut cpu0, mut s0, mut h0) = (thread_cpu_time(), emitted(&samples), emitted(&hint_faults));
    loop {
        tick.tick().await;
        let (cpu, s, h) = (thread_cpu_time(), emitted(&samples), emitted(&hint_faults));
        let (ds, dh) = (s.saturating_sub(s0), h.saturating_sub(h0));
        let consumer = cpu.saturating_sub(cpu0).as_nanos() as u64;
        let mine = if ds + dh == 0 { 0 } else { (consumer as u128 * ds as u128 / (ds + dh) as u128) as u64 };
        let cost = src.tick(mine);
        if let Some(rx) = layout.as_mut()
            && rx.has_changed().unwrap_or(false)
        {
            let ranges = rx.borrow_and_update().clone();
            if let Err(e) = src.set_lower_tier(&ranges) {
                tracing::warn!("memory hot-plug: updating the sample filter: {e}");
            }
        }
        tracing::debug!(share = cost.share(), period = src.events().period(), "sample source cost");
        (cpu0, s0, h0) = (cpu, s, h);
    }
}
