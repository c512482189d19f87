//! The server side: the response table, `receive_request`, `send_response`, duplicate
//! filtering and the acknowledgement watermarks (thesis 4.4.2, "Server receives request",
//! "Server sends response", "Retransmission of messages").

use std::time::{Duration, Instant};

use vista::Zeroable;

use crate::endpoint::{left, Incoming, VgTx};
use crate::error::{Error, Result};
use crate::table::{self, NetAddr, PeerEntry, RespEntry, RESP_FREE, RESP_RECEIVED, RESP_RESPONDED};
use crate::wire::{self, Kind};
use crate::RequestId;

/// What the response table says about an incoming request.
enum Class {
    /// Not seen: deliver.
    New,
    /// Responded in a committed transaction: send the stored response again.
    Resend(usize),
    /// Received but not responded (or responded in this very transaction), or below the
    /// client's acknowledged watermark: drop.
    Drop,
}

/// Longest single wait when the caller waits forever.
const IDLE_WAIT: Duration = Duration::from_millis(200);

impl VgTx<'_, '_> {
    fn classify(&self, id: RequestId) -> Result<Class> {
        if self.st.ep.cfg.test_no_dedup {
            return Ok(Class::New);
        }
        let resps = self.tx.get_slice(self.st.ep.t.responses)?;
        if let Some(slot) = resps
            .iter()
            .position(|e| e.state != RESP_FREE && e.client == id.client && e.seq == id.seq)
        {
            // 4.4.2: a known request with a committed response gets the response again; a
            // known request without one (or whose response is not committed yet) is dropped.
            let responded_here = self.st.responded.iter().any(|&(s, _)| s == slot);
            return Ok(if resps[slot].state == RESP_RESPONDED && !responded_here {
                Class::Resend(slot)
            } else {
                Class::Drop
            });
        }
        let peers = self.tx.get_slice(self.st.ep.t.peers)?;
        if let Some(p) = peers
            .iter()
            .find(|p| p.client == id.client && p.client != 0)
        {
            if id.seq < p.ack_below {
                // Its entry was collected: the client acknowledged its response (see the
                // crate docs, "Garbage collection").
                return Ok(Class::Drop);
            }
        }
        Ok(Class::New)
    }

    fn resend(&mut self, slot: usize, inc: &Incoming) -> Result<()> {
        let e = self.tx.get_slice(self.st.ep.t.responses)?[slot];
        // To the address the retransmission came from: a restarted client may have a new port.
        let d = wire::encode(
            Kind::Response,
            false,
            inc.id,
            0,
            self.tx.get_slice(e.response)?,
        );
        self.st.ep.stats.responses_resent += 1;
        self.st.ep.send_datagram(inc.from, &d);
        Ok(())
    }

    /// Drops duplicates at the head of the queue (answering them if they have a committed
    /// response); whether a new request is then at the head.
    pub(crate) fn peek_new_request(&mut self) -> Result<bool> {
        while let Some(inc) = self.st.ep.inq.front() {
            let id = inc.id;
            match self.classify(id)? {
                Class::New => return Ok(true),
                Class::Resend(slot) => {
                    if let Some(inc) = self.st.ep.inq.pop_front() {
                        self.resend(slot, &inc)?;
                    }
                }
                Class::Drop => {
                    self.st.ep.inq.pop_front();
                    self.st.ep.stats.duplicates_dropped += 1;
                }
            }
        }
        Ok(false)
    }

