//! Unit tests: two endpoints over loopback UDP, each in its own file segment.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use vista::{Durability, Segment, SegmentConfig};

use crate::table::{Header, RESP_FREE};
use crate::wire::{self, Kind};
use crate::{Endpoint, EndpointConfig, Error, RequestId};

const T: Option<Duration> = Some(Duration::from_secs(5));
const SHORT: Option<Duration> = Some(Duration::from_millis(150));

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Node {
    seg: Segment,
    ep: Endpoint,
    path: std::path::PathBuf,
    addr: usize,
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn node(dir: &tempfile::TempDir, name: &str, cfg: EndpointConfig) -> Node {
    let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let addr = 0x3d00_0000_0000 + i * 0x10_0000_0000;
    let path = dir.path().join(name);
    let mut seg = Segment::create_file(
        &path,
        addr,
        &SegmentConfig::new(4 << 20),
        Durability::Memory,
    )
    .unwrap();
    let ep = Endpoint::open(&mut seg, name, local(), cfg).unwrap();
    Node {
        seg,
        ep,
        path,
        addr,
    }
}

fn quick() -> EndpointConfig {
    EndpointConfig {
        retransmit_interval: Duration::from_millis(30),
        ack_delay: Duration::from_millis(5),
        ..EndpointConfig::default()
    }
}

fn send(c: &mut Node, to: SocketAddr, b: &[u8]) -> RequestId {
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    let id = tx.send_request(to, b).unwrap();
    tx.commit().unwrap();
    id
}

fn serve_echo(s: &mut Node, timeout: Option<Duration>) -> Option<RequestId> {
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    let (id, req) = tx.receive_request(timeout).unwrap()?;
    tx.send_response(id, &req).unwrap();
    tx.commit().unwrap();
    Some(id)
}

fn recv(c: &mut Node, id: RequestId, timeout: Option<Duration>) -> Option<Vec<u8>> {
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    let r = tx.receive_response(id, timeout).unwrap();
    tx.commit().unwrap();
    r
}

fn used_responses(s: &Node) -> usize {
    s.seg
        .get_slice(s.ep.t.responses)
        .unwrap()
        .iter()
        .filter(|e| e.state != RESP_FREE)
        .count()
}

#[test]
fn round_trip_and_typed() {
    let d = tempfile::tempdir().unwrap();
    let mut s = node(&d, "s", quick());
    let mut c = node(&d, "c", quick());
    let to = s.ep.local_addr().unwrap();
    let id = send(&mut c, to, b"hello");
    assert_eq!(serve_echo(&mut s, T), Some(id));
    assert_eq!(recv(&mut c, id, T).unwrap(), b"hello");

    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    let id = tx.send_request_typed(to, &[7u64, 8u64]).unwrap();
    tx.commit().unwrap();
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    let (rid, v) = tx.receive_request_typed::<[u64; 2]>(T).unwrap().unwrap();
    assert_eq!((rid, v), (id, [7, 8]));
    tx.send_response_typed(rid, &(v[0] * v[1])).unwrap();
    tx.commit().unwrap();
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    assert!(matches!(
        tx.receive_response_typed::<u32>(id, T),
        Err(Error::MessageSize {
            expected: 4,
            got: 8,
            ..
        })
    ));
    tx.abort().unwrap();
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    assert_eq!(tx.receive_response_typed::<u64>(id, T).unwrap(), Some(56));
    tx.commit().unwrap();
}

#[test]
fn cannot_receive_response_in_sending_transaction() {
    let d = tempfile::tempdir().unwrap();
    let s = node(&d, "s", quick());
    let mut c = node(&d, "c", quick());
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    let id = tx.send_request(s.ep.local_addr().unwrap(), b"x").unwrap();
    assert!(matches!(
        tx.receive_response(id, SHORT),
        Err(Error::SentInThisTransaction(_))
    ));
    let bogus = RequestId { client: 1, seq: 1 };
    assert!(matches!(
        tx.receive_response(bogus, SHORT),
        Err(Error::UnknownRequest(_))
    ));
}

#[test]
fn abort_of_send_sends_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut s = node(&d, "s", quick());
    let mut c = node(&d, "c", quick());
    let to = s.ep.local_addr().unwrap();
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    let id = tx.send_request(to, b"never").unwrap();
    tx.abort().unwrap();
    assert_eq!(c.ep.stats().sent, 0);
    assert_eq!(
        serve_echo(&mut s, SHORT),
        None,
        "an aborted send reached the server"
    );
    // Dropping a transaction is an abort too; the sequence number is reused, unsent.
    {
        let mut tx = c.ep.begin(&mut c.seg).unwrap();
        assert_eq!(tx.send_request(to, b"never").unwrap(), id);
    }
    assert_eq!(serve_echo(&mut s, SHORT), None);
    let id2 = send(&mut c, to, b"yes");
    assert_eq!(id2, id);
    assert_eq!(serve_echo(&mut s, T), Some(id2));
    assert_eq!(recv(&mut c, id2, T).unwrap(), b"yes");
    assert_eq!(s.ep.stats().received, 1);
}

