//! The recording file, version 1 (docs/recording.md):
//!
//! ```text
//! "HOTPAGE\x1a"  u16 LE version  u32 LE header length  header (JSON)
//! record*        one tag byte each, then delta-encoded fields (LEB128 varints)
//! 0xff           u32 LE trailer length  trailer (JSON)
//! ```
//!
//! An event's fields are written as differences from the previous event's
//! (time, pfn, page of the address, zigzag-coded), and the fields that rarely
//! change (pid, order, flags, nodes) only when they do.

use std::io::{self, Write};

use hotpage_common::{HotpageEvent, event_flags};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    collector::FeedStats,
    hotmap::{HotMapConfig, HotMapCounters, MapChange, ReadyPage, RecordFields},
    rule::{MoveSpan, Policy},
    sources::CounterSnapshot,
    sys::topology::TierTopology,
};

pub const MAGIC: &[u8; 8] = b"HOTPAGE\x1a";
/// 2: move calls the rule took (`tag::MOVE`); version 1 files read the same, without them.
pub const VERSION: u16 = 2;

/// Tag bits of an event (bit 7 clear).
mod tag {
    pub const SOURCE_SHIFT: u8 = 5;
    pub const PID: u8 = 1 << 4;
    pub const EXT: u8 = 1 << 3;
    pub const OFFSET: u8 = 1 << 2;
    pub const LATENCY: u8 = 1 << 1;
    /// Bit 7 set: not an event.
    pub const TAKEN: u8 = 0x80;
    pub const REARMED: u8 = 0x81;
    /// A move call the rule took before the events that follow (version 2).
    pub const MOVE: u8 = 0x82;
    pub const END: u8 = 0xff;
}

/// The flags an event's ext part carries (LATENCY is in the tag).
const EXT_FLAGS: u8 = event_flags::PMD | event_flags::NEED_PFN | event_flags::WRITE;

/// What a file is not, in one line.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a hotpage recording (no HOTPAGE magic at its start)")]
    BadMagic,
    #[error(
        "recording format version {0}: this hotpage reads version {VERSION}; replay it with a newer hotpage"
    )]
    FutureVersion(u16),
    #[error("the recording is truncated ({0}): it was not closed (hotpage stopped without writing its end)")]
    Truncated(&'static str),
    #[error("the recording is malformed: {0}")]
    Malformed(String),
}

/// A node's memory when the recording started, pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMemoryAtStart {
    pub node: u32,
    pub total: u64,
    pub free: u64,
    /// Sum of the node's zones' low watermarks.
    pub low: u64,
}

/// The promoter's knobs that a replay's simulated promoter reuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoterKnobs {
    /// MB/s per target node; None: unlimited; Some(0): observe only.
    pub rate_limit_mbps: Option<u64>,
    pub sleep_ms: u64,
    pub batch_pages: usize,
    pub max_round_pages: usize,
    pub headroom_mib: Option<u64>,
    pub target_nid: Option<u32>,
}

/// Sources' counters at a moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub name: String,
    pub counters: CounterSnapshot,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// hotpage's version that wrote it.
    pub hotpage: String,
    pub kernel: String,
    /// Nodes, tiers and pfn ranges of the recording machine.
    pub topology: TierTopology,
    pub memory: Vec<NodeMemoryAtStart>,
    pub hotmap: HotMapConfig,
    pub hint_capacity: usize,
    pub promoter: PromoterKnobs,
    /// Only events of this process were kept.
    pub pid: Option<u32>,
    /// The hot map's takes and re-arms are in the stream (recorded by the daemon).
    pub changes: bool,
    /// CLOCK_MONOTONIC ns when recording started.
    pub start_ns: u64,
    pub sources_at_start: Vec<SourceCounts>,
    /// The hotness rule's policy (absent in recordings made before it: pghot).
    #[serde(default)]
    pub policy: Option<Policy>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub events: u64,
    pub changes: u64,
    /// CLOCK_MONOTONIC ns when recording ended.
    pub end_ns: u64,
    pub sources_at_end: Vec<SourceCounts>,
    /// What the live hot map decided (recorded by the daemon).
    pub feed: Option<FeedStats>,
    pub hotmap: Option<HotMapCounters>,
}

