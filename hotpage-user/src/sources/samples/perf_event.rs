//! `perf_event_open(2)` with full control of `perf_event_attr`.
//!
//! aya's `PerfEvent::attach` cannot set `sample_type`, `precise_ip` or
//! `config1`, which memory sampling needs, so hotpage opens the events itself
//! and attaches aya's program with `PERF_EVENT_IOC_SET_BPF`.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
};

/// `struct perf_event_attr`, PERF_ATTR_SIZE_VER8 (136 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerfEventAttr {
    pub type_: u32,
    pub size: u32,
    pub config: u64,
    /// `sample_period`, or `sample_freq` with [`attr_flags::FREQ`].
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    /// The bitfield word: [`attr_flags`].
    pub flags: u64,
    pub wakeup_events: u32,
    pub bp_type: u32,
    pub config1: u64,
    pub config2: u64,
    pub branch_sample_type: u64,
    pub sample_regs_user: u64,
    pub sample_stack_user: u32,
    pub clockid: i32,
    pub sample_regs_intr: u64,
    pub aux_watermark: u32,
    pub sample_max_stack: u16,
    pub reserved_2: u16,
    pub aux_sample_size: u32,
    pub reserved_3: u32,
    pub sig_data: u64,
    pub config3: u64,
}

pub const PERF_ATTR_SIZE_VER8: u32 = 136;
const _: () = assert!(size_of::<PerfEventAttr>() == PERF_ATTR_SIZE_VER8 as usize);

/// `enum perf_type_id`.
pub mod perf_type {
    pub const HARDWARE: u32 = 0;
    pub const SOFTWARE: u32 = 1;
    pub const RAW: u32 = 4;
}

/// `enum perf_sw_ids`.
pub mod sw_event {
    pub const CPU_CLOCK: u64 = 0;
    pub const PAGE_FAULTS: u64 = 2;
}

/// `enum perf_event_sample_format`.
pub mod sample_type {
    pub const IP: u64 = 1 << 0;
    pub const TID: u64 = 1 << 1;
    pub const TIME: u64 = 1 << 2;
    pub const ADDR: u64 = 1 << 3;
    pub const CPU: u64 = 1 << 7;
    pub const PERIOD: u64 = 1 << 8;
    pub const WEIGHT: u64 = 1 << 14;
    pub const DATA_SRC: u64 = 1 << 15;
    pub const PHYS_ADDR: u64 = 1 << 19;
}

/// Bits of `perf_event_attr`'s flag word.
pub mod attr_flags {
    pub const DISABLED: u64 = 1 << 0;
    pub const INHERIT: u64 = 1 << 1;
    pub const EXCLUDE_KERNEL: u64 = 1 << 5;
    pub const EXCLUDE_HV: u64 = 1 << 6;
    pub const EXCLUDE_IDLE: u64 = 1 << 7;
    pub const FREQ: u64 = 1 << 10;
    pub const PRECISE_IP_SHIFT: u32 = 15;
    pub const PRECISE_IP_MASK: u64 = 0b11 << PRECISE_IP_SHIFT;
    pub const EXCLUDE_GUEST: u64 = 1 << 20;
}

impl PerfEventAttr {
    pub fn new(type_: u32, config: u64) -> Self {
        Self { type_, size: PERF_ATTR_SIZE_VER8, config, ..Self::default() }
    }

    /// `precise_ip` (0–3): the skid constraint PEBS and IBS need for data addresses.
    pub fn precise_ip(&self) -> u64 {
        (self.flags & attr_flags::PRECISE_IP_MASK) >> attr_flags::PRECISE_IP_SHIFT
    }

    pub fn set_precise_ip(&mut self, level: u64) {
        self.flags = (self.flags & !attr_flags::PRECISE_IP_MASK)
            | ((level.min(3) << attr_flags::PRECISE_IP_SHIFT) & attr_flags::PRECISE_IP_MASK);
    }
}

// From include/uapi/linux/perf_event.h: _IO('$', 0), _IO('$', 1), _IOW('$', 8, __u32),
// _IOW('$', 4, __u64).
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const PERF_EVENT_IOC_PERIOD: libc::c_ulong = 0x4008_2404;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// An open perf event.
#[derive(Debug)]
pub struct PerfEventFd {
    fd: OwnedFd,
}

impl PerfEventFd {
    /// `perf_event_open(attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)`: `pid` -1 with a
    /// CPU means every task on that CPU; `cpu` -1 with a pid means that task anywhere.
    pub fn open(attr: &PerfEventAttr, pid: i32, cpu: i32) -> io::Result<Self> {
        // SAFETY: attr points to a valid, fully initialised perf_event_attr of `size` bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr as *const PerfEventAttr,
                pid,
                cpu,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd as i32) } })
    }

    /// Runs `prog` on every overflow of this event.
    pub fn attach_bpf(&self, prog: impl AsFd) -> io::Result<()> {
        let prog_fd = prog.as_fd().as_raw_fd();
        self.ioctl(PERF_EVENT_IOC_SET_BPF, prog_fd as libc::c_ulong)
    }

    pub fn enable(&self) -> io::Result<()> {
        self.ioctl(PERF_EVENT_IOC_ENABLE, 0)
    }

    pub fn disable(&self) -> io::Result<()> {
        self.ioctl(PERF_EVENT_IOC_DISABLE, 0)
    }

    /// Changes the sample period of a running event.
    pub fn set_period(&self, period: u64) -> io::Result<()> {
        let p = period;
        // SAFETY: PERF_EVENT_IOC_PERIOD reads one u64 through the pointer.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), PERF_EVENT_IOC_PERIOD, &p as *const u64) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    fn ioctl(&self, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<()> {
        // SAFETY: the requests used here take an integer argument and no pointer.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request, arg) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

impl AsFd for PerfEventFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precise_ip_lives_in_bits_15_and_16() {
        let mut a = PerfEventAttr::new(perf_type::RAW, 0);
        a.flags = attr_flags::DISABLED;
        a.set_precise_ip(2);
        assert_eq!(a.flags, attr_flags::DISABLED | (2 << 15));
        assert_eq!(a.precise_ip(), 2);
        a.set_precise_ip(9);
        assert_eq!(a.precise_ip(), 3);
    }

    #[test]
    fn attr_size_is_ver8() {
        assert_eq!(PerfEventAttr::new(perf_type::SOFTWARE, sw_event::PAGE_FAULTS).size, 136);
    }
}