#[test]
fn abort_undoes_receive_request_and_response() {
    let d = tempfile::tempdir().unwrap();
    let mut s = node(&d, "s", quick());
    let mut c = node(&d, "c", quick());
    let to = s.ep.local_addr().unwrap();
    let id = send(&mut c, to, b"req");
    // Receive, respond, abort: the request comes back, and nothing was sent.
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    let (rid, _) = tx.receive_request(T).unwrap().unwrap();
    tx.send_response(rid, b"first").unwrap();
    tx.abort().unwrap();
    assert_eq!(s.ep.stats().sent, 0);
    assert_eq!(used_responses(&s), 0);
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    let (rid2, req) = tx.receive_request(T).unwrap().unwrap();
    assert_eq!((rid2, &req[..]), (id, &b"req"[..]));
    tx.send_response(rid2, b"second").unwrap();
    assert!(matches!(
        tx.send_response(rid2, b"x"),
        Err(Error::AlreadyResponded(_))
    ));
    tx.commit().unwrap();
    // Client: take the response, abort; it is delivered again.
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    assert_eq!(tx.receive_response(id, T).unwrap().unwrap(), b"second");
    drop(tx);
    assert_eq!(recv(&mut c, id, T).unwrap(), b"second");
    // Now it is gone.
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    assert!(matches!(
        tx.receive_response(id, SHORT),
        Err(Error::UnknownRequest(_))
    ));
}

#[test]
fn duplicates_are_filtered_and_answered() {
    let d = tempfile::tempdir().unwrap();
    let mut s = node(&d, "s", quick());
    let mut c = node(&d, "c", quick());
    let to = s.ep.local_addr().unwrap();
    let id = send(&mut c, to, b"once");
    let raw = UdpSocket::bind(local()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dup = wire::encode(Kind::Request, true, id, 0, b"once");
    // Duplicate while only received (not responded): dropped.
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    let (rid, _) = tx.receive_request(T).unwrap().unwrap();
    raw.send_to(&dup, to).unwrap();
    // Responded in this (uncommitted) transaction: still dropped, nothing resent early.
    tx.send_response(rid, b"answer").unwrap();
    assert_eq!(tx.receive_request(SHORT).unwrap(), None);
    assert_eq!(tx.endpoint().stats().responses_resent, 0);
    tx.commit().unwrap();
    // After commit: a duplicate gets the stored response, to where it came from.
    raw.send_to(&dup, to).unwrap();
    raw.send_to(&dup, to).unwrap();
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    assert_eq!(tx.receive_request(SHORT).unwrap(), None);
    tx.commit().unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..2 {
        let (n, _) = raw.recv_from(&mut buf).unwrap();
        let m = wire::decode(&buf[..n], 100).unwrap();
        assert_eq!(
            (m.kind, m.id, m.payload),
            (Kind::Response, id, &b"answer"[..])
        );
    }
    let st = s.ep.stats();
    assert_eq!((st.responses_resent, st.duplicates_dropped), (2, 1));
    // The client takes it once; a duplicate response is dropped.
    assert_eq!(recv(&mut c, id, T).unwrap(), b"answer");
    let resp = wire::encode(Kind::Response, false, id, 0, b"answer");
    raw.send_to(&resp, c.ep.local_addr().unwrap()).unwrap();
    let id2 = send(&mut c, to, b"next");
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    assert_eq!(tx.receive_response(id2, SHORT).unwrap(), None);
    tx.commit().unwrap();
    assert_eq!(c.ep.stats().responses_dropped, 1);
}

#[test]
fn malformed_datagrams_are_counted_not_fatal() {
    let d = tempfile::tempdir().unwrap();
    let mut s = node(&d, "s", quick());
    let to = s.ep.local_addr().unwrap();
    let raw = UdpSocket::bind(local()).unwrap();
    let good = wire::encode(
        Kind::Request,
        false,
        RequestId { client: 5, seq: 1 },
        0,
        b"ok",
    );
    let mut bad = good.clone();
    bad[45 - 4] ^= 0xff;
    raw.send_to(b"garbage", to).unwrap();
    raw.send_to(&bad, to).unwrap();
    raw.send_to(&good[..good.len() - 1], to).unwrap();
    raw.send_to(&vec![0u8; 30000], to).unwrap();
    raw.send_to(&good, to).unwrap();
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    let (id, p) = tx.receive_request(T).unwrap().unwrap();
    assert_eq!((id.seq, &p[..]), (1, &b"ok"[..]));
    tx.commit().unwrap();
    assert_eq!(s.ep.stats().malformed, 4);
}

#[test]
fn watermark_gc_keeps_filtering() {
    let d = tempfile::tempdir().unwrap();
    let mut s = node(&d, "s", quick());
    let mut c = node(&d, "c", quick());
    let to = s.ep.local_addr().unwrap();
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let id = send(&mut c, to, &[i]);
        serve_echo(&mut s, T).unwrap();
        assert_eq!(recv(&mut c, id, T).unwrap(), [i]);
        ids.push(id);
    }
    // Requests 2..5 carried watermarks 1..4; the explicit ack after ack_delay covers 5.
    std::thread::sleep(Duration::from_millis(20));
    c.ep.flush_acks();
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    assert_eq!(tx.receive_request(SHORT).unwrap(), None);
    tx.commit().unwrap();
    assert_eq!(
        used_responses(&s),
        0,
        "acknowledged entries were not collected"
    );
    assert_eq!(s.ep.stats().gc_freed, 5);
    // Late duplicates of collected requests: still never delivered, not answered either.
    let raw = UdpSocket::bind(local()).unwrap();
    for id in &ids {
        raw.send_to(&wire::encode(Kind::Request, true, *id, 0, b"late"), to)
            .unwrap();
    }
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    assert_eq!(tx.receive_request(SHORT).unwrap(), None);
    tx.commit().unwrap();
    assert_eq!(s.ep.stats().duplicates_dropped, 5);
    // After a restart of the server too (the watermark is persistent).
    let Node {
        seg,
        ep,
        path,
        addr,
    } = s;
    drop(ep);
    drop(seg);
    let mut seg = Segment::open_file(&path, addr, Durability::Memory).unwrap();
    let mut ep = Endpoint::open(&mut seg, "s", to, quick()).unwrap();
    for id in &ids {
        raw.send_to(&wire::encode(Kind::Request, true, *id, 0, b"late"), to)
            .unwrap();
    }
    let mut tx = ep.begin(&mut seg).unwrap();
    assert_eq!(tx.receive_request(SHORT).unwrap(), None);
    tx.commit().unwrap();
    assert_eq!(ep.stats().duplicates_dropped, 5);
}

