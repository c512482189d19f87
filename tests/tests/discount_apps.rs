//! Real programs under Discount Checking on the Rio store in the guest, surviving kernel
//! panics (issue 14: "a kernel panic at a random point in the guest on the Rio store"):
//! Debian's unmodified nvi (the thesis's own benchmark) and sc (the curses Spreadsheet
//! Calculator), `dc run --store rio:<prefix>` with their files and Discount Checking's state
//! on riofs (`dc-fs`), each on a pseudo-terminal in the guest typed into by `dc-drive`
//! with the same session as the host crash tests (`dc_drive::apps`).
//!
//! The crash is a kernel panic, planned like the host tests' SIGKILLs (after a seeded
//! random input, plus a random delay): `dc-drive --panic-after` stops the program where it
//! is, takes in all it wrote (the terminal is in the failing machine too; a terminal
//! outside it would have shown every write that returned) and panics the kernel. After
//! the warm reboot rio.ko's recovery brings the arena back, riofs is mounted again and
//! `dc-drive` runs the same `dc run` command again: it types whatever the program's trace
//! says the program has not read yet.
//!
//! The oracle, on the host, against a failure-free run of the plain program in the same
//! guest: the files the program left (and its own directories) equal byte for byte; the
//! screens before the last input and at the end, rebuilt by feeding each run's output to
//! one emulated terminal (`vt100`) as a user's window would show them, equal;
//! `discount::oracle::check_resumed` on each run's output and trace (every run after a
//! panic resumed the last checkpoint instead of starting over, output with repetition
//! only); the trace keeps the commit invariant; one recovery per panic.
//!
//! `make test` runs one protocol per program; `RIO_TEST_LONG=1` (make test-long) all five.

use std::path::Path;
use std::time::Duration;

use dc_drive::apps::{App, Driver, NVI, SC};
use discount::oracle;
use rio_prng::Rng;
use rio_qemu_tests::*;

/// Where `dc-fs` mounts riofs.
const MNT: &str = "/mnt/dc";

/// What the guest's kernel log says when a `dc-drive` that should have panicked the kernel
/// ended instead.
const DRIVE_ENDED: &str = "dc-drive ended with status";

/// Discount Checking's sizes in the guest, instead of the host tests' `dc_drive::apps::DC_ENV`
/// (64 MiB of heap): every byte of a Rio object is resident, and the guest's arena (64 MiB)
/// also holds riofs (`dc-fs`).
const GUEST_DC_ENV: &[(&str, &str)] = &[("DC_HEAP_MB", "16"), ("DC_LOG_MB", "4")];

/// The size of the riofs `dc-fs` mounts (files, state directory, driver's output).
const DC_FS_SIZE: &str = "24M";

/// Longest one run may take in the guest (TCG, the fast kernel).
const RUN_TIMEOUT: Duration = Duration::from_secs(400);

fn plan_rng(test: &str) -> Rng {
    let seed = rio_prng::seed_from_env(
        "DC_TEST_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    eprintln!("{test}: crash-plan seed {seed} (DC_TEST_SEED={seed} reproduces it)");
    Rng::new(seed)
}

/// Boots a guest whose initramfs has the Discount Checking add-on appended (dc, dc-drive,
/// nvi, sc and their libraries: qemu/mkinitramfs.sh builds it).
fn boot_dc(name: &str) -> TestVm {
    let (mut cfg, dir) = config(name);
    with_addon(
        &mut cfg,
        &dir,
        "dc",
        "install nvi and sc (make setup) and rebuild the initramfs (make initramfs, which \
         builds dc and dc-drive)",
    );
    let vm = Vm::start(cfg).unwrap_or_else(|e| panic!("boot failed: {e}"));
    let t = test_vm(vm, dir);
    t.allow_crash();
    t
}

/// Loads rio.ko (recovery after a crash), formats a blank arena, mounts riofs and the
/// pseudo-terminal file system.
fn load(vm: &mut Vm) {
    load_rio_and_dc_fs(vm, DC_FS_SIZE);
    sh(
        vm,
        "mkdir -p /dev/pts && (grep -q ' /dev/pts ' /proc/mounts || mount -t devpts devpts /dev/pts)",
    );
}

fn fetch_num(vm: &mut Vm, path: &str) -> Option<usize> {
    let r = vm.run(&format!("cat {path} 2>/dev/null")).unwrap();
    r.stdout_str().trim().parse().ok()
}

/// Copies the host directory `from` (files and subdirectories) to `to` in the guest.
fn put_tree(vm: &mut Vm, from: &Path, to: &str) {
    sh(vm, &format!("mkdir -p {to}"));
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let guest = format!("{to}/{name}");
        if e.path().is_dir() {
            put_tree(vm, &e.path(), &guest);
        } else {
            let bytes = std::fs::read(e.path()).unwrap();
            put_file(vm, &guest, &bytes);
        }
    }
}

