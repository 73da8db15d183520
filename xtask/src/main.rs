//! `cargo xtask`: build helpers, the emulated CXL box and benchmarks.
//! It orchestrates; the eBPF objects are built by `hotpage-ebpf/build.rs`.

mod cargo;
mod deps;
mod e2e_plot;
mod package;
mod python_tools;
mod replay_fidelity;
mod vm;
mod vm_run;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cargo::{build_bins, build_test, run};
use crate::vm::{BoxSpec, Payload, sh_quote};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "hotpage build helpers, emulated CXL box and benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole test suite, as CI runs it: formatting, lints, unit, object and
    /// host (root) tests, then the box tests and the short end-to-end benchmark.
    /// Installs missing Debian packages.
    Test {
        #[command(flatten)]
        spec: BoxSpec,
    },
    /// Install the pinned Debian packages the build and the box need.
    Deps,
    /// Run the main job: on a machine with a lower memory tier, hotpage
    /// itself; elsewhere the same job inside the emulated CXL box.
    Demo {
        #[command(flatten)]
        spec: BoxSpec,
        #[arg(long, default_value_t = 30)]
        seconds: u32,
    },
    /// The emulated CXL box (QEMU TCG, two NUMA nodes, node 1 a lower tier).
    Vm {
        #[command(subcommand)]
        cmd: VmCmd,
    },
    /// The Debian package (cargo-deb): man pages, completions, the unit and the
    /// conffile; checked (file list, control, lintian) and, with --in-box, run.
    Package {
        /// Also run the packaged binary (`hotpage check`, the daemon from the
        /// packaged configuration) in the emulated CXL box.
        #[arg(long)]
        in_box: bool,
        #[command(flatten)]
        spec: BoxSpec,
    },
    /// Benchmarks on this machine: hotpage and its baseline side by side.
    Bench {
        #[command(subcommand)]
        bench: HostBench,
    },
}