    /// Applies the clients' announced watermarks to the peer table and frees the
    /// response-table entries they cover, in this transaction.
    fn apply_acks(&mut self) -> Result<()> {
        if self.st.ep.acks_in.is_empty() {
            return Ok(());
        }
        let acks: Vec<(u64, u64)> = self.st.ep.acks_in.drain().collect();
        let peers = self.st.ep.t.peers;
        let resps = self.st.ep.t.responses;
        for (client, w) in acks {
            self.st.applied_acks.push((client, w));
            if client == 0 {
                continue;
            }
            let ps = self.tx.get_slice(peers)?;
            let slot = match ps.iter().position(|p| p.client == client) {
                Some(i) if ps[i].ack_below >= w => continue,
                Some(i) => i,
                None => match ps.iter().position(|p| p.client == 0) {
                    Some(i) => i,
                    // No room to remember this client's watermark: keep its entries, which
                    // then go on filtering its duplicates.
                    None => continue,
                },
            };
            // The watermark is recorded in the same transaction that frees the entries it
            // covers, so no committed state has an entry freed without its watermark.
            self.tx.update_slice(peers, slot..slot + 1, |p| {
                p[0] = PeerEntry {
                    client,
                    ack_below: w,
                }
            })?;
            let victims: Vec<(usize, RespEntry)> = self
                .tx
                .get_slice(resps)?
                .iter()
                .enumerate()
                .filter(|(_, e)| e.state == RESP_RESPONDED && e.client == client && e.seq < w)
                .map(|(i, e)| (i, *e))
                .collect();
            for (i, e) in victims {
                {
                    table::free_bytes(&mut self.tx, e.response)?;
                    self.tx
                        .update_slice(resps, i..i + 1, |x| x[0] = RespEntry::zeroed())?;
                    self.st.ep.stats.gc_freed += 1;
                }
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever) for the next new request and returns its id
    /// and bytes, after adding a `Received` entry with the return address to the response
    /// table in this transaction (4.4.2). Duplicates never come out: a request already in
    /// the table gets its committed response resent or is dropped, one below its client's
    /// watermark is dropped. If this transaction aborts, the request is received again by a
    /// later call (4.3). `Ok(None)` on timeout.
    pub fn receive_request(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(RequestId, Vec<u8>)>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.apply_acks()?;
            while let Some(inc) = self.st.ep.inq.pop_front() {
                match self.classify(inc.id)? {
                    Class::New => {
                        let resps = self.st.ep.t.responses;
                        let Some(slot) = self
                            .tx
                            .get_slice(resps)?
                            .iter()
                            .position(|e| e.state == RESP_FREE)
                        else {
                            // The client retransmits; entries free up as acks arrive.
                            self.st.ep.stats.table_full += 1;
                            continue;
                        };
                        self.tx.update_slice(resps, slot..slot + 1, |e| {
                            e[0] = RespEntry {
                                state: RESP_RECEIVED,
                                _pad: 0,
                                client: inc.id.client,
                                seq: inc.id.seq,
                                ret: NetAddr::from_socket(inc.from),
                                response: vista::PSlice::empty(),
                            }
                        })?;
                        let out = (inc.id, inc.payload.clone());
                        self.st.taken_requests.push(inc);
                        return Ok(Some(out));
                    }
                    Class::Resend(slot) => self.resend(slot, &inc)?,
                    Class::Drop => self.st.ep.stats.duplicates_dropped += 1,
                }
            }
            let wait = match left(deadline) {
                Some(l) if l.is_zero() => return Ok(None),
                Some(l) => l.min(IDLE_WAIT),
                None => IDLE_WAIT,
            };
            let wait = if self.st.ep.owed_acks.is_empty() {
                wait
            } else {
                wait.min(self.st.ep.cfg.ack_delay)
            };
            self.pump(wait)?;
        }
    }

    /// Stores the response to `id` in its response-table entry (persistently, for
    /// retransmission) and queues it to go to the entry's return address when this
    /// transaction commits (4.4.2 "Server sends response").
    pub fn send_response(&mut self, id: RequestId, response: &[u8]) -> Result<()> {
        let max = self.st.ep.t.max_payload;
        if response.len() > max {
            return Err(Error::PayloadTooLarge {
                len: response.len(),
                max,
            });
        }
        let resps = self.st.ep.t.responses;
        let tab = self.tx.get_slice(resps)?;
        let find = |state| {
            tab.iter()
                .position(|e| e.state == state && e.client == id.client && e.seq == id.seq)
        };
        let slot = match find(RESP_RECEIVED) {
            Some(s) => s,
            None if find(RESP_RESPONDED).is_some() => return Err(Error::AlreadyResponded(id)),
            None => return Err(Error::NotReceived(id)),
        };
        let buf = table::store_bytes(&mut self.tx, response)?;
        self.tx.update_slice(resps, slot..slot + 1, |e| {
            e[0].state = RESP_RESPONDED;
            e[0].response = buf;
        })?;
        self.st.responded.push((slot, id));
        Ok(())
    }
}
