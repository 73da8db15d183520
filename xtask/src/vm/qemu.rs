//! Boots the box: QEMU with TCG (the host's /dev/kvm cannot run a normal
//! guest), two NUMA nodes described by HMAT so that node 1 lands in a lower
//! memory tier, the console streamed live, a second serial port for result
//! files, and isa-debug-exit for the guest's exit status. Room for DIMMs to
//! be hot-added: a guest test that prints `HOTPAGE_HOTPLUG node=N mib=M` on
//! the console gets a DIMM of M MiB on node N through QEMU's QMP socket
//! (memory hot-plug, as new CXL memory appears on a real machine).

use std::{
    collections::VecDeque,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;

/// Box hardware, overridable from the command line.
#[derive(Clone, Debug, Args)]
pub struct BoxSpec {
    /// Virtual CPUs (all on node 0).
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Memory of node 0 (DRAM, top tier), MiB.
    #[arg(long, default_value_t = 1024)]
    pub node0_mib: u32,
    /// Memory of node 1 (CPU-less "CXL", lower tier), MiB.
    #[arg(long, default_value_t = 1024)]
    pub node1_mib: u32,
    /// How often each vCPU's TLB is emptied, µs (0: never). QEMU's software
    /// TLB grows to millions of entries and x86 Linux clears accessed bits
    /// without a flush, so without this a page the workload keeps touching
    /// never sets its accessed bit again and DAMON sees it idle (docs/box.md).
    #[arg(long, default_value_t = 5000)]
    pub tlb_turnover_us: u64,
    /// Kill the guest after this many seconds and report a hang.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// DIMM slots and room for hot-added memory (the box tests): the
    /// reserved room costs node 1 about 100 MiB of free memory, which the
    /// 900 MiB benchmark scenario needs, so the other commands boot without.
    #[arg(skip)]
    pub hotplug: bool,
}

/// HMAT latency (ns) and bandwidth: node 1 is 3× slower, so the kernel puts it
/// in a lower tier (memory_tier56 against memory_tier4 for node 0).
const HMAT: [&str; 4] = [
    "hmat-lb,initiator=0,target=0,hierarchy=memory,data-type=access-latency,latency=80",
    "hmat-lb,initiator=0,target=0,hierarchy=memory,data-type=access-bandwidth,bandwidth=20G",
    "hmat-lb,initiator=0,target=1,hierarchy=memory,data-type=access-latency,latency=250",
    "hmat-lb,initiator=0,target=1,hierarchy=memory,data-type=access-bandwidth,bandwidth=5G",
];

/// What came back from the guest.
pub struct BoxOutcome {
    /// The script's exit status inside the guest.
    pub rc: i32,
    /// Files the guest left in /results.
    pub results: Vec<(String, Vec<u8>)>,
    pub elapsed: Duration,
}

/// Memory slots and room for hot-added DIMMs above the boot memory, MiB.
const HOTPLUG_SLOTS: u32 = 2;
const HOTPLUG_MIB: u32 = 1024;

/// `-m`: the boot memory, and with hot-plug the slots and room above it.
fn memory_arg(spec: &BoxSpec) -> String {
    let boot = spec.node0_mib + spec.node1_mib;
    if spec.hotplug {
        format!("{boot}M,slots={HOTPLUG_SLOTS},maxmem={}M", boot + HOTPLUG_MIB)
    } else {
        format!("{boot}M")
    }
}

fn qemu_command(kernel: &Path, initrd: &Path, results_port: &Path, qmp: &Path, spec: &BoxSpec) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "q35,hmat=on"])
        .args(["-smp", &spec.cpus.to_string()])
        .args(["-m", &memory_arg(spec)])
        .args(["-object", &format!("memory-backend-ram,size={}M,id=m0", spec.node0_mib)])
        .args(["-object", &format!("memory-backend-ram,size={}M,id=m1", spec.node1_mib)])
        .args(["-numa", &format!("node,nodeid=0,cpus=0-{},memdev=m0", spec.cpus.saturating_sub(1))])
        .args(["-numa", "node,nodeid=1,memdev=m1,initiator=0"]);
    for h in HMAT {
        c.args(["-numa", h]);
    }
    // Results leave through a virtio-serial port (binary, fast), not a UART.
    if spec.hotplug {
        c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", qmp.display()));
    }
    c.args(["-serial", "stdio"])
        .args(["-device", "virtio-serial-pci,id=vser"])
        .arg("-chardev")
        .arg(format!("file,id=results,path={}", results_port.display()))
        .args(["-device", "virtserialport,bus=vser.0,chardev=results,name=hotpage-results"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        // mitigations=off: speculation defences only slow TCG down here. The
        // TLB turnover is the box init's (tests/src/bin/hotpage-box-init.rs).
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off rdinit=/init hotpage_box.tlb_turnover_us={}",
            spec.tlb_turnover_us
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Boots the box, streams its console, and returns the guest's status. Fails
/// with the console's tail on a kernel panic, a hang, or a QEMU error.
pub fn boot(kernel: &Path, initramfs: Vec<u8>, spec: &BoxSpec, work: &Path) -> Result<BoxOutcome> {
    fs::create_dir_all(work)?;
    let initrd = work.join("initramfs.cpio");
    fs::write(&initrd, initramfs)?;
    let results_port = work.join("results_port.out");
    let _ = fs::remove_file(&results_port);
    let qmp = work.join("qmp.sock");
    let _ = fs::remove_file(&qmp);

    let start = Instant::now();
    let mut child = qemu_command(kernel, &initrd, &results_port, &qmp, spec)
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    let rc_seen = Arc::new(Mutex::new(None::<i32>));
    let stdout = child.stdout.take().context("qemu stdout")?;
    let reader = {
        let tail = tail.clone();
        let rc_seen = rc_seen.clone();
        let qmp = qmp.clone();
        thread::spawn(move || {
            let mut hotplugs = 0u32;
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
                println!("{line}");
                if let Some(req) = line.trim().strip_prefix("HOTPAGE_HOTPLUG ") {
                    let (qmp, req) = (qmp.clone(), req.to_owned());
                    hotplugs += 1;
                    let n = hotplugs;
                    thread::spawn(move || match hot_add_dimm(&qmp, &req, n) {
                        Ok(what) => println!("xtask: hot-added {what}"),
                        Err(e) => println!("xtask: hot-adding a DIMM ({req}) failed: {e:#}"),
                    });
                }
                if let Some(rc) = line.trim().strip_prefix("VMTEST_RC=").and_then(|r| r.parse().ok())
                    && let Ok(mut g) = rc_seen.lock()
                {
                    *g = Some(rc);
                }
                if let Ok(mut t) = tail.lock() {
                    t.push_back(line);
                    if t.len() > 60 {
                        t.pop_front();
                    }
                }
            }
        })
    };
    let mut stderr = child.stderr.take().context("qemu stderr")?;
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });

    let deadline = Duration::from_secs(spec.timeout);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    let qemu_err = err_reader.join().unwrap_or_default();
    let tail_text = tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap_or_default();
    let guest_rc = rc_seen.lock().ok().and_then(|g| *g);
    let elapsed = start.elapsed();

    let Some(status) = status else {
        bail!("the box hung: no exit after {} s (--timeout). Last console lines:\n{tail_text}", spec.timeout);
    };
    if tail_text.contains("Kernel panic") {
        bail!("the guest kernel panicked. Last console lines:\n{tail_text}");
    }
    let Some(rc) = guest_rc else {
        bail!(
            "the box ended without reporting a status (QEMU {status}){}. Last console lines:\n{tail_text}",
            if qemu_err.trim().is_empty() { String::new() } else { format!(": {}", qemu_err.trim()) }
        );
    };
    // isa-debug-exit: QEMU exits with (value << 1) | 1.
    match status.code() {
        Some(code) if code == ((rc.clamp(0, 127) << 1) | 1) => {}
        other => bail!(
            "QEMU exit {other:?} disagrees with the guest status {rc}. Last console lines:\n{tail_text}"
        ),
    }
    let results = parse_results(&fs::read(&results_port).unwrap_or_default());
    Ok(BoxOutcome { rc, results, elapsed })
}

