//! One system-wide sampling event per online CPU, each running the sample
//! program (`PERF_EVENT_IOC_SET_BPF`). CPUs that come online later are opened
//! by [`CpuEvents::refresh`]; the period is changed on all of them at once.

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::pmu::Sampler;
use crate::{sources::samples::perf_event::PerfEventFd, sys::sysfs::read_text, sys::topology::parse_list};

#[derive(Debug, Error)]
pub enum EventsError {
    #[error("reading the online CPUs ({path}): {detail}")]
    Cpus { path: PathBuf, detail: String },
    #[error(
        "perf_event_open for {what} on CPU {cpu}: {error}{hint}",
        hint = if error.raw_os_error() == Some(libc::EACCES) || error.raw_os_error() == Some(libc::EPERM) {
            " (needs root, or kernel.perf_event_paranoid <= -1)"
        } else {
            ""
        }
    )]
    Open { what: String, cpu: u32, error: io::Error },
    #[error("attaching the sample program to CPU {cpu}'s event: {error}")]
    Attach { cpu: u32, error: io::Error },
}

pub struct CpuEvents {
    sampler: Sampler,
    period: u64,
    prog: OwnedFd,
    root: PathBuf,
    fds: BTreeMap<u32, PerfEventFd>,
}

/// The online CPUs under `root` (`/sys/devices/system/cpu/online`).
pub fn online_cpus(root: &Path) -> Result<Vec<u32>, EventsError> {
    let path = root.join("sys/devices/system/cpu/online");
    let text =
        read_text(&path).map_err(|e| EventsError::Cpus { path: path.clone(), detail: e.to_string() })?;
    parse_list(text.trim()).map_err(|e| EventsError::Cpus { path, detail: e.to_string() })
}

impl CpuEvents {
    /// Opens, attaches and enables an event on every online CPU.
    pub fn open(root: &Path, sampler: Sampler, prog: BorrowedFd<'_>) -> Result<Self, EventsError> {
        let prog = prog.try_clone_to_owned().map_err(|error| EventsError::Attach { cpu: 0, error })?;
        let period = sampler.align(sampler.default_period);
        let mut me = Self { sampler, period, prog, root: root.to_owned(), fds: BTreeMap::new() };
        me.refresh()?;
        Ok(me)
    }

    /// Opens events for CPUs that came online since; drops those of CPUs gone.
    /// Returns how many were opened.
    pub fn refresh(&mut self) -> Result<usize, EventsError> {
        let online = online_cpus(&self.root)?;
        self.fds.retain(|cpu, _| online.contains(cpu));
        let mut opened = 0;
        for cpu in online {
            if self.fds.contains_key(&cpu) {
                continue;
            }
            let fd = self.open_one(cpu)?;
            self.fds.insert(cpu, fd);
            opened += 1;
        }
        Ok(opened)
    }

    fn open_one(&mut self, cpu: u32) -> Result<PerfEventFd, EventsError> {
        let mut attr = self.sampler.attr(self.period);
        // perf's `P`: the highest precise level the PMU takes, stepping down.
        let fd = loop {
            match PerfEventFd::open(&attr, -1, cpu as i32) {
                Ok(fd) => break fd,
                Err(e)
                    if e.raw_os_error() == Some(libc::EOPNOTSUPP)
                        || e.raw_os_error() == Some(libc::EINVAL) =>
                {
                    let level = attr.precise_ip();
                    if level <= 1 || self.sampler.precise_ip == 0 {
                        return Err(EventsError::Open { what: self.sampler.describe(), cpu, error: e });
                    }
                    attr.set_precise_ip(level - 1);
                    self.sampler.precise_ip = level - 1;
                }
                Err(error) => return Err(EventsError::Open { what: self.sampler.describe(), cpu, error }),
            }
        };
        fd.attach_bpf(self.prog.as_fd()).map_err(|error| EventsError::Attach { cpu, error })?;
        fd.enable().map_err(|error| EventsError::Attach { cpu, error })?;
        Ok(fd)
    }

    pub fn period(&self) -> u64 {
        self.period
    }

    pub fn cpus(&self) -> usize {
        self.fds.len()
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Sets the sample period on every CPU's event (`PERF_EVENT_IOC_PERIOD`).
    pub fn set_period(&mut self, period: u64) -> io::Result<()> {
        let period = self.sampler.align(period);
        if period == self.period {
            return Ok(());
        }
        for fd in self.fds.values() {
            fd.set_period(period)?;
        }
        self.period = period;
        Ok(())
    }
}
