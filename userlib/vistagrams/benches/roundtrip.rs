//! Request/response round trip, sizes 16 B .. 8 KiB (thesis Figure 4.6), over loopback:
//!
//! * raw UDP: send a datagram, the server echoes it;
//! * volatile: the same protocol as Vistagrams (wire format, checksum, ids, retransmit
//!   timer, server duplicate table) with volatile tables and no transactions;
//! * Vistagrams: client `send_request` + commit, then `receive_response` + commit; server
//!   `receive_request` + `send_response` + commit; file segments, `Durability::Memory`;
//! * TCP + SQLite: what a user would do instead: each side commits the message to SQLite
//!   (WAL, synchronous=FULL) before it is sent / after it is received, over one TCP
//!   connection (client: commit request, send; server: receive, commit, reply; client:
//!   receive, commit).
//!
//! Environment: VG_BENCH_RUNS (default 5), VG_BENCH_ITERS (default 400; SQLite a quarter),
//! VG_BENCH_DIR (SQLite files; default a temporary directory under /var/tmp), VG_BENCH_CAP
//! (response-table capacity, default 1024), VG_BENCH_SEGDIR (segment files; default /dev/shm).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vista::{Durability, Segment, SegmentConfig};
use vistagrams::wire::{self, Kind};
use vistagrams::{Endpoint, EndpointConfig, RequestId};

const SIZES: [usize; 6] = [16, 64, 256, 1024, 4096, 8192];

fn env(name: &str, d: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Mean microseconds per round trip of `iters` calls of `f`.
fn time(iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 + 1 {
        f();
    }
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / iters as f64
}

fn raw_udp(size: usize, runs: usize, iters: usize) -> f64 {
    let srv = UdpSocket::bind(local()).unwrap();
    let to = srv.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        srv.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut b = vec![0u8; 65536];
        while !st.load(Ordering::Relaxed) {
            if let Ok((n, from)) = srv.recv_from(&mut b) {
                srv.send_to(&b[..n], from).unwrap();
            }
        }
    });
    let c = UdpSocket::bind(local()).unwrap();
    let msg = vec![7u8; size];
    let mut b = vec![0u8; 65536];
    let r = median(
        (0..runs)
            .map(|_| {
                time(iters, || {
                    c.send_to(&msg, to).unwrap();
                    c.recv_from(&mut b).unwrap();
                })
            })
            .collect(),
    );
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    r
}

fn volatile(size: usize, runs: usize, iters: usize) -> f64 {
    let srv = UdpSocket::bind(local()).unwrap();
    let to = srv.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        srv.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut b = vec![0u8; 65536];
        let mut table: HashMap<RequestId, Vec<u8>> = HashMap::new();
        while !st.load(Ordering::Relaxed) {
            let Ok((n, from)) = srv.recv_from(&mut b) else {
                continue;
            };
            let Ok(m) = wire::decode(&b[..n], 16 << 10) else {
                continue;
            };
            if m.kind != Kind::Request {
                continue;
            }
            table.retain(|id, _| id.client != m.id.client || id.seq >= m.ack_below);
            let d = table
                .entry(m.id)
                .or_insert_with(|| wire::encode(Kind::Response, false, m.id, 0, m.payload));
            srv.send_to(d, from).unwrap();
        }
    });
    let c = UdpSocket::bind(local()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let msg = vec![7u8; size];
    let mut b = vec![0u8; 65536];
    let mut seq = 0u64;
    let mut pending: HashMap<u64, Vec<u8>> = HashMap::new();
    let r = median(
        (0..runs)
            .map(|_| {
                time(iters, || {
                    seq += 1;
                    let id = RequestId { client: 42, seq };
                    let w = pending.keys().min().copied().unwrap_or(seq);
                    let d = wire::encode(Kind::Request, false, id, w, &msg);
                    pending.insert(seq, msg.clone());
                    c.send_to(&d, to).unwrap();
                    loop {
                        match c.recv_from(&mut b) {
                            Ok((n, _)) => {
                                if let Ok(m) = wire::decode(&b[..n], 16 << 10) {
                                    if m.kind == Kind::Response
                                        && pending.remove(&m.id.seq).is_some()
                                    {
                                        let _resp = m.payload.to_vec();
                                        if m.id.seq == seq {
                                            break;
                                        }
                                    }
                                }
                            }
                            Err(_) => {
                                c.send_to(&d, to).unwrap();
                            }
                        }
                    }
                })
            })
            .collect(),
    );
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    r
}

fn vistagrams_rt(size: usize, runs: usize, iters: usize, dir: &std::path::Path) -> f64 {
    let cfg = SegmentConfig::new(16 << 20);
    let tag = size;
    let mut sseg = Segment::create_file(
        dir.join(format!("s{tag}")),
        0x3f00_0000_0000,
        &cfg,
        Durability::Memory,
    )
    .unwrap();
    let mut cseg = Segment::create_file(
        dir.join(format!("c{tag}")),
        0x3f10_0000_0000,
        &cfg,
        Durability::Memory,
    )
    .unwrap();
    let mut ecfg = EndpointConfig::default();
    if let Ok(n) = std::env::var("VG_BENCH_CAP") {
        // Response-table capacity (the tables are scanned linearly).
        ecfg.capacity.responses = n.parse().unwrap();
    }
    let mut sep = Endpoint::open(&mut sseg, "bench", local(), ecfg.clone()).unwrap();
    let mut cep = Endpoint::open(&mut cseg, "bench", local(), ecfg).unwrap();
    let to = sep.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            let mut tx = sep.begin(&mut sseg).unwrap();
            if let Some((id, req)) = tx.receive_request(Some(Duration::from_millis(50))).unwrap() {
                tx.send_response(id, &req).unwrap();
            }
            tx.commit().unwrap();
        }
        sep.stats()
    });
    let msg = vec![7u8; size];
    let r = median(
        (0..runs)
            .map(|_| {
                time(iters, || {
                    let mut tx = cep.begin(&mut cseg).unwrap();
                    let id = tx.send_request(to, &msg).unwrap();
                    tx.commit().unwrap();
                    let mut tx = cep.begin(&mut cseg).unwrap();
                    let r = tx.receive_response(id, None).unwrap();
                    tx.commit().unwrap();
                    assert_eq!(r.map(|r| r.len()), Some(size));
                })
            })
            .collect(),
    );
    stop.store(true, Ordering::Relaxed);
    let sst = h.join().unwrap();
    let cst = cep.stats();
    eprintln!(
        "  vistagrams {size} B: client sent {} (retransmissions {}, acks {}), server sent {}",
        cst.sent, cst.retransmissions, cst.acks_sent, sst.sent
    );
    r
}