/// Decodes what the guest sent through its results port: each file framed
/// as `HOTPAGE-FILE <name> <length>\n` and its bytes (tests/src/box_results.rs).
pub fn parse_results(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let head = String::from_utf8_lossy(&rest[..nl]).into_owned();
        let mut words = head.split_whitespace();
        let (Some("HOTPAGE-FILE"), Some(name), Some(len)) = (words.next(), words.next(), words.next()) else {
            break;
        };
        let Ok(len) = len.parse::<usize>() else { break };
        let body = &rest[nl + 1..];
        if body.len() < len {
            break;
        }
        out.push((name.to_owned(), body[..len].to_vec()));
        rest = &body[len..];
    }
    out
}

/// Where the guest's result files are written on the host.
pub fn save_results(results: &[(String, Vec<u8>)], dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut paths = Vec::new();
    for (name, data) in results {
        let safe: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
        let p = dir.join(safe);
        fs::write(&p, data)?;
        paths.push(p);
    }
    Ok(paths)
}

/// One QMP command and its reply (events before it are skipped).
fn qmp_command(
    stream: &mut std::os::unix::net::UnixStream,
    reader: &mut BufReader<std::os::unix::net::UnixStream>,
    command: &str,
) -> Result<String> {
    use std::io::Write;
    stream.write_all(command.as_bytes())?;
    stream.write_all(b"\n")?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("QMP closed the connection");
        }
        if line.contains("\"error\"") {
            bail!("QMP refused {command}: {}", line.trim());
        }
        if line.contains("\"return\"") {
            return Ok(line);
        }
    }
}

