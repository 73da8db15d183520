//! `hotpage run` as the box tests and the end-to-end benchmark start it: a
//! child process that counts as started once its control socket answers
//! (every source is attached by then), stopped with SIGTERM, and killed if
//! dropped while it still runs.

use std::{
    io,
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hotpage::daemon::control::{Request, request};

/// Where `hotpage run` keeps its socket unless told otherwise.
pub const RUN_DIR: &str = hotpage::kernel::settings::DEFAULT_RUN_DIR;

pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Starts `<bin> run <args>` and waits, at most a minute, until it
    /// answers on its control socket.
    pub fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        let child = Command::new(bin)
            .arg("run")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} run", bin.display()))?;
        let mut daemon = Self { child: Some(child) };
        let t = Instant::now();
        while request(Path::new(RUN_DIR), &Request::Ping).is_err() {
            if let Some(st) = daemon.child_mut().try_wait()? {
                bail!("hotpage run exited before it answered: {st}");
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("hotpage run did not answer on its socket within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the child lives until stop or kill")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it has exited, and how.
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child_mut().try_wait()
    }

    /// SIGTERM, then its exit status and output.
    pub fn stop(mut self) -> io::Result<Output> {
        let child = self.child.take().expect("the child lives until stop or kill");
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait_with_output()
    }

    /// SIGKILL, as a crash would end it.
    pub fn kill(mut self) -> io::Result<()> {
        let mut child = self.child.take().expect("the child lives until stop or kill");
        let killed = child.kill();
        let waited = child.wait();
        killed.and(waited).map(|_| ())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
