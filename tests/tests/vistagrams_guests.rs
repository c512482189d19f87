//! Vistagrams across guests (issue 16; thesis chapter 4): a bank server in one guest and a
//! transfer client in another, both with their Vista segments in riofs files (mapped
//! shared: every store durable as it executes, Rio's promise), talking over riovm's
//! network. The server's kernel panics mid-run; the guest warm-reboots, recovers its
//! arena and riofs, and the server is started again on the same segment while the client,
//! which never stopped, retransmits. The oracle is a model of the transfers computed here
//! from the seed (not the demo's code): every transfer is applied exactly once, so each
//! account ends at exactly the model's balance and no money appears or vanishes. Both
//! ends drop a fifth of the datagrams they receive, so that retransmissions, and with them
//! duplicates the server must filter, happen throughout.

use std::time::{Duration, Instant};

use rio_qemu_tests::*;
use riovm::{NetHub, Vm};

const ACCOUNTS: u64 = 4;
const INITIAL: i64 = 1_000_000;
const MAX_AMOUNT: u64 = 100;
const TRANSFERS: u64 = 150;
const SEED: u64 = 7;
const PORT: u16 = 7100;

/// The model's final balances of one server's accounts after `TRANSFERS` transfers of
/// seed `SEED` (the demo's documented transfer stream: rio-prng's stream `k` of the seed
/// draws from-server, from-account, to-server, to-account and 1 + amount below the max;
/// a transfer to the same account goes to the next account instead).
fn model() -> Vec<i64> {
    let mut b = vec![INITIAL; ACCOUNTS as usize];
    for k in 0..TRANSFERS {
        let mut r = rio_prng::Rng::stream(SEED, k);
        let (_fs, fa) = (r.below(1), r.below(ACCOUNTS));
        let (_ts, mut ta) = (r.below(1), r.below(ACCOUNTS));
        if fa == ta {
            ta = (ta + 1) % ACCOUNTS;
        }
        let amount = 1 + r.below(MAX_AMOUNT) as i64;
        b[fa as usize] -= amount;
        b[ta as usize] += amount;
    }
    b
}

