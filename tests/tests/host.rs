//! Root tests on the host kernel: real BPF programs from hotpage's objects
//! deliver real events through the same ring buffer and collector the daemon
//! uses. The host refuses fentry, so the hint-fault program itself is proved
//! in the emulated box (`cargo xtask vm test`); here the sample program runs on
//! a software page-fault event of this test thread.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use hotpage::{
    collector::{Collector, EventConsumer},
    sources::samples::perf_event::{
        PerfEventAttr, PerfEventFd, attr_flags, perf_type, sample_type, sw_event,
    },
    sources::{
        CounterSnapshot, LoadOptions, LoadedSource, SourceCounters, SourceKind,
        samples::{SampleSource, Sampler},
    },
    sys::pagemap::Pagemap,
};
use hotpage_common::{HotpageEvent, PfnRange, event_flags, source};
use hotpage_tests::{memory::Region, root_or_skip};
use std::path::Path;

/// Tests that start a sample source hold this: its BPF run-time statistics
/// are system-wide, and one test counts the intervals they are on.
static SAMPLE_SOURCES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_sample_source_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SAMPLE_SOURCES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The daemon's sample source on this host: software page faults on every
/// CPU, system-wide, filtered to `ranges`.
fn software_sample_source(ranges: &[PfnRange]) -> (SampleSource, RingBuf<MapData>, Arc<SourceCounters>) {
    SampleSource::start(Path::new("/"), Sampler::software(), &LoadOptions::default(), ranges, 0.03, None)
        .expect("software sampling on every CPU")
}

/// Every event, for the assertions.
#[derive(Default)]
struct Collect(Vec<HotpageEvent>);

impl EventConsumer for Collect {
    fn consume(&mut self, ev: &HotpageEvent) {
        self.0.push(*ev);
    }
}

fn page_fault_event(extra_sample: u64) -> PerfEventAttr {
    let mut attr = PerfEventAttr::new(perf_type::SOFTWARE, sw_event::PAGE_FAULTS);
    attr.sample_period = 1;
    attr.sample_type = sample_type::ADDR | extra_sample;
    attr.flags = attr_flags::DISABLED | attr_flags::EXCLUDE_KERNEL | attr_flags::EXCLUDE_HV;
    attr
}

/// Loads the sample object and attaches it to this thread's page faults.
fn sample_source(opts: &LoadOptions, extra_sample: u64) -> (LoadedSource, PerfEventFd) {
    let mut src = LoadedSource::load(SourceKind::HwSample, opts).expect("load the sample object");
    let prog = src.load_perf_program().expect("load the perf_event program");
    // pid 0, cpu -1: this thread, wherever it runs.
    let ev = PerfEventFd::open(&page_fault_event(extra_sample), 0, -1).expect("perf_event_open");
    ev.attach_bpf(prog.fd().expect("program fd")).expect("PERF_EVENT_IOC_SET_BPF");
    (src, ev)
}

fn touch_fresh_pages(n: usize) -> (Region, Vec<u64>) {
    let region = Region::map(n * 4096).unwrap();
    region.no_huge_pages().unwrap();
    for i in 0..n {
        region.touch(i, 1);
    }
    let addrs = (0..n).map(|i| region.page_addr(i)).collect();
    (region, addrs)
}

#[test]
fn page_faults_reach_the_collector_with_pid_and_address() {
    if !root_or_skip("page_faults_reach_the_collector_with_pid_and_address") {
        return;
    }
    let opts = LoadOptions { wakeup_every: 16, ..LoadOptions::default() };
    let (mut src, perf) = sample_source(&opts, 0);
    let ring = src.take_ring().unwrap();
    let counters = src.take_counters().unwrap();

    perf.enable().unwrap();
    let (_region, addrs) = touch_fresh_pages(256);
    perf.disable().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let mut collector = Collector::new(vec![ring], Duration::from_millis(50)).unwrap();
    let mut got = Collect::default();
    collector.drain(&mut got);

    let pid = std::process::id();
    let seen: HashSet<u64> = got.0.iter().filter(|e| e.pid == pid).map(|e| e.vaddr & !4095).collect();
    for a in &addrs {
        assert!(seen.contains(a), "no event for touched page {a:#x}");
    }
    for e in &got.0 {
        assert_eq!(e.source, source::HW_SAMPLE);
        assert!(e.time_ns > 0);
    }
    let c = counters.read().unwrap();
    assert!(c.seen >= addrs.len() as u64, "{c:?}");
    assert_eq!(c.emitted, got.0.len() as u64, "every emitted event reached the collector: {c:?}");
    assert_eq!(c.dropped, 0, "{c:?}");
    // Batched wake-ups: one per 16 events per CPU, never one per event.
    assert!(c.wakeups <= c.emitted / 16 + 2, "{c:?}");
    assert!(c.wakeups >= 1, "{c:?}");
}

