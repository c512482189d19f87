//! Discount Checking on the Rio backend in the guest: a program whose checkpoint image is
//! in Rio objects (`DC_STORE=rio:<prefix>`) and whose files are on riofs (`dc-fs`)
//! survives a kernel panic. The guest panics at a
//! random point of the run, warm-reboots, reloads rio.ko (recovery), and the program is
//! started again: it resumes from its last checkpoint, and the output of all its runs
//! together must equal a failure-free run's except that output may be repeated (the
//! thesis's Definition 2), every run after a crash must have recovered the last committed
//! checkpoint and continued the output exactly where it left it, not started over (both
//! judged by `discount::oracle::check_resumed` on each run's output and trace, as the host
//! crash tests do), it must leave the same files, and its event trace must satisfy the
//! commit invariant (Theorem 2).
//!
//! The last test runs the same with the image in plain files on tmpfs (the file store):
//! the panic loses it, the program starts over (on the files its first run left), and
//! the same check fails, so the check can tell a survived crash from a lost state. It
//! also shows the Rio store's errors: no rio.ko, a state directory not on riofs (or `-o sync`),
//! an image too big for the arena.
//!
//! Crash points are random; the seed is printed (`DC_TEST_SEED=n` reproduces a plan).

use std::time::{Duration, Instant};

use discount::oracle;
use rio_prng::Rng;
use rio_qemu_tests::*;

/// Where `dc-fs` mounts riofs.
const MNT: &str = "/mnt/dc";

/// Longest a whole program run may take in the guest.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The crash plan's generator for `test`: seeded from DC_TEST_SEED, else the clock, and
/// the seed printed so that a failing plan can be rerun.
fn plan_rng(test: &str) -> Rng {
    let seed = std::env::var("DC_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: crash-plan seed {seed} (DC_TEST_SEED={seed} reproduces it)");
    Rng::new(seed)
}

/// Loads rio.ko (recovery after a crash), formats a blank arena, mounts the Rio file
/// system.
fn load(vm: &mut Vm) {
    load_rio_and_dc_fs(vm, "");
}

/// Panics the guest kernel and waits for the warm reboot (see `vista_rio.rs`: the trigger
/// waits so that the agent's reply leaves first).
fn crash_by_panic(vm: &mut Vm) {
    vm.spawn("sleep 0.2; echo c > /proc/sysrq-trigger").unwrap();
    vm.wait_console("Kernel panic", Duration::from_secs(30))
        .unwrap();
    vm.wait_reboot(Duration::from_secs(120)).unwrap();
}