/// The balances a `bank-dump` prints ("balance I B" lines), in account order.
fn balances(dump: &str) -> Vec<i64> {
    dump.lines()
        .filter_map(|l| l.strip_prefix("balance "))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

fn mount_riofs(vm: &mut Vm) {
    sh(vm, "rio-load");
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
    if vm.run("mount -t riofs data /mnt").map(|o| o.status).ok() != Some(0) {
        sh(vm, "mount -t riofs -o size=24M data /mnt");
    }
}

fn start_server(vm: &mut Vm) {
    vm.spawn(&format!(
        "vistagram-demo bank-server --segment /mnt/bank.seg --addr 10.77.0.2:{PORT} \
         --accounts {ACCOUNTS} --initial {INITIAL} --drop 0.2 >> /tmp/server.log 2>&1"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Starts (or, after a crash, resumes) the transfer client on its segment.
fn start_client(vm: &mut Vm) {
    vm.spawn(&format!(
        "vistagram-demo bank-client --segment /mnt/client.seg --bind 10.77.0.1:0 \
         --servers 10.77.0.2:{PORT} --accounts {ACCOUNTS} --transfers {TRANSFERS} \
         --transfer-seed {SEED} --max-amount {MAX_AMOUNT} --pause-ms 10 --drop 0.2 \
         > /tmp/client.log 2>&1"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Stops the server and returns its balances (`bank-dump` opens the segment too).
fn final_balances(vm: &mut Vm) -> (Vec<i64>, String) {
    sh(vm, "killall vistagram-demo; sleep 1; true");
    let dump = sh(vm, "vistagram-demo bank-dump --segment /mnt/bank.seg");
    (balances(&dump), dump)
}

/// The client's log once it says `done`, or whatever it says after `secs`.
fn wait_done(vm: &mut Vm, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let log = sh(vm, "cat /tmp/client.log 2>/dev/null; true");
        if log.contains("done") || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn transfers_happen_exactly_once_across_a_panic_of_the_server_guest() {
    let hub = NetHub::start().expect("the hub");
    let mut client = net_guest(&hub, 1, "vg-client");
    let mut server = net_guest(&hub, 2, "vg-server");
    server.allow_crash();
    mount_riofs(server.vm());
    mount_riofs(client.vm());
    start_server(server.vm());
    std::thread::sleep(Duration::from_secs(1));
    start_client(client.vm());
    // Let some transfers commit, then panic the server's kernel mid-run.
    std::thread::sleep(Duration::from_secs(3));
    let early = sh(client.vm(), "cat /tmp/client.log; true");
    assert!(
        !early.contains("done"),
        "the client finished before the panic: {early}"
    );
    let vs = server.vm();
    vs.panic().unwrap_or_else(|e| panic!("{e}"));
    vs.wait_console("Kernel panic", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    vs.wait_reboot(Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e}"));
    mount_riofs(vs);
    assert!(
        sh(vs, "ls /mnt").contains("bank.seg"),
        "the server's segment did not survive the panic"
    );
    // What the panic left: some transfers and not all (the server is not running).
    let left = balances(&sh(vs, "vistagram-demo bank-dump --segment /mnt/bank.seg"));
    // One client, one transfer at a time: at most one withdrawal awaits its deposit.
    let in_flight = INITIAL * ACCOUNTS as i64 - left.iter().sum::<i64>();
    assert!(
        (0..=MAX_AMOUNT as i64).contains(&in_flight),
        "after the panic the server holds {left:?}: {in_flight} missing"
    );
    assert!(
        left != vec![INITIAL; ACCOUNTS as usize] && left != model(),
        "the panic was not mid-run: {left:?}"
    );
    start_server(vs);
    let log = wait_done(client.vm(), 120);
    assert!(log.contains("done"), "the client did not finish: {log}");
    assert!(
        log.contains(&format!("done {TRANSFERS} rejected 0")),
        "every transfer must go through once: {log}"
    );
    let (got, dump) = final_balances(server.vm());
    let want = model();
    assert_eq!(
        got.iter().sum::<i64>(),
        INITIAL * ACCOUNTS as i64,
        "money appeared or vanished: {dump}"
    );
    assert_eq!(got, want, "balances differ from the model: {dump}");
    eprintln!(
        "client: {}; after the panic the server held {left:?}, at the end {got:?}",
        log.trim()
    );
}

/// The other side: the client guest's kernel panics mid-run. The client resumes from its
/// transfer state in its riofs segment after the warm reboot (a transfer whose withdrawal
/// committed goes on to its deposit; a request sent before the crash is retransmitted,
/// and the server answers the duplicate from its table); the server never stopped.
#[test]
fn transfers_happen_exactly_once_across_a_panic_of_the_client_guest() {
    let hub = NetHub::start().expect("the hub");
    let mut client = net_guest(&hub, 1, "vg-client-crash");
    let mut server = net_guest(&hub, 2, "vg-server-up");
    client.allow_crash();
    mount_riofs(server.vm());
    mount_riofs(client.vm());
    start_server(server.vm());
    std::thread::sleep(Duration::from_secs(1));
    start_client(client.vm());
    std::thread::sleep(Duration::from_secs(3));
    let vc = client.vm();
    let early = sh(vc, "cat /tmp/client.log; true");
    assert!(
        !early.contains("done"),
        "the client finished before the panic: {early}"
    );
    vc.panic().unwrap_or_else(|e| panic!("{e}"));
    vc.wait_console("Kernel panic", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    vc.wait_reboot(Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e}"));
    mount_riofs(vc);
    start_client(vc);
    let log = wait_done(vc, 120);
    assert!(
        log.contains(&format!("done {TRANSFERS} rejected 0")),
        "the resumed client must finish every transfer once: {log}"
    );
    let (got, dump) = final_balances(server.vm());
    assert_eq!(got, model(), "balances differ from the model: {dump}");
}