#[test]
fn ring_wakeups_drive_the_async_collector() {
    if !root_or_skip("ring_wakeups_drive_the_async_collector") {
        return;
    }
    let opts = LoadOptions { wakeup_every: 1, ..LoadOptions::default() };
    let (mut src, perf) = sample_source(&opts, 0);
    let ring = src.take_ring().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    struct CountTo {
        want: usize,
        got: usize,
        done: Arc<tokio::sync::Notify>,
    }
    impl EventConsumer for CountTo {
        fn consume(&mut self, _: &HotpageEvent) {
            self.got += 1;
            if self.got == self.want {
                self.done.notify_one();
            }
        }
    }

    let stats = rt.block_on(async {
        // No timer drains within the test: only ring wake-ups can deliver.
        let mut collector = Collector::new(vec![ring], Duration::from_secs(3600)).unwrap();
        let done = Arc::new(tokio::sync::Notify::new());
        let mut consumer = CountTo { want: 64, got: 0, done: done.clone() };
        perf.enable().unwrap();
        let (_region, _) = touch_fresh_pages(64);
        perf.disable().unwrap();
        let shutdown = async move {
            tokio::select! {
                _ = done.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => panic!("wake-ups never delivered 64 events"),
            }
        };
        let stats = collector.run(&mut consumer, shutdown).await.unwrap();
        assert!(consumer.got >= 64);
        stats
    });
    assert!(stats.wakeups >= 1, "{stats:?}");
}

/// Copy-on-write faults on present page-cache pages carry the physical address
/// of the page being copied. Returns the events and that page's pfn per vaddr
/// (read from pagemap before the writes).
fn cow_faults_with_tier_map(ranges: &[PfnRange]) -> (Vec<HotpageEvent>, Vec<(u64, u64)>, CounterSnapshot) {
    let opts = LoadOptions { sample_phys_addr: true, ..LoadOptions::default() };
    let (mut src, perf) = sample_source(&opts, sample_type::PHYS_ADDR);
    src.set_lower_tier(ranges).unwrap();
    let ring = src.take_ring().unwrap();
    let counters = src.take_counters().unwrap();

    let region = Region::map_private_file(64).unwrap();
    for i in 0..region.pages() {
        assert_eq!(region.read(i), 7);
    }
    let pagemap = Pagemap::open(Path::new("/"), std::process::id()).unwrap();
    let before: Vec<(u64, u64)> = (0..region.pages())
        .map(|i| {
            let a = region.page_addr(i);
            (a, pagemap.entry(a).unwrap().pfn().expect("read-mapped page is present"))
        })
        .collect();
    perf.enable().unwrap();
    for i in 0..region.pages() {
        region.touch(i, 2);
    }
    perf.disable().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let mut collector = Collector::new(vec![ring], Duration::from_millis(50)).unwrap();
    let mut got = Collect::default();
    collector.drain(&mut got);
    (got.0, before, counters.read().unwrap())
}

#[test]
fn sampled_physical_addresses_pass_the_tier_filter_with_the_right_pfn() {
    if !root_or_skip("sampled_physical_addresses_pass_the_tier_filter_with_the_right_pfn") {
        return;
    }
    let all = [PfnRange { start_pfn: 0, end_pfn: u64::MAX, nid: 7, reserved: 0 }];
    let (events, before, c) = cow_faults_with_tier_map(&all);
    assert_eq!(c.emitted, 64, "{c:?}");
    for (vaddr, pfn) in before {
        let ev = events.iter().find(|e| e.vaddr & !4095 == vaddr).expect("an event per page");
        assert_eq!(ev.flags & event_flags::NEED_PFN, 0, "a present page has a physical address");
        assert_eq!(ev.pfn, pfn, "pfn of {vaddr:#x} matches pagemap");
        assert_eq!(ev.page_nid, 7, "the node comes from the tier map");
    }
}

#[test]
fn pfns_outside_the_tier_map_are_filtered_in_bpf() {
    if !root_or_skip("pfns_outside_the_tier_map_are_filtered_in_bpf") {
        return;
    }
    // A range no page of this machine is in.
    let none = [PfnRange { start_pfn: 1 << 50, end_pfn: (1 << 50) + 1, nid: 1, reserved: 0 }];
    let (events, _, c) = cow_faults_with_tier_map(&none);
    assert!(events.is_empty(), "{} events crossed the filter", events.len());
    assert_eq!(c.filtered, 64, "{c:?}");
    assert_eq!(c.emitted, 0, "{c:?}");
}

