//! The endpoint (one UDP socket and its persistent tables) and the Vistagrams transaction
//! [`VgTx`], which wraps a Vista transaction and plays the deferred sends back after commit.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use vista::{PPtr, Segment};

use crate::error::{Error, Result};
use crate::table::{self, Capacity, Header, Tables, REQ_PENDING};
use crate::wire::{self, Kind};
use crate::RequestId;

/// How an endpoint behaves. The capacities and `max_payload` are fixed when the tables are
/// created; the rest may differ from one open to the next.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Largest request or response, bytes (at most [`wire::MAX_WIRE_PAYLOAD`]).
    pub max_payload: usize,
    /// Table sizes (used at creation).
    pub capacity: Capacity,
    /// How long `receive_response` and `select` wait before retransmitting a request.
    pub retransmit_interval: Duration,
    /// How long an acknowledgement waits for a request to ride on before it is sent alone.
    pub ack_delay: Duration,
    /// Fraction (0..1) of incoming datagrams to drop on purpose (packet-loss testing).
    pub drop_incoming: f64,
    /// Seed of the drop decisions.
    pub drop_seed: u64,
    /// Test only: disable the server's duplicate filter (a negative control that must
    /// break exactly-once delivery).
    #[doc(hidden)]
    pub test_no_dedup: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            max_payload: 16 << 10,
            capacity: Capacity::default(),
            retransmit_interval: Duration::from_millis(50),
            ack_delay: Duration::from_millis(20),
            drop_incoming: 0.0,
            drop_seed: 1,
            test_no_dedup: false,
        }
    }
}

/// Counters (volatile, since this endpoint was opened).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams sent (all kinds).
    pub sent: u64,
    /// Sends that failed (covered by retransmission).
    pub send_errors: u64,
    /// Datagrams received and well formed.
    pub received: u64,
    /// Datagrams dropped as malformed (bad length, magic, version, kind, checksum, oversize).
    pub malformed: u64,
    /// Datagrams dropped on purpose ([`EndpointConfig::drop_incoming`]).
    pub dropped_injected: u64,
    /// Requests retransmitted by this client.
    pub retransmissions: u64,
    /// Duplicate requests answered again from the response table.
    pub responses_resent: u64,
    /// Duplicate requests dropped (received, not yet responded; or below the watermark).
    pub duplicates_dropped: u64,
    /// Responses dropped: unknown request, already received, or another endpoint's.
    pub responses_dropped: u64,
    /// Requests dropped because the response table was full.
    pub table_full: u64,
    /// Explicit acknowledgements sent.
    pub acks_sent: u64,
    /// Response-table entries freed by acknowledgement watermarks.
    pub gc_freed: u64,
}

/// A request that came from the network and has not been taken by a committed receive.
#[derive(Clone, Debug)]
pub(crate) struct Incoming {
    pub from: SocketAddr,
    pub id: RequestId,
    pub payload: Vec<u8>,
}

/// One UDP socket with its persistent request and response tables.
#[derive(Debug)]
pub struct Endpoint {
    pub(crate) sock: UdpSocket,
    pub(crate) t: Tables,
    pub(crate) seg_base: usize,
    pub(crate) cfg: EndpointConfig,
    /// Requests from the network not yet taken (4.3: an aborted receive puts them back).
    pub(crate) inq: VecDeque<Incoming>,
    /// Responses arrived for pending requests, not yet taken by a committed receive.
    pub(crate) responses_in: HashMap<u64, Vec<u8>>,
    /// Watermarks announced by clients, not yet applied to the persistent peer table.
    pub(crate) acks_in: HashMap<u64, u64>,
    /// Acknowledgements owed to servers: watermark and when it became owed.
    pub(crate) owed_acks: HashMap<SocketAddr, (u64, Instant)>,
    pub(crate) stats: Stats,
    rng: rio_prng::Rng,
    buf: Vec<u8>,
    cur_timeout: Option<Duration>,
}

fn fresh_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    h.write_u64(now);
    h.write_u32(std::process::id());
    let id = rio_prng::mix64(h.finish() ^ now);
    id.max(1)
}

/// Root name of endpoint `name`.
pub fn root_name(name: &str) -> String {
    format!("vg.{name}")
}

