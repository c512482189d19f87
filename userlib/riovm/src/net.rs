//! A network that exists only on this machine: guests' virtio-net cards joined by a hub.
//!
//! Each guest's NIC uses QEMU's `dgram` backend: every Ethernet frame it sends is one UDP
//! datagram from its own port on 127.0.0.1 to the hub's port, and every datagram the hub
//! sends to that port is a frame the NIC receives. The [`NetHub`] is an Ethernet hub with
//! learning (a switch): it remembers which UDP address each source MAC last came from,
//! forwards a frame to its destination's address when it knows it, and floods broadcast,
//! multicast and unknown destinations to every other address it has seen. No tap device,
//! bridge, route or privilege is needed, and nothing outside the loopback sees a frame.
//!
//! A guest keeps its MAC and IPv4 address ([`NetConfig`]) across warm reboots and new
//! QEMU processes; a new process sends from a new UDP port, and the hub relearns it from
//! the first frame (ARP or anything else) the guest sends. Guests are addressed
//! `10.77.0.N/24`, N = [`NetConfig::index`]; `qemu/init` configures `eth0` from the kernel
//! command line's `rio.ip=`.
//!
//! What the hub receives is untrusted: a datagram shorter than an Ethernet header is
//! dropped and counted, never parsed.
//!
//! For fault injection the hub can lose a fraction of its deliveries
//! ([`NetHub::set_loss`], from a fixed pseudo-random sequence, so a run repeats) and cut
//! the network into sides that cannot hear each other ([`NetHub::partition`]);
//! [`NetHub::heal`] undoes both. It still learns from frames it then drops.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Result, VmError};

/// The shortest frame the hub relays: destination and source MAC and the EtherType.
pub const ETH_HEADER: usize = 14;
/// The largest datagram the hub reads (a frame of the default 1500-byte MTU fits).
const MAX_FRAME: usize = 65536;

/// One guest's place on a hub's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// The guest's number on the network, 1 to 254: its MAC ends in it and its address
    /// is `10.77.0.index/24`.
    pub index: u8,
    /// The hub's UDP port on 127.0.0.1 ([`NetHub::port`]).
    pub hub_port: u16,
}

impl NetConfig {
    /// Guest `index` on the network of the hub listening on `hub_port`.
    pub fn new(index: u8, hub_port: u16) -> NetConfig {
        NetConfig { index, hub_port }
    }

    /// The guest's MAC address, locally administered: `52:54:00:77:00:index`.
    pub fn mac(&self) -> [u8; 6] {
        [0x52, 0x54, 0x00, 0x77, 0x00, self.index]
    }

    /// The guest's IPv4 address.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, self.index)
    }

    /// The kernel command-line word `qemu/init` reads (`rio.ip=10.77.0.N/24`).
    pub fn kernel_param(&self) -> String {
        format!("rio.ip={}/24", self.ip())
    }

    /// The QEMU arguments for the NIC and its backend.
    pub fn qemu_args(&self) -> Vec<String> {
        let m = self.mac();
        vec![
            "-netdev".into(),
            format!(
                "dgram,id=net0,local.type=inet,local.host=127.0.0.1,local.port=0,\
                 remote.type=inet,remote.host=127.0.0.1,remote.port={}",
                self.hub_port
            ),
            "-device".into(),
            format!(
                "virtio-net-pci,netdev=net0,mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
        ]
    }

    /// Checks the index.
    pub fn validate(&self) -> Result<()> {
        if self.index == 0 || self.index == 255 {
            return Err(VmError::Config(format!(
                "network index {} is not a host address of 10.77.0.0/24 (1 to 254)",
                self.index
            )));
        }
        if self.hub_port == 0 {
            return Err(VmError::Config("the hub's port is 0".into()));
        }
        Ok(())
    }
}