#[test]
fn aborted_ack_application_is_redone() {
    let d = tempfile::tempdir().unwrap();
    let mut s = node(&d, "s", quick());
    let mut c = node(&d, "c", quick());
    let to = s.ep.local_addr().unwrap();
    let id = send(&mut c, to, b"a");
    serve_echo(&mut s, T).unwrap();
    recv(&mut c, id, T).unwrap();
    c.ep.flush_acks();
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    assert_eq!(tx.receive_request(SHORT).unwrap(), None);
    tx.abort().unwrap();
    assert_eq!(used_responses(&s), 1);
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    assert_eq!(tx.receive_request(SHORT).unwrap(), None);
    tx.commit().unwrap();
    assert_eq!(used_responses(&s), 0);
}

#[test]
fn retransmission_across_loss_and_restart() {
    let d = tempfile::tempdir().unwrap();
    let mut s = node(&d, "s", quick());
    let mut c = node(&d, "c", quick());
    let to = s.ep.local_addr().unwrap();
    // The server is "down" (not receiving) while the client commits and then crashes.
    let id = send(&mut c, to, b"survive");
    let Node {
        seg,
        ep,
        path,
        addr,
    } = c;
    drop(ep);
    drop(seg);
    // Drain the original request on the server and "lose" it by aborting + crashing:
    // a fresh server endpoint socket is not needed; just abort the receive.
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    assert!(tx.receive_request(T).unwrap().is_some());
    drop(tx);
    s.ep.inq.clear(); // the server's volatile queue dies with a crash
                      // The client restarts: the pending request is retransmitted at open.
    let mut seg = Segment::open_file(&path, addr, Durability::Memory).unwrap();
    let mut ep = Endpoint::open(&mut seg, "c", local(), quick()).unwrap();
    assert_eq!(ep.stats().retransmissions, 1);
    assert_eq!(serve_echo(&mut s, T), Some(id));
    // The response is lost (dropped at the client on purpose): retransmit, resend.
    let mut tx = ep.begin(&mut seg).unwrap();
    assert_eq!(tx.receive_response(id, T).unwrap().unwrap(), b"survive");
    tx.commit().unwrap();
}

