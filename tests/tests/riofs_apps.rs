//! riofs under real programs, whose own checks are the oracles: Debian's sqlite3 (both
//! journal modes, synchronous=FULL), git and fio run on riofs, the kernel panics in the
//! middle (or right after fio), and after the warm reboot SQLite's `integrity_check`,
//! `git fsck --full` and fio's `--verify_only` must find everything that had returned.
//!
//! What "returned" means is on the host's side of the guest's log port (/dev/ttyS2):
//! the loops log each commit with `fs-bench log`, which waits until the port has sent the
//! line (tcdrain), so a line the host has is a commit that had returned before the panic.
//!
//! The programs come from the host (`make setup` installs them; qemu/mkinitramfs.sh copies
//! them with their libraries); fio, whose libraries are large, from an overlay archive
//! appended to the initramfs here. A missing program fails the test, naming the fix.

use std::time::{Duration, Instant};

use rio_qemu_tests::*;

const REBOOT: Duration = Duration::from_secs(120);

fn load(vm: &mut Vm) {
    sh(vm, "rio-load");
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
}

/// Fails the test, with the fix, if `prog` is not in the guest.
fn require(vm: &mut Vm, prog: &str) {
    let out = vm
        .run(&format!("command -v {prog}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status == 0,
        "{prog} is not in the guest: install Debian's {prog} on the host (make setup) and \
         rebuild the initramfs (make initramfs); qemu/mkinitramfs.sh copies it when present"
    );
}

/// The complete lines of the guest's log port whose first word is `tag`, split in words.
fn log_lines(vm: &Vm, tag: &str) -> Vec<Vec<String>> {
    let path = riovm::workload_log_path(&vm.config().workdir);
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| w.first().map(String::as_str) == Some(tag))
        .collect()
}

/// Waits until the log has `n` commit lines of each tag; a tag's loop that ended first
/// (an `END` line) fails the test with what it printed.
fn wait_commits(vm: &mut Vm, tags: &[&str], n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut done = true;
        for tag in tags {
            let lines = log_lines(vm, tag);
            if lines
                .iter()
                .any(|w| w.get(1).map(String::as_str) == Some("END"))
            {
                let out = vm
                    .run(&format!("cat /tmp/{tag}.out"))
                    .map(|o| o.stdout_str());
                panic!(
                    "the {tag} loop ended after {} commits: {out:?}",
                    lines.len() - 1
                );
            }
            done &= lines.len() >= n;
        }
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} commits of {tags:?} after {timeout:?}; console:\n{}",
            vm.console_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sequence numbers the log has for `tag` (its second word), checked to be 1, 2, ...
fn committed(vm: &Vm, tag: &str) -> Vec<(u64, Vec<String>)> {
    let v: Vec<(u64, Vec<String>)> = log_lines(vm, tag)
        .into_iter()
        .filter(|w| w.get(1).map(String::as_str) != Some("END"))
        .map(|w| {
            let n = w[1]
                .parse()
                .unwrap_or_else(|_| panic!("bad log line {w:?}"));
            (n, w[2..].to_vec())
        })
        .collect();
    for (i, (n, _)) in v.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "the {tag} log is not 1, 2, ...: {v:?}");
    }
    v
}

