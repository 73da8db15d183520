//! The recorder: a stage between the address resolver and the hot map's
//! feeder that writes every event as the hot map receives it (and, in the
//! daemon, the hot map's takes and re-arms) to a recording file, then passes
//! the events on unchanged. A write error ends the recording with a warning;
//! it never stops the run.

use std::{
    fs::File,
    io::{self, BufWriter},
    path::{Path, PathBuf},
    sync::mpsc::Receiver,
};

use hotpage_common::{HotpageEvent, event_flags};

use super::format::{Header, Trailer, Writer};
use crate::{collector::EventConsumer, hotmap::MapChange, rule::MoveSpan};

pub struct Recorder<C> {
    next: C,
    file: Option<(PathBuf, Writer<BufWriter<File>>)>,
    changes: Option<Receiver<MapChange>>,
    moves: Option<Receiver<MoveSpan>>,
    pid: Option<u32>,
}

impl<C: EventConsumer> Recorder<C> {
    /// A pass-through stage that records nothing.
    pub fn off(next: C) -> Self {
        Self { next, file: None, changes: None, moves: None, pid: None }
    }

    /// Records to `path` (created or truncated): the header now, events as
    /// they pass (only `header.pid`'s when set), the hot map's changes from
    /// `changes` when given.
    pub fn to_file(
        next: C,
        path: &Path,
        header: &Header,
        changes: Option<Receiver<MapChange>>,
    ) -> io::Result<Self> {
        let file = File::create(path)?;
        let writer = Writer::new(BufWriter::with_capacity(1 << 20, file), header)?;
        Ok(Self { next, file: Some((path.to_owned(), writer)), changes, moves: None, pid: header.pid })
    }

    /// Also records the move calls the hotness rule takes (it takes them
    /// between batches, so each goes before the next batch's events).
    pub fn with_moves(mut self, moves: Receiver<MoveSpan>) -> Self {
        self.moves = Some(moves);
        self
    }

    pub fn next(&self) -> &C {
        &self.next
    }

    pub fn is_recording(&self) -> bool {
        self.file.is_some()
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.file.as_ref().map_or(0, |(_, w)| w.events())
    }

    fn write(&mut self, events: &[HotpageEvent]) -> io::Result<()> {
        let Some((_, w)) = self.file.as_mut() else { return Ok(()) };
        // Changes the workers made while the previous batch was recorded come
        // first: each names the count of events the map had handled then.
        if let Some(rx) = &self.changes {
            while let Ok(c) = rx.try_recv() {
                w.change(&c)?;
            }
        }
        if let Some(rx) = &self.moves {
            while let Ok(m) = rx.try_recv() {
                w.move_span(&m)?;
            }
        }
        for ev in events {
            // The hot map never sees an event without a pfn.
            if ev.flags & event_flags::NEED_PFN != 0 || self.pid.is_some_and(|p| p != ev.pid) {
                continue;
            }
            w.event(ev)?;
        }
        Ok(())
    }

    /// Writes the trailer and closes the file; returns its path and size.
    pub fn finish(&mut self, trailer: Trailer) -> io::Result<Option<(PathBuf, u64, u64)>> {
        let Some((path, mut w)) = self.file.take() else { return Ok(None) };
        if let Some(rx) = &self.changes {
            while let Ok(c) = rx.try_recv() {
                w.change(&c)?;
            }
        }
        let (events, bytes) = (w.events(), w.bytes());
        w.finish(trailer)?;
        Ok(Some((path, events, bytes)))
    }
}

impl<C: EventConsumer> EventConsumer for Recorder<C> {
    fn consume(&mut self, ev: &HotpageEvent) {
        self.consume_batch(std::slice::from_ref(ev));
    }

    fn consume_batch(&mut self, events: &[HotpageEvent]) {
        if let Err(e) = self.write(events)
            && let Some((path, _)) = self.file.take()
        {
            tracing::warn!("recording to {} stopped: {e}", path.display());
        }
        self.next.consume_batch(events);
    }

    fn drained(&mut self) {
        self.next.drained();
    }
}
