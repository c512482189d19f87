//! The persistent tables, in the user's Vista segment.
//!
//! # Format (version 1)
//!
//! A named root `vg.<name>` points to one [`Header`] in the segment's heap. All values are
//! native-endian `#[repr(C)]` [`Pod`] records, changed only through logged Vista updates
//! inside the user's transactions, so abort and crash recovery roll them back together with
//! the user's own data.
//!
//! [`Header`] (112 bytes):
//!
//! | field        | meaning                                                          |
//! |--------------|------------------------------------------------------------------|
//! | magic        | `b"VGRAMS01"` as a u64                                           |
//! | version      | 1                                                                |
//! | max_payload  | largest message accepted or sent, bytes                          |
//! | endpoint_id  | random non-zero u64 chosen at creation: the client half of every request id |
//! | next_seq     | next sequence number to assign (starts at 1; only grows in committed transactions) |
//! | requests     | `PSlice<ReqEntry>`: the client's request table                   |
//! | responses    | `PSlice<RespEntry>`: the server's response table                 |
//! | peers        | `PSlice<PeerEntry>`: per-client acknowledgement watermarks       |
//! | check        | [`Header::compute_check`] of every field above except `next_seq` |
//!
//! [`ReqEntry`] (56 bytes): `state` (0 free, 1 pending), `seq`, `server` ([`NetAddr`]),
//! `request` (`PSlice<u8>` heap buffer holding the request bytes, retransmitted until the
//! response arrives).
//!
//! [`RespEntry`] (64 bytes): `state` (0 free, 1 received, 2 responded), `client`, `seq`,
//! `ret` (return address), `response` (`PSlice<u8>` heap buffer, once responded).
//!
//! [`PeerEntry`] (16 bytes): `client` (0: free slot), `ack_below` (the client's cumulative
//! watermark: it has received the responses to all its requests numbered below).
//!
//! The tables are arrays searched linearly (the thesis used hash tables: at the capacities
//! used here a scan of a few KiB is cheaper than a hash over persistent memory that must be
//! kept consistent under undo).
//!
//! # Validation
//!
//! [`Tables::validate`] runs when an endpoint is opened: it checks the header (magic,
//! version, check word), that every slice lies in the segment, every state is known, and
//! every buffer lies in the segment and is within `max_payload`. Anything else is an
//! [`Error::Corrupt`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytemuck::{Pod, Zeroable};
use vista::{PPtr, PSlice, Segment};

use crate::error::{Error, Result};

/// `b"VGRAMS01"`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"VGRAMS01");
/// Persistent format version.
pub const VERSION: u32 = 1;

/// Request entry state: free slot.
pub const REQ_FREE: u32 = 0;
/// Request entry state: sent (or to be sent at commit), no response received yet.
pub const REQ_PENDING: u32 = 1;
/// Response entry state: free slot.
pub const RESP_FREE: u32 = 0;
/// Response entry state: request received, no response yet.
pub const RESP_RECEIVED: u32 = 1;
/// Response entry state: response stored (sent at commit, resent on duplicates).
pub const RESP_RESPONDED: u32 = 2;

/// A socket address in persistent form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct NetAddr {
    /// IPv4 (in the first 4 bytes) or IPv6 address bytes.
    pub ip: [u8; 16],
    /// Port.
    pub port: u16,
    /// 4 or 6.
    pub family: u16,
    /// Zero.
    pub _pad: u32,
}

impl NetAddr {
    /// Converts from a socket address (the IPv6 flow info and scope are not kept).
    pub fn from_socket(a: SocketAddr) -> NetAddr {
        let mut ip = [0u8; 16];
        let family = match a.ip() {
            IpAddr::V4(v) => {
                ip[..4].copy_from_slice(&v.octets());
                4
            }
            IpAddr::V6(v) => {
                ip.copy_from_slice(&v.octets());
                6
            }
        };
        NetAddr {
            ip,
            port: a.port(),
            family,
            _pad: 0,
        }
    }