/// Hot-adds a DIMM for a request `node=N mib=M` through QMP: a RAM backend,
/// then a pc-dimm on node N (the guest's ACPI sees it and onlines it).
fn hot_add_dimm(qmp: &Path, request: &str, n: u32) -> Result<String> {
    let field = |key: &str| -> Result<u32> {
        request
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("no {key}= in {request:?}"))
    };
    let (node, mib) = (field("node")?, field("mib")?);
    let mut stream = std::os::unix::net::UnixStream::connect(qmp).context("connecting to QMP")?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    qmp_command(&mut stream, &mut reader, r#"{"execute":"qmp_capabilities"}"#)?;
    qmp_command(
        &mut stream,
        &mut reader,
        &format!(
            r#"{{"execute":"object-add","arguments":{{"qom-type":"memory-backend-ram","id":"hotplug{n}","size":{}}}}}"#,
            u64::from(mib) << 20
        ),
    )?;
    qmp_command(
        &mut stream,
        &mut reader,
        &format!(
            r#"{{"execute":"device_add","arguments":{{"driver":"pc-dimm","id":"dimm{n}","memdev":"hotplug{n}","node":{node}}}}}"#
        ),
    )?;
    Ok(format!("a {mib} MiB DIMM on node {node}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_framed_results() {
        let mut raw = b"HOTPAGE-FILE a.json 3\nabcHOTPAGE-FILE b.bin 4\n\x00\n\xff\x01".to_vec();
        let r = parse_results(&raw);
        assert_eq!(
            r,
            vec![("a.json".to_owned(), b"abc".to_vec()), ("b.bin".to_owned(), vec![0, 10, 255, 1])]
        );
        raw.extend_from_slice(b"HOTPAGE-FILE c 10\nshort");
        assert_eq!(parse_results(&raw).len(), 2, "a file cut short is left out");
    }
}