/// One SQLite loop in `/mnt/<mode>`: per transaction a row with its sequence number (and
/// a blob of varying size), the counter row set to it, churn in a third table (pages
/// freed and reused); after COMMIT returns, the number goes to the log.
fn sqlite_loop(mode: &str) -> String {
    format!(
        "mkdir -p /mnt/{mode} && awk 'BEGIN {{ \
           print \"PRAGMA journal_mode={mode};\"; print \"PRAGMA synchronous=FULL;\"; \
           print \"CREATE TABLE t(seq INTEGER PRIMARY KEY, pad BLOB); CREATE TABLE c(n INTEGER); \
                  CREATE TABLE junk(b BLOB); INSERT INTO c VALUES(0);\"; \
           for (i = 1; i <= 20000; i++) {{ \
             printf \"BEGIN;\\nINSERT INTO t VALUES(%d, randomblob(%d));\\nUPDATE c SET n = %d;\\n\", i, 100 + (i * 997) % 3000, i; \
             printf \"INSERT INTO junk VALUES(randomblob(%d));\\nDELETE FROM junk WHERE rowid < %d;\\nCOMMIT;\\n\", (i * 389) % 5000, i - 8; \
             printf \".shell fs-bench log /dev/ttyS2 {mode} %d\\n\", i }} }}' \
         | sqlite3 -bail /mnt/{mode}/db > /tmp/{mode}.out 2>&1; \
         fs-bench log /dev/ttyS2 {mode} END $?"
    )
}

