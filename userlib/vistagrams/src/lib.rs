//! Vistagrams: messages in local transactions (Lowell's thesis, chapter 4), on Vista.
//!
//! A process sends and receives request/response messages *inside* its Vista
//! transactions. Messages are buffered persistently in the same segment as the process's
//! data (on Rio, durable as they are stored), so:
//!
//! * **sends are deferred to commit** (4.3): a transaction that aborts (or crashes) sends
//!   nothing; one that commits sends everything, even if the process dies right after;
//! * **receives are undone by abort** (4.3): a message received in an aborted transaction
//!   is received again by a later one;
//! * **retransmission across crashes** (4.4.2): a client retransmits each committed request
//!   until its response is received, also after it restarts; a server resends a committed
//!   response when a retransmission arrives, also after it restarts;
//! * **exactly-once delivery**: a request is delivered by `receive_request` in exactly one
//!   committed transaction, a response by `receive_response` in exactly one.
//!
//! # API
//!
//! [`Endpoint::open`] binds a UDP socket and finds (or creates) the endpoint's tables in
//! the user's segment through the root `vg.<name>`. [`Endpoint::begin`] starts a
//! [`VgTx`]: the user's Vista transaction (it derefs to [`vista::Tx`], for the user's own
//! updates) with the message operations of Figure 4.3:
//!
//! | thesis                     | here                                        |
//! |----------------------------|---------------------------------------------|
//! | `vista_send_request`       | [`VgTx::send_request`] / [`VgTx::send_request_typed`] |
//! | `vista_receive_request`    | [`VgTx::receive_request`] / [`VgTx::receive_request_typed`] |
//! | `vista_send_response`      | [`VgTx::send_response`] / [`VgTx::send_response_typed`] |
//! | `vista_receive_response`   | [`VgTx::receive_response`] / [`VgTx::receive_response_typed`] |
//! | `vista_select`             | [`VgTx::select`]                            |
//! | `vista_end_transaction`    | [`VgTx::commit`]                            |
//! | `vista_abort_transaction`  | [`VgTx::abort`] (or drop)                   |
//!
//! The raw API takes and returns byte slices; the typed one ([`typed`]) takes
//! [`vista::Pod`] values.
//!
//! ```
//! use std::time::Duration;
//! use vista::{Durability, Segment, SegmentConfig};
//! use vistagrams::{Endpoint, EndpointConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let cfg = SegmentConfig::new(1 << 20);
//! let mut sseg = Segment::create_file(dir.path().join("s"), 0x3c00_0000_0000, &cfg, Durability::Memory)?;
//! let mut cseg = Segment::create_file(dir.path().join("c"), 0x3c10_0000_0000, &cfg, Durability::Memory)?;
//! let local = "127.0.0.1:0".parse()?;
//! let mut server = Endpoint::open(&mut sseg, "srv", local, EndpointConfig::default())?;
//! let mut client = Endpoint::open(&mut cseg, "cli", local, EndpointConfig::default())?;
//!
//! let mut tx = client.begin(&mut cseg)?;
//! let id = tx.send_request(server.local_addr()?, b"ping")?;
//! tx.commit()?; // the request goes out now
//!
//! let mut tx = server.begin(&mut sseg)?;
//! let (rid, req) = tx.receive_request(Some(Duration::from_secs(5)))?.expect("request");
//! assert_eq!((rid, &req[..]), (id, &b"ping"[..]));
//! tx.send_response(rid, b"pong")?;
//! tx.commit()?; // the response goes out now
//!
//! let mut tx = client.begin(&mut cseg)?;
//! let resp = tx.receive_response(id, Some(Duration::from_secs(5)))?.expect("response");
//! tx.commit()?;
//! assert_eq!(resp, b"pong");
//! # Ok(()) }
//! ```
//!
//! # Protocol
//!
//! A request id is `(client endpoint id, sequence number)`: the endpoint id is a random
//! u64 chosen when the tables are created, the sequence number a persistent counter
//! advanced in the transaction that sends. Two datagrams make a cycle in the common case
//! (4.4): the request, and the response, which confirms the request; the client's
//! acknowledgement of responses rides on its next request to that server. If no request
//! goes to that server within `ack_delay`, an explicit ack datagram goes alone. The wire
//! format is in [`wire`], the persistent one in [`table`].
//!
//! ## Garbage collection, and why duplicates stay filtered
//!
//! The client's *watermark* `W` is the lowest sequence number still pending in its
//! request table, or its next sequence number if none is. Every request numbered below `W`
//! has been answered and its response taken by a committed transaction. A message sent
//! after a commit carries the `W` of the committed state; a retransmission sent inside a
//! transaction carries a lower bound (it counts the responses taken by the open
//! transaction as still pending, since an abort would bring them back). So a server never
//! learns a `W` above the client's true committed watermark.
//!
//! The server keeps, per client, the highest `W` it learned (the peer table), and frees the
//! response-table entries of that client numbered below `W`, **in the same transaction**
//! that records `W`. A request `(c, s)` arriving at the server is:
//!
//! 1. in the response table: a duplicate (resent the committed response, or dropped);
//! 2. else below the recorded `W_c`: a duplicate whose entry was collected (dropped). It
//!    cannot be new: the client only sends requests that are pending, and a pending
//!    request is numbered at or above the client's watermark, hence above every `W` the
//!    server was told;
//! 3. else new: delivered, and its entry is added in the delivering transaction.
//!
//! Entries are only ever freed together with a recorded `W` above them, and recorded
//! watermarks only grow, so every request ever delivered in a committed transaction stays
//! in case 1 or 2 forever: it is never delivered again (exactly once). Sequence numbers
//! are not reused once committed: the counter is part of the committed state, and a number
//! handed out by an aborted transaction was never sent. If the peer table is full, a new
//! client's watermark is not recorded and its entries are simply kept (case 1 still
//! filters).
//!
//! # Limits
//!
//! * Tables are fixed-size arrays set at creation ([`Capacity`]); a full request table is
//!   an error, a full response table drops new requests (the client retransmits).
//! * One datagram per message: at most `max_payload` bytes (default 16 KiB).
//! * A client that dies forever leaves its entries on the servers.
//! * Not secure against forgery: the checksum only catches corruption.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

use bytemuck::{Pod, Zeroable};

mod client;
mod endpoint;
mod error;
mod server;
pub mod table;
pub mod typed;
pub mod wire;

pub use client::Ready;
pub use endpoint::{root_name, Endpoint, EndpointConfig, Stats, VgTx};
pub use error::{Error, Result};
pub use table::Capacity;

/// A globally unique request id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
#[repr(C)]
pub struct RequestId {
    /// The client endpoint's id.
    pub client: u64,
    /// The client's sequence number.
    pub seq: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}:{}", self.client, self.seq)
    }
}

#[cfg(test)]
mod tests;