impl Endpoint {
    /// Opens endpoint `name` in `seg` (creating its tables in a transaction of its own if
    /// the root `vg.<name>` does not exist), binds a UDP socket to `bind`, and retransmits
    /// every request still pending from before a crash (4.4.2: clients retransmit
    /// indefinitely, across restarts).
    pub fn open(
        seg: &mut Segment,
        name: &str,
        bind: SocketAddr,
        cfg: EndpointConfig,
    ) -> Result<Endpoint> {
        if cfg.max_payload > wire::MAX_WIRE_PAYLOAD {
            return Err(Error::InvalidConfig(format!(
                "max_payload {} > {}",
                cfg.max_payload,
                wire::MAX_WIRE_PAYLOAD
            )));
        }
        if !(0.0..1.0).contains(&cfg.drop_incoming) {
            return Err(Error::InvalidConfig(
                "drop_incoming must be in [0, 1)".into(),
            ));
        }
        let root = root_name(name);
        let hdr: PPtr<Header> = match seg.root::<Header>(&root)? {
            Some(h) => h,
            None => {
                let mut tx = seg.begin()?;
                let h = Tables::create(&mut tx, fresh_id(), cfg.max_payload, cfg.capacity)?;
                tx.set_root(&root, h)?;
                tx.commit()?;
                h
            }
        };
        let t = Tables::validate(seg, hdr)?;
        let sock = UdpSocket::bind(bind)?;
        let mut ep = Endpoint {
            sock,
            t,
            seg_base: seg.base() as usize,
            rng: rio_prng::Rng::new(cfg.drop_seed),
            cfg,
            inq: VecDeque::new(),
            responses_in: HashMap::new(),
            acks_in: HashMap::new(),
            owed_acks: HashMap::new(),
            stats: Stats::default(),
            buf: vec![0; 65536],
            cur_timeout: None,
        };
        // Restart: retransmit what is pending (committed state: no transaction is open).
        let reqs = seg.get_slice(ep.t.requests)?;
        let w = ep.watermark_of(reqs, seg.get(hdr)?.next_seq);
        let mut out = Vec::new();
        for e in reqs.iter().filter(|e| e.state == REQ_PENDING) {
            let Some(to) = e.server.to_socket() else {
                continue;
            };
            let id = RequestId {
                client: ep.t.endpoint_id,
                seq: e.seq,
            };
            out.push((
                to,
                wire::encode(Kind::Request, true, id, w, seg.get_slice(e.request)?),
            ));
        }
        for (to, d) in out {
            ep.stats.retransmissions += 1;
            ep.send_datagram(to, &d);
        }
        Ok(ep)
    }

    /// This endpoint's globally unique id (the client half of its request ids).
    pub fn id(&self) -> u64 {
        self.t.endpoint_id
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.sock.local_addr()?)
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The configuration in use.
    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// Begins a Vistagrams transaction on `seg`, which must be the segment the endpoint's
    /// tables live in.
    pub fn begin<'s, 'e>(&'e mut self, seg: &'s mut Segment) -> Result<VgTx<'s, 'e>> {
        if seg.base() as usize != self.seg_base {
            return Err(Error::WrongSegment {
                expected: self.seg_base,
                got: seg.base() as usize,
            });
        }
        let tx = seg.begin()?;
        let next_seq_at_begin = tx.get(self.t.hdr)?.next_seq;
        Ok(VgTx {
            tx,
            st: TxState {
                ep: self,
                next_seq_at_begin,
                new_requests: Vec::new(),
                responded: Vec::new(),
                taken_requests: Vec::new(),
                taken_responses: Vec::new(),
                completed: Vec::new(),
                applied_acks: Vec::new(),
                committed: false,
            },
        })
    }

    /// Sends every owed acknowledgement now (call before going idle or exiting, so that
    /// servers can free their response-table entries).
    pub fn flush_acks(&mut self) {
        self.send_due_acks(true);
    }

    /// The cumulative watermark of a request table: every request numbered below it has
    /// been answered and its response taken.
    pub(crate) fn watermark_of(&self, reqs: &[table::ReqEntry], next_seq: u64) -> u64 {
        table::min_pending(reqs).unwrap_or(next_seq).min(next_seq)
    }

    pub(crate) fn send_datagram(&mut self, to: SocketAddr, d: &[u8]) {
        match self.sock.send_to(d, to) {
            Ok(_) => self.stats.sent += 1,
            // Sends are idempotent and retransmitted (4.4.2): a failed send is not an
            // error of the (already committed) transaction.
            Err(_) => self.stats.send_errors += 1,
        }
    }

    /// Sends the owed acks that waited `ack_delay` (or all, with `all`).
    pub(crate) fn send_due_acks(&mut self, all: bool) {
        if self.owed_acks.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<(SocketAddr, u64)> = self
            .owed_acks
            .iter()
            .filter(|(_, (_, t))| all || now.duration_since(*t) >= self.cfg.ack_delay)
            .map(|(a, (w, _))| (*a, *w))
            .collect();
        for (to, w) in due {
            self.owed_acks.remove(&to);
            let id = RequestId {
                client: self.t.endpoint_id,
                seq: 0,
            };
            let d = wire::encode(Kind::Ack, false, id, w, &[]);
            self.stats.acks_sent += 1;
            self.send_datagram(to, &d);
        }
    }