#[test]
fn software_samples_on_every_cpu_reach_the_hot_map_with_pagemap_pfns() {
    use hotpage::{
        collector::HotMapFeeder,
        hotmap::{HotMap, HotMapConfig},
        sources::AddressResolver,
    };
    if !root_or_skip("software_samples_on_every_cpu_reach_the_hot_map_with_pagemap_pfns") {
        return;
    }
    let _one = one_sample_source_at_a_time();
    let (layout, ranges) = hotpage_tests::host_tier::host_memory_as_lower_tier().unwrap();
    let map = Arc::new(HotMap::new(&layout, HotMapConfig::default(), 1 << 16).unwrap());
    map.start();
    let mut consumer = AddressResolver::new(HotMapFeeder::new(map.clone()), Path::new("/"), &ranges);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    // The daemon's path: system-wide events, one per online CPU, the sample
    // program, the ring, the collector, pagemap lookups, the hot map.
    let (mut src, ring, counters) = software_sample_source(&ranges);
    let cpus = hotpage::sources::samples::online_cpus(Path::new("/")).unwrap();
    assert_eq!(src.events().cpus(), cpus.len());
    let mut collector = Collector::new(vec![ring], Duration::from_millis(50)).unwrap();

    let (region, addrs) = touch_fresh_pages(512);
    collector.drain(&mut consumer);
    let cost = src.tick(0);
    let c = counters.read().unwrap();
    assert!(c.emitted >= addrs.len() as u64, "{c:?}");
    assert_eq!(c.dropped, 0, "{c:?}");

    let pagemap = Pagemap::open(Path::new("/"), std::process::id()).unwrap();
    let mut recorded = 0;
    for &a in &addrs {
        let pfn = pagemap.entry(a).unwrap().pfn().expect("a touched page is present");
        let rec = map.peek(pfn).unwrap_or_else(|| panic!("no hot-map record for {a:#x} (pfn {pfn:#x})"));
        assert!(rec.freq >= 1, "{a:#x}: {rec:?}");
        recorded += 1;
    }
    assert_eq!(recorded, addrs.len());
    let r = consumer.counters().snapshot();
    assert!(r.resolved >= addrs.len() as u64, "{r:?}");
    assert!(map.counters().recorded_hwhints >= addrs.len() as u64);
    assert_eq!(map.counters().recorded_hintfaults, 0);
    assert_eq!(cost.wall_ns, 0, "the first tick only starts the measurement");
    drop(region);
}

