//! Files leave the emulated box through a virtio-serial port named
//! `hotpage-results`, which QEMU writes to a host file: each file framed as
//! `HOTPAGE-FILE <name> <length>\n` and its bytes. The box init sends what is
//! left in /results when the job ends; a benchmark sends large files (its
//! recordings) as soon as they are written, so that they do not sit in the
//! box's memory.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

/// The port's name, as QEMU's `virtserialport,name=…` gives it.
pub const PORT_NAME: &str = "hotpage-results";

/// The device of the results port (`/dev/vportNpM`), if the box has one.
pub fn port() -> Option<PathBuf> {
    fs::read_dir("/sys/class/virtio-ports").ok()?.flatten().find_map(|e| {
        let name = fs::read_to_string(e.path().join("name")).ok()?;
        (name.trim() == PORT_NAME).then(|| Path::new("/dev").join(e.file_name()))
    })
}

/// Sends `path`'s bytes under `name` through the results port.
pub fn send(path: &Path, name: &str) -> io::Result<()> {
    let port =
        port().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no results port in this box"))?;
    let data = fs::read(path)?;
    let mut out = fs::OpenOptions::new().write(true).open(port)?;
    out.write_all(format!("HOTPAGE-FILE {name} {}\n", data.len()).as_bytes())?;
    out.write_all(&data)?;
    out.flush()
}