#[derive(Subcommand)]
enum VmCmd {
    /// Download the guest kernel into target/vm/kernel (idempotent).
    Fetch,
    /// Build the box tests, boot the box, run them there as root.
    Test {
        #[command(flatten)]
        spec: BoxSpec,
        /// Only tests whose name contains one of these (libtest filters).
        #[arg(last = true)]
        filter: Vec<String>,
    },
    /// Benchmarks that need tiers, run inside the box; results land in target/bench/.
    Bench {
        #[command(flatten)]
        spec: BoxSpec,
        #[command(subcommand)]
        bench: BoxBench,
    },
    /// Boot the box and run the main job there: a workload with a hot subset
    /// of its memory on node 1, watched by hotpage.
    Demo {
        #[command(flatten)]
        spec: BoxSpec,
        /// Seconds the workload runs.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
    },
    /// Boot the box with hotpage running and run your own program there
    /// (a small --node0-mib spills its memory onto node 1, the lower tier).
    Run {
        #[command(flatten)]
        spec: BoxSpec,
        /// Longest the program runs, seconds (it is stopped then).
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// Arguments for `hotpage run` (default: its defaults).
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        hotpage_args: String,
        /// The program and its arguments (a static binary, or a dynamic one
        /// whose libraries are copied along).
        #[arg(last = true, required = true)]
        program: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BoxBench {
    /// hotpage's promotion path against a raw move_pages loop, and batch sizes.
    Promote,
    /// What reading the box kernel's BTF costs hotpage's start: mapped (a memfd
    /// copy there) against a full parse.
    Btf,
    /// hotpage vs NUMAB-2 vs no migration on GUPS hot-set workloads; writes a plot too.
    E2e {
        /// Small sizes, one repetition, only correctness facts checked (what CI runs).
        #[arg(long)]
        short: bool,
        /// Lower the NUMA-balancing scan knobs for every system, as the box tests do.
        #[arg(long)]
        fast_scan: bool,
        /// Only these systems (JSON names, comma-separated).
        #[arg(long)]
        systems: Option<String>,
        /// Only scenarios whose name contains one of these (comma-separated).
        #[arg(long)]
        scenarios: Option<String>,
        /// Repetitions of every cell.
        #[arg(long)]
        reps: Option<usize>,
    },
}

#[derive(Subcommand)]
enum HostBench {
    /// Per-event cost in the BPF program and in the consumer, batched vs per-event wake-ups.
    Ring,
    /// Hot map: record_access ns/op, memory per page, walk time per section.
    Hotmap,
    /// The sample source's CPU share at 1k, 10k and 100k samples/s against its budget.
    Samples,
    /// A recording's bytes per event and how fast it replays through the hot map.
    Replay,
    /// What reading the kernel's BTF costs hotpage's start: mapped against a full parse.
    Btf,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Deps => deps::ensure(),
        Cmd::Demo { spec, seconds } => demo(&spec, seconds),
        Cmd::Test { spec } => test_all(&spec),
        Cmd::Package { in_box, spec } => package::package(in_box.then_some(&spec)).map(|_| ()),
        Cmd::Vm { cmd: VmCmd::Fetch } => vm::kernel::fetch().map(|_| ()),
        Cmd::Vm { cmd: VmCmd::Test { spec, filter } } => vm_test(&spec, &filter),
        Cmd::Vm { cmd: VmCmd::Demo { spec, seconds } } => vm_demo(&spec, seconds),
        Cmd::Vm { cmd: VmCmd::Run { spec, seconds, hotpage_args, program } } => {
            vm_run::vm_run(&spec, seconds, &hotpage_args, &program)
        }
        Cmd::Vm { cmd: VmCmd::Bench { spec, bench: BoxBench::Promote } } => vm_bench(&spec, "promote", &[]),
        Cmd::Vm { cmd: VmCmd::Bench { spec, bench: BoxBench::Btf } } => vm_bench(&spec, "btf", &[]),
        Cmd::Vm {
            cmd: VmCmd::Bench { spec, bench: BoxBench::E2e { short, fast_scan, systems, scenarios, reps } },
        } => {
            let mut args: Vec<String> = Vec::new();
            if short {
                args.push("--short".into());
            }
            if fast_scan {
                args.push("--fast-scan".into());
            }
            for (flag, v) in
                [("--systems", systems), ("--scenarios", scenarios), ("--reps", reps.map(|r| r.to_string()))]
            {
                if let Some(v) = v {
                    args.extend([flag.to_owned(), v]);
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            vm_bench(&spec, "e2e", &args)?;
            e2e_plot::plot(
                &cargo::target_dir().join("bench/e2e.json"),
                &cargo::target_dir().join("bench/e2e.png"),
            )
        }
        Cmd::Bench { bench: HostBench::Ring } => host_bench("ring", true),
        Cmd::Bench { bench: HostBench::Hotmap } => host_bench("hotmap", false),
        Cmd::Bench { bench: HostBench::Samples } => host_bench("samples", true),
        Cmd::Bench { bench: HostBench::Replay } => host_bench("replay", false),
        Cmd::Bench { bench: HostBench::Btf } => host_bench("btf", false),
    }
}

fn test_all(spec: &BoxSpec) -> Result<()> {
    deps::ensure()?;
    run(cargo::cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    if !is_root() {
        anyhow::bail!(
            "the host tests load BPF programs and the box needs nothing else: run `sudo cargo xtask test`"
        );
    }
    // Root-only tests skip for other users; here they must run.
    run(cargo::cargo().args(["test", "--workspace"]).env("HOTPAGE_ROOT_TESTS", "1"))?;
    // The golden Prometheus text, through a real parser.
    let golden = cargo::workspace_root().join("tests/golden/metrics.prom");
    python_tools::check_prometheus(&[&golden])?;
    vm::kernel::ensure()?;
    vm_test(spec, &[])?;
    // And what the daemon wrote in the box (its textfile, sent back in /results).
    let live = cargo::target_dir().join("vm/test/results/live-metrics.prom");
    anyhow::ensure!(live.exists(), "the box tests returned no {}", live.display());
    python_tools::check_prometheus(&[&live])?;
    // And the daemon's recording, replayed here: the same READY decisions.
    let recording = cargo::target_dir().join("vm/test/results/daemon.hprec");
    anyhow::ensure!(recording.exists(), "the box tests returned no {}", recording.display());
    let hotpage = build_bins("hotpage-user", &["hotpage"], false)?.remove(0);
    run(std::process::Command::new(&hotpage)
        .arg("replay")
        .arg(&recording)
        .args(["--as-recorded", "--expect-live"]))?;
    // The end-to-end benchmark in its short form: correctness facts only
    // (hotpage brings the hot set to node 0; observe-only moves nothing).
    vm_bench(spec, "e2e", &["--short", "--fast-scan"])?;
    // And its recording of hotpage, replayed here with the simulated
    // promoter and as recorded: the run's own precision and hot set back.
    let bench = cargo::target_dir().join("bench");
    replay_fidelity::check(&hotpage, &bench.join("e2e.json"), &bench.join("e2e"))?;
    // `vm run` with a program that exits at once, and with a real one.
    vm_run::vm_run(spec, 5, "", &["/bin/true".into()])?;
    let workload = build_bins("hotpage-tests", &["hotpage-workload"], false)?.remove(0);
    let args = ["hot-set", "--size-mib", "32", "--hot-mib", "8", "--seconds", "15"];
    let program: Vec<String> =
        std::iter::once(workload.display().to_string()).chain(args.iter().map(|a| (*a).to_owned())).collect();
    vm_run::vm_run(spec, 20, "", &program)?;
    // The Debian package: contents, control, lintian, and the packaged binary in the box.
    package::package(Some(spec)).map(|_| ())
}

fn vm_test(spec: &BoxSpec, filter: &[String]) -> Result<()> {
    // Results of an earlier run must not pass for this one's.
    let _ = std::fs::remove_dir_all(cargo::target_dir().join("vm/test/results"));
    let hotpage = build_bins("hotpage-user", &["hotpage"], false)?.remove(0);
    let tests = build_test("hotpage-tests", "vm")?;
    let workload = build_bins("hotpage-tests", &["hotpage-workload"], false)?.remove(0);
    let filter: Vec<String> = filter.iter().map(|f| sh_quote(f)).collect();
    let script = format!(
        "set -e\n\
         echo \"box: Linux $(uname -r), nodes $(cat /sys/devices/system/node/online), $(ls /sys/devices/virtual/memory_tiering | grep memory_tier | tr '\\n' ' ')\"\n\
         export HOTPAGE_BIN=/bin/hotpage HOTPAGE_WORKLOAD=/bin/hotpage-workload RUST_BACKTRACE=1\n\
         /bin/hotpage-vm-tests --test-threads=1 {}\n",
        filter.join(" ")
    );
    let payload = Payload {
        binaries: vec![
            (hotpage, "/bin/hotpage".into()),
            (tests, "/bin/hotpage-vm-tests".into()),
            (workload, "/bin/hotpage-workload".into()),
        ],
        files: Vec::new(),
        script,
    };
    // The box tests hot-add a DIMM: this boot has the slots and the room.
    let spec = BoxSpec { hotplug: true, ..spec.clone() };
    let outcome = vm::run("test", &payload, &spec)?;
    vm::expect_success(&outcome, "the box tests")
}

/// Does this machine have a lower memory tier (a CPU-less node in a slower tier)?
fn has_lower_tier() -> bool {
    let Ok(tiers) = std::fs::read_dir("/sys/devices/virtual/memory_tiering") else { return false };
    tiers.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("memory_tier")).count() > 1
}

fn demo(spec: &BoxSpec, seconds: u32) -> Result<()> {
    deps::ensure()?;
    if !has_lower_tier() {
        eprintln!("xtask: this machine has one memory tier; running the main job in the emulated CXL box");
        return vm_demo(spec, seconds);
    }
    if !is_root() {
        anyhow::bail!("hotpage loads BPF programs: run `sudo cargo xtask demo`");
    }
    let hotpage = build_bins("hotpage-user", &["hotpage"], true)?.remove(0);
    let workload = build_bins("hotpage-tests", &["hotpage-workload"], true)?.remove(0);
    let node = std::fs::read_dir("/sys/devices/virtual/memory_tiering")?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("memory_tier"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("nodelist")).ok())
        .last()
        .and_then(|l| l.trim().split([',', '-']).next().map(str::to_owned))
        .unwrap_or_else(|| "1".into());
    eprintln!("xtask: lower memory tier found (node {node}); running the main job here for {seconds} s");
    let script = demo_script(&hotpage.to_string_lossy(), &workload.to_string_lossy(), &node, seconds, "/tmp");
    run(std::process::Command::new("sh").arg("-c").arg(script))
}

/// The main job: a workload with its memory on a lower-tier node and a hot
/// subset, `hotpage run` promoting it, `hotpage stats` before and after, and
/// the share of the hot set on node 0 at the end.
fn demo_script(hotpage: &str, workload: &str, node: &str, seconds: u32, tmp: &str) -> String {
    let (h, w) = (sh_quote(hotpage), sh_quote(workload));
    let stats_at = (seconds / 2).max(3);
    format!(
        "set -e\n\
         echo '== nodes and memory tiers'\n\
         {h} nodes\n\
         echo '== workload: 64 MiB placed on node {node}, 90% of its updates to a 16 MiB hot set, {seconds} s'\n\
         {w} hot-set --node {node} --size-mib 64 --hot-mib 16 --seconds {seconds} --truth {tmp}/hotpage-demo-truth.json &\n\
         W=$!\n\
         while [ ! -s {tmp}/hotpage-demo-truth.json ]; do sleep 0.2; done\n\
         echo '== hotpage run (NUMA-balancing scans sped up as in the box tests; restored at exit)'\n\
         {h} -v run --scan-delay-ms 0 --scan-period-min-ms 100 --scan-period-max-ms 1000 &\n\
         D=$!\n\
         until {h} stats >/dev/null 2>&1; do sleep 0.2; done\n\
         echo '== hotpage stats, at the start'\n\
         {h} stats\n\
         sleep {stats_at}\n\
         echo '== hotpage stats, {stats_at} s later'\n\
         {h} stats\n\
         echo '== hotpage top'\n\
         {h} top\n\
         wait $W\n\
         echo '== hotpage stats, at the end'\n\
         {h} stats\n\
         kill -TERM $D\n\
         wait $D\n\
         echo '== hotpage stopped: kernel settings restored'\n"
    )
}

fn vm_demo(spec: &BoxSpec, seconds: u32) -> Result<()> {
    let hotpage = build_bins("hotpage-user", &["hotpage"], false)?.remove(0);
    let workload = build_bins("hotpage-tests", &["hotpage-workload"], false)?.remove(0);
    let script = demo_script("/bin/hotpage", "/bin/hotpage-workload", "1", seconds, "/tmp");
    let payload = Payload {
        binaries: vec![(hotpage, "/bin/hotpage".into()), (workload, "/bin/hotpage-workload".into())],
        files: Vec::new(),
        script,
    };
    let outcome = vm::run("demo", &payload, spec)?;
    vm::expect_success(&outcome, "the demo")
}

/// Runs `hotpage-bench <name>` in the box and copies its JSON to target/bench/.
fn vm_bench(spec: &BoxSpec, name: &str, args: &[&str]) -> Result<()> {
    let mut bins = build_bins("hotpage-tests", &["hotpage-bench", "hotpage-workload"], true)?;
    let hotpage = build_bins("hotpage-user", &["hotpage"], true)?.remove(0);
    let args: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    let script = format!(
        "set -e\nexport HOTPAGE_BIN=/bin/hotpage HOTPAGE_WORKLOAD=/bin/hotpage-workload\n\
         /bin/hotpage-bench {name} --out /results/{name}.json {}\n",
        args.join(" ")
    );
    let workload = bins.remove(1);
    let bench = bins.remove(0);
    let payload = Payload {
        binaries: vec![
            (bench, "/bin/hotpage-bench".into()),
            (workload, "/bin/hotpage-workload".into()),
            (hotpage, "/bin/hotpage".into()),
        ],
        files: Vec::new(),
        script,
    };
    let outcome = vm::run(&format!("bench-{name}"), &payload, spec)?;
    vm::expect_success(&outcome, &format!("bench {name}"))?;
    let (_, data) = outcome
        .results
        .iter()
        .find(|(n, _)| n == &format!("{name}.json"))
        .ok_or_else(|| anyhow::anyhow!("the box returned no {name}.json"))?;
    let out = cargo::target_dir().join("bench").join(format!("{name}.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, data)?;
    eprintln!("xtask: results in {}", out.display());
    // What else the bench sent (the e2e runs' recordings and ground truths).
    let others: Vec<_> = outcome.results.iter().filter(|(n, _)| n != &format!("{name}.json")).collect();
    if !others.is_empty() {
        let dir = cargo::target_dir().join("bench").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        for (n, data) in &others {
            let safe: String =
                n.chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
            std::fs::write(dir.join(safe), data)?;
        }
        eprintln!("xtask: {} more files (recordings, ground truths) in {}", others.len(), dir.display());
    }
    Ok(())
}

fn host_bench(name: &str, needs_root: bool) -> Result<()> {
    if needs_root && !is_root() {
        anyhow::bail!("benchmarks load BPF programs: run `sudo cargo xtask bench {name}`");
    }
    let bench = build_bins("hotpage-tests", &["hotpage-bench"], true)?.remove(0);
    let out = cargo::target_dir().join("bench").join(format!("{name}.json"));
    run(std::process::Command::new(bench).arg(name).arg("--out").arg(out))
}
