//! `hotpage run`, assembled: preflight, settings, the sources, the hot map,
//! the promoter, the control socket and metrics, then the collector until a
//! signal; and the stop in the reverse order.

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hotpage_common::source;

use super::{
    Shutdown,
    config::RunConfig,
    control::ControlServer,
    hook_watch,
    instance::Instance,
    layout_watch, metrics,
    preflight::{Preflight, hold_kernel_promotion, preflight, recover_only, report_recovered, tokio_runtime},
    recording::{self, RunKnobs},
    scan_rest,
    sources::Sources,
};
use crate::{
    collector::{Collector, HotMapFeeder},
    hotmap::{HotMap, MemoryLayout},
    kernel::settings::{NUMA_BALANCING, SettingsGuard},
    kernel::{movers, scan_rest::ScanRest},
    promoter::{LiveSystem, Promoter, RateLimit, Targets},
    recording::{Recorder, Trailer},
    report::{AttachedSource, DamonFeed, SnapshotBuilder, SnapshotSource},
    rule::HotnessRule,
    sources::{
        AddressResolver, HookReport, SourceKind,
        damon::{DamonSource, RegionPlanner},
        samples::SampleSource,
    },
    sys::{clock::monotonic_ns, vmstat},
};

/// `hotpage run` with a resolved configuration: until SIGTERM/SIGINT, or
/// for `duration` seconds.
pub fn run(
    root: &Path,
    run_dir: &Path,
    cfg: RunConfig,
    duration: Option<f64>,
    record: Option<&Path>,
) -> Result<()> {
    tokio_runtime()?.block_on(daemon(root, run_dir, cfg, duration, record))
}