    /// Waits up to `wait` for one datagram and decodes it; `Ok(None)` on timeout, on a
    /// malformed datagram (counted) or one dropped on purpose.
    pub(crate) fn recv_event(&mut self, wait: Duration) -> Result<Option<Event>> {
        // Whole milliseconds, so that the timeout (a system call to change) rarely changes.
        let wait = Duration::from_millis((wait.as_micros().div_ceil(1000) as u64).max(1));
        if self.cur_timeout != Some(wait) {
            self.sock.set_read_timeout(Some(wait))?;
            self.cur_timeout = Some(wait);
        }
        let (n, from) = match self.sock.recv_from(&mut self.buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock
                        | ErrorKind::TimedOut
                        | ErrorKind::Interrupted
                        | ErrorKind::ConnectionRefused
                        | ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        if self.cfg.drop_incoming > 0.0
            && (self.rng.below(1 << 20) as f64) < self.cfg.drop_incoming * (1u64 << 20) as f64
        {
            self.stats.dropped_injected += 1;
            return Ok(None);
        }
        let m = match wire::decode(&self.buf[..n], self.cfg.max_payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return Ok(None);
            }
        };
        self.stats.received += 1;
        Ok(Some(match m.kind {
            Kind::Request => Event::Request {
                inc: Incoming {
                    from,
                    id: m.id,
                    payload: m.payload.to_vec(),
                },
                ack_below: m.ack_below,
            },
            Kind::Response => Event::Response {
                id: m.id,
                payload: m.payload.to_vec(),
            },
            Kind::Ack => Event::Ack {
                client: m.id.client,
                ack_below: m.ack_below,
            },
        }))
    }

    pub(crate) fn merge_ack(&mut self, client: u64, w: u64) {
        let e = self.acks_in.entry(client).or_insert(0);
        *e = (*e).max(w);
    }
}

/// A decoded incoming datagram.
#[derive(Debug)]
pub(crate) enum Event {
    Request { inc: Incoming, ack_below: u64 },
    Response { id: RequestId, payload: Vec<u8> },
    Ack { client: u64, ack_below: u64 },
}

/// Volatile bookkeeping of one Vistagrams transaction. Dropped without commit, it returns
/// what the transaction took to the endpoint's volatile queues (4.3: "any receives of
/// messages performed within the transaction will be undone so that those messages will be
/// delivered again during a subsequent receive").
#[derive(Debug)]
pub(crate) struct TxState<'e> {
    pub ep: &'e mut Endpoint,
    pub next_seq_at_begin: u64,
    /// Sequence numbers of requests sent in this transaction (go out after commit).
    pub new_requests: Vec<u64>,
    /// Response-table slots responded in this transaction (go out after commit).
    pub responded: Vec<(usize, RequestId)>,
    pub taken_requests: Vec<Incoming>,
    pub taken_responses: Vec<(u64, Vec<u8>)>,
    /// Requests whose response this transaction took: (seq, server).
    pub completed: Vec<(u64, SocketAddr)>,
    pub applied_acks: Vec<(u64, u64)>,
    pub committed: bool,
}

impl Drop for TxState<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for inc in self.taken_requests.drain(..).rev() {
            self.ep.inq.push_front(inc);
        }
        for (seq, p) in self.taken_responses.drain(..) {
            self.ep.responses_in.insert(seq, p);
        }
        for (c, w) in std::mem::take(&mut self.applied_acks) {
            self.ep.merge_ack(c, w);
        }
    }
}

/// A Vistagrams transaction: a Vista transaction (reachable through `Deref`, for the
/// user's own updates) plus the message operations of this crate. Sends are deferred to
/// [`VgTx::commit`]; dropping or [`VgTx::abort`]ing it undoes every table change with the
/// user's data and puts received messages back for a later receive.
///
/// Do not call `checkpoint` on the inner transaction: it would commit table changes without
/// playing the sends back (they would still go out by retransmission, but later).
#[derive(Debug)]
pub struct VgTx<'s, 'e> {
    pub(crate) tx: vista::Tx<'s>,
    pub(crate) st: TxState<'e>,
}