#[test]
fn packet_loss_is_survived() {
    let d = tempfile::tempdir().unwrap();
    let lossy = EndpointConfig {
        drop_incoming: 0.4,
        drop_seed: 3,
        ..quick()
    };
    let mut s = node(&d, "s", lossy.clone());
    let mut c = node(
        &d,
        "c",
        EndpointConfig {
            drop_seed: 4,
            ..lossy
        },
    );
    let to = s.ep.local_addr().unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut n = 0;
            while n < 20 {
                if serve_echo(&mut s, Some(Duration::from_secs(5))).is_some() {
                    n += 1;
                } else {
                    panic!("server starved");
                }
            }
            // Keep answering retransmissions for a while.
            let mut tx = s.ep.begin(&mut s.seg).unwrap();
            assert_eq!(
                tx.receive_request(Some(Duration::from_millis(500)))
                    .unwrap(),
                None
            );
            tx.commit().unwrap();
            assert!(s.ep.stats().dropped_injected > 0);
        });
        for i in 0..20u32 {
            let id = send(&mut c, to, &i.to_le_bytes());
            assert_eq!(recv(&mut c, id, T).unwrap(), i.to_le_bytes());
        }
        assert!(c.ep.stats().retransmissions > 0);
    });
}

#[test]
fn corrupt_tables_are_a_typed_error() {
    let d = tempfile::tempdir().unwrap();
    let Node { mut seg, ep, .. } = node(&d, "x", quick());
    drop(ep);
    let hdr = seg.root::<Header>("vg.x").unwrap().unwrap();
    let mut tx = seg.begin().unwrap();
    tx.update(hdr, |h| h.max_payload += 1).unwrap();
    tx.commit().unwrap();
    assert!(matches!(
        Endpoint::open(&mut seg, "x", local(), quick()),
        Err(Error::Corrupt { what: "header", .. })
    ));
    let mut tx = seg.begin().unwrap();
    tx.update(hdr, |h| {
        h.max_payload -= 1;
        h.version = 9;
    })
    .unwrap();
    tx.commit().unwrap();
    assert!(matches!(
        Endpoint::open(&mut seg, "x", local(), quick()),
        Err(Error::UnsupportedVersion { found: 9, .. })
    ));
    let mut tx = seg.begin().unwrap();
    tx.update(hdr, |h| h.version = crate::table::VERSION)
        .unwrap();
    let reqs = tx.read(hdr).unwrap().requests;
    tx.update_slice(reqs, 3..4, |e| e[0].state = 77).unwrap();
    tx.commit().unwrap();
    assert!(matches!(
        Endpoint::open(&mut seg, "x", local(), quick()),
        Err(Error::Corrupt {
            what: "request table",
            ..
        })
    ));
    let mut tx = seg.begin().unwrap();
    tx.update_slice(reqs, 3..4, |e| {
        e[0].state = 1;
        e[0].seq = 0;
    })
    .unwrap();
    tx.commit().unwrap();
    assert!(Endpoint::open(&mut seg, "x", local(), quick()).is_err());
}

#[test]
fn select_reports_without_consuming() {
    let d = tempfile::tempdir().unwrap();
    let mut s = node(&d, "s", quick());
    let mut c = node(&d, "c", quick());
    let to = s.ep.local_addr().unwrap();
    let id = send(&mut c, to, b"sel");
    let mut tx = s.ep.begin(&mut s.seg).unwrap();
    assert_eq!(tx.select(&[], T).unwrap(), crate::Ready::Request);
    assert_eq!(tx.select(&[], T).unwrap(), crate::Ready::Request);
    let (rid, _) = tx.receive_request(SHORT).unwrap().unwrap();
    tx.send_response(rid, b"r").unwrap();
    assert_eq!(tx.select(&[], SHORT).unwrap(), crate::Ready::Timeout);
    tx.commit().unwrap();
    let mut tx = c.ep.begin(&mut c.seg).unwrap();
    assert_eq!(tx.select(&[id], T).unwrap(), crate::Ready::Response(id));
    assert_eq!(tx.receive_response(id, SHORT).unwrap().unwrap(), b"r");
    tx.commit().unwrap();
}

#[test]
fn wrong_segment_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut a = node(&d, "a", quick());
    let mut b = node(&d, "b", quick());
    assert!(matches!(
        a.ep.begin(&mut b.seg),
        Err(Error::WrongSegment { .. })
    ));
    assert!(a.ep.begin(&mut a.seg).is_ok());
}
