//! The client side: the request table, `send_request`, `receive_response` and `select`
//! (thesis 4.4.2, "Client sends request", "Client receives response", Figure 4.3).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vista::Zeroable;

use crate::endpoint::{left, VgTx};
use crate::error::{Error, Result};
use crate::table::{self, NetAddr, ReqEntry, REQ_FREE, REQ_PENDING};
use crate::wire::{self, Kind};
use crate::RequestId;

/// What [`VgTx::select`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// A new request is waiting: `receive_request` will return it without blocking.
    Request,
    /// The response to this request has arrived: `receive_response` will return it.
    Response(RequestId),
    /// Nothing arrived in time.
    Timeout,
}

impl VgTx<'_, '_> {
    /// Slot of the pending request `seq` in this transaction's view.
    pub(crate) fn pending_slot(&self, seq: u64) -> Result<Option<usize>> {
        let reqs = self.tx.get_slice(self.st.ep.t.requests)?;
        Ok(reqs
            .iter()
            .position(|e| e.state == REQ_PENDING && e.seq == seq))
    }

    /// Sends a request to the server at `to` (raw bytes). The request is buffered
    /// persistently in the request table within this transaction and goes out when the
    /// transaction commits (thesis 4.3, 4.4.2 "Client sends request"); an abort sends
    /// nothing. Its response can only be received in a later transaction.
    pub fn send_request(&mut self, to: SocketAddr, request: &[u8]) -> Result<RequestId> {
        let max = self.st.ep.t.max_payload;
        if request.len() > max {
            return Err(Error::PayloadTooLarge {
                len: request.len(),
                max,
            });
        }
        let reqs = self.st.ep.t.requests;
        let slot = self
            .tx
            .get_slice(reqs)?
            .iter()
            .position(|e| e.state == REQ_FREE)
            .ok_or(Error::RequestTableFull {
                capacity: reqs.len(),
            })?;
        let hdr = self.st.ep.t.hdr;
        let seq = self.tx.read(hdr)?.next_seq;
        let buf = table::store_bytes(&mut self.tx, request)?;
        self.tx.update(hdr, |h| h.next_seq = seq + 1)?;
        self.tx.update_slice(reqs, slot..slot + 1, |e| {
            e[0] = ReqEntry {
                state: REQ_PENDING,
                _pad: 0,
                seq,
                server: NetAddr::from_socket(to),
                request: buf,
            }
        })?;
        self.st.new_requests.push(seq);
        Ok(RequestId {
            client: self.st.ep.t.endpoint_id,
            seq,
        })
    }

    fn check_outstanding(&self, id: RequestId) -> Result<usize> {
        if id.client != self.st.ep.t.endpoint_id {
            return Err(Error::UnknownRequest(id));
        }
        if self.st.new_requests.contains(&id.seq) {
            return Err(Error::SentInThisTransaction(id));
        }
        self.pending_slot(id.seq)?.ok_or(Error::UnknownRequest(id))
    }

    /// Retransmits request `slot` (the thesis's retransmit port, 4.4.2: here a flag in the
    /// header; the server treats it the same way).
    fn retransmit(&mut self, slot: usize) -> Result<()> {
        let w = self.watermark_now()?;
        let e = self.tx.get_slice(self.st.ep.t.requests)?[slot];
        let Some(to) = e.server.to_socket() else {
            return Ok(());
        };
        let id = RequestId {
            client: self.st.ep.t.endpoint_id,
            seq: e.seq,
        };
        let d = wire::encode(Kind::Request, true, id, w, self.tx.get_slice(e.request)?);
        self.st.ep.stats.retransmissions += 1;
        self.st.ep.send_datagram(to, &d);
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever) for the response to `id`, retransmitting
    /// the request every `retransmit_interval` (indefinitely, 4.4.2). When it arrives the
    /// request-table entry and its buffer are removed in this transaction and the response
    /// is returned; an ack is queued for after commit. `Ok(None)` on timeout. An abort
    /// puts the response back, so a later receive returns it again.
    pub fn receive_response(
        &mut self,
        id: RequestId,
        timeout: Option<Duration>,
    ) -> Result<Option<Vec<u8>>> {
        let slot = self.check_outstanding(id)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let interval = self.st.ep.cfg.retransmit_interval;
        let mut next_retx = Instant::now() + interval;
        loop {
            if let Some(p) = self.st.ep.responses_in.remove(&id.seq) {
                let e = self.tx.get_slice(self.st.ep.t.requests)?[slot];
                table::free_bytes(&mut self.tx, e.request)?;
                self.tx
                    .update_slice(self.st.ep.t.requests, slot..slot + 1, |e| {
                        e[0] = ReqEntry::zeroed()
                    })?;
                let server = e.server.to_socket().ok_or(Error::Corrupt {
                    what: "request table",
                    reason: format!("slot {slot}: bad address"),
                })?;
                self.st.completed.push((id.seq, server));
                self.st.taken_responses.push((id.seq, p.clone()));
                return Ok(Some(p));
            }
            let now = Instant::now();
            if now >= next_retx {
                self.retransmit(slot)?;
                next_retx = now + interval;
            }
            let mut wait = next_retx.saturating_duration_since(now);
            if let Some(l) = left(deadline) {
                if l.is_zero() {
                    return Ok(None);
                }
                wait = wait.min(l);
            }
            self.pump(wait)?;
        }
    }

    /// Waits (thesis Figure 4.3, `vista_select`) until a new request is ready for
    /// `receive_request`, or the response to one of `responses` has arrived, or `timeout`
    /// passes; consumes nothing. Requests named in `responses` are retransmitted every
    /// `retransmit_interval` while waiting.
    pub fn select(&mut self, responses: &[RequestId], timeout: Option<Duration>) -> Result<Ready> {
        let mut slots = Vec::with_capacity(responses.len());
        for &id in responses {
            slots.push(self.check_outstanding(id)?);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let interval = self.st.ep.cfg.retransmit_interval;
        let mut next_retx = Instant::now() + interval;
        loop {
            for &id in responses {
                if self.st.ep.responses_in.contains_key(&id.seq) {
                    return Ok(Ready::Response(id));
                }
            }
            if self.peek_new_request()? {
                return Ok(Ready::Request);
            }
            let now = Instant::now();
            if now >= next_retx && !slots.is_empty() {
                for &s in &slots {
                    self.retransmit(s)?;
                }
                next_retx = now + interval;
            }
            let mut wait = if slots.is_empty() {
                interval
            } else {
                next_retx.saturating_duration_since(now)
            };
            if let Some(l) = left(deadline) {
                if l.is_zero() {
                    return Ok(Ready::Timeout);
                }
                wait = wait.min(l);
            }
            self.pump(wait)?;
        }
    }
}