async fn daemon(
    root: &Path,
    run_dir: &Path,
    cfg: RunConfig,
    duration: Option<f64>,
    record: Option<&Path>,
) -> Result<()> {
    let started = Instant::now();
    let shutdown = Shutdown::install()?;
    let observe_only = cfg.promoter.rate_limit == RateLimit::ObserveOnly;
    let Preflight { topo, ranges, release, hook, btf } = preflight(root, "hotpage run", cfg.hint_faults)?;
    let sampler = cfg.samples.pick(root)?;

    // Refuse to fight another mover of pages (observe-only moves nothing, so it only warns).
    for line in movers::damon_migrations(root) {
        if observe_only {
            tracing::warn!("{line}");
        } else {
            bail!("{line}");
        }
    }
    // One daemon per machine, whatever its flags or run directory; then a
    // live socket in this run directory is refused too. Before anything changes.
    let _instance = Instance::claim()?;
    let server = ControlServer::bind(run_dir)?;

    let manage = cfg.manage_numa_balancing && !observe_only;
    let mut settings = if cfg.damon.is_some() {
        // hotpage owns the kdamond it starts through the guard; with DAMON
        // as the source, NUMA balancing is off: the kernel promotes nothing,
        // in any memory state.
        let (mut guard, recovered) = SettingsGuard::acquire(root, run_dir)?;
        report_recovered(&recovered);
        if manage {
            guard.set(NUMA_BALANCING, "0").context("turning NUMA balancing off for the DAMON source")?;
        } else if movers::kernel_promotes(root) {
            tracing::warn!("the kernel promotes pages itself (NUMA balancing memory tiering is on)");
        }
        Some(guard)
    } else if manage {
        let mut guard = hold_kernel_promotion(root, run_dir)?;
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
    let mut sources = Sources::attach(root, &cfg, hook.as_ref(), sampler, &ranges)?;
    let mut damon = None;
    if let (Some(dcfg), Some(guard)) = (cfg.damon, settings.as_mut()) {
        let lower: Vec<u32> = topo.lower_tier_nodes().map(|n| n.id).collect();
        let (src, ring, counters) = DamonSource::start(root, guard, dcfg, &cfg.load, &lower, &btf)
            .context("starting the DAMON source")?;
        sources.rings.push(ring);
        sources.attached.push(AttachedSource {
            name: SourceKind::Damon.name().into(),
            attached_to: "tp_btf/damon_aggregated".into(),
            counters: Arc::new(counters),
            id: SourceKind::Damon.id(),
        });
        damon = Some((src, dcfg));
    }
    drop(btf);
    // From here on the guard is shared with the scanner's rest (hint faults
    // only: with DAMON, NUMA balancing is off).
    let rest_mode = match (&settings, cfg.damon.is_none() && cfg.hint_faults && cfg.scan_rest.enabled()) {
        (Some(g), true) => scan_rest::scanning_mode(g),
        _ => None,
    };
    let settings = settings.map(|g| Arc::new(Mutex::new(g)));

    let layout = MemoryLayout::from(&topo);
    let map = Arc::new(HotMap::new(&layout, cfg.hotmap, cfg.hint_capacity)?);
    let mut rule = HotnessRule::new(cfg.policy, &layout);
    let (scores, rule_report) = (rule.scores(), rule.reports());
    let move_log = record.is_some().then(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        rule.log_moves(tx);
        rx
    });
    let scan_rest_report = Arc::new(Mutex::new(None));
    let feeder = HotMapFeeder::with_rule(map.clone(), Some(rule));
    let feed_counters = feeder.counters();
    // The recorder, between the resolver and the hot map, sees what the map sees.
    let recorder = match record {
        Some(path) => {
            let (tx, rx) = std::sync::mpsc::channel();
            map.log_changes(tx);
            let knobs = RunKnobs {
                hotmap: cfg.hotmap,
                hint_capacity: cfg.hint_capacity,
                promoter: &cfg.promoter,
                target_nid: cfg.target_nid,
                policy: Some(cfg.policy),
            };
            let header = recording::header(root, &topo, &release, knobs, None, true, &sources.attached);
            let recorder = Recorder::to_file(feeder, path, &header, Some(rx))
                .with_context(|| format!("creating the recording {}", path.display()))?;
            match move_log {
                Some(moves) => recorder.with_moves(moves),
                None => recorder,
            }
        }
        None => Recorder::off(feeder),
    };
    let mut consumer = AddressResolver::new(recorder, root, &ranges);
    let damon_feed = damon.as_mut().map(|(src, dcfg)| {
        let regions = consumer.expand_regions(RegionPlanner::new(*dcfg).following(src.status()));
        src.count_expansion(regions.clone());
        DamonFeed { status: src.status(), config: *dcfg, regions }
    });
    // Memory hot-plug: new lower-tier ranges reach the resolver and the
    // sample filter through this channel; the watch updates the rest.
    let (layout_tx, layout_rx) = tokio::sync::watch::channel(Arc::new(ranges.clone()));
    consumer.follow_layout(layout_rx.clone());
    let followers = layout_watch::Followers {
        map: map.clone(),
        scores: scores.clone(),
        hint_faults: sources.hint_faults.clone(),
        ranges: layout_tx,
    };
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
    let promoter =
        Promoter::start_ranked(map.clone(), targets, cfg.promoter, Some(scores), |_| LiveSystem::new(root))?;
    let names: Vec<&str> = sources.attached.iter().map(|a| a.attached_to.as_str()).collect();
    tracing::info!(
        rate_limit = %cfg.promoter.rate_limit,
        "hotpage run: {} attached; promoting {}",
        names.join(" and "),
        lower.join(", ")
    );
    let sample_status = sources.samples.as_ref().map(SampleSource::status);

    // Whether the hint-fault hook sees the kernel's hint faults at all.
    let hook_report = Arc::new(Mutex::new(None));
    let hint_counters =
        sources.attached.iter().find(|a| a.id == source::HINT_FAULT).map(|a| a.counters.clone());
    if hint_counters.is_some() {
        *hook_report.lock().unwrap_or_else(PoisonError::into_inner) = Some(HookReport::default());
    }
    let builder: Arc<dyn SnapshotSource> = Arc::new(SnapshotBuilder {
        root: root.to_owned(),
        topology: topo.clone(),
        kernel: release.clone(),
        started,
        rate_limit: cfg.promoter.rate_limit,
        sources: sources.attached.clone(),
        map: map.clone(),
        feed: feed_counters,
        rule: rule_report.clone(),
        scan_rest: scan_rest_report.clone(),
        hook: hook_report.clone(),
        resolve: consumer.counters(),
        sampler: sample_status,
        promoter: promoter.reporter(),
        kernel_promotions_at_start,
        damon: damon_feed,
    });
    let server = Arc::new(server);
    let mut tasks = Vec::new();
    {
        let (server, builder) = (server.clone(), builder.clone());
        tasks.push(tokio::spawn(async move { server.serve(builder).await }));
    }
    if let Some(counters) = hint_counters {
        tasks.push(tokio::spawn(hook_watch::watch(root.to_owned(), counters, hook_report)));
    }
    if let (Some(on), Some(guard)) = (rest_mode, &settings) {
        let task = scan_rest::RestTask {
            root: root.to_owned(),
            lower: topo.lower_tier_nodes().map(|n| n.id).collect(),
            rest: ScanRest::new(cfg.scan_rest, started.elapsed().as_millis() as u64),
            rule: rule_report,
            guard: guard.clone(),
            on,
            started,
            out: scan_rest_report,
        };
        tasks.push(tokio::spawn(task.run()));
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

    // The sample source's CPU budget, on this thread (the collector's).
    let budget = sources.spawn_budget(Some(layout_rx));
    // The DAMON source follows processes that come and go, on its own thread;
    // stopping it stops its kdamond.
    let damon_thread =
        damon.map(|(src, _)| src.spawn()).transpose().context("starting the DAMON source's thread")?;
    tasks.push(tokio::spawn(layout_watch::watch(layout_watch::LayoutWatch::new(root, &ranges), followers)));

    let mut collector =
        Collector::new(std::mem::take(&mut sources.rings), Duration::from_millis(cfg.drain_interval_ms))?;
    let limit = duration.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let result = collector.run(&mut consumer, shutdown.wait(limit, std::future::pending())).await;

    // Stop in the reverse order of start: nothing moves, then nothing is
    // attached, then the socket goes, then the kernel settings come back.
    promoter.stop();
    let recorder = consumer.next_mut();
    if recorder.is_recording() {
        let trailer = Trailer {
            end_ns: monotonic_ns(),
            sources_at_end: recording::source_counts(&sources.attached),
            feed: Some(recorder.next().stats()),
            hotmap: Some(map.counters()),
            ..Trailer::default()
        };
        match recorder.finish(trailer) {
            Ok(Some((path, events, bytes))) => tracing::info!(
                "recorded {events} events to {} ({:.1} bytes/event)",
                path.display(),
                bytes as f64 / events.max(1) as f64
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("finishing the recording: {e}"),
        }
    }
    if let Some(t) = budget {
        t.abort();
        let _ = t.await;
    }
    if let Some(t) = damon_thread {
        t.stop();
    }
    sources.detach_hint_faults();
    drop(sources);
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
    if let Some(guard) = settings {
        guard.lock().unwrap_or_else(PoisonError::into_inner).restore()?;
    }
    let stats = result?;
    tracing::info!(events = stats.events, floods = stats.budget_yields, "hotpage run: stopped");
    Ok(())
}
