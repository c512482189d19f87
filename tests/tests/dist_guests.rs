//! Computations of several processes under Discount Checking across guests, with a kernel
//! panic (issue 16): the two applications of the host tests (`userlib/dc/apps/heat.c`, 3
//! workers exchanging boundary cells over UDP every step; `chat.c`, a server and 3
//! clients), their members in three guests on riovm's network (10.77.0.N), each member
//! under `dc run` with a 2PC protocol, its image in its own guest's Rio arena (`--store
//! rio:`), its state directory, trace and output on riofs (`dc-fs`), and the coordinator
//! `dc coord` in guest 1 with its state file on riofs too. Command lines, the cc command
//! and the oracles are `dc_drive::dist`, the definitions the host tests use.
//!
//! Mid-run the kernel of a guest that runs members but not the coordinator panics. The
//! guest warm-reboots, rio.ko recovers its arena, riofs is mounted again and the same
//! `dc run` command lines run again: each member recovers its last committed checkpoint,
//! and the coordinator rolls every other member back to the same distributed checkpoint.
//!
//! The oracles, on the host, share no code with what they judge:
//! * heat: every worker's output (worker 0's "step" lines and every checksum) equals a
//!   failure-free run's, the same command lines without Discount Checking in the same
//!   guests, with repetitions only (a rollback repeats output, Definition 2);
//! * chat: chat's own invariants (the server's order never changes across rollbacks and
//!   holds every input line exactly once; every client shows that conversation with
//!   repetitions only);
//! * both: Save-work on the members' merged traces (`discount::oracle::merge`: a receive
//!   after the send of the same bytes, a round's commits as one), no run started over
//!   (every run after the panic begins with a recovery), the coordinator saw the failure
//!   and no join from another epoch.
//!
//! Negative control (a third test), the host test's across the guests: heat with each
//! worker on its own and its sends not visible (`DC_TEST_UNCOORDINATED=1` under CPVS, no
//! coordinator: worker 0 commits before its output, the others never), the same panic;
//! Save-work on the merged traces must reject it (worker 0's output depends on the other
//! workers' uncommitted receives). (A coordinator that does not roll the others back,
//! `DC_COORD_TEST_NO_ROLLBACK=1`, is no control here: heat then stops making progress,
//! worker 1 waiting for steps its neighbours left behind, and nothing visible follows the
//! failure for Save-work to judge; the output check fails on the short output.)

use std::time::{Duration, Instant};

use dc_drive::dist;
use discount::oracle::{self, Event};
use rio_qemu_tests::*;
use riovm::{NetConfig, NetHub, Vm};

/// Where `dc-fs` mounts riofs.
const MNT: &str = "/mnt/dc";
/// Where the add-on puts heat and chat.
const APPS: &str = "/usr/lib/dc/apps";
/// Discount Checking's launcher, by its path: the guest's shell (busybox ash, which
/// prefers its applets) would run busybox's `dc` calculator for a bare `dc`.
const DC: &str = "/usr/lib/dc/dc";
/// The size of riofs (state directories, traces, outputs).
const DC_FS_SIZE: &str = "16M";
/// Discount Checking's sizes in the guest: Rio objects are resident, and the 64 MiB arena
/// holds riofs and the image of each member in the guest (two of chat's clients share
/// guest 3; with discount_apps.rs's 16 MiB of heap and 4 MiB of log they do not fit).
const GUEST_DC_ENV: &str = "DC_HEAP_MB=8 DC_LOG_MB=2";
/// The guests (10.77.0.1 to .3); guest 1 runs the coordinator.
const GUESTS: u8 = 3;
/// Ports: the coordinator's, heat's workers' (one each), chat's server's.
const COORD_PORT: u16 = 7300;
const HEAT_PORT: u16 = 7310;
const CHAT_PORT: u16 = 7320;
/// heat's steps and worker 0's lines (each a distributed checkpoint under CPV-2PC):
/// fewer than on the host (10,000 and 100), where a step is a round trip between guests
/// and a round takes about half a second under TCG.
const HEAT_STEPS: usize = 1000;
const HEAT_LINES: usize = 30;
/// Lines each chat client types: fewer than on the host (40), each a distributed commit
/// on every member under CBNDV-2PC, most of a second under TCG.
const CHAT_LINES: usize = 15;
/// How long a whole computation may take in the guests: a bound against a hang, not the
/// expected time (heat's run takes about 20 s, chat's about 100 s on the fast kernel,
/// which make test runs these on). On the debug kernel (KASAN, lockdep) heat under
/// Discount Checking managed 165 of its 1,000 steps in 450 s here: the suite is not
/// meant for it.
fn run_deadline() -> Duration {
    Duration::from_secs(if flavour() == Flavour::Debug {
        450
    } else {
        240
    })
}

