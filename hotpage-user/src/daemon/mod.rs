//! The daemon: how a run is assembled from the stages (shared by `hotpage
//! run` and `hotpage trace`), its configuration, the control socket, the
//! metrics export and the clean stop on a signal.

pub mod config;
pub mod control;
mod hook_watch;
mod instance;
mod layout_watch;
pub mod metrics;
pub mod preflight;
pub mod record;
pub mod recording;
pub mod requirements;
mod run;
mod scan_rest;
mod server;
mod shutdown;
pub mod sources;

pub use record::{RecordRequest, record};
pub use run::run;
pub use shutdown::Shutdown;