    /// Converts back, if the family is known.
    pub fn to_socket(self) -> Option<SocketAddr> {
        match self.family {
            4 => {
                let o = [self.ip[0], self.ip[1], self.ip[2], self.ip[3]];
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), self.port))
            }
            6 => Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(self.ip)),
                self.port,
            )),
            _ => None,
        }
    }
}

/// The root record of one endpoint.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION`].
    pub version: u32,
    /// Largest payload.
    pub max_payload: u32,
    /// Globally unique endpoint id.
    pub endpoint_id: u64,
    /// Next sequence number.
    pub next_seq: u64,
    /// Request table.
    pub requests: PSlice<ReqEntry>,
    /// Response table.
    pub responses: PSlice<RespEntry>,
    /// Watermark table.
    pub peers: PSlice<PeerEntry>,
    /// Check word over the static fields.
    pub check: u64,
}

impl Header {
    /// The check word: a hash of every field except `next_seq` and `check`.
    pub fn compute_check(&self) -> u64 {
        let words = [
            self.magic,
            self.version as u64 | (self.max_payload as u64) << 32,
            self.endpoint_id,
            self.requests.addr() as u64,
            self.requests.len() as u64,
            self.responses.addr() as u64,
            self.responses.len() as u64,
            self.peers.addr() as u64,
            self.peers.len() as u64,
        ];
        words
            .iter()
            .fold(0x5647_7461_626c_6531, |h, &w| rio_prng::mix64(h ^ w))
    }
}

/// One outstanding request (client side).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct ReqEntry {
    /// [`REQ_FREE`] or [`REQ_PENDING`].
    pub state: u32,
    /// Zero.
    pub _pad: u32,
    /// Sequence number (the request id is `(endpoint_id, seq)`).
    pub seq: u64,
    /// Where the request goes.
    pub server: NetAddr,
    /// The request bytes.
    pub request: PSlice<u8>,
}

/// One received request (server side).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct RespEntry {
    /// [`RESP_FREE`], [`RESP_RECEIVED`] or [`RESP_RESPONDED`].
    pub state: u32,
    /// Zero.
    pub _pad: u32,
    /// Client endpoint id.
    pub client: u64,
    /// Client sequence number.
    pub seq: u64,
    /// Return address.
    pub ret: NetAddr,
    /// The response bytes (once responded).
    pub response: PSlice<u8>,
}

/// A client's acknowledgement watermark (server side).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct PeerEntry {
    /// Client endpoint id; 0 marks a free slot.
    pub client: u64,
    /// The client has received the responses to all its requests numbered below this.
    pub ack_below: u64,
}

/// Capacities chosen at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Outstanding requests (client side).
    pub requests: usize,
    /// Received requests kept for duplicate filtering (server side).
    pub responses: usize,
    /// Clients whose watermark is kept (server side).
    pub peers: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            requests: 64,
            responses: 1024,
            peers: 256,
        }
    }
}

/// Where an endpoint's tables are (copied out of the validated header).
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    /// The header.
    pub hdr: PPtr<Header>,
    /// Endpoint id.
    pub endpoint_id: u64,
    /// Largest payload.
    pub max_payload: usize,
    /// Request table.
    pub requests: PSlice<ReqEntry>,
    /// Response table.
    pub responses: PSlice<RespEntry>,
    /// Watermark table.
    pub peers: PSlice<PeerEntry>,
}

fn corrupt(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        what,
        reason: reason.into(),
    }
}

impl Tables {
    /// Allocates empty tables in `tx` and returns the header to name in a root.
    pub fn create(
        tx: &mut vista::Tx<'_>,
        endpoint_id: u64,
        max_payload: usize,
        cap: Capacity,
    ) -> Result<PPtr<Header>> {
        if cap.requests == 0 || cap.responses == 0 || cap.peers == 0 {
            return Err(Error::InvalidConfig(
                "table capacities must be non-zero".into(),
            ));
        }
        let max_payload = u32::try_from(max_payload)
            .map_err(|_| Error::InvalidConfig("max_payload too large".into()))?;
        let requests = tx.alloc_slice(cap.requests, ReqEntry::zeroed())?;
        let responses = tx.alloc_slice(cap.responses, RespEntry::zeroed())?;
        let peers = tx.alloc_slice(cap.peers, PeerEntry::zeroed())?;
        let mut h = Header {
            magic: MAGIC,
            version: VERSION,
            max_payload,
            endpoint_id,
            next_seq: 1,
            requests,
            responses,
            peers,
            check: 0,
        };
        h.check = h.compute_check();
        Ok(tx.alloc(h)?)
    }