/// Polls until `path` holds at least `lines` newlines, at most `timeout`.
fn wait_lines(vm: &mut Vm, path: &str, lines: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let s = vm
            .run(&format!("cat {path} 2>/dev/null"))
            .unwrap()
            .stdout_str();
        if s.matches('\n').count() >= lines {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never reached {lines} lines in {timeout:?}:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A demo program as the tests run it in the guest.
struct Program {
    /// Its directory under [`MNT`] (working directory); also names its files there:
    /// `<name>.out.<run>`, `<name>.err`, `<name>.state/` (`DC_DIR`).
    name: &'static str,
    /// Command line.
    cmd: &'static str,
    /// Discount Checking's environment (`DC_DIR` is added).
    env: String,
    /// Standard input, if any.
    stdin: Option<String>,
}

impl Program {
    fn state_dir(&self) -> String {
        format!("{MNT}/{}.state", self.name)
    }

    /// Where the runs' event trace goes: `DC_TRACE=<path>` in the environment, or
    /// `DC_TRACE=1`'s `<state dir>/trace`.
    fn trace_path(&self) -> String {
        match self
            .env
            .split_whitespace()
            .find_map(|w| w.strip_prefix("DC_TRACE="))
        {
            Some("1") | None => format!("{}/trace", self.state_dir()),
            Some(path) => path.to_string(),
        }
    }

    /// The shell command of run `n` (output to `<name>.out.<n>`).
    fn line(&self, n: usize, dir: &str, env: &str) -> String {
        let stdin = self
            .stdin
            .as_deref()
            .map(|p| format!("< {p}"))
            .unwrap_or_default();
        format!(
            "cd {dir} && exec env {env} {} {stdin} > {MNT}/{}.out.{n} 2>> {MNT}/{}.err",
            self.cmd, self.name, self.name
        )
    }

    fn run_line(&self, n: usize) -> String {
        let env = if self.env.contains("DC_DIR=") {
            self.env.clone()
        } else {
            format!("DC_DIR={} {}", self.state_dir(), self.env)
        };
        self.line(n, &format!("{MNT}/{}", self.name), &env)
    }

    fn err(&self, vm: &mut Vm) -> String {
        vm.run(&format!("cat {MNT}/{}.err", self.name))
            .map(|r| r.stdout_str())
            .unwrap_or_default()
    }
}

/// Runs `p` without Discount Checking (`DC_DISABLE=1`) in `<MNT>/ref`: the failure-free
/// output and files.
fn reference(vm: &mut Vm, p: &Program) -> Vec<u8> {
    sh(vm, &format!("mkdir -p {MNT}/ref {MNT}/{}", p.name));
    let r = vm
        .run_timeout(
            &p.line(0, &format!("{MNT}/ref"), "DC_DISABLE=1"),
            RUN_TIMEOUT,
        )
        .unwrap();
    assert_eq!(r.status, 0, "reference run: {}", p.err(vm));
    fetch(vm, &format!("{MNT}/{}.out.0", p.name))
}

/// One run: what it wrote to stdout and the events it appended to the trace.
struct Run {
    out: Vec<u8>,
    trace: Vec<oracle::Event>,
}

/// The events appended to the trace file `path` since byte `*seen` (none if it does not
/// exist), moving `*seen` to its end.
fn trace_since(vm: &mut Vm, path: &str, seen: &mut usize) -> Vec<oracle::Event> {
    let r = vm.run(&format!("cat {path} 2>/dev/null")).unwrap();
    let tail = r.stdout.get(*seen..).unwrap_or(&[]).to_vec();
    *seen = r.stdout.len().max(*seen);
    oracle::parse(&String::from_utf8_lossy(&tail))
        .unwrap_or_else(|e| panic!("the trace {path} does not parse: {e}"))
}

/// Runs `p` under Discount Checking and panics the kernel once for each entry of
/// `crash_after` (after that many more output lines of the current run, plus a random
/// moment), reloading rio.ko and starting `p` again after each crash; the last run goes
/// to the end. Returns every run's output and trace.
fn run_with_panics(vm: &mut Vm, p: &Program, crash_after: &[usize], rng: &mut Rng) -> Vec<Run> {
    let trace = p.trace_path();
    let mut seen = 0;
    let mut runs = Vec::new();
    for (i, &lines) in crash_after.iter().enumerate() {
        let n = i + 1;
        vm.spawn(&p.run_line(n)).unwrap();
        let out = format!("{MNT}/{}.out.{n}", p.name);
        wait_lines(vm, &out, lines, RUN_TIMEOUT);
        std::thread::sleep(Duration::from_millis(rng.range(0, 300)));
        eprintln!("{}: run {n}: kernel panic after {lines}+ lines", p.name);
        crash_by_panic(vm);
        load(vm);
        runs.push(Run {
            out: fetch(vm, &out),
            trace: trace_since(vm, &trace, &mut seen),
        });
    }
    let n = crash_after.len() + 1;
    let r = vm.run_timeout(&p.run_line(n), RUN_TIMEOUT).unwrap();
    assert_eq!(r.status, 0, "run {n} after the crashes: {}", p.err(vm));
    runs.push(Run {
        out: fetch(vm, &format!("{MNT}/{}.out.{n}", p.name)),
        trace: trace_since(vm, &trace, &mut seen),
    });
    runs
}

/// The check, `discount::oracle::check_resumed` (shared with the host crash tests): the
/// runs' outputs together are the failure-free output with at most some repetition
/// (Definition 2), every run but the last was killed before it finished, every run after a
/// crash recovered the last committed checkpoint instead of starting over, and its output
/// begins exactly where that checkpoint left it. Returns the bytes each resumed run
/// repeated.
fn check_resumed(runs: &[Run], reference: &[u8]) -> Result<Vec<usize>, String> {
    let recs: Vec<oracle::RunRecord<'_>> = runs
        .iter()
        .enumerate()
        .map(|(k, r)| oracle::RunRecord {
            out: &r.out,
            trace: &r.trace,
            killed: k + 1 < runs.len(),
        })
        .collect();
    let m = oracle::check_resumed(&recs, reference, 1).map_err(|e| e.to_string())?;
    if m.recoveries != runs.len() - 1 {
        return Err(format!(
            "{} recoveries in {} runs after a crash",
            m.recoveries,
            runs.len() - 1
        ));
    }
    Ok(m.output.repeated)
}

fn show(runs: &[Run], reference: &[u8]) -> String {
    format!(
        "reference:\n{}\nruns:\n{}",
        String::from_utf8_lossy(reference),
        runs.iter()
            .map(|r| String::from_utf8_lossy(&r.out).into_owned())
            .collect::<Vec<_>>()
            .join("\n--- kernel panic ---\n")
    )
}

/// The event trace (`DC_TRACE=1`) satisfies the commit invariant and shows one recovery
/// per crash.
fn check_trace(vm: &mut Vm, p: &Program, crashes: usize) {
    let text =
        String::from_utf8_lossy(&fetch(vm, &format!("{}/trace", p.state_dir()))).into_owned();
    let trace = oracle::parse(&text).unwrap();
    let bad = oracle::check_one(&trace);
    assert!(bad.is_empty(), "commit invariant violated: {bad:?}");
    let c = oracle::counts(&trace);
    assert_eq!(c.recoveries, crashes, "recoveries in the trace: {c:?}");
    eprintln!("{}: trace {c:?}", p.name);
}

/// The files a directory under [`MNT`] holds, with their digests.
fn files(vm: &mut Vm, dir: &str) -> String {
    sh(vm, &format!("cd {MNT}/{dir} && md5sum * | sort -k 2"))
}

/// The key-value shell's input: commands on keys, values and files, clock reads, and
/// busy work (`burn`) so that a run lasts a few seconds under TCG.
fn kv_script() -> String {
    let cmds = [
        "set a 1",
        "set b 22",
        "get a",
        "journal first entry",
        "save snap.txt",
        "set c 333",
        "append notes.txt alpha",
        "time",
        "get b",
        "del a",
        "list",
        "append notes.txt beta",
        "cat notes.txt",
        "save snap.txt",
        "set d 4",
        "mv notes.txt notes2.txt",
        "cat notes2.txt",
        "rm snap.txt",
        "cat snap.txt",
        "load snap.txt",
        "journal second",
        "sum",
        "time",
        "set e 5",
        "save snap2.txt",
        "load snap2.txt",
        "count",
        "del b",
        "list",
        "append notes2.txt gamma",
        "cat notes2.txt",
        "time",
        "sum",
    ];
    let mut s = String::new();
    for (i, c) in cmds.iter().enumerate() {
        s.push_str(c);
        s.push('\n');
        if i % 2 == 1 {
            s.push_str(&format!("set k{i} {}\nburn 400\n", i * 7));
        }
    }
    s.push_str("quit\n");
    s
}

/// Sets up the key-value shell: its input on the Rio file system, and the failure-free
/// run. Returns the program and its reference output.
fn kv_setup(vm: &mut Vm, env: &str) -> (Program, Vec<u8>) {
    sh(
        vm,
        &format!("cat > {MNT}/kv.in <<'EOF'\n{}EOF", kv_script()),
    );
    let p = Program {
        name: "kv",
        cmd: "dc-kv",
        env: env.to_string(),
        stdin: Some(format!("{MNT}/kv.in")),
    };
    let reference = reference(vm, &p);
    (p, reference)
}

#[test]
fn key_value_shell_on_rio_survives_a_kernel_panic() {
    let mut rng = plan_rng("kv");
    let mut t = boot("dc-rio-kv");
    let vm = t.vm();
    load(vm);
    let (p, reference) = kv_setup(vm, "DC_STORE=rio:kv DC_PROTOCOL=cpvs DC_TRACE=1");
    let lines = reference.iter().filter(|&&b| b == b'\n').count();
    // Somewhere in the first half of the run: the panic lands up to about half a second
    // after the line count is seen, and on an idle machine the last quarter of the run
    // can be shorter than that.
    let at = rng.range(2, (lines / 2) as u64) as usize;
    let runs = run_with_panics(vm, &p, &[at], &mut rng);
    let repeated = check_resumed(&runs, &reference)
        .unwrap_or_else(|e| panic!("{e}\n{}\nstderr:\n{}", show(&runs, &reference), p.err(vm)));
    // CPVS commits just before every output, so at most the last one is repeated.
    assert!(
        repeated.iter().all(|&r| r <= 64),
        "repeated {repeated:?} bytes"
    );
    assert_eq!(files(vm, "kv"), files(vm, "ref"), "files differ");
    check_trace(vm, &p, 1);
    let objs = sh(vm, "rio ls");
    assert!(objs.contains("kv.log.vista"), "{objs}");
    eprintln!("kv: crash after {at} lines, repeated {repeated:?} bytes");
}

#[test]
fn compute_loop_on_rio_survives_two_kernel_panics() {
    let mut rng = plan_rng("compute");
    let mut t = boot("dc-rio-compute");
    let vm = t.vm();
    load(vm);
    let p = Program {
        name: "compute",
        cmd: "dc-compute --rounds 600 --kib 256 --updates 5000 --print-every 3",
        // Commits before every output line and every 250 ms (timer): a crash between
        // two lines resumes in the middle of a round.
        env: "DC_STORE=rio:compute DC_PROTOCOL=cpvs DC_INTERVAL_MS=250 DC_TRACE=1".into(),
        stdin: None,
    };
    let reference = reference(vm, &p);
    let lines = reference.iter().filter(|&&b| b == b'\n').count();
    let first = rng.range(3, (lines / 3) as u64) as usize;
    let second = rng.range(2, (lines / 3) as u64) as usize;
    let runs = run_with_panics(vm, &p, &[first, second], &mut rng);
    let repeated = check_resumed(&runs, &reference)
        .unwrap_or_else(|e| panic!("{e}\n{}\nstderr:\n{}", show(&runs, &reference), p.err(vm)));
    check_trace(vm, &p, 2);
    eprintln!("compute: crashes after {first} and {second} lines, repeated {repeated:?} bytes");
}

#[test]
fn with_the_image_on_tmpfs_a_kernel_panic_loses_the_state_and_the_check_fails() {
    let mut rng = plan_rng("kv-tmpfs");
    let mut t = boot("dc-rio-tmpfs");
    let vm = t.vm();

    // The Rio store's errors are typed and say what to do.
    let r = vm
        .run("mkdir -p /tmp/w && cd /tmp/w && DC_STORE=rio:kv dc-kv < /dev/null")
        .unwrap();
    assert_ne!(r.status, 0);
    assert!(
        r.stderr_str().contains("the Rio store needs rio.ko")
            && r.stderr_str().contains("is rio.ko loaded?"),
        "{}",
        r.stderr_str()
    );
    load(vm);
    let r = vm
        .run("cd /tmp/w && DC_STORE=rio:kv DC_DIR=/tmp/w/state dc-kv < /dev/null")
        .unwrap();
    assert_ne!(r.status, 0);
    assert!(
        r.stderr_str()
            .contains("not on riofs or a file system mounted with -o sync"),
        "{}",
        r.stderr_str()
    );
    let r = vm
        .run(&format!(
            "cd {MNT} && DC_STORE=rio:big DC_DIR={MNT}/big DC_HEAP_MB=256 dc-kv < /dev/null"
        ))
        .unwrap();
    assert_ne!(r.status, 0);
    assert!(
        r.stderr_str().contains("the arena has no room for"),
        "{}",
        r.stderr_str()
    );
    assert!(
        !sh(vm, "rio ls").contains("big."),
        "a failed creation leaves no objects"
    );

    // The same shell with its image in plain files on tmpfs: the files it writes are on
    // Rio, its checkpoint is not.
    // Its trace goes to Rio (riofs), so that the oracle sees what run 1 did.
    let (p, reference) = kv_setup(
        vm,
        &format!("DC_DIR=/tmp/kv.state DC_PROTOCOL=cpvs DC_TRACE={MNT}/kv-tmpfs.trace"),
    );
    // Run 1 gets only the first `at` commands and then waits for input that never comes,
    // so the panic lands mid-run however fast the machine is (a run that finished first
    // would have nothing to lose). Run 2 reads the whole script.
    let commands = kv_script().lines().count();
    let at = rng.range(4, (commands / 2) as u64) as usize;
    let first = p.run_line(1).replace(&format!("< {MNT}/kv.in"), "");
    vm.spawn(&format!(
        "(head -n {at} {MNT}/kv.in; sleep 600) | ({first})"
    ))
    .unwrap();
    let out1 = format!("{MNT}/kv.out.1");
    wait_lines(vm, &out1, 2, RUN_TIMEOUT);
    std::thread::sleep(Duration::from_millis(rng.range(0, 1000)));
    eprintln!("kv: run 1: kernel panic after up to {at} commands");
    crash_by_panic(vm);
    load(vm);
    let trace = p.trace_path();
    let mut seen = 0;
    let mut runs = vec![Run {
        out: fetch(vm, &out1),
        trace: trace_since(vm, &trace, &mut seen),
    }];
    let r = vm.run_timeout(&p.run_line(2), RUN_TIMEOUT).unwrap();
    assert_eq!(r.status, 0, "run 2 after the crash: {}", p.err(vm));
    runs.push(Run {
        out: fetch(vm, &format!("{MNT}/kv.out.2")),
        trace: trace_since(vm, &trace, &mut seen),
    });
    let e = check_resumed(&runs, &reference).expect_err(&format!(
        "the check passed although the state was on tmpfs:\n{}",
        show(&runs, &reference)
    ));
    // Started over: the oracle sees run 2's fresh start after run 1's commits (with
    // files the first run left, e.g. `append`ed to, the output may even differ first).
    assert!(
        e.contains("started over") || e.contains("not a continuation"),
        "{e}"
    );
    eprintln!("kv on tmpfs: crash within {at} commands; the check fails as it must: {e}");
}