#[test]
fn a_sample_on_a_thp_is_recorded_once_at_its_first_page_with_its_order() {
    use hotpage::{
        collector::HotMapFeeder,
        hotmap::{HotMap, HotMapConfig},
        sources::AddressResolver,
        sys::kpageflags::{Folio, KPageFlags},
    };
    if !root_or_skip("a_sample_on_a_thp_is_recorded_once_at_its_first_page_with_its_order") {
        return;
    }
    let (layout, ranges) = hotpage_tests::host_tier::host_memory_as_lower_tier().unwrap();
    let map = Arc::new(HotMap::new(&layout, HotMapConfig::default(), 1 << 16).unwrap());
    map.start();
    let mut consumer = AddressResolver::new(HotMapFeeder::new(map.clone()), Path::new("/"), &ranges);
    let (mut src, perf) = sample_source(&LoadOptions::default(), 0);
    let ring = src.take_ring().unwrap();

    // Four 2 MiB pages, each first touched in the middle: the sampled fault
    // address is a tail page's.
    let region = Region::map_huge_aligned(8 << 20).unwrap();
    region.madvise(libc::MADV_HUGEPAGE).unwrap();
    perf.enable().unwrap();
    for h in 0..4 {
        region.touch(h * 512 + 37, 1);
    }
    perf.disable().unwrap();
    let flags = KPageFlags::open(Path::new("/")).unwrap();
    let pagemap = Pagemap::open(Path::new("/"), std::process::id()).unwrap();
    let heads: Vec<u64> =
        (0..4).map(|h| pagemap.entry(region.page_addr(h * 512)).unwrap().pfn().unwrap()).collect();
    for &head in &heads {
        assert_eq!(
            flags.folio_of(head + 37).unwrap(),
            Some(Folio { head, order: 9 }),
            "the host backs it with THP"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let mut collector = Collector::new(vec![ring], Duration::from_millis(50)).unwrap();
    collector.drain(&mut consumer);
    for &head in &heads {
        assert!(map.peek(head).unwrap().freq >= 1, "the THP's record is its first pfn's");
        assert_eq!(map.peek(head + 37).unwrap().freq, 0, "the sampled tail page has no record of its own");
    }
    let r = consumer.counters().snapshot();
    assert!(r.large_folio >= 4, "{r:?}");
}

/// A sustained flood of samples (every page fault on every CPU, a consumer
/// slower than the faults) must not starve the other tasks on the collector's
/// thread, and a stop must end the run at once.
#[test]
fn a_flood_of_events_neither_starves_the_daemons_thread_nor_holds_up_a_stop() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    if !root_or_skip("a_flood_of_events_neither_starves_the_daemons_thread_nor_holds_up_a_stop") {
        return;
    }
    let _one = one_sample_source_at_a_time();
    let (_layout, ranges) = hotpage_tests::host_tier::host_memory_as_lower_tier().unwrap();
    let stop_faulting = Arc::new(AtomicBool::new(false));
    let faulter = {
        let stop = stop_faulting.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (region, _) = touch_fresh_pages(1024);
                drop(region);
            }
        })
    };

    /// 10 µs of work per event: slower than the faults come.
    struct Slow(u64);
    impl EventConsumer for Slow {
        fn consume(&mut self, _: &HotpageEvent) {
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_micros(10) {
                std::hint::spin_loop();
            }
            self.0 += 1;
        }
    }

    let ticks = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let runner = {
        let ticks = ticks.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (_src, ring, _counters) = software_sample_source(&ranges);
                let mut collector = Collector::new(vec![ring], Duration::from_millis(100)).unwrap();
                // Another task on the same thread, as the control socket is.
                let other = tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_millis(10));
                    loop {
                        every.tick().await;
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                });
                let mut consumer = Slow(0);
                let stats =
                    collector.run(&mut consumer, tokio::time::sleep(Duration::from_secs(2))).await.unwrap();
                other.abort();
                done_tx.send((stats, consumer.0)).unwrap();
            });
        })
    };
    // On a starved thread the run never ends: fail instead of hanging.
    let outcome = done_rx.recv_timeout(Duration::from_secs(60));
    stop_faulting.store(true, Ordering::Relaxed);
    faulter.join().unwrap();
    let (stats, consumed) =
        outcome.expect("the run did not stop within 60 s of a 2 s limit: the flood starved it");
    runner.join().unwrap();
    assert!(stats.budget_yields > 0, "no flood reached the budget: {stats:?}, {consumed} consumed");
    // 2 s at one tick per 10 ms; a starved thread ticks a handful of times at most.
    let t = ticks.load(Ordering::Relaxed);
    assert!(t >= 20, "the other task ran only {t} times in 2 s: {stats:?}");
}

/// BPF run-time statistics slow every BPF program on the machine while on:
/// the sample source takes them one interval in ten and prices the others
/// at the measured cost per run.
#[test]
fn the_sample_source_takes_bpf_statistics_one_interval_in_ten() {
    if !root_or_skip("the_sample_source_takes_bpf_statistics_one_interval_in_ten") {
        return;
    }
    let _one = one_sample_source_at_a_time();
    // The operator's sysctl on means always measured: nothing to see here.
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    if sysctl.trim() == "1" {
        eprintln!("skipped: kernel.bpf_stats_enabled is on already (then the source measures all the time)");
        return;
    }
    let (_layout, ranges) = hotpage_tests::host_tier::host_memory_as_lower_tier().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let (mut src, ring, _counters) = software_sample_source(&ranges);
    let mut collector = Collector::new(vec![ring], Duration::from_millis(50)).unwrap();
    // The kernel adds to the program's run time only while statistics are on.
    let (mut measured, mut priced) = (Vec::new(), Vec::new());
    let mut last = src.source_run_time();
    for i in 0..20 {
        let (_region, _) = touch_fresh_pages(256);
        collector.drain(&mut Collect::default());
        // Only the interval's body counts: a tick that opens statistics may
        // see another process's page fault before it returns.
        if src.source_run_time() > last {
            measured.push(i);
        }
        let cost = src.tick(0);
        last = src.source_run_time();
        if i % 10 >= 2 {
            priced.push(cost.bpf_ns);
        }
    }
    assert_eq!(measured, vec![1, 11], "intervals whose program run time the kernel counted");
    assert!(priced.iter().all(|&ns| ns > 0), "unmeasured intervals are priced per run: {priced:?}");
}

