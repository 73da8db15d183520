//! `hotpage run`, assembled: preflight, settings, the sources, the hot map,
//! the promoter, the control socket and metrics, then the collector until a
//! signal; and the stop in the reverse order.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    Shutdown,
    config::RunConfig,
    control::ControlServer,
    metrics,
    preflight::{Preflight, preflight, recover_only, report_recovered, tokio_runtime},
};
use crate::{
    collector::{Collector, HotMapFeeder},
    hotmap::{HotMap, MemoryLayout},
    kernel::{movers, settings::SettingsGuard},
    promoter::{LiveSystem, Promoter, RateLimit, Targets},
    report::{AttachedSource, SnapshotBuilder, SnapshotSource},
    sources::{AddressResolver, LoadedSource, SourceCounters, SourceKind, samples::SampleSource},
    sys::{thread_time::thread_cpu_time, vmstat},
};

/// `hotpage run` with a resolved configuration: until SIGTERM/SIGINT, or
/// for `duration` seconds.
pub fn run(root: &Path, run_dir: &Path, cfg: RunConfig, duration: Option<f64>) -> Result<()> {
    tokio_runtime()?.block_on(daemon(root, run_dir, cfg, duration))
}

async fn daemon(root: &Path, run_dir: &Path, cfg: RunConfig, duration: Option<f64>) -> Result<()> {
    let started = Instant::now();
    let shutdown = Shutdown::install()?;
    let observe_only = cfg.promoter.rate_limit == RateLimit::ObserveOnly;
    let Preflight { topo, ranges, release, hook } = preflight(root, "hotpage run", cfg.hint_faults)?;
    let sampler = cfg.samples.pick(root)?;

    // Refuse to fight another mover of pages (observe-only moves nothing, so it only warns).
    for line in movers::damon_migrations(root) {
        if observe_only {
            tracing::warn!("{line}");
        } else {
            bail!("{line}");
        }
    }
    // A live socket means another daemon: refused before anything changes.
    let server = ControlServer::bind(run_dir)?;

    let manage = cfg.manage_numa_balancing && !observe_only;
    let settings = if manage {
        let (mut guard, recovered) = SettingsGuard::acquire(root, run_dir)?;
        report_recovered(&recovered);
        guard.hint_faults_without_kernel_promotion()?;
        for (path, value) in cfg.scan {
            if let Some(v) = value {
                guard
                    .set(path, &v.to_string())
                    .with_context(|| format!("setting {path} (is debugfs mounted?)"))?;
            }
        }
        Some(guard)
    } else {
        recover_only(root, run_dir);
        if movers::kernel_promotes(root) {
            if observe_only {
                tracing::warn!("the kernel promotes pages itself (NUMA balancing memory tiering is on)");
            } else {
                bail!(
                    "the kernel promotes pages itself (kernel.numa_balancing has memory tiering on and \
                     numa_balancing_promote_rate_limit_MBps > 0): let hotpage hold it back \
                     (kernel.manage_numa_balancing = true) or run with --observe-only"
                );
            }
        }
        None
    };

    let top: Vec<u32> = topo.top_tier_nodes().map(|n| n.id).collect();
    let kernel_promotions_at_start = vmstat::kernel_promotions(root, top.iter().copied());
    for node in movers::kernel_promotes_freely(root, &top) {
        tracing::warn!("{node}");
    }
    let mut rings = Vec::new();
    let mut attached = Vec::new();
    let hint_faults = match hook {
        Some(hook) => {
            let (src, ring, counters) = LoadedSource::hint_faults(&cfg.load, &ranges, hook)?;
            rings.push(ring);
            attached.push(AttachedSource {
                name: SourceKind::HintFault.name().into(),
                attached_to: format!("fentry/{hook}"),
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
                SampleSource::start(root, sampler, &cfg.load, &ranges, cfg.cpu_budget, cfg.sample_period)
                    .context("starting the sample source")?;
            rings.push(ring);
            attached.push(AttachedSource {
                name: SourceKind::HwSample.name().into(),
                attached_to: format!(
                    "perf_event/{} on {} CPUs",
                    src.events().sampler().pmu,
                    src.events().cpus()
                ),
                counters: Arc::new(counters),
                id: SourceKind::HwSample.id(),
            });
            tracing::info!("sampling: {}", src.status().description);
            Some(src)
        }
        None => None,
    };

    let map = Arc::new(HotMap::new(&MemoryLayout::from(&topo), cfg.hotmap, cfg.hint_capacity)?);
    let feeder = HotMapFeeder::new(map.clone());
    let feed_counters = feeder.counters();
    let mut consumer = AddressResolver::new(feeder, root, &ranges);
    let targets = Targets::new(&topo, cfg.hotmap.mode, cfg.target_nid);
    let lower: Vec<String> = topo
        .lower_tier_nodes()
        .map(|n| {
            format!(
                "node {} → node {}",
                n.id,
                targets.default_target(n.id).map_or("-".into(), |t| t.to_string())
            )
        })
        .collect();
    let promoter = Promoter::start(map.clone(), targets, cfg.promoter, |_| LiveSystem::new(root))?;
    let names: Vec<&str> = attached.iter().map(|a| a.attached_to.as_str()).collect();
    tracing::info!(
        rate_limit = %cfg.promoter.rate_limit,
        "hotpage run: {} attached; promoting {}",
        names.join(" and "),
        lower.join(", ")
    );
    let sample_status = samples.as_ref().map(SampleSource::status);
    let sample_counters =
        attached.iter().find(|a| a.id == SourceKind::HwSample.id()).map(|a| a.counters.clone());
    let hint_counters =
        attached.iter().find(|a| a.id == SourceKind::HintFault.id()).map(|a| a.counters.clone());

    let builder: Arc<dyn SnapshotSource> = Arc::new(SnapshotBuilder {
        root: root.to_owned(),
        topology: topo.clone(),
        kernel: release.clone(),
        started,
        rate_limit: cfg.promoter.rate_limit,
        sources: attached,
        map: map.clone(),
        feed: feed_counters,
        resolve: consumer.counters(),
        sampler: sample_status,
        promoter: promoter.reporter(),
        kernel_promotions_at_start,
    });
    let server = Arc::new(server);
    let mut tasks = Vec::new();
    {
        let (server, builder) = (server.clone(), builder.clone());
        tasks.push(tokio::spawn(async move { server.serve(builder).await }));
    }
    if let Some(addr) = cfg.listen {
        let listener =
            metrics::bind_http(addr).await.with_context(|| format!("binding the metrics endpoint {addr}"))?;
        tasks.push(tokio::spawn(metrics::serve_http(listener, builder.clone())));
        tracing::info!("serving Prometheus text on http://{addr}/metrics");
    }
    if let Some(dir) = cfg.textfile_dir.clone() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the textfile directory {}", dir.display()))?;
        let (builder, every) = (builder.clone(), Duration::from_secs(cfg.textfile_interval_s));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let (b, d) = (builder.clone(), dir.clone());
                match tokio::task::spawn_blocking(move || metrics::write_snapshot(&d, b.as_ref())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!("writing {}: {e}", metrics::textfile_path(&dir).display())
                    }
                    Err(e) => tracing::warn!("writing the textfile: {e}"),
                }
            }
        }));
    }

    // The sample source's CPU budget, on this thread: the collector's thread
    // CPU time is the consumer's cost, shared out by events per source.
    let budget = samples.map(|src| tokio::spawn(budget_loop(src, sample_counters, hint_counters)));

    let mut collector = Collector::new(rings, Duration::from_millis(cfg.drain_interval_ms))?;
    let limit = duration.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let result = collector.run(&mut consumer, shutdown.wait(limit, std::future::pending())).await;

    // Stop in the reverse order of start: nothing moves, then nothing is
    // attached, then the socket goes, then the kernel settings come back.
    promoter.stop();
    if let Some(b) = budget {
        b.abort();
        let _ = b.await;
    }
    drop(hint_faults);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(dir) = &cfg.textfile_dir {
        // The last numbers stay for node_exporter, as a textfile collector expects.
        if let Err(e) = metrics::write_snapshot(dir, builder.as_ref()) {
            tracing::warn!("writing the last textfile: {e}");
        }
    }
    drop(builder);
    drop(server);
    if let Some(mut guard) = settings {
        guard.restore()?;
    }
    let stats = result?;
    tracing::info!(events = stats.events, "hotpage run: stopped");
    Ok(())
}

/// Once a second: the sample source's cost against its budget, and CPUs that
/// came online. Owns the source; aborting the task detaches it.
async fn budget_loop(
    mut src: SampleSource,
    samples: Option<Arc<SourceCounters>>,
    hint_faults: Option<Arc<SourceCounters>>,
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
        tracing::debug!(share = cost.share(), period = src.events().period(), "sample source cost");
        (cpu0, s0, h0) = (cpu, s, h);
    }
}
