//! One `hotpage run` per machine, whatever its flags and run directory: the
//! daemon holds an abstract Unix socket named after hotpage for its life. Two
//! daemons would promote the same pages and fight over the kernel's settings,
//! even if one only observes. The kernel releases the name when the process
//! dies, however it dies, so a crash leaves nothing stale behind.
//! (Abstract names are per network namespace: a daemon in a container with
//! its own network namespace is not seen.)

use std::{
    io,
    os::{
        fd::AsRawFd,
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixListener, UnixStream},
    },
};

use super::control::ControlError;

/// The abstract socket's name (`@hotpage-daemon` in `ss -x`).
pub const NAME: &str = "hotpage-daemon";

/// Held for the daemon's life.
pub struct Instance {
    _listener: UnixListener,
}

impl Instance {
    /// Claims the machine's one daemon slot, or names the daemon that holds it.
    pub fn claim() -> Result<Self, ControlError> {
        Self::claim_named(NAME)
    }

    fn claim_named(name: &str) -> Result<Self, ControlError> {
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(instance_err)?;
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => Ok(Self { _listener: listener }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                Err(ControlError::AlreadyRunning(holder_pid(&addr)))
            }
            Err(e) => Err(instance_err(e)),
        }
    }
}

fn instance_err(source: io::Error) -> ControlError {
    ControlError::Io { path: format!("@{NAME}").into(), source }
}

/// The pid that listens on `addr` (its credentials as of `listen()`).
fn holder_pid(addr: &SocketAddr) -> Option<u32> {
    let stream = UnixStream::connect_addr(addr).ok()?;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_claim_is_refused_with_the_holders_pid_and_the_slot_frees_on_drop() {
        let name = format!("hotpage-test-instance-{}", std::process::id());
        let first = Instance::claim_named(&name).unwrap();
        match Instance::claim_named(&name) {
            Err(ControlError::AlreadyRunning(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected AlreadyRunning, got {:?}", other.err()),
        }
        drop(first);
        assert!(Instance::claim_named(&name).is_ok(), "the name is free once the holder is gone");
    }
}