/// DAMON's tracepoint on this host: the program attaches (tp_btf on
/// `damon:damon_aggregated`, arguments placed from the kernel's BTF) and
/// counts every region a kdamond reports, drops them all while no owner is
/// set, and with its owner set passes them on to the target check (a
/// physical-address kdamond, the only kind this host's DAMON has, has no
/// target process: nothing is emitted). The virtual-address path runs in the
/// box (`the_damon_source_alone_promotes_the_hot_set_with_numa_balancing_off`).
#[test]
fn the_damon_program_sees_kdamond_regions_and_keeps_only_its_owners() {
    use hotpage::sources::{DamonArgs, damon::tracepoint};

    if !root_or_skip("the_damon_program_sees_kdamond_regions_and_keeps_only_its_owners") {
        return;
    }
    let kdamonds = Path::new("/sys/kernel/mm/damon/admin/kdamonds");
    let Ok(nr) = std::fs::read_to_string(kdamonds.join("nr_kdamonds")) else {
        eprintln!("skipped: this kernel has no DAMON sysfs interface");
        return;
    };
    let btf = hotpage::kernel::kernel_btf(Path::new("/")).unwrap();
    let args = tracepoint::aggregated_args(&btf).expect("damon_aggregated in the kernel's BTF");
    let opts = LoadOptions { damon: DamonArgs::new(args, 0), ..LoadOptions::default() };
    let mut src = LoadedSource::load(SourceKind::Damon, &opts).unwrap();
    let _ring = src.take_ring().unwrap();
    let counters = src.take_counters().unwrap();
    src.attach_damon().expect("tp_btf on damon_aggregated attaches");

    // A physical-address kdamond over the first 64 MiB of this host's RAM,
    // stopped and removed whatever happens; or, when DAMON runs someone
    // else's kdamond, that one, only watched (never touched).
    struct Paddr(&'static Path);
    impl Drop for Paddr {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0.join("0/state"), "off");
            let _ = std::fs::write(self.0.join("nr_kdamonds"), "0");
        }
    }
    let mut _ours = None;
    let pid: u32 = if nr.trim() == "0" {
        let (_layout, ranges) = hotpage_tests::host_tier::host_memory_as_lower_tier().unwrap();
        let start = ranges[0].start_pfn << 12;
        let w = |p: &str, v: &str| std::fs::write(kdamonds.join(p), v).unwrap_or_else(|e| panic!("{p}: {e}"));
        w("nr_kdamonds", "1");
        _ours = Some(Paddr(kdamonds));
        w("0/contexts/nr_contexts", "1");
        w("0/contexts/0/operations", "paddr");
        w("0/contexts/0/monitoring_attrs/intervals/sample_us", "1000");
        w("0/contexts/0/monitoring_attrs/intervals/aggr_us", "20000");
        w("0/contexts/0/targets/nr_targets", "1");
        w("0/contexts/0/targets/0/regions/nr_regions", "1");
        w("0/contexts/0/targets/0/regions/0/start", &start.to_string());
        w("0/contexts/0/targets/0/regions/0/end", &(start + (64 << 20)).to_string());
        w("0/state", "on");
        std::fs::read_to_string(kdamonds.join("0/pid")).unwrap().trim().parse().unwrap()
    } else {
        let running = (0..nr.trim().parse::<u32>().unwrap_or(0)).find_map(|k| {
            let dir = kdamonds.join(k.to_string());
            let on = std::fs::read_to_string(dir.join("state")).is_ok_and(|s| s.trim() == "on");
            let paddr =
                std::fs::read_to_string(dir.join("contexts/0/operations")).is_ok_and(|s| s.trim() == "paddr");
            let pid = std::fs::read_to_string(dir.join("pid")).ok()?.trim().parse::<u32>().ok()?;
            (on && paddr).then_some(pid)
        });
        let Some(pid) = running else {
            eprintln!("skipped: DAMON has kdamonds here, none of them a running paddr one to watch");
            return;
        };
        pid
    };
    let wait_for = |what: &str, f: &dyn Fn(&CounterSnapshot) -> bool| {
        let t = std::time::Instant::now();
        loop {
            let c = counters.read().unwrap();
            if f(&c) {
                return c;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{what}: {c:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // No owner yet: every region is counted and dropped.
    let c = wait_for("regions seen and filtered", &|c| c.seen > 0 && c.filtered > 0);
    assert_eq!((c.emitted, c.no_pfn), (0, 0), "{c:?}");
    // Its owner set: the kdamond's regions pass the filter and stop at the target check.
    src.set_damon_owner(pid).unwrap();
    let c = wait_for("regions of the owner's kdamond reach the target check", &|c| c.no_pfn > 0);
    assert_eq!(c.emitted, 0, "a physical-address target has no process: {c:?}");
}