fn ip(index: u8) -> String {
    NetConfig::new(index, 1).ip().to_string()
}

/// Boots guest `index` on `hub`'s network with the Discount Checking add-on (dc, heat,
/// chat and their libraries: qemu/mkinitramfs.sh builds it); it may panic on purpose.
fn dc_guest(hub: &NetHub, index: u8, name: &str) -> TestVm {
    let (mut cfg, dir) = config(name);
    cfg.net = Some(NetConfig::new(index, hub.port()));
    with_addon(
        &mut cfg,
        &dir,
        "dc",
        "rebuild the initramfs (make initramfs: builds dc, dc-drive, heat and chat)",
    );
    let vm = Vm::start(cfg).unwrap_or_else(|e| panic!("guest {index} did not boot: {e}"));
    let t = test_vm(vm, dir);
    t.allow_crash();
    t
}

/// Loads rio.ko (recovery after a crash), formats a blank arena, mounts riofs.
fn load(vm: &mut Vm) {
    load_rio_and_dc_fs(vm, DC_FS_SIZE);
}

/// One member of a computation: its index, guest (1-based) and program command line.
struct Member {
    id: usize,
    guest: u8,
    argv: Vec<String>,
    /// Its standard input, a file on riofs (chat's clients), or none.
    stdin: Option<String>,
}

/// The guest shell command that runs member `m` (under Discount Checking with
/// `protocol` and the coordinator at `coord`, or plain when `protocol` is `None`; without a
/// coordinator, the negative control's `DC_TEST_UNCOORDINATED=1`), its output appended
/// to `MNT/<out><id>` and its exit status to `MNT/<out><id>.exit`.
fn member_line(m: &Member, protocol: Option<&str>, coord: Option<&str>, out: &str) -> String {
    let program = m.argv.join(" ");
    let cmd = match protocol {
        None => program,
        Some(p) => {
            let state = format!("{MNT}/m{}", m.id);
            let store = format!("rio:m{}", m.id);
            let args = dist::dc_run_args(p, &state, Some(&store), true, coord, m.id);
            // The negative control's members (no coordinator) treat their sends as
            // not visible, as the host test's do.
            let control = if coord.is_none() {
                " DC_TEST_UNCOORDINATED=1"
            } else {
                ""
            };
            format!(
                "{GUEST_DC_ENV}{control} {DC} {} -- {program}",
                args.join(" ")
            )
        }
    };
    let stdin = m.stdin.as_deref().unwrap_or("/dev/null");
    format!(
        "cd {MNT} && {cmd} < {stdin} >> {MNT}/{out}{id} 2>> {MNT}/{out}{id}.err; echo $? >> {MNT}/{out}{id}.exit",
        id = m.id
    )
}

/// Guest file `path`, or "" if it is not there.
fn read(vm: &mut Vm, path: &str) -> String {
    sh(vm, &format!("cat {path} 2>/dev/null; true"))
}