/// One record of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Event(HotpageEvent),
    Change(MapChange),
    /// A move call the rule took after `after_events` events of the stream.
    Move {
        after_events: u64,
        span: MoveSpan,
    },
}

/// What the previous event said: the base of the next one's deltas.
#[derive(Clone, Copy, Debug, Default)]
struct Base {
    time_ns: u64,
    pid: u32,
    pfn: u64,
    vpage: u64,
    order: u8,
    flags: u8,
    nid: i32,
    page_nid: i32,
    change_seq: u64,
}

impl Base {
    fn start() -> Self {
        Self { page_nid: hotpage_common::NO_NODE, ..Self::default() }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a recording: the header first, records as they come, the trailer last.
pub struct Writer<W: Write> {
    out: W,
    base: Base,
    buf: Vec<u8>,
    events: u64,
    changes: u64,
    bytes: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, header: &Header) -> io::Result<Self> {
        let json = serde_json::to_vec(header).map_err(io::Error::other)?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        let bytes = (MAGIC.len() + 6 + json.len()) as u64;
        Ok(Self {
            out,
            base: Base::start(),
            buf: Vec::with_capacity(64 * 1024),
            events: 0,
            changes: 0,
            bytes,
        })
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.buf.len() as u64
    }

    pub fn event(&mut self, ev: &HotpageEvent) -> io::Result<()> {
        let b = &mut self.base;
        let vpage = ev.vaddr >> 12;
        let offset = ev.vaddr & 0xfff;
        let ext = ev.order != b.order
            || (ev.flags & EXT_FLAGS) != b.flags
            || ev.nid != b.nid
            || ev.page_nid != b.page_nid
            || ev.source > 2;
        let mut t = (ev.source.min(3) as u8) << tag::SOURCE_SHIFT;
        if ev.pid != b.pid {
            t |= tag::PID;
        }
        if ext {
            t |= tag::EXT;
        }
        if offset != 0 {
            t |= tag::OFFSET;
        }
        if ev.flags & event_flags::LATENCY != 0 {
            t |= tag::LATENCY;
        }
        let buf = &mut self.buf;
        buf.push(t);
        put_varint(buf, zigzag(ev.time_ns.wrapping_sub(b.time_ns) as i64));
        if ev.pid != b.pid {
            put_varint(buf, u64::from(ev.pid));
        }
        put_varint(buf, zigzag(ev.pfn.wrapping_sub(b.pfn) as i64));
        put_varint(buf, zigzag(vpage.wrapping_sub(b.vpage) as i64));
        if offset != 0 {
            put_varint(buf, offset);
        }
        if ext {
            put_varint(buf, u64::from(ev.source));
            buf.push(ev.order);
            buf.push(ev.flags & EXT_FLAGS);
            put_varint(buf, zigzag(i64::from(ev.nid)));
            put_varint(buf, zigzag(i64::from(ev.page_nid)));
        }
        if ev.flags & event_flags::LATENCY != 0 {
            put_varint(buf, u64::from(ev.latency_ms));
        }
        *b = Base {
            time_ns: ev.time_ns,
            pid: ev.pid,
            pfn: ev.pfn,
            vpage,
            order: ev.order,
            flags: ev.flags & EXT_FLAGS,
            nid: ev.nid,
            page_nid: ev.page_nid,
            change_seq: b.change_seq,
        };
        self.events += 1;
        self.flush_if_full()
    }

    pub fn change(&mut self, c: &MapChange) -> io::Result<()> {
        let buf = &mut self.buf;
        let seq = c.seq();
        match c {
            MapChange::Taken { pfn, .. } => {
                buf.push(tag::TAKEN);
                put_varint(buf, zigzag(seq.wrapping_sub(self.base.change_seq) as i64));
                put_varint(buf, *pfn);
            }
            MapChange::Rearmed { page, .. } => {
                buf.push(tag::REARMED);
                put_varint(buf, zigzag(seq.wrapping_sub(self.base.change_seq) as i64));
                put_varint(buf, page.pfn);
                put_varint(buf, u64::from(page.node));
                put_varint(buf, u64::from(page.fields.nid));
                put_varint(buf, u64::from(page.fields.freq));
                put_varint(buf, u64::from(page.fields.time));
                buf.push(u8::from(page.fields.ready));
            }
        }
        self.base.change_seq = seq;
        self.changes += 1;
        self.flush_if_full()
    }

    /// A move call the rule took here, between two batches of events.
    pub fn move_span(&mut self, span: &MoveSpan) -> io::Result<()> {
        self.buf.push(tag::MOVE);
        put_varint(&mut self.buf, u64::from(span.pid));
        put_varint(&mut self.buf, span.start_ms);
        put_varint(&mut self.buf, span.end_ms - span.start_ms);
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= 60 * 1024 {
            self.out.write_all(&self.buf)?;
            self.bytes += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes the end record and the trailer (its counts filled in) and
    /// returns the output.
    pub fn finish(mut self, mut trailer: Trailer) -> io::Result<W> {
        trailer.events = self.events;
        trailer.changes = self.changes;
        let json = serde_json::to_vec(&trailer).map_err(io::Error::other)?;
        self.buf.push(tag::END);
        self.buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&json);
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a recording held in memory.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: Base,
    header: Header,
    trailer: Option<Trailer>,
    events: u64,
    changes: u64,
    /// Move calls read by `next_events()`, not yet taken.
    moves: Vec<(u64, MoveSpan)>,
}

/// A varint at `d[*i]`, where the caller left room for the longest one;
/// None for one longer than 9 bytes.
#[inline(always)]
fn fast_varint(d: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *d.get(*i)?;
        *i += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
}

fn malformed(what: impl Into<String>) -> FormatError {
    FormatError::Malformed(what.into())
}

impl<'a> Reader<'a> {
    /// Checks the magic and the version and reads the header.
    pub fn new(data: &'a [u8]) -> Result<Self, FormatError> {
        if data.len() < MAGIC.len() {
            return Err(if MAGIC.starts_with(data) {
                FormatError::Truncated("magic")
            } else {
                FormatError::BadMagic
            });
        }
        if &data[..MAGIC.len()] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let mut r = Self {
            data,
            pos: MAGIC.len(),
            base: Base::start(),
            header: Header::placeholder(),
            trailer: None,
            events: 0,
            changes: 0,
            moves: Vec::new(),
        };
        let version = u16::from_le_bytes(r.bytes::<2>("version")?);
        if version > VERSION {
            return Err(FormatError::FutureVersion(version));
        }
        if version == 0 {
            return Err(malformed("version 0"));
        }
        let len = u32::from_le_bytes(r.bytes::<4>("header length")?) as usize;
        let json = r.take(len, "header")?;
        r.header = serde_json::from_slice(json).map_err(|e| malformed(format!("header: {e}")))?;
        Ok(r)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The trailer, once `next()` has returned None.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).ok_or(FormatError::Truncated(what))?;
        let s = self.data.get(self.pos..end).ok_or(FormatError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }

    fn bytes<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FormatError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    #[inline]
    fn byte(&mut self, what: &'static str) -> Result<u8, FormatError> {
        let b = *self.data.get(self.pos).ok_or(FormatError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn varint(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed(format!("{what}: a varint longer than 10 bytes")))
    }

    fn small<T: TryFrom<u64>>(&mut self, what: &'static str) -> Result<T, FormatError> {
        let v = self.varint(what)?;
        T::try_from(v).map_err(|_| malformed(format!("{what} {v} out of range")))
    }

    /// The next record, or None after the end record (whose trailer is then
    /// available). Every malformed or truncated input is an error.
    pub fn next_record(&mut self) -> Result<Option<Record>, FormatError> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        let t = self.byte("a record")?;
        match t {
            tag::END => {
                let len = u32::from_le_bytes(self.bytes::<4>("trailer length")?) as usize;
                let json = self.take(len, "trailer")?;
                let trailer: Trailer =
                    serde_json::from_slice(json).map_err(|e| malformed(format!("trailer: {e}")))?;
                if trailer.events != self.events || trailer.changes != self.changes {
                    return Err(malformed(format!(
                        "the trailer counts {} events and {} changes, the stream holds {} and {}",
                        trailer.events, trailer.changes, self.events, self.changes
                    )));
                }
                if self.pos != self.data.len() {
                    return Err(malformed(format!("{} bytes after the end", self.data.len() - self.pos)));
                }
                self.trailer = Some(trailer);
                Ok(None)
            }
            tag::TAKEN | tag::REARMED => {
                let seq = self.base.change_seq.wrapping_add(unzigzag(self.varint("a change's seq")?) as u64);
                self.base.change_seq = seq;
                let pfn = self.varint("a change's pfn")?;
                self.changes += 1;
                if t == tag::TAKEN {
                    return Ok(Some(Record::Change(MapChange::Taken { seq, pfn })));
                }
                let node = self.small("a re-arm's node")?;
                let nid = self.small("a re-arm's nid")?;
                let freq = self.small("a re-arm's freq")?;
                let time = self.small("a re-arm's time")?;
                let ready = match self.byte("a re-arm's ready")? {
                    0 => false,
                    1 => true,
                    b => return Err(malformed(format!("a re-arm's ready byte {b}"))),
                };
                let page = ReadyPage { pfn, node, fields: RecordFields { nid, freq, time, ready } };
                Ok(Some(Record::Change(MapChange::Rearmed { seq, page })))
            }
            tag::MOVE => {
                let pid = self.small("a move's pid")?;
                let start_ms = self.varint("a move's start")?;
                let len = self.varint("a move's length")?;
                let span = MoveSpan { pid, start_ms, end_ms: start_ms.saturating_add(len) };
                Ok(Some(Record::Move { after_events: self.events, span }))
            }
            t if t & 0x80 != 0 || t & 1 != 0 => Err(malformed(format!("unknown record tag {t:#04x}"))),
            t => self.event(t).map(|e| Some(Record::Event(e))),
        }
    }

    #[inline]
    fn event(&mut self, t: u8) -> Result<HotpageEvent, FormatError> {
        let b = self.base;
        let time_ns = b.time_ns.wrapping_add(unzigzag(self.varint("an event's time")?) as u64);
        let pid = if t & tag::PID != 0 { self.small("an event's pid")? } else { b.pid };
        let pfn = b.pfn.wrapping_add(unzigzag(self.varint("an event's pfn")?) as u64);
        let vpage = b.vpage.wrapping_add(unzigzag(self.varint("an event's address")?) as u64);
        let offset = if t & tag::OFFSET != 0 { self.varint("an event's offset")? } else { 0 };
        if offset > 0xfff {
            return Err(malformed(format!("an event's page offset {offset:#x}")));
        }
        let (mut source, mut order, mut flags, mut nid, mut page_nid) =
            (u16::from((t >> tag::SOURCE_SHIFT) & 3), b.order, b.flags, b.nid, b.page_nid);
        if t & tag::EXT != 0 {
            source = self.small("an event's source")?;
            order = self.byte("an event's order")?;
            flags = self.byte("an event's flags")?;
            if flags & !EXT_FLAGS != 0 {
                return Err(malformed(format!("an event's flags {flags:#x}")));
            }
            nid = self.signed("an event's node")?;
            page_nid = self.signed("an event's page node")?;
        }
        let (latency_ms, lat_flag) = if t & tag::LATENCY != 0 {
            (self.small("an event's latency")?, event_flags::LATENCY)
        } else {
            (0, 0)
        };
        let vaddr =
            vpage.checked_mul(4096).map(|v| v | offset).ok_or_else(|| malformed("an event's address"))?;
        self.base = Base { time_ns, pid, pfn, vpage, order, flags, nid, page_nid, change_seq: b.change_seq };
        self.events += 1;
        Ok(HotpageEvent {
            pfn,
            vaddr,
            time_ns,
            pid,
            nid,
            page_nid,
            source,
            order,
            flags: flags | lat_flag,
            latency_ms,
            reserved: 0,
        })
    }

    /// Decodes records into `events` (and the changes into `changes`) until
    /// `events` has `max` more or the stream ends; false once it has ended.
    /// The common event (no rare fields) is decoded without per-field error
    /// handling; anything unusual goes through `next_record()`.
    pub fn next_events(
        &mut self,
        events: &mut Vec<HotpageEvent>,
        changes: &mut impl Extend<MapChange>,
        max: usize,
    ) -> Result<bool, FormatError> {
        let target = events.len() + max;
        while events.len() < target {
            if let Some(e) = self.fast_event() {
                events.push(e);
                continue;
            }
            match self.next_record()? {
                Some(Record::Event(e)) => events.push(e),
                Some(Record::Change(c)) => changes.extend([c]),
                Some(Record::Move { after_events, span }) => self.moves.push((after_events, span)),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The move calls `next_events()` read, each after how many events of
    /// the stream the rule took it.
    pub fn take_moves(&mut self) -> Vec<(u64, MoveSpan)> {
        std::mem::take(&mut self.moves)
    }

    /// An event without rare fields, with a margin of bytes left so that no
    /// field can run past the end; None for anything else (the caller then
    /// takes the careful path, which also names what is wrong).
    #[inline]
    fn fast_event(&mut self) -> Option<HotpageEvent> {
        const MARGIN: usize = 64;
        let d = self.data.get(self.pos..self.pos + MARGIN)?;
        let t = d[0];
        if t & (0x80 | tag::EXT | 1) != 0 || t >> tag::SOURCE_SHIFT == 3 {
            return None;
        }
        let mut i = 1;
        let b = self.base;
        let time_ns = b.time_ns.wrapping_add(unzigzag(fast_varint(d, &mut i)?) as u64);
        let pid = if t & tag::PID != 0 { u32::try_from(fast_varint(d, &mut i)?).ok()? } else { b.pid };
        let pfn = b.pfn.wrapping_add(unzigzag(fast_varint(d, &mut i)?) as u64);
        let vpage = b.vpage.wrapping_add(unzigzag(fast_varint(d, &mut i)?) as u64);
        let offset = if t & tag::OFFSET != 0 { fast_varint(d, &mut i)? } else { 0 };
        let latency_ms =
            if t & tag::LATENCY != 0 { u32::try_from(fast_varint(d, &mut i)?).ok()? } else { 0 };
        if offset > 0xfff || vpage >> 52 != 0 {
            return None;
        }
        self.pos += i;
        self.base = Base { time_ns, pid, pfn, vpage, ..b };
        self.events += 1;
        Some(HotpageEvent {
            pfn,
            vaddr: (vpage << 12) | offset,
            time_ns,
            pid,
            nid: b.nid,
            page_nid: b.page_nid,
            source: u16::from((t >> tag::SOURCE_SHIFT) & 3),
            order: b.order,
            flags: b.flags | if t & tag::LATENCY != 0 { event_flags::LATENCY } else { 0 },
            latency_ms,
            reserved: 0,
        })
    }

    fn signed(&mut self, what: &'static str) -> Result<i32, FormatError> {
        let v = unzigzag(self.varint(what)?);
        i32::try_from(v).map_err(|_| malformed(format!("{what} {v} out of range")))
    }
}

impl Header {
    fn placeholder() -> Self {
        Self {
            hotpage: String::new(),
            kernel: String::new(),
            topology: TierTopology { nodes: Vec::new(), tiers: Vec::new(), tiering: false, block_size: 0 },
            memory: Vec::new(),
            hotmap: HotMapConfig::default(),
            hint_capacity: 0,
            promoter: PromoterKnobs::default(),
            pid: None,
            changes: false,
            start_ns: 0,
            sources_at_start: Vec::new(),
            policy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use hotpage_common::source;
    use proptest::prelude::*;

    use super::*;

    fn header() -> Header {
        Header {
            hotpage: "test".into(),
            kernel: "6.12".into(),
            topology: TierTopology::read(&crate::test_fixtures::cxl_box()).unwrap(),
            memory: vec![NodeMemoryAtStart { node: 0, total: 262_144, free: 200_000, low: 3000 }],
            changes: true,
            ..Header::placeholder()
        }
    }

    fn ev(i: u64) -> HotpageEvent {
        HotpageEvent {
            pfn: (1 << 18) + (i * 7919) % (1 << 18),
            vaddr: 0x7f00_0000_0000
                + ((i * 104_729) % (1 << 18)) * 4096
                + if i.is_multiple_of(5) { 123 } else { 0 },
            time_ns: 1_000_000_000 + i * 20_000,
            pid: if i % 100 < 50 { 42 } else { 43 },
            nid: 0,
            page_nid: 1,
            source: if i.is_multiple_of(17) { source::HW_SAMPLE } else { source::HINT_FAULT },
            order: if i.is_multiple_of(31) { 9 } else { 0 },
            flags: if i.is_multiple_of(31) { event_flags::PMD } else { 0 }
                | if i.is_multiple_of(3) { event_flags::LATENCY } else { 0 },
            latency_ms: if i.is_multiple_of(3) { (i % 900) as u32 } else { 0 },
            reserved: 0,
        }
    }

    fn records(n: u64) -> Vec<Record> {
        let mut v = Vec::new();
        for i in 0..n {
            v.push(Record::Event(ev(i)));
            if i % 10 == 9 {
                v.push(Record::Change(MapChange::Taken { seq: i, pfn: ev(i).pfn }));
            }
            if i % 40 == 39 {
                let fields = RecordFields { nid: 0, freq: 2, time: 17, ready: true };
                let page = ReadyPage { pfn: ev(i).pfn, node: 1, fields };
                v.push(Record::Change(MapChange::Rearmed { seq: i - 2, page }));
            }
            if i % 50 == 49 {
                let span = MoveSpan { pid: 42, start_ms: 1000 + i, end_ms: 1300 + i };
                v.push(Record::Move { after_events: i + 1, span });
            }
        }
        v
    }

    fn write(records: &[Record]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        for r in records {
            match r {
                Record::Event(e) => w.event(e).unwrap(),
                Record::Change(c) => w.change(c).unwrap(),
                Record::Move { span, .. } => w.move_span(span).unwrap(),
            }
        }
        w.finish(Trailer {
            feed: Some(FeedStats { events: 5, ..FeedStats::default() }),
            ..Trailer::default()
        })
        .unwrap()
    }

    fn read_all(data: &[u8]) -> Result<(Header, Vec<Record>, Trailer), FormatError> {
        let mut r = Reader::new(data)?;
        let mut v = Vec::new();
        while let Some(rec) = r.next_record()? {
            v.push(rec);
        }
        let t = r.trailer().cloned().ok_or(FormatError::Truncated("trailer"))?;
        Ok((r.header().clone(), v, t))
    }

    #[test]
    fn round_trips_every_field() {
        let recs = records(5000);
        let data = write(&recs);
        let (h, got, t) = read_all(&data).unwrap();
        assert_eq!(h, header());
        assert_eq!(got, recs);
        assert_eq!((t.events, t.changes, t.feed.unwrap().events), (5000, 625, 5));
        let per_event = data.len() as f64 / 5000.0;
        assert!(per_event <= 16.0, "{per_event:.1} bytes per record");
    }

    #[test]
    fn a_future_version_a_bad_magic_and_truncation_are_one_line_errors() {
        let data = write(&records(100));
        let mut future = data.clone();
        future[8] = 9;
        assert_eq!(Reader::new(&future).err(), Some(FormatError::FutureVersion(9)));
        assert_eq!(Reader::new(b"#!/bin/sh\necho hi\n").err(), Some(FormatError::BadMagic));
        for cut in [0, 5, 12, 40, data.len() / 2, data.len() - 1] {
            let e = read_all(&data[..cut]).unwrap_err();
            assert!(matches!(e, FormatError::Truncated(_)), "cut at {cut}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_all(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = read_all(&with_magic);
        }

        #[test]
        fn a_damaged_recording_is_an_error_or_reads_without_panicking(
            at in 0usize..4000,
            byte in any::<u8>(),
        ) {
            let mut data = write(&records(200));
            let i = at % data.len();
            data[i] = byte;
            if let Err(e) = read_all(&data) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}