fn sqlite(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS msgs (id INTEGER PRIMARY KEY, body BLOB);",
    )
    .unwrap();
    c
}

fn frame_write(s: &mut TcpStream, id: u64, body: &[u8]) {
    let mut v = Vec::with_capacity(12 + body.len());
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    s.write_all(&v).unwrap();
}

fn frame_read(s: &mut TcpStream) -> Option<(u64, Vec<u8>)> {
    let mut h = [0u8; 12];
    s.read_exact(&mut h).ok()?;
    let id = u64::from_le_bytes(h[..8].try_into().unwrap());
    let n = u32::from_le_bytes(h[8..].try_into().unwrap()) as usize;
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).ok()?;
    Some((id, b))
}

fn tcp_sqlite(size: usize, runs: usize, iters: usize, dir: &std::path::Path) -> f64 {
    let l = TcpListener::bind(local()).unwrap();
    let to = l.local_addr().unwrap();
    let sdb = dir.join(format!("server{size}.db"));
    let h = std::thread::spawn(move || {
        let db = sqlite(&sdb);
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        while let Some((id, body)) = frame_read(&mut s) {
            // Receive and respond atomically: the request with its response, committed.
            db.execute(
                "INSERT OR REPLACE INTO msgs (id, body) VALUES (?1, ?2)",
                rusqlite::params![id as i64, body],
            )
            .unwrap();
            frame_write(&mut s, id, &body);
        }
    });
    let db = sqlite(&dir.join(format!("client{size}.db")));
    let mut s = TcpStream::connect(to).unwrap();
    s.set_nodelay(true).unwrap();
    let msg = vec![7u8; size];
    let mut id = 0u64;
    let r = median(
        (0..runs)
            .map(|_| {
                time(iters, || {
                    id += 1;
                    // Commit the outgoing request, then send it.
                    db.execute(
                        "INSERT INTO msgs (id, body) VALUES (?1, ?2)",
                        rusqlite::params![id as i64, msg],
                    )
                    .unwrap();
                    frame_write(&mut s, id, &msg);
                    let (rid, body) = frame_read(&mut s).unwrap();
                    assert_eq!((rid, body.len()), (id, size));
                    // Commit the response's receipt (the request is done).
                    db.execute(
                        "UPDATE msgs SET body = ?2 WHERE id = ?1",
                        rusqlite::params![id as i64, body],
                    )
                    .unwrap();
                })
            })
            .collect(),
    );
    drop(s);
    h.join().unwrap();
    r
}

fn main() {
    let runs = env("VG_BENCH_RUNS", 5);
    let iters = env("VG_BENCH_ITERS", 400);
    // Segments on tmpfs by default: on ext4 the kernel's writeback of the dirty segment pages
    // makes later stores fault (page_mkwrite), which measures ext4, not Vistagrams.
    let seg_dir = match std::env::var_os("VG_BENCH_SEGDIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None if std::path::Path::new("/dev/shm").is_dir() => {
            tempfile::tempdir_in("/dev/shm").unwrap()
        }
        None => tempfile::tempdir().unwrap(),
    };
    let sql_dir = match std::env::var_os("VG_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir_in("/var/tmp").unwrap(),
    };
    eprintln!(
        "runs {runs}, {iters} round trips per run ({} for SQLite); segments in {}, SQLite in {}",
        (iters / 4).max(10),
        seg_dir.path().display(),
        sql_dir.path().display()
    );
    let mut rows = Vec::new();
    for &size in &SIZES {
        let u = raw_udp(size, runs, iters);
        let v = volatile(size, runs, iters);
        let g = vistagrams_rt(size, runs, iters, seg_dir.path());
        let q = tcp_sqlite(size, runs, (iters / 4).max(10), sql_dir.path());
        eprintln!("  {size} B: udp {u:.1} volatile {v:.1} vistagrams {g:.1} tcp+sqlite {q:.1} us");
        rows.push((size, u, v, g, q));
    }
    println!("| size | raw UDP (µs) | volatile baseline (µs) | Vistagrams (µs) | TCP + SQLite FULL (µs) | Vistagrams − volatile (µs) | Vistagrams / volatile | SQLite / Vistagrams |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (size, u, v, g, q) in rows {
        println!(
            "| {size} B | {u:.1} | {v:.1} | {g:.1} | {q:.0} | {:.1} | {:.2} | {:.0}× |",
            g - v,
            g / v,
            q / g
        );
    }
    println!();
    println!("Medians over {runs} runs of the mean round trip (loopback, one process, client and server threads).");
}