    /// Reads and validates the tables named by `hdr` (after a crash: nothing is trusted).
    pub fn validate(seg: &Segment, hdr: PPtr<Header>) -> Result<Tables> {
        let h = *seg.get(hdr)?;
        if h.magic != MAGIC {
            return Err(corrupt("header", format!("bad magic {:#x}", h.magic)));
        }
        if h.version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: h.version,
                expected: VERSION,
            });
        }
        if h.check != h.compute_check() {
            return Err(corrupt("header", "check word mismatch"));
        }
        if h.endpoint_id == 0 || h.next_seq == 0 {
            return Err(corrupt("header", "zero endpoint id or sequence number"));
        }
        let max = h.max_payload as usize;
        let bad_buf = |s: PSlice<u8>| -> Result<()> {
            if s.len() > max {
                return Err(corrupt("buffer", format!("{} bytes > max {max}", s.len())));
            }
            seg.get_slice(s)
                .map_err(|e| corrupt("buffer", e.to_string()))?;
            Ok(())
        };
        let reqs = seg
            .get_slice(h.requests)
            .map_err(|e| corrupt("request table", e.to_string()))?;
        for (i, e) in reqs.iter().enumerate() {
            match e.state {
                REQ_FREE => {}
                REQ_PENDING => {
                    if e.seq == 0 || e.seq >= h.next_seq {
                        return Err(corrupt("request table", format!("slot {i}: seq {}", e.seq)));
                    }
                    if e.server.to_socket().is_none() {
                        return Err(corrupt("request table", format!("slot {i}: bad address")));
                    }
                    bad_buf(e.request)?;
                }
                s => return Err(corrupt("request table", format!("slot {i}: state {s}"))),
            }
        }
        let resps = seg
            .get_slice(h.responses)
            .map_err(|e| corrupt("response table", e.to_string()))?;
        for (i, e) in resps.iter().enumerate() {
            match e.state {
                RESP_FREE => {}
                RESP_RECEIVED | RESP_RESPONDED => {
                    if e.ret.to_socket().is_none() {
                        return Err(corrupt("response table", format!("slot {i}: bad address")));
                    }
                    if e.state == RESP_RESPONDED {
                        bad_buf(e.response)?;
                    }
                }
                s => return Err(corrupt("response table", format!("slot {i}: state {s}"))),
            }
        }
        seg.get_slice(h.peers)
            .map_err(|e| corrupt("peer table", e.to_string()))?;
        Ok(Tables {
            hdr,
            endpoint_id: h.endpoint_id,
            max_payload: max,
            requests: h.requests,
            responses: h.responses,
            peers: h.peers,
        })
    }
}

/// The lowest sequence number still pending in `reqs`, if any.
pub fn min_pending(reqs: &[ReqEntry]) -> Option<u64> {
    reqs.iter()
        .filter(|e| e.state == REQ_PENDING)
        .map(|e| e.seq)
        .min()
}

/// Copies `bytes` into a fresh heap buffer (empty: no allocation).
pub fn store_bytes(tx: &mut vista::Tx<'_>, bytes: &[u8]) -> Result<PSlice<u8>> {
    if bytes.is_empty() {
        return Ok(PSlice::empty());
    }
    let s = tx.alloc_slice(bytes.len(), 0u8)?;
    tx.update_slice(s, 0..bytes.len(), |d| d.copy_from_slice(bytes))?;
    Ok(s)
}

/// Frees a buffer made by [`store_bytes`].
pub fn free_bytes(tx: &mut vista::Tx<'_>, s: PSlice<u8>) -> Result<()> {
    if !s.is_empty() {
        tx.free_slice(s)?;
    }
    Ok(())
}