/// Writes `bytes` to `path` in the guest (through base64, so any bytes survive the shell).
fn put_file(vm: &mut Vm, path: &str, bytes: &[u8]) {
    let b64 = base64(bytes);
    sh(vm, &format!("base64 -d > {path} <<'EOF'\n{b64}\nEOF"));
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for (i, c) in b.chunks(3).enumerate() {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                s.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
        if i % 19 == 18 {
            s.push('\n');
        }
    }
    s
}

/// The digests of the files directly in `dir` in the guest (sorted by name; hidden files
/// included), for comparing two directories.
fn digests(vm: &mut Vm, dir: &str) -> String {
    sh(
        vm,
        &format!("cd {dir} && for f in .[!.]* *; do [ -f \"$f\" ] && md5sum \"$f\"; done | sort -k 2; true"),
    )
}

/// The `dc-drive` command line for one run of `app` in `dir`, its bookkeeping in
/// `out` (see dc-drive's documentation), and after `dc run` with `dc_args` if given.
fn drive_line(
    app: &App,
    dir: &str,
    out: &str,
    dc: Option<(&str, &str)>,
    panic_after: Option<(usize, u64)>,
) -> String {
    let Driver::Screen(pacing) = app.driver else {
        panic!("{} is not a full-screen program", app.name);
    };
    let pacing = match pacing {
        dc_drive::Pacing::Bursts => "bursts",
        dc_drive::Pacing::Bytes => "bytes",
    };
    let env: String = (app.env)(Path::new(dir))
        .iter()
        .map(|(k, v)| format!(" --env '{k}={v}'"))
        .collect();
    let args = app.args.join(" ");
    let (trace, cmd) = match dc {
        None => (String::new(), format!("{} {args}", app.binary)),
        Some((state, protocol)) => (
            format!(" --trace {state}/trace"),
            format!(
                "dc run --protocol {protocol} --store rio:{} --dir {state} --trace --log {MNT}/{}.dclog -- {} {args}",
                app.name, app.name, app.binary
            ),
        ),
    };
    let panic = panic_after
        .map(|(i, d)| format!(" --panic-after {i}:{d}"))
        .unwrap_or_default();
    let dc_env: String = GUEST_DC_ENV
        .iter()
        .map(|(k, v)| format!(" --env {k}={v}"))
        .collect();
    format!(
        "dc-drive --session {MNT}/{}.session.json --pacing {pacing} --out {out} --cwd {dir} \
         --timeout {}{env}{dc_env}{trace}{panic} -- {cmd} 2>> {MNT}/{}.drive.err",
        app.name,
        RUN_TIMEOUT.as_secs() - 10,
        app.name
    )
}

/// What the runs of one session showed: each run's output and where the last input was
/// about to be typed.
struct Shown {
    outs: Vec<Vec<u8>>,
    /// (run, offset in its output) when the last input was about to be typed.
    before_last: Option<(usize, usize)>,
}

fn shown(vm: &mut Vm, out: &str, runs: usize) -> Shown {
    let mut outs = Vec::new();
    let mut before_last = None;
    for n in 1..=runs {
        outs.push(fetch(vm, &format!("{out}/out.{n}")));
        if let Some(b) = fetch_num(vm, &format!("{out}/before-last.{n}")) {
            before_last = Some((n - 1, b));
        }
    }
    Shown { outs, before_last }
}

