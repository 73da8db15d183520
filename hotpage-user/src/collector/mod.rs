//! The collector: drains the sources' ring buffers and hands each decoded
//! event to an [`EventConsumer`] (the hot map, or `hotpage trace`).
//!
//! All rings sit in one epoll set, and tokio waits on that set's fd, so one
//! task serves any number of sources. The programs wake the consumer only every
//! N events (`wakeup_every`), so a timer drains whatever tail is left.
//!
//! A drain takes at most `DRAIN_BUDGET` events per ring before it yields: the
//! collector shares one thread with signal handling and the control socket,
//! and under a sustained flood a ring that never empties must not keep them
//! from running. What is left is drained right after the yield.

mod feeder;

pub use feeder::{FeedCounters, FeedStats, HotMapFeeder};

use std::{
    future::Future,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    pin::pin,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use hotpage_common::HotpageEvent;
use tokio::io::{Interest, unix::AsyncFd};

/// Receives every event the kernel emitted, in ring order per source.
pub trait EventConsumer {
    fn consume(&mut self, event: &HotpageEvent);

    /// Several events in ring order; consumers that can overlap work across
    /// events (the hot map prefetches) override this.
    fn consume_batch(&mut self, events: &[HotpageEvent]) {
        for e in events {
            self.consume(e);
        }
    }

    /// Called after each drain (a wake-up or the timer), e.g. to report.
    fn drained(&mut self) {}
}

impl<C: EventConsumer + ?Sized> EventConsumer for &mut C {
    fn consume(&mut self, event: &HotpageEvent) {
        (**self).consume(event);
    }

    fn consume_batch(&mut self, events: &[HotpageEvent]) {
        (**self).consume_batch(events);
    }

    fn drained(&mut self) {
        (**self).drained();
    }
}

/// Events handed to a consumer at once (10 KiB on the stack).
const BATCH: usize = 256;
/// Events one drain takes from a ring before the collector yields: a few
/// milliseconds of work on hardware, a few tens under emulation.
pub const DRAIN_BUDGET: u64 = 16 * 1024;
/// The last drain after a stop takes what a 4 MiB ring holds, at most, so a
/// flood that goes on cannot hold the stop up.
const FINAL_DRAIN_BUDGET: u64 = 128 * 1024;

/// What the collector itself counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectorStats {
    /// Events handed to the consumer.
    pub events: u64,
    /// Records too short to be an event (never expected).
    pub malformed: u64,
    /// Drains started by a ring wake-up.
    pub wakeups: u64,
    /// Drains started by the timer.
    pub timer_drains: u64,
    /// Drains that stopped at the budget with events left (a flood), and
    /// went on after letting the rest of the daemon run.
    pub budget_yields: u64,
}

/// An epoll instance holding the ring fds; itself pollable, so tokio can wait on it.
struct EpollSet {
    fd: OwnedFd,
}

impl EpollSet {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; a negative return is handled below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_create1 returned a new descriptor we now own.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn add(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        // SAFETY: both fds are open; ev is a valid epoll_event.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Empties the set's ready list without blocking, so its readiness follows the rings.
    fn clear(&self) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: evs is a writable array of 8 epoll_events; timeout 0 never blocks.
        unsafe { libc::epoll_wait(self.fd.as_raw_fd(), evs.as_mut_ptr(), evs.len() as i32, 0) };
    }
}

impl AsRawFd for EpollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Drains ring buffers into a consumer.
pub struct Collector {
    rings: Vec<RingBuf<MapData>>,
    epoll: AsyncFd<EpollSet>,
    drain_interval: Duration,
    stats: CollectorStats,
}

impl Collector {
    /// Must be called inside a tokio runtime. `drain_interval` bounds how long a
    /// tail of events (fewer than `wakeup_every`) waits in a ring.
    pub fn new(rings: Vec<RingBuf<MapData>>, drain_interval: Duration) -> io::Result<Self> {
        let set = EpollSet::new()?;
        for ring in &rings {
            set.add(ring.as_raw_fd())?;
        }
        // SAFETY: EpollSet owns its fd and keeps it open, unchanged, for the AsyncFd's life.
        let epoll = unsafe { AsyncFd::register_with_interest(set, Interest::READABLE)? };
        Ok(Self { rings, epoll, drain_interval, stats: CollectorStats::default() })
    }

    pub fn stats(&self) -> CollectorStats {
        self.stats
    }

    /// Hands every event now in the rings to `consumer`; returns how many.
    pub fn drain(&mut self, consumer: &mut impl EventConsumer) -> u64 {
        drain_rings(&mut self.rings, &mut self.stats, consumer, u64::MAX).0
    }

    /// Drains on every wake-up and every `drain_interval` until `shutdown`
    /// completes, then drains once more so nothing emitted before it is lost.
    pub async fn run(
        &mut self,
        consumer: &mut impl EventConsumer,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<CollectorStats> {
        let mut shutdown = pin!(shutdown);
        let mut timer = tokio::time::interval(self.drain_interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Disjoint borrows: the readiness future holds `epoll` while a drain uses the rings.
        let Self { rings, epoll, stats, .. } = self;
        let mut more = false;
        loop {
            // Events left by a drain cut short: the other tasks on this
            // thread (signals, the control socket) run first.
            if more {
                stats.budget_yields += 1;
                tokio::task::yield_now().await;
            }
            let pending = more;
            tokio::select! {
                // A stop is looked at first, every time round.
                biased;
                _ = &mut shutdown => break,
                _ = std::future::ready(()), if pending => {
                    more = drain_rings(rings, stats, consumer, DRAIN_BUDGET).1;
                }
                guard = epoll.readable() => {
                    let mut guard = guard?;
                    guard.get_inner().clear();
                    guard.clear_ready();
                    stats.wakeups += 1;
                    more = drain_rings(rings, stats, consumer, DRAIN_BUDGET).1;
                }
                _ = timer.tick() => {
                    stats.timer_drains += 1;
                    more = drain_rings(rings, stats, consumer, DRAIN_BUDGET).1;
                }
            }
        }
        // What was emitted before the stop (at most a ring's worth per ring).
        drain_rings(&mut self.rings, &mut self.stats, consumer, FINAL_DRAIN_BUDGET);
        Ok(self.stats)
    }
}

/// Drains up to `budget` events from each ring; returns how many it handed
/// on, and whether a ring still had events when its budget ran out.
fn drain_rings(
    rings: &mut [RingBuf<MapData>],
    stats: &mut CollectorStats,
    consumer: &mut impl EventConsumer,
    budget: u64,
) -> (u64, bool) {
    let mut n = 0;
    let mut more = false;
    let mut batch = [HotpageEvent::default(); BATCH];
    for ring in rings.iter_mut() {
        let mut len = 0;
        let mut taken = 0u64;
        while taken < budget {
            let Some(item) = ring.next() else { break };
            taken += 1;
            match HotpageEvent::from_bytes(&item) {
                Some(ev) => {
                    batch[len] = ev;
                    len += 1;
                    if len == BATCH {
                        consumer.consume_batch(&batch);
                        n += len as u64;
                        len = 0;
                    }
                }
                None => stats.malformed += 1,
            }
        }
        more |= taken >= budget;
        if len > 0 {
            consumer.consume_batch(&batch[..len]);
            n += len as u64;
        }
    }
    stats.events += n;
    consumer.drained();
    (n, more)
}