/// Starts `dc coord` for `n` members in guest 1 and returns its address once it prints
/// it.
fn start_coord(vm: &mut Vm, n: usize) -> String {
    vm.spawn(&format!(
        "cd {MNT} && {DC} coord --members {n} --exit-when-done -v --listen {}:{COORD_PORT} \
         --state {MNT}/coord.state > {MNT}/coord.out 2> {MNT}/coord.err; echo $? >> {MNT}/coord.exit",
        ip(1)
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let addr = read(vm, &format!("{MNT}/coord.out"));
        if !addr.trim().is_empty() {
            return addr.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "dc coord did not start: {}",
            read(vm, &format!("{MNT}/coord.err"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The guests, indexed by guest number - 1.
struct Guests {
    vms: Vec<TestVm>,
}

impl Guests {
    fn vm(&mut self, guest: u8) -> &mut Vm {
        self.vms[guest as usize - 1].vm()
    }

    fn spawn(
        &mut self,
        members: &[Member],
        m: usize,
        protocol: Option<&str>,
        coord: Option<&str>,
        out: &str,
    ) {
        let line = member_line(&members[m], protocol, coord, out);
        self.vm(members[m].guest)
            .spawn(&line)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Member `m`'s exit statuses so far (one line per run that ended).
    fn exits(&mut self, m: &Member, out: &str) -> Vec<String> {
        read(self.vm(m.guest), &format!("{MNT}/{out}{}.exit", m.id))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Fails the test at once if a run of a member ended with an error.
    fn assert_no_failed_run(&mut self, members: &[Member], out: &str) {
        for m in members {
            if let Some(bad) = self.exits(m, out).iter().find(|s| s.trim() != "0") {
                panic!(
                    "member {} exited with {bad}:\n{}",
                    m.id,
                    self.errors(members, out)
                );
            }
        }
    }

    /// What every member wrote on stderr and where each guest's programs are (for
    /// failure messages).
    fn errors(&mut self, members: &[Member], out: &str) -> String {
        let mut s = String::new();
        for g in 1..=GUESTS {
            s.push_str(&format!("guest {g}:\n{}\n", self.where_(g)));
        }
        for m in members {
            let e = read(self.vm(m.guest), &format!("{MNT}/{out}{}.err", m.id));
            s.push_str(&format!("member {} (guest {}): {e}\n", m.id, m.guest));
        }
        // The coordinator's log has a line per round: its end says where it is.
        let log = read(self.vm(1), &format!("{MNT}/coord.err"));
        let lines: Vec<&str> = log.lines().collect();
        s.push_str(&format!(
            "coordinator ({} lines of log, the last 40):\n{}",
            lines.len(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        ));
        s
    }

    /// Waits until every member's run has ended (`runs` exit lines each, 0 each), at most
    /// [`run_deadline`] from `start`.
    fn wait_all(&mut self, members: &[Member], out: &str, start: Instant, runs: &[usize]) {
        if !self.wait_all_until(members, out, start + run_deadline(), runs) {
            panic!(
                "{out}: the computation did not finish in {:?}:\n{}",
                run_deadline(),
                self.errors(members, out)
            );
        }
    }

    /// [`Guests::wait_all`] until `deadline`; whether every run ended.
    fn wait_all_until(
        &mut self,
        members: &[Member],
        out: &str,
        deadline: Instant,
        runs: &[usize],
    ) -> bool {
        loop {
            self.assert_no_failed_run(members, out);
            let mut done = true;
            for (m, &want) in members.iter().zip(runs) {
                done &= self.exits(m, out).len() >= want;
            }
            if done {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Where guest `g`'s programs are (for failure messages): its processes, the system
    /// call, wait channel and kernel stack of each heat, chat and dc (the coordinator and
    /// the launchers), the last lines of its traces and outputs.
    fn where_(&mut self, g: u8) -> String {
        sh(
            self.vm(g),
            &format!(
                "ps; for p in $(pidof heat chat dc); do echo \"pid $p $(cat /proc/$p/comm): \
                 $(cat /proc/$p/syscall) $(cat /proc/$p/wchan)\"; cat /proc/$p/stack; done \
                 2>&1; for f in {MNT}/m*/trace {MNT}/out?; do \
                 echo \"== $f\"; tail -n 4 $f; done 2>&1; true"
            ),
        )
    }

    /// Member `m`'s trace (its state directory's, every run appended).
    fn trace(&mut self, m: &Member) -> Vec<Event> {
        let t = fetch(self.vm(m.guest), &format!("{MNT}/m{}/trace", m.id));
        oracle::parse(&String::from_utf8_lossy(&t))
            .unwrap_or_else(|e| panic!("member {}'s trace does not parse: {e}", m.id))
    }

    /// Panics guest `g`'s kernel, waits for its warm reboot and mounts riofs again.
    fn panic_and_reboot(&mut self, g: u8) {
        let vm = self.vm(g);
        vm.panic().unwrap_or_else(|e| panic!("{e}"));
        vm.wait_console("Kernel panic", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("guest {g} did not panic: {e}"));
        vm.wait_reboot(Duration::from_secs(90))
            .unwrap_or_else(|e| panic!("guest {g} did not come back: {e}"));
        load(vm);
        let dmesg = sh(vm, "dmesg");
        assert!(
            dmesg.contains("recovered arena after a crash"),
            "guest {g}: rio.ko did not recover its arena: {dmesg}"
        );
    }
}

fn boot_guests(hub: &NetHub, test: &str) -> Guests {
    let mut vms = Vec::new();
    for g in 1..=GUESTS {
        let mut t = dc_guest(hub, g, &format!("{test}-{g}"));
        load(t.vm());
        vms.push(t);
    }
    Guests { vms }
}

/// The heat computation across the guests: worker i in guest i + 1.
fn heat_members() -> Vec<Member> {
    let peers: Vec<String> = (0..dist::HEAT_WORKERS)
        .map(|i| format!("{}:{}", ip(i as u8 + 1), HEAT_PORT + i as u16))
        .collect();
    (0..dist::HEAT_WORKERS)
        .map(|i| Member {
            id: i,
            guest: i as u8 + 1,
            argv: dist::heat_argv(&format!("{APPS}/heat"), i, HEAT_STEPS, HEAT_LINES, &peers),
            stdin: None,
        })
        .collect()
}

/// The coordinator's last line ("every member left: N rounds, ... F failures, J
/// inconsistent joins"), once it has exited (at most 20 s).
fn coord_summary(g: &mut Guests) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ex = read(g.vm(1), &format!("{MNT}/coord.exit"));
        let log = read(g.vm(1), &format!("{MNT}/coord.err"));
        if !ex.trim().is_empty() {
            assert_eq!(ex.trim(), "0", "dc coord failed: {log}");
            return log.lines().last().unwrap_or_default().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "dc coord did not exit after the members: {log}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The number before `word` in the coordinator's summary line.
fn count_before(summary: &str, word: &str) -> usize {
    let w: Vec<&str> = summary.split_whitespace().collect();
    w.windows(2)
        .find(|p| p[1].trim_end_matches(',') == word)
        .and_then(|p| p[0].parse().ok())
        .unwrap_or_else(|| panic!("no count of {word} in the coordinator's {summary:?}"))
}

/// What a heat run under Discount Checking left, for the oracle.
struct HeatRun {
    reference: Vec<String>,
    outs: Vec<String>,
    traces: Vec<Vec<Event>>,
    coord: String,
}

/// heat across the guests: the failure-free run, then the run under `protocol` with a
/// panic of guest 2 (worker 1) once worker 0 has printed a third of its lines.
/// `uncoordinated`: the negative control, without a coordinator (see the test).
fn heat_run(test: &str, protocol: &str, uncoordinated: bool) -> HeatRun {
    let hub = NetHub::start().expect("the hub");
    let mut g = boot_guests(&hub, test);
    let members = heat_members();
    // The failure-free reference: the same command lines, plain, in the same guests (the
    // guests' CPU, whose libm may round differently from the host's).
    let start = Instant::now();
    for m in 0..members.len() {
        g.spawn(&members, m, None, None, "ref");
    }
    g.wait_all(&members, "ref", start, &[1, 1, 1]);
    let reference: Vec<String> = members
        .iter()
        .map(|m| read(g.vm(m.guest), &format!("{MNT}/ref{}", m.id)))
        .collect();
    assert!(
        reference[0].contains("checksum"),
        "the failure-free run printed {:?}",
        reference[0]
    );
    eprintln!("{test}: failure-free run in {:?}", start.elapsed());

    let coord = (!uncoordinated).then(|| start_coord(g.vm(1), members.len()));
    let coord = coord.as_deref();
    let start = Instant::now();
    for m in 0..members.len() {
        g.spawn(&members, m, Some(protocol), coord, "out");
    }
    // Mid-run: once worker 0 has printed a third of its lines, guest 2 (worker 1) panics.
    let victim = 1;
    loop {
        let shown = read(g.vm(1), &format!("{MNT}/out0")).lines().count();
        if shown >= HEAT_LINES / 3 {
            break;
        }
        g.assert_no_failed_run(&members, "out");
        assert!(
            start.elapsed() < run_deadline(),
            "{test}: worker 0 printed {shown} lines in {:?}:\n{}",
            run_deadline(),
            g.errors(&members, "out")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let at = read(g.vm(1), &format!("{MNT}/out0")).lines().count();
    g.panic_and_reboot(members[victim].guest);
    assert!(
        g.exits(&members[victim], "out").is_empty(),
        "{test}: worker {victim} had finished before its guest panicked"
    );
    eprintln!(
        "{test}: guest {} panicked after worker 0's line {at}, back after {:?}",
        members[victim].guest,
        start.elapsed()
    );
    g.spawn(&members, victim, Some(protocol), coord, "out");
    let coord = if uncoordinated {
        // Without coordination the restarted worker may never catch up with its
        // neighbours (it resumes far behind them, or starts over): what the workers did
        // in 40 s more is judged.
        let until = (start + run_deadline()).min(Instant::now() + Duration::from_secs(40));
        if g.wait_all_until(&members, "out", until, &[1, 1, 1]) {
            coord_summary(&mut g)
        } else {
            for guest in 1..=GUESTS {
                sh(g.vm(guest), "killall -9 heat; sleep 0.5; true");
            }
            "(no coordinator; the workers did not finish: stopped)".to_string()
        }
    } else {
        g.wait_all(&members, "out", start, &[1, 1, 1]);
        coord_summary(&mut g)
    };
    let wall = start.elapsed();
    let outs: Vec<String> = members
        .iter()
        .map(|m| read(g.vm(m.guest), &format!("{MNT}/out{}", m.id)))
        .collect();
    let traces: Vec<Vec<Event>> = members.iter().map(|m| g.trace(m)).collect();
    eprintln!("{test}: run under {protocol} with the panic in {wall:?}; {coord}");
    HeatRun {
        reference,
        outs,
        traces,
        coord,
    }
}

/// The oracle on a heat run; `Err` says what failed.
fn heat_oracle(r: &HeatRun) -> Result<(), String> {
    let judge = || {
        for (i, (out, reference)) in r.outs.iter().zip(&r.reference).enumerate() {
            let want: Vec<&str> = reference.lines().collect();
            dist::repetitions_only(&format!("worker {i}"), out, &want)?;
        }
        dist::resumed(&r.traces)?;
        dist::save_work(&r.traces)
    };
    judge().map_err(|e| format!("{e:#}"))
}

/// The panicked member's trace shows a recovery of a committed checkpoint after its
/// first commit: it resumed, it did not start over.
fn assert_recovered(trace: &[Event], who: &str) {
    let first_commit = trace
        .iter()
        .position(|e| matches!(e, Event::Commit(_)))
        .unwrap_or_else(|| panic!("{who} never committed"));
    assert!(
        trace[first_commit..]
            .iter()
            .any(|e| matches!(e, Event::Recover(_))),
        "{who} did not recover after its guest's panic: {:?}",
        oracle::counts(trace)
    );
}

#[test]
fn heat_across_guests_survives_a_kernel_panic_of_a_worker_guest() {
    let r = heat_run("dist-heat", "cpv-2pc", false);
    if let Err(e) = heat_oracle(&r) {
        panic!("{e}");
    }
    assert_recovered(&r.traces[1], "worker 1");
    assert!(
        count_before(&r.coord, "failures") >= 1,
        "the coordinator saw no failure: {}",
        r.coord
    );
    assert_eq!(count_before(&r.coord, "inconsistent"), 0, "{}", r.coord);
    for (i, t) in r.traces.iter().enumerate() {
        eprintln!("worker {i}: {:?}", oracle::counts(t));
    }
}

#[test]
fn heat_without_coordination_across_guests_is_rejected_by_save_work() {
    let r = heat_run("dist-heat-unco", "cpvs", true);
    // Save-work itself must reject it (not only the outputs, which a hang leaves short).
    match dist::save_work(&r.traces) {
        Ok(()) => panic!(
            "a computation without coordination passed Save-work: {}; outputs: {:?}",
            r.coord,
            heat_oracle(&r)
        ),
        Err(e) => {
            let m = format!("{e:#}");
            eprintln!(
                "as expected, Save-work rejects it: {}\n(the whole oracle: {:?})",
                &m[..m.len().min(400)],
                heat_oracle(&r).map_err(|e| e.chars().take(200).collect::<String>())
            );
        }
    }
}

#[test]
fn chat_across_guests_survives_a_kernel_panic_of_a_client_guest() {
    let test = "dist-chat";
    let hub = NetHub::start().expect("the hub");
    let mut g = boot_guests(&hub, test);
    let server = format!("{}:{CHAT_PORT}", ip(1));
    // The server (member 0) in guest 1 with the coordinator, client 0 in guest 2, clients
    // 1 and 2 in guest 3, whose panic takes two members down at once.
    let mut members = vec![Member {
        id: 0,
        guest: 1,
        argv: dist::chat_server_argv(&format!("{APPS}/chat"), CHAT_PORT),
        stdin: None,
    }];
    for c in 0..dist::CHAT_CLIENTS {
        let guest = if c == 0 { 2 } else { 3 };
        let input = format!("{MNT}/in{c}");
        sh(
            g.vm(guest),
            &format!(
                "cat > {input} <<'EOF'\n{}\nEOF",
                dist::chat_input_n(c, CHAT_LINES).join("\n")
            ),
        );
        members.push(Member {
            id: c + 1,
            guest,
            argv: dist::chat_client_argv(&format!("{APPS}/chat"), c, &server),
            stdin: Some(input),
        });
    }
    let protocol = "cbndv-2pc";
    let coord = start_coord(g.vm(1), members.len());
    let start = Instant::now();
    for m in 0..members.len() {
        g.spawn(&members, m, Some(protocol), Some(&coord), "out");
    }
    let total = dist::CHAT_CLIENTS * CHAT_LINES;
    loop {
        let ordered = read(g.vm(1), &format!("{MNT}/out0"))
            .lines()
            .filter(|l| l.starts_with('#'))
            .count();
        if ordered >= total / 3 {
            break;
        }
        g.assert_no_failed_run(&members, "out");
        assert!(
            start.elapsed() < run_deadline(),
            "{test}: the server ordered {ordered} lines in {:?}:\n{}",
            run_deadline(),
            g.errors(&members, "out")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    g.panic_and_reboot(3);
    for m in members.iter().filter(|m| m.guest == 3) {
        assert!(
            g.exits(m, "out").is_empty(),
            "{test}: member {} had finished before its guest panicked",
            m.id
        );
    }
    eprintln!("{test}: guest 3 panicked, back after {:?}", start.elapsed());
    for m in 0..members.len() {
        if members[m].guest == 3 {
            g.spawn(&members, m, Some(protocol), Some(&coord), "out");
        }
    }
    g.wait_all(&members, "out", start, &[1, 1, 1, 1]);
    let wall = start.elapsed();
    let summary = coord_summary(&mut g);
    let outs: Vec<String> = members
        .iter()
        .map(|m| read(g.vm(m.guest), &format!("{MNT}/out{}", m.id)))
        .collect();
    let traces: Vec<Vec<Event>> = members.iter().map(|m| g.trace(m)).collect();
    eprintln!("{test}: run under {protocol} with the panic in {wall:?}; {summary}");
    let judged = dist::chat_consistent_n(&outs[0], &outs[1..], CHAT_LINES)
        .and_then(|()| dist::resumed(&traces))
        .and_then(|()| dist::save_work(&traces));
    if let Err(e) = judged {
        panic!("{test}: {e:#}");
    }
    assert_recovered(&traces[2], "client 1");
    assert_recovered(&traces[3], "client 2");
    assert!(
        count_before(&summary, "failures") >= 1,
        "the coordinator saw no failure: {summary}"
    );
    assert_eq!(count_before(&summary, "inconsistent"), 0, "{summary}");
}