impl<'s> Deref for VgTx<'s, '_> {
    type Target = vista::Tx<'s>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl DerefMut for VgTx<'_, '_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl VgTx<'_, '_> {
    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.st.ep
    }

    /// Commits the Vista transaction, then sends the messages it queued (thesis 4.4: sends
    /// are deferred to commit; the commit point is Vista's single 8-byte store). The
    /// datagrams are assembled from the transaction's view just before committing, which
    /// is exactly the committed state once commit returns. If the process dies between
    /// commit and the sends, nothing is lost: pending requests are retransmitted by the
    /// client (also after its restart) and committed responses are resent by the server
    /// when the retransmission arrives, and receivers filter duplicates, so playing the
    /// sends back is idempotent (4.4).
    pub fn commit(self) -> Result<()> {
        let VgTx { tx, mut st } = self;
        let hdr = *tx.get(st.ep.t.hdr)?;
        let reqs = tx.get_slice(st.ep.t.requests)?;
        // The watermark of the state being committed: what the client will have received
        // once this commit returns.
        let w = st.ep.watermark_of(reqs, hdr.next_seq);
        let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        let mut requested: Vec<SocketAddr> = Vec::new();
        for &seq in &st.new_requests {
            if let Some(e) = reqs.iter().find(|e| e.state == REQ_PENDING && e.seq == seq) {
                if let Some(to) = e.server.to_socket() {
                    requested.push(to);
                    let id = RequestId {
                        client: st.ep.t.endpoint_id,
                        seq,
                    };
                    out.push((
                        to,
                        wire::encode(Kind::Request, false, id, w, tx.get_slice(e.request)?),
                    ));
                }
            }
        }
        let resps = tx.get_slice(st.ep.t.responses)?;
        for &(slot, id) in &st.responded {
            if let Some(e) = resps.get(slot) {
                if let Some(to) = e.ret.to_socket() {
                    out.push((
                        to,
                        wire::encode(Kind::Response, false, id, 0, tx.get_slice(e.response)?),
                    ));
                }
            }
        }
        tx.commit()?;
        st.committed = true;
        for (to, d) in out {
            st.ep.send_datagram(to, &d);
        }
        // Acks ride on the requests just sent (4.4.2); servers we only received from are
        // owed an explicit ack, sent after `ack_delay` unless a request goes there first.
        let now = Instant::now();
        for a in &requested {
            st.ep.owed_acks.remove(a);
        }
        for &(_, server) in &st.completed {
            if !requested.contains(&server) {
                let e = st.ep.owed_acks.entry(server).or_insert((w, now));
                e.0 = e.0.max(w);
            }
        }
        st.ep.send_due_acks(false);
        Ok(())
    }

    /// Aborts: the user's updates and every table change are undone, nothing is sent, and
    /// the messages received in this transaction will be received again.
    pub fn abort(self) -> Result<()> {
        let VgTx { tx, st } = self;
        let r = tx.abort();
        drop(st);
        Ok(r?)
    }

    /// A lower bound of the committed watermark, for messages sent *before* this
    /// transaction commits (retransmissions while waiting): the requests completed in this
    /// transaction still count as pending, since an abort would bring them back.
    pub(crate) fn watermark_now(&self) -> Result<u64> {
        let hdr = self.tx.get(self.st.ep.t.hdr)?;
        let reqs = self.tx.get_slice(self.st.ep.t.requests)?;
        let mut w = self.st.ep.watermark_of(reqs, hdr.next_seq);
        w = w.min(self.st.next_seq_at_begin);
        for &(s, _) in &self.st.completed {
            w = w.min(s);
        }
        Ok(w)
    }

    /// Routes one incoming datagram (waiting up to `wait`); false on timeout.
    pub(crate) fn pump(&mut self, wait: Duration) -> Result<bool> {
        self.st.ep.send_due_acks(false);
        let Some(ev) = self.st.ep.recv_event(wait)? else {
            return Ok(false);
        };
        match ev {
            Event::Request { inc, ack_below } => {
                self.st.ep.merge_ack(inc.id.client, ack_below);
                self.st.ep.inq.push_back(inc);
            }
            Event::Ack { client, ack_below } => self.st.ep.merge_ack(client, ack_below),
            Event::Response { id, payload } => {
                let mine = id.client == self.st.ep.t.endpoint_id;
                let pending = mine && self.pending_slot(id.seq)?.is_some();
                if pending && !self.st.ep.responses_in.contains_key(&id.seq) {
                    self.st.ep.responses_in.insert(id.seq, payload);
                } else {
                    // Unknown, already taken (duplicate), or another endpoint's.
                    self.st.ep.stats.responses_dropped += 1;
                }
            }
        }
        Ok(true)
    }
}

/// Time left until `deadline` (`None`: forever).
pub(crate) fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}
