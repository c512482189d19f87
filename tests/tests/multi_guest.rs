//! Several guests on one network that exists only on this machine (riovm's `NetHub`:
//! QEMU `dgram` NICs on the loopback joined by a learning hub), each with its own rio.ko
//! and arena: the ground the distributed protocols stand on. One guest's kernel panics
//! while the others keep running; it warm-reboots with its address and its arena, and
//! rejoins.

use std::time::{Duration, Instant};

use rio_qemu_tests::*;
use riovm::{NetConfig, NetHub, Vm};

fn ip(index: u8) -> String {
    NetConfig::new(index, 1).ip().to_string()
}

/// Asserts that `from` reaches guest `to` by ICMP echo within two tries (ARP first);
/// the failure says what the guest's network and the hub looked like.
fn assert_pings(from: &mut Vm, to: u8, hub: &NetHub, what: &str) {
    let ok = from
        .run(&format!(
            "ping -c 1 -W 3 {} || ping -c 1 -W 3 {}",
            ip(to),
            ip(to)
        ))
        .map(|o| o.status == 0)
        .unwrap_or(false);
    if !ok {
        let net = sh(
            from,
            "ip addr; ip neigh; dmesg | grep -i -E 'virtio|eth0'; true",
        );
        panic!(
            "{what}: no reply from {}\n{net}\nhub: {:?}, learned {:?}",
            ip(to),
            hub.stats(),
            hub.learned()
        );
    }
}

/// Waits until guest file `path` contains `what` (or 20 s pass); returns its contents.
fn wait_for(vm: &mut Vm, path: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = sh(vm, &format!("cat {path} 2>/dev/null; true"));
        if got.contains(what) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TCP stream from `a` to `b` on `port` (busybox nc: `b` listens, `a` sends `text`;
/// busybox's nc has no UDP mode, and ICMP already checks datagrams).
fn tcp(a: &mut Vm, b: &mut Vm, b_index: u8, port: u16, text: &str) -> String {
    b.spawn(&format!("nc -l -p {port} > /tmp/tcp-{port}"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(500));
    sh(
        a,
        &format!("echo {text} | nc -w 3 {} {port}; true", ip(b_index)),
    );
    wait_for(b, &format!("/tmp/tcp-{port}"), text)
}

#[test]
fn two_guests_on_one_hub_reach_each_other_by_icmp_and_tcp_until_partitioned() {
    let hub = NetHub::start().expect("the hub");
    let mut a = net_guest(&hub, 1, "net-a");
    let mut b = net_guest(&hub, 2, "net-b");
    let addr = sh(a.vm(), "ip -4 addr show eth0");
    assert!(addr.contains("10.77.0.1/24"), "guest 1's eth0: {addr}");
    assert_pings(a.vm(), 2, &hub, "guest 1 to guest 2");
    assert_pings(b.vm(), 1, &hub, "guest 2 to guest 1");
    let (va, vb) = (a.vm.as_mut().expect("a"), b.vm.as_mut().expect("b"));
    let got = tcp(va, vb, 2, 7001, "hello-from-1");
    assert!(got.contains("hello-from-1"), "guest 2 got {got:?}");
    let got = tcp(vb, va, 1, 7002, "hello-from-2");
    assert!(got.contains("hello-from-2"), "guest 1 got {got:?}");
    let st = hub.stats();
    assert!(st.forwarded > 0 && st.malformed == 0, "{st:?}");
    assert_eq!(hub.learned().len(), 2, "{:?}", hub.learned());
    // The hub's partition knob (for fault injection) cuts them apart, and healing it
    // joins them again.
    hub.partition(&[&[1], &[2]]);
    let cut = a
        .vm()
        .run(&format!("ping -c 2 -W 1 {}", ip(2)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        cut.status,
        0,
        "guest 1 reached guest 2 across the partition: {}",
        cut.stdout_str()
    );
    assert!(hub.stats().dropped > 0, "{:?}", hub.stats());
    hub.heal();
    assert_pings(
        a.vm(),
        2,
        &hub,
        "guest 1 to guest 2 after the partition healed",
    );
}

#[test]
fn a_panicked_guest_rejoins_with_its_address_and_arena_while_the_others_run() {
    let hub = NetHub::start().expect("the hub");
    let mut a = net_guest(&hub, 1, "net-run-a");
    let mut b = net_guest(&hub, 2, "net-run-b");
    let mut c = net_guest(&hub, 3, "net-crash-c");
    c.allow_crash();
    // Guest 1 pings guest 2 five times a second for the whole test.
    assert_pings(a.vm(), 2, &hub, "guest 1 to guest 2");
    a.vm()
        .spawn("ping -i 0.2 10.77.0.2 > /tmp/ping.log 2>&1")
        .unwrap_or_else(|e| panic!("{e}"));
    // Guest 3 keeps an object in its arena.
    let vc = c.vm();
    sh(vc, "rio-load && rio format");
    sh(vc, "rio-check write kept --seed 33 --size 300000");
    assert_pings(vc, 1, &hub, "guest 3 to guest 1");
    let replies = |vm: &mut Vm| -> usize {
        sh(vm, "grep -c 'bytes from' /tmp/ping.log; true")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let before = replies(a.vm());
    // Guest 3's kernel panics; it reboots warm (RAM kept) in the same QEMU.
    let vc = c.vm();
    vc.panic().unwrap_or_else(|e| panic!("{e}"));
    vc.wait_console("Kernel panic", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    // Meanwhile the others run on: the ping process lives and gets replies.
    std::thread::sleep(Duration::from_secs(1));
    let during = replies(a.vm());
    assert!(
        during > before,
        "guest 1's pings stalled: {before} -> {during}"
    );
    c.vm()
        .wait_reboot(Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e}"));
    let vc = c.vm();
    let addr = sh(vc, "ip -4 addr show eth0");
    assert!(addr.contains("10.77.0.3/24"), "after the reboot: {addr}");
    assert_pings(vc, 1, &hub, "the rebooted guest 3 to guest 1");
    assert_pings(b.vm(), 3, &hub, "guest 2 to the rebooted guest 3");
    sh(vc, "rio-load");
    let dmesg = sh(vc, "dmesg");
    assert!(dmesg.contains("recovered arena after a crash"), "{dmesg}");
    sh(vc, "rio-check verify kept --seed 33 --size 300000");
    // Guest 1's ping never stopped.
    let va = a.vm();
    assert_eq!(
        sh(va, "pidof ping >/dev/null && echo alive; true").trim(),
        "alive"
    );
    let after = replies(va);
    assert!(
        after > during,
        "guest 1's pings stalled: {during} -> {after}"
    );
    eprintln!(
        "guest 1's ping replies: {before} before the panic, {during} during, {after} at the end"
    );
}
