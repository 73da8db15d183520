//! Record and replay: the exact stream of lower-tier accesses the hot map
//! received, written to a compact file (with the machine's topology and the
//! knobs in its header), and replayed offline through the real hot map and
//! either the recorded takes or a simulated promoter, on the recorded clock.

pub mod format;
pub mod recorder;
pub mod replay;
pub mod truth;

pub use format::{
    FormatError, Header, NodeMemoryAtStart, PromoterKnobs, Reader, Record, SourceCounts, Trailer, Writer,
};
pub use recorder::Recorder;
pub use replay::{LatencyReport, ReplayError, ReplayOptions, ReplayReport, replay};
pub use truth::{Truth, TruthScore};
