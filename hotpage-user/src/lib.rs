//! hotpage: finds hot pages on lower-tier (CXL) memory nodes and promotes them.
//!
//! The folders follow the data, one way: kernel → sources → collector → hot
//! map → promoter → reports, with the system interfaces underneath.
//!
//! | module | its one job |
//! |---|---|
//! | [`sources`] | kernel → events: the eBPF objects (hint faults, memory samples), their counters, and the address resolver that gives events their page and folio |
//! | [`collector`] | drains the sources' rings and feeds each event to the hot map as an access |
//! | [`hotmap`] | the userspace twin of pghot's hot map: one record per lower-tier page, READY decisions, the node walk |
//! | [`promoter`] | one kmigrated-equivalent worker per lower-tier node: verify, limit, `move_pages`, account |
//! | [`recording`] | the access stream to a file (a stage before the hot map), and replays of it offline |
//! | [`report`] | one snapshot of everything, rendered as a table, JSON or Prometheus text |
//! | [`daemon`] | a run assembled from the stages (shared by `run` and `trace`), its config, control socket, metrics export, requirements, clean stop |
//! | [`cli`] | argument parsing and printing |
//! | [`kernel`] | the running kernel: BTF and the hook, the settings hotpage changes and restores, other page movers |
//! | [`sys`] | every reader of /proc and /sys (each under a root path) and the clocks |
//! | [`counters`] | counters shared between the thread that counts and the readers |

pub mod cli;
pub mod collector;
pub mod counters;
pub mod daemon;
pub mod hotmap;
pub mod kernel;
pub mod promoter;
pub mod recording;
pub mod report;
pub mod rule;
pub mod sources;
pub mod sys;

#[cfg(test)]
pub(crate) mod test_fixtures;