/// What a hub has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Frames received.
    pub frames: u64,
    /// Datagrams dropped as too short to be a frame.
    pub malformed: u64,
    /// Frames sent to one learned address.
    pub forwarded: u64,
    /// Frames flooded (broadcast, multicast or an unknown destination).
    pub flooded: u64,
    /// Deliveries (one frame to one guest) dropped by [`NetHub::set_loss`] or
    /// [`NetHub::partition`].
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    malformed: AtomicU64,
    forwarded: AtomicU64,
    flooded: AtomicU64,
    dropped: AtomicU64,
}

/// The fault-injection knobs: a loss rate and the sides of a partition.
struct Faults {
    /// Deliveries lost per 2^32.
    loss: u64,
    /// A xorshift64 state, fixed at start so that a run's losses repeat.
    rng: u64,
    /// The side of each guest named in a partition (by MAC); every other guest is on one
    /// more side of its own.
    sides: HashMap<[u8; 6], usize>,
}

impl Faults {
    fn new() -> Faults {
        Faults {
            loss: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            sides: HashMap::new(),
        }
    }

    fn side(&self, mac: &[u8; 6]) -> usize {
        self.sides.get(mac).copied().unwrap_or(usize::MAX)
    }

    /// Whether a frame from `src` may reach `dst` now (drawing from the loss sequence).
    fn deliver(&mut self, src: &[u8; 6], dst: &[u8; 6]) -> bool {
        if self.side(src) != self.side(dst) {
            return false;
        }
        if self.loss == 0 {
            return true;
        }
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 32) >= self.loss
    }
}

/// An Ethernet hub with MAC learning on a UDP port of 127.0.0.1, relaying between guests'
/// `dgram` NICs on its own thread until dropped.
pub struct NetHub {
    port: u16,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    table: Arc<Mutex<HashMap<[u8; 6], SocketAddr>>>,
    faults: Arc<Mutex<Faults>>,
    thread: Option<JoinHandle<()>>,
}

impl NetHub {
    /// Binds a free port on 127.0.0.1 and starts relaying.
    pub fn start() -> Result<NetHub> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(VmError::io("bind the network hub"))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(VmError::io("set the hub's read timeout"))?;
        let port = sock
            .local_addr()
            .map_err(VmError::io("the hub's address"))?
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let table = Arc::new(Mutex::new(HashMap::new()));
        let faults = Arc::new(Mutex::new(Faults::new()));
        let (s, c, t, f) = (
            stop.clone(),
            counters.clone(),
            table.clone(),
            faults.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("riovm-net-hub".into())
            .spawn(move || relay(&sock, &s, &c, &t, &f))
            .map_err(VmError::io("start the hub's thread"))?;
        Ok(NetHub {
            port,
            stop,
            counters,
            table,
            faults,
            thread: Some(thread),
        })
    }