/// The screens a user's window shows: before the last input, and at the end.
fn screens(s: &Shown) -> (String, String) {
    let mut p = vt100::Parser::new(dc_drive::ROWS, dc_drive::COLS, 0);
    let mut before = String::new();
    for (k, o) in s.outs.iter().enumerate() {
        match s.before_last {
            Some((r, at)) if r == k => {
                p.process(&o[..at.min(o.len())]);
                before = show(p.screen());
                p.process(&o[at.min(o.len())..]);
            }
            _ => p.process(o),
        }
    }
    (before, show(p.screen()))
}

fn show(s: &vt100::Screen) -> String {
    format!(
        "{}\n[cursor {:?}, alternate screen {}]",
        s.contents(),
        s.cursor_position(),
        s.alternate_screen()
    )
}

/// One crash test: `app` under `protocol`, `crashes` kernel panics.
fn app_survives_panics(app: &App, protocol: &str, crashes: usize) {
    let test = format!("{}-{protocol}", app.name);
    let mut rng = plan_rng(&test);
    let mut t = boot_dc(&format!("dc-apps-{test}"));
    let vm = t.vm();
    load(vm);
    // The session and the starting files, from the one definition the host tests use.
    let inputs = app.inputs();
    let json = format!(
        "[{}]",
        inputs
            .iter()
            .map(|s| json_string(s))
            .collect::<Vec<_>>()
            .join(",")
    );
    put_file(
        vm,
        &format!("{MNT}/{}.session.json", app.name),
        json.as_bytes(),
    );
    let seed = tempfile::tempdir().unwrap();
    (app.setup)(seed.path()).unwrap();
    let (refd, rund, state) = (
        format!("{MNT}/{}.ref", app.name),
        format!("{MNT}/{}.run", app.name),
        format!("{MNT}/{}.state", app.name),
    );
    put_tree(vm, seed.path(), &refd);
    put_tree(vm, seed.path(), &rund);

    // The failure-free run: the plain program.
    let refout = format!("{MNT}/{}.refout", app.name);
    let r = vm
        .run_timeout(&drive_line(app, &refd, &refout, None, None), RUN_TIMEOUT)
        .unwrap();
    let errs = |vm: &mut Vm| {
        String::from_utf8_lossy(
            &vm.run(&format!(
                "cat {MNT}/{0}.drive.err {MNT}/{0}.dclog 2>/dev/null",
                app.name
            ))
            .map(|r| r.stdout)
            .unwrap_or_default(),
        )
        .into_owned()
    };
    assert_eq!(r.status, 0, "{test}: the failure-free run: {}", errs(vm));
    let reference = shown(vm, &refout, 1);

    // The runs under Discount Checking: a panic after each planned input.
    let mut plan: Vec<(usize, u64)> = Vec::new();
    while plan.len() < crashes {
        let k = rng.below(inputs.len() as u64 - 2) as usize;
        if !plan.iter().any(|&(x, _)| x == k) {
            plan.push((k, rng.below(40)));
        }
    }
    plan.sort();
    eprintln!("{test}: kernel panics after inputs {plan:?}");
    let runout = format!("{MNT}/{}.runout", app.name);
    let mut trace_at = Vec::new();
    for (n, &p) in plan.iter().enumerate() {
        let panics = vm.console().matches("Kernel panic").count();
        let ends = vm.console().matches(DRIVE_ENDED).count();
        // If dc-drive ends without panicking the kernel, it says so on the console (through
        // the kernel log) and the test fails at once with its messages.
        vm.spawn(&format!(
            "{}; echo \"{DRIVE_ENDED} $?\" > /dev/kmsg",
            drive_line(app, &rund, &runout, Some((&state, protocol)), Some(p))
        ))
        .unwrap();
        let deadline = std::time::Instant::now() + RUN_TIMEOUT;
        loop {
            let console = vm.console();
            if console.matches("Kernel panic").count() > panics {
                break;
            }
            if console.matches(DRIVE_ENDED).count() > ends {
                let shown = fetch(vm, &format!("{runout}/out.{}", n + 1));
                panic!(
                    "{test}: run {}: dc-drive ended without the planned kernel panic:\n{}\n\
                     what the program showed:\n{}",
                    n + 1,
                    errs(vm),
                    String::from_utf8_lossy(&shown)
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{test}: run {}: no kernel panic within {RUN_TIMEOUT:?}:\n{}\n{}",
                n + 1,
                vm.console_tail(30),
                errs(vm)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        vm.wait_reboot(Duration::from_secs(120)).unwrap();
        load(vm);
        trace_at.push(fetch_num(vm, &format!("{runout}/trace-at.{}", n + 1)).unwrap_or(0));
    }
    let last = crashes + 1;
    let r = vm
        .run_timeout(
            &drive_line(app, &rund, &runout, Some((&state, protocol)), None),
            RUN_TIMEOUT,
        )
        .unwrap();
    assert_eq!(r.status, 0, "{test}: run {last}: {}", errs(vm));
    trace_at.push(fetch_num(vm, &format!("{runout}/trace-at.{last}")).unwrap_or(0));
    let runs = shown(vm, &runout, last);
    let trace_bytes = fetch(vm, &format!("{state}/trace"));
    let log = errs(vm);

    // Each run's part of the trace.
    let mut traces = Vec::new();
    for k in 0..last {
        let from = trace_at[k].min(trace_bytes.len());
        let to = trace_at
            .get(k + 1)
            .copied()
            .unwrap_or(trace_bytes.len())
            .min(trace_bytes.len());
        traces.push(
            oracle::parse(&String::from_utf8_lossy(&trace_bytes[from..to.max(from)]))
                .unwrap_or_else(|e| panic!("{test}: the trace does not parse: {e}")),
        );
    }
    let (ref_before, ref_end) = screens(&reference);
    let (before, end) = screens(&runs);
    let evidence = format!(
        "log:\n{log}\nreference screen before the last input:\n{ref_before}\nscreen before the last input:\n{before}"
    );
    // The files.
    for d in std::iter::once("").chain(app.dirs.iter().copied()) {
        let (a, b) = (
            digests(vm, &format!("{rund}/{d}")),
            digests(vm, &format!("{refd}/{d}")),
        );
        assert!(
            !b.is_empty() || !d.is_empty(),
            "{test}: the failure-free run left no file"
        );
        assert_eq!(
            a, b,
            "{test}: the files in {d}/ differ from the failure-free run's\n{evidence}"
        );
    }
    assert_eq!(
        before, ref_before,
        "{test}: the screen before the last input differs\n{evidence}"
    );
    assert_eq!(end, ref_end, "{test}: the final screen differs\n{evidence}");
    // Resumed, not restarted.
    let recs: Vec<oracle::RunRecord<'_>> = runs
        .outs
        .iter()
        .zip(&traces)
        .enumerate()
        .map(|(k, (out, trace))| oracle::RunRecord {
            out,
            trace,
            killed: k + 1 < last,
        })
        .collect();
    let m = oracle::check_resumed(&recs, &reference.outs[0], 1)
        .unwrap_or_else(|e| panic!("{test}: {e}\n{evidence}"));
    assert_eq!(m.recoveries, crashes, "{test}: recoveries\n{evidence}");
    let all: Vec<oracle::Event> = traces.concat();
    let bad = oracle::check_one(&all);
    assert!(bad.is_empty(), "{test}: commit invariant violated: {bad:?}");
    let objs = sh(vm, "rio ls");
    assert!(
        objs.contains(&format!("{}.log.vista", app.name)),
        "{test}: not on the Rio store: {objs}"
    );
    eprintln!(
        "{test}: {last} runs, resumed {:?} at bytes {:?}, repeated {:?}, {:?}",
        m.resumed,
        m.output.starts,
        m.output.repeated,
        oracle::counts(&all)
    );
}

fn json_string(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                o.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn protocols() -> &'static [&'static str] {
    if std::env::var_os("RIO_TEST_LONG").is_some() {
        &["cpvs", "cand", "cbndvs", "cand-log", "cbndvs-log"]
    } else {
        &[]
    }
}

#[test]
fn nvi_on_rio_survives_kernel_panics() {
    app_survives_panics(&NVI, "cpvs", 2);
    for p in protocols().iter().filter(|&&p| p != "cpvs") {
        app_survives_panics(&NVI, p, 2);
    }
}

#[test]
fn sc_on_rio_survives_kernel_panics() {
    app_survives_panics(&SC, "cbndvs-log", 2);
    for p in protocols().iter().filter(|&&p| p != "cbndvs-log") {
        app_survives_panics(&SC, p, 2);
    }
}
