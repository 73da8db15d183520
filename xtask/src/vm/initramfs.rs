//! A newc cpio archive (the initramfs format the kernel unpacks), written in
//! memory: directories, files, symlinks and device nodes, parents first.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Default)]
pub struct Initramfs {
    out: Vec<u8>,
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
    ino: u32,
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let name = path.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Adds a directory and every missing parent.
    pub fn dir(&mut self, path: &str) {
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            if self.dirs.insert(cur.clone()) {
                self.entry(&cur.clone(), S_IFDIR | 0o755, &[], (0, 0));
            }
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/')
            && !parent.is_empty()
        {
            self.dir(parent);
        }
    }

    pub fn file(&mut self, path: &str, data: &[u8], perm: u32) {
        if !self.files.insert(path.to_owned()) {
            return;
        }
        self.parent(path);
        self.entry(path, S_IFREG | perm, data, (0, 0));
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        if !self.files.insert(path.to_owned()) {
            return;
        }
        self.parent(path);
        self.entry(path, S_IFLNK | 0o777, target.as_bytes(), (0, 0));
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.parent(path);
        self.entry(path, S_IFCHR | 0o600, &[], (major, minor));
    }

    /// Adds an executable (debug info stripped) and the shared libraries it
    /// needs, at the paths the dynamic loader looks for them.
    pub fn binary(&mut self, host: &Path, guest: &str) -> Result<()> {
        let data = stripped(host)?;
        self.file(guest, &data, 0o755);
        for lib in shared_libraries(host)? {
            let guest_lib = lib.to_string_lossy().into_owned();
            if self.files.contains(&guest_lib) {
                continue;
            }
            let bytes = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
            self.file(&guest_lib, &bytes, 0o755);
        }
        Ok(())
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

/// The file without debug sections (backtraces keep symbol names).
fn stripped(host: &Path) -> Result<Vec<u8>> {
    let tmp = std::env::temp_dir().join(format!(
        "xtask-strip-{}-{}",
        std::process::id(),
        host.display().to_string().len()
    ));
    let status = Command::new("strip").arg("--strip-debug").arg("-o").arg(&tmp).arg(host).status();
    let data = match status {
        Ok(s) if s.success() => fs::read(&tmp)?,
        // No binutils: the unstripped file works, only bigger.
        _ => fs::read(host).with_context(|| format!("reading {}", host.display()))?,
    };
    let _ = fs::remove_file(&tmp);
    Ok(data)
}

/// Shared libraries (and the loader) a dynamic executable needs, from `ldd`.
fn shared_libraries(host: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(host).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // glibc's ldd says "not a dynamic executable" on stderr, with status 1.
    let said = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    if said.contains("not a dynamic executable") || said.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed", host.display());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_headers_and_padding() {
        let mut fs = Initramfs::new();
        fs.file("/a/b/c.txt", b"hello", 0o644);
        let out = fs.finish();
        // Entries: /a, /a/b, /a/b/c.txt, trailer; each header starts 4-byte aligned.
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("070701").count(), 4);
        assert!(text.contains("a/b/c.txt\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(out.len() % 4, 0);
        // The file header: mode 0100644, size 5.
        let at = text.find("a/b/c.txt").unwrap() - 110;
        assert_eq!(&text[at..at + 6], "070701");
        assert_eq!(&text[at + 14..at + 22], "000081a4");
        assert_eq!(&text[at + 54..at + 62], "00000005");
    }

    #[test]
    fn finds_the_loader_and_libc() {
        let libs = shared_libraries(Path::new("/bin/ls")).unwrap();
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("ld-linux")), "{libs:?}");
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libs:?}");
    }

    #[test]
    fn a_static_program_needs_no_library() {
        // busybox-static is what the box's shell is made of (deps.rs).
        assert_eq!(shared_libraries(Path::new("/bin/busybox")).unwrap(), Vec::<PathBuf>::new());
    }
}