    /// The hub's UDP port on 127.0.0.1, for [`NetConfig::hub_port`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the hub has done so far.
    pub fn stats(&self) -> HubStats {
        let c = &self.counters;
        HubStats {
            frames: c.frames.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            flooded: c.flooded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// Loses `fraction` (0 to 1) of the deliveries from now on, each frame to each guest
    /// drawn independently; 0 loses none.
    pub fn set_loss(&self, fraction: f64) {
        let f = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let mut t = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        t.loss = (f * (1u64 << 32) as f64) as u64;
    }

    /// Cuts the network: the guests of each slice of `sides` ([`NetConfig::index`]es) hear
    /// only each other, and the guests named nowhere hear only each other. Replaces an
    /// earlier partition.
    pub fn partition(&self, sides: &[&[u8]]) {
        let mut t = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        t.sides.clear();
        for (side, guests) in sides.iter().enumerate() {
            for &index in guests.iter() {
                t.sides.insert(NetConfig::new(index, 0).mac(), side);
            }
        }
    }

    /// Ends the partition and the losses.
    pub fn heal(&self) {
        let mut t = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        t.sides.clear();
        t.loss = 0;
    }

    /// The MAC addresses the hub has learned.
    pub fn learned(&self) -> Vec<[u8; 6]> {
        let t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<[u8; 6]> = t.keys().copied().collect();
        v.sort();
        v
    }
}

impl Drop for NetHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The hub's loop: read a datagram, learn its source, forward or flood it.
fn relay(
    sock: &UdpSocket,
    stop: &AtomicBool,
    c: &Counters,
    table: &Mutex<HashMap<[u8; 6], SocketAddr>>,
    faults: &Mutex<Faults>,
) {
    let mut buf = vec![0u8; MAX_FRAME];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            // The timeout (to see `stop`), or an ICMP error from a guest that went away.
            Err(_) => continue,
        };
        let frame = &buf[..n];
        if n < ETH_HEADER {
            c.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        c.frames.fetch_add(1, Ordering::Relaxed);
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[..6]);
        let mut src = [0u8; 6];
        src.copy_from_slice(&frame[6..12]);
        let (targets, flooded) = {
            let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
            // A multicast source is not a station; do not learn it.
            if src[0] & 1 == 0 {
                t.insert(src, from);
            }
            // Each target with the MAC it was learned from, for the partition's sides.
            let mut all: Vec<(SocketAddr, [u8; 6])> = match t.get(&dst) {
                Some(&to) if dst[0] & 1 == 0 => vec![(to, dst)],
                _ => t.iter().map(|(&m, &a)| (a, m)).collect(),
            };
            all.retain(|&(a, _)| a != from);
            all.sort();
            let flooded = !(dst[0] & 1 == 0 && t.contains_key(&dst));
            (all, flooded)
        };
        let mut sent: Vec<SocketAddr> = Vec::with_capacity(targets.len());
        {
            let mut f = faults.lock().unwrap_or_else(PoisonError::into_inner);
            for (to, mac) in targets {
                if sent.contains(&to) {
                    continue;
                }
                if f.deliver(&src, &mac) {
                    sent.push(to);
                } else {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for to in &sent {
            let _ = sock.send_to(frame, to);
        }
        let n = if flooded { &c.flooded } else { &c.forwarded };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        s
    }

    fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(payload);
        f
    }

    fn recv(s: &UdpSocket) -> Option<Vec<u8>> {
        let mut b = [0u8; 2048];
        s.recv(&mut b).ok().map(|n| b[..n].to_vec())
    }

    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn the_hub_floods_broadcasts_learns_and_forwards() {
        let hub = NetHub::start().expect("hub");
        let to = SocketAddr::from(([127, 0, 0, 1], hub.port()));
        let (a, b, c) = (guest(), guest(), guest());
        let (ma, mb, mc) = (
            NetConfig::new(1, 1).mac(),
            NetConfig::new(2, 1).mac(),
            NetConfig::new(3, 1).mac(),
        );
        // Each announces itself with a broadcast; the ones already known receive it.
        a.send_to(&frame(BCAST, ma, b"a"), to).expect("send");
        std::thread::sleep(Duration::from_millis(100));
        b.send_to(&frame(BCAST, mb, b"b"), to).expect("send");
        assert_eq!(recv(&a), Some(frame(BCAST, mb, b"b")));
        c.send_to(&frame(BCAST, mc, b"c"), to).expect("send");
        assert_eq!(recv(&a), Some(frame(BCAST, mc, b"c")));
        assert_eq!(recv(&b), Some(frame(BCAST, mc, b"c")));
        assert_eq!(hub.learned(), vec![ma, mb, mc]);
        // A unicast frame reaches its destination only.
        a.send_to(&frame(mc, ma, b"to c"), to).expect("send");
        assert_eq!(recv(&c), Some(frame(mc, ma, b"to c")));
        b.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        assert_eq!(recv(&b), None, "b must not see a's frame to c");
        let st = hub.stats();
        assert_eq!((st.frames, st.forwarded, st.flooded), (4, 1, 3));
    }

    #[test]
    fn short_datagrams_are_dropped_and_counted() {
        let hub = NetHub::start().expect("hub");
        let to = SocketAddr::from(([127, 0, 0, 1], hub.port()));
        let (a, b) = (guest(), guest());
        b.send_to(&frame(BCAST, NetConfig::new(2, 1).mac(), b""), to)
            .expect("send");
        std::thread::sleep(Duration::from_millis(100));
        for n in [0usize, 1, 13] {
            a.send_to(&vec![0xffu8; n], to).expect("send");
        }
        a.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        b.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        assert_eq!(recv(&b), None);
        // The hub still relays after them.
        a.send_to(&frame(BCAST, NetConfig::new(1, 1).mac(), b"x"), to)
            .expect("send");
        assert!(recv(&b).is_some());
        assert_eq!(hub.stats().malformed, 3);
    }

    #[test]
    fn a_partition_cuts_the_sides_apart_until_healed() {
        let hub = NetHub::start().expect("hub");
        let to = SocketAddr::from(([127, 0, 0, 1], hub.port()));
        let (a, b, c) = (guest(), guest(), guest());
        let m = |i| NetConfig::new(i, 1).mac();
        for (s, i) in [(&a, 1), (&b, 2), (&c, 3)] {
            s.send_to(&frame(BCAST, m(i), b"hello"), to).expect("send");
            std::thread::sleep(Duration::from_millis(100));
        }
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            while recv(s).is_some() {}
        }
        hub.partition(&[&[1], &[2, 3]]);
        // Guest 1 is alone: its broadcast and its unicast reach nobody.
        a.send_to(&frame(BCAST, m(1), b"x"), to).expect("send");
        a.send_to(&frame(m(2), m(1), b"to b"), to).expect("send");
        assert_eq!(recv(&b), None);
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        assert_eq!(recv(&c), None);
        // Guests 2 and 3 still hear each other, and guest 1 does not hear them.
        b.send_to(&frame(BCAST, m(2), b"y"), to).expect("send");
        assert_eq!(recv(&c), Some(frame(BCAST, m(2), b"y")));
        assert_eq!(recv(&a), None);
        assert_eq!(hub.stats().dropped, 4, "{:?}", hub.stats());
        hub.heal();
        a.send_to(&frame(m(2), m(1), b"again"), to).expect("send");
        assert_eq!(recv(&b), Some(frame(m(2), m(1), b"again")));
    }

    #[test]
    fn the_hub_loses_the_fraction_it_is_told_to() {
        let hub = NetHub::start().expect("hub");
        let to = SocketAddr::from(([127, 0, 0, 1], hub.port()));
        let (a, b) = (guest(), guest());
        let (ma, mb) = (NetConfig::new(1, 1).mac(), NetConfig::new(2, 1).mac());
        b.send_to(&frame(BCAST, mb, b""), to).expect("send");
        std::thread::sleep(Duration::from_millis(100));
        let got = |n: usize| -> usize {
            for i in 0..n {
                a.send_to(&frame(mb, ma, &i.to_le_bytes()), to)
                    .expect("send");
                if i % 32 == 31 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            b.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            let mut k = 0;
            while recv(&b).is_some() {
                k += 1;
            }
            k
        };
        hub.set_loss(1.0);
        assert_eq!(got(20), 0);
        hub.set_loss(0.5);
        // 200 frames: about 100 wait in b's socket buffer, well within its size.
        let half = got(200);
        assert!((50..150).contains(&half), "{half} of 200 arrived");
        hub.set_loss(0.0);
        assert_eq!(got(20), 20);
        let st = hub.stats();
        assert_eq!(st.dropped as usize, 20 + 200 - half, "{st:?}");
    }

    #[test]
    fn a_guest_has_its_address_mac_and_netdev() {
        let n = NetConfig::new(7, 4242);
        assert_eq!(n.kernel_param(), "rio.ip=10.77.0.7/24");
        let args = n.qemu_args().join(" ");
        assert!(args.contains("remote.port=4242"), "{args}");
        assert!(
            args.contains("virtio-net-pci,netdev=net0,mac=52:54:00:77:00:07"),
            "{args}"
        );
        assert!(n.validate().is_ok());
        assert!(NetConfig::new(0, 1).validate().is_err());
        assert!(NetConfig::new(255, 1).validate().is_err());
    }
}