/// After the panic: SQLite's own check, then the rows against the log.
fn check_sqlite(vm: &mut Vm, mode: &str) {
    let files = sh(vm, &format!("ls -l /mnt/{mode}"));
    let log = committed(vm, mode);
    let last = log.last().map_or(0, |(n, _)| *n);
    let out = vm
        .run(&format!(
            "sqlite3 -bail /mnt/{mode}/db 'PRAGMA integrity_check; \
             SELECT count(*) || char(32) || coalesce(min(seq), 0) || char(32) || coalesce(max(seq), 0) FROM t; \
             SELECT n FROM c;'"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = out.stdout_str();
    assert_eq!(
        out.status,
        0,
        "{mode}: sqlite3 failed after the panic: {text}{}\nfiles: {files}",
        out.stderr_str()
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"ok"),
        "{mode}: integrity_check after the panic: {text}\nfiles: {files}"
    );
    let nums: Vec<u64> = lines
        .get(1)
        .unwrap_or(&"")
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    let [count, min, max] = nums[..] else {
        panic!("{mode}: unexpected output {text:?}");
    };
    let counter: u64 = lines
        .get(2)
        .and_then(|x| x.parse().ok())
        .unwrap_or(u64::MAX);
    eprintln!("{mode}: {last} commits returned before the panic; the database has rows 1..={max}, counter {counter}; files:\n{files}");
    assert!(
        max >= last,
        "{mode}: committed transaction {last} returned but the database ends at {max}"
    );
    assert!(
        max <= last + 1,
        "{mode}: the database has {max} transactions but only {last} had returned (+1 in flight)"
    );
    assert_eq!(
        (count, min.max(1)),
        (max, 1),
        "{mode}: rows missing below {max}"
    );
    assert_eq!(
        counter, max,
        "{mode}: the counter row disagrees with the rows"
    );
    // The recovered database takes new transactions.
    let after = sh(
        vm,
        &format!(
            "sqlite3 -bail /mnt/{mode}/db 'PRAGMA synchronous=FULL; \
             INSERT INTO t SELECT max(seq) + 1, zeroblob(1) FROM t; PRAGMA integrity_check;'"
        ),
    );
    assert_eq!(after.trim(), "ok", "{mode}: after one more transaction");
}

#[test]
fn sqlite_wal_and_rollback_journal_survive_a_panic_mid_loop() {
    let mut t = boot_apps("riofs-sqlite");
    t.allow_crash();
    let vm = t.vm();
    require(vm, "sqlite3");
    load(vm);
    sh(vm, "mount -t riofs -o size=24M data /mnt");
    // Both loops at once: the one panic hits a WAL and a rollback-journal transaction.
    for mode in ["wal", "delete"] {
        vm.spawn(&sqlite_loop(mode)).unwrap();
    }
    wait_commits(vm, &["wal", "delete"], 40, Duration::from_secs(150));
    vm.panic().unwrap();
    vm.wait_reboot(REBOOT).unwrap();
    load(vm);
    sh(vm, "mount -t riofs data /mnt");
    check_sqlite(vm, "wal");
    check_sqlite(vm, "delete");
}

/// git's identity and configuration by environment (HOME is tmpfs, lost at the panic).
const GIT_ENV: &str = "export HOME=/tmp GIT_CONFIG_NOSYSTEM=1 GIT_PAGER=cat \
    GIT_AUTHOR_NAME=rio GIT_AUTHOR_EMAIL=rio@guest GIT_COMMITTER_NAME=rio GIT_COMMITTER_EMAIL=rio@guest; \
    cd /mnt/repo && ";

#[test]
fn git_repository_survives_a_panic_mid_commit_loop() {
    let mut t = boot_apps("riofs-git");
    t.allow_crash();
    let vm = t.vm();
    require(vm, "git");
    load(vm);
    sh(vm, "mount -t riofs -o size=24M data /mnt");
    sh(
        vm,
        "cd /mnt && git init -q repo 2>/dev/null && cd repo && git config gc.auto 0 && \
         git config maintenance.auto false",
    );
    // Each commit changes text files and a binary one; every 10th is followed by a gc
    // (packs, packed refs, pruned loose objects), so the panic may hit any of those.
    vm.spawn(&format!(
        "{GIT_ENV} i=1; while [ $i -le 5000 ]; do \
           echo \"change $i\" >> f$((i % 7)).txt && \
           dd if=/dev/urandom of=bin$((i % 3)) bs=1k count=$((i % 9 + 1)) 2>/dev/null && \
           git add -A && git commit -q -m \"commit $i\" && \
           fs-bench log /dev/ttyS2 git $i $(git rev-parse HEAD) || break; \
           if [ $((i % 10)) = 0 ]; then git gc -q || break; fi; \
           i=$((i + 1)); \
         done > /tmp/git.out 2>&1; fs-bench log /dev/ttyS2 git END $i"
    ))
    .unwrap();
    // 12 commits (one gc among them) in make test, 25 (two) in make test-long.
    let commits = if std::env::var_os("RIO_TEST_LONG").is_some() {
        25
    } else {
        12
    };
    wait_commits(vm, &["git"], commits, Duration::from_secs(150));
    vm.panic().unwrap();
    vm.wait_reboot(REBOOT).unwrap();
    load(vm);
    sh(vm, "mount -t riofs data /mnt");
    let log = committed(vm, "git");
    let (last, hashes): (u64, Vec<String>) = (
        log.len() as u64,
        log.iter().map(|(_, w)| w[0].clone()).collect(),
    );
    let listing = sh(vm, "ls -la /mnt/repo/.git /mnt/repo/.git/refs/heads");
    let fsck = vm
        .run(&format!("{GIT_ENV} git fsck --full --no-dangling"))
        .unwrap();
    assert_eq!(
        fsck.status,
        0,
        "git fsck --full after the panic ({last} commits had returned): {}{}\n{listing}",
        fsck.stdout_str(),
        fsck.stderr_str()
    );
    let reachable = sh(vm, &format!("{GIT_ENV} git rev-list HEAD"));
    let reachable: Vec<&str> = reachable.lines().collect();
    for (i, h) in hashes.iter().enumerate() {
        sh(vm, &format!("{GIT_ENV} git cat-file -e {h}"));
        assert!(
            reachable.contains(&h.as_str()),
            "commit {} ({h}) returned before the panic but is not reachable from HEAD",
            i + 1
        );
    }
    let head = sh(vm, &format!("{GIT_ENV} git rev-parse HEAD"));
    let head = head.trim();
    let last_hash = hashes.last().map(String::as_str).unwrap_or("");
    let parent = vm
        .run(&format!("{GIT_ENV} git rev-parse HEAD~1"))
        .unwrap()
        .stdout_str();
    assert!(
        head == last_hash || parent.trim() == last_hash,
        "HEAD {head} is neither the last commit that returned ({last_hash}) nor its child"
    );
    let count: u64 = sh(vm, &format!("{GIT_ENV} git rev-list --count HEAD"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        count == last || count == last + 1,
        "{count} commits, {last} returned"
    );
    eprintln!("git: {last} commits returned before the panic; HEAD has {count}; fsck clean");
    // Usable after the crash: stale lock files of the interrupted command are git's
    // documented leftovers; with them gone, status and a new commit work.
    sh(
        vm,
        &format!(
            "{GIT_ENV} rm -f .git/index.lock .git/HEAD.lock .git/refs/heads/*.lock .git/packed-refs.lock && \
             git status --porcelain >/dev/null && echo after > after.txt && git add -A && \
             git commit -q -m after && git fsck --full --no-dangling"
        ),
    );
}

/// Boots a guest whose initramfs has the programs' add-on archive appended (sqlite3, git
/// and fio are not in the plain one: they would slow every other guest down).
fn boot_apps(name: &str) -> TestVm {
    let (mut cfg, dir) = config(name);
    with_addon(
        &mut cfg,
        &dir,
        "fio",
        "install Debian's sqlite3, git and fio on the host (make setup) and rebuild the \
         initramfs (make initramfs)",
    );
    let vm = Vm::start(cfg).unwrap_or_else(|e| panic!("boot failed: {e}"));
    test_vm(vm, dir)
}

const FIO_JOB: &str = "fio --name=rv --filename=/mnt/fio.dat --rw=randwrite --bs=4k \
    --size=16M --ioengine=psync --randrepeat=1 --verify=crc32c";

#[test]
fn fio_verify_finds_every_block_after_a_panic() {
    let (mut cfg, dir) = config("riofs-fio");
    with_addon(
        &mut cfg,
        &dir,
        "fio",
        "install Debian's fio on the host (make setup) and rebuild the initramfs (make \
         initramfs); qemu/mkinitramfs.sh builds the fio overlay when fio is present",
    );
    let vm = Vm::start(cfg).unwrap_or_else(|e| panic!("boot failed: {e}"));
    let mut t = test_vm(vm, dir);
    t.allow_crash();
    let vm = t.vm();
    require(vm, "fio");
    load(vm);
    sh(vm, "mount -t riofs -o size=40M data /mnt");
    let w = vm
        .run_timeout(
            &format!("{FIO_JOB} --do_verify=0"),
            Duration::from_secs(150),
        )
        .unwrap();
    assert_eq!(
        w.status,
        0,
        "fio's writes: {}{}",
        w.stdout_str(),
        w.stderr_str()
    );
    // The panic right after fio exits: every write had returned, so every block must verify.
    vm.panic().unwrap();
    vm.wait_reboot(REBOOT).unwrap();
    load(vm);
    sh(vm, "mount -t riofs data /mnt");
    let v = vm
        .run_timeout(
            &format!("{FIO_JOB} --verify_only"),
            Duration::from_secs(150),
        )
        .unwrap();
    let out = format!("{}{}", v.stdout_str(), v.stderr_str());
    assert_eq!(v.status, 0, "fio --verify_only after the panic: {out}");
    assert!(
        out.lines()
            .any(|l| l.contains("READ:") && l.contains("io=16.0MiB")),
        "fio verified less than the 16 MiB it wrote: {out}"
    );
    assert!(
        !["verify failed", "bad magic", "verify: bad"]
            .iter()
            .any(|e| out.contains(e)),
        "fio reported a verify problem: {out}"
    );
    // The oracle works: one corrupted byte and fio's verify fails.
    sh(
        vm,
        "printf 'XXXXXXXXXXXXXXXX' | dd of=/mnt/fio.dat bs=1 seek=123457 conv=notrunc 2>/dev/null",
    );
    let bad = vm
        .run_timeout(
            &format!("{FIO_JOB} --verify_only"),
            Duration::from_secs(150),
        )
        .unwrap();
    assert_ne!(
        bad.status,
        0,
        "fio's verify missed a corrupted byte: {}{}",
        bad.stdout_str(),
        bad.stderr_str()
    );
}
