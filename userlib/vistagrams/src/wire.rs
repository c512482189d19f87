//! The wire format: one UDP datagram per message.
//!
//! | offset | size | field                                                          |
//! |-------:|-----:|----------------------------------------------------------------|
//! | 0      | 2    | magic `0x5647` ("VG"), little-endian                            |
//! | 2      | 1    | version (1)                                                     |
//! | 3      | 1    | kind: 1 request, 2 response, 3 ack                              |
//! | 4      | 1    | flags: bit 0 = retransmission                                   |
//! | 5      | 3    | zero                                                            |
//! | 8      | 8    | client endpoint id (first half of the request id)               |
//! | 16     | 8    | sequence number (second half; 0 in an ack)                      |
//! | 24     | 8    | ack watermark: the client has received every response to its requests with a lower sequence number (requests and acks; 0 in a response) |
//! | 32     | 4    | payload length                                                  |
//! | 36     | 4    | checksum: [`checksum`] of the header with this field zero, then the payload |
//! | 40     | len  | payload                                                         |
//!
//! All integers are little-endian. Every datagram received is untrusted input:
//! [`decode`] checks the length, magic, version, kind, flags, reserved bytes, payload length
//! (exact, and at most the receiver's maximum) and checksum, and returns a [`WireError`]
//! (which the endpoint counts and drops) instead of panicking.

use crate::RequestId;

/// Bytes of header.
pub const HEADER_LEN: usize = 40;
/// Magic number.
pub const MAGIC: u16 = 0x5647;
/// Wire format version.
pub const VERSION: u8 = 1;
/// Flag: the datagram is a retransmission (the thesis's retransmit port, 4.4.2).
pub const FLAG_RETRANSMIT: u8 = 1;
/// Largest payload a UDP/IPv4 datagram can carry with this header.
pub const MAX_WIRE_PAYLOAD: usize = 65507 - HEADER_LEN;

/// Message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Client to server: a request.
    Request = 1,
    /// Server to client: the response to a request.
    Response = 2,
    /// Client to server: an explicit acknowledgement (watermark only).
    Ack = 3,
}

/// A decoded datagram (the payload borrows the receive buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Kind.
    pub kind: Kind,
    /// Whether it is a retransmission.
    pub retransmit: bool,
    /// Request id (client endpoint id and sequence number).
    pub id: RequestId,
    /// The client's acknowledgement watermark.
    pub ack_below: u64,
    /// Payload.
    pub payload: &'a [u8],
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header.
    #[error("datagram of {0} bytes is shorter than the header")]
    Short(usize),
    /// Not a Vistagrams datagram.
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
    /// Another version.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// Unknown kind.
    #[error("unknown kind {0}")]
    BadKind(u8),
    /// Unknown flags or non-zero reserved bytes.
    #[error("unknown flags or reserved bytes set")]
    BadFlags,
    /// The length field does not match the datagram.
    #[error("length field {field} but {actual} payload bytes")]
    BadLength {
        /// What the header says.
        field: u32,
        /// What came.
        actual: usize,
    },
    /// Larger than the receiver accepts.
    #[error("payload of {0} bytes exceeds the maximum")]
    Oversize(usize),
    /// Checksum mismatch.
    #[error("checksum mismatch")]
    BadChecksum,
}

/// A 32-bit checksum (64-bit word-wise multiply-rotate hash, folded), over `parts` in order.
/// Not cryptographic: it catches corruption and stray datagrams, not forgery.
pub fn checksum(parts: &[&[u8]]) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0x5647_0001;
    let mut total = 0u64;
    for p in parts {
        total += p.len() as u64;
        let mut chunks = p.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = (h ^ u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59))
                .wrapping_mul(K)
                .rotate_left(29);
        }
    }
    h = rio_prng::mix64(h ^ total);
    (h ^ (h >> 32)) as u32
}

/// Encodes a message into a new buffer.
pub fn encode(
    kind: Kind,
    retransmit: bool,
    id: RequestId,
    ack_below: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut d = Vec::with_capacity(HEADER_LEN + payload.len());
    d.extend_from_slice(&MAGIC.to_le_bytes());
    d.push(VERSION);
    d.push(kind as u8);
    d.push(if retransmit { FLAG_RETRANSMIT } else { 0 });
    d.extend_from_slice(&[0; 3]);
    d.extend_from_slice(&id.client.to_le_bytes());
    d.extend_from_slice(&id.seq.to_le_bytes());
    d.extend_from_slice(&ack_below.to_le_bytes());
    d.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    d.extend_from_slice(&[0; 4]);
    let c = checksum(&[&d, payload]);
    d[36..40].copy_from_slice(&c.to_le_bytes());
    d.extend_from_slice(payload);
    d
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Decodes and validates a datagram; `max_payload` is the largest payload accepted.
pub fn decode(d: &[u8], max_payload: usize) -> Result<Message<'_>, WireError> {
    if d.len() < HEADER_LEN {
        return Err(WireError::Short(d.len()));
    }
    let magic = u16::from_le_bytes([d[0], d[1]]);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if d[2] != VERSION {
        return Err(WireError::BadVersion(d[2]));
    }
    let kind = match d[3] {
        1 => Kind::Request,
        2 => Kind::Response,
        3 => Kind::Ack,
        k => return Err(WireError::BadKind(k)),
    };
    if d[4] & !FLAG_RETRANSMIT != 0 || d[5..8] != [0; 3] {
        return Err(WireError::BadFlags);
    }
    let len = le32(d, 32);
    let actual = d.len() - HEADER_LEN;
    if len as usize != actual {
        return Err(WireError::BadLength { field: len, actual });
    }
    if actual > max_payload {
        return Err(WireError::Oversize(actual));
    }
    let mut hdr = [0u8; HEADER_LEN];
    hdr.copy_from_slice(&d[..HEADER_LEN]);
    hdr[36..40].fill(0);
    let payload = &d[HEADER_LEN..];
    if checksum(&[&hdr, payload]) != le32(d, 36) {
        return Err(WireError::BadChecksum);
    }
    Ok(Message {
        kind,
        retransmit: d[4] & FLAG_RETRANSMIT != 0,
        id: RequestId {
            client: le64(d, 8),
            seq: le64(d, 16),
        },
        ack_below: le64(d, 24),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(
            Kind::Request,
            true,
            RequestId { client: 7, seq: 9 },
            3,
            b"hello world!",
        )
    }

    #[test]
    fn round_trip() {
        let d = sample();
        let m = decode(&d, 100).unwrap();
        assert_eq!(m.kind, Kind::Request);
        assert!(m.retransmit);
        assert_eq!(m.id, RequestId { client: 7, seq: 9 });
        assert_eq!(m.ack_below, 3);
        assert_eq!(m.payload, b"hello world!");
        let e = encode(Kind::Ack, false, RequestId { client: 1, seq: 0 }, 5, &[]);
        assert_eq!(decode(&e, 0).unwrap().kind, Kind::Ack);
    }

    #[test]
    fn malformed_datagrams_are_rejected() {
        let d = sample();
        for n in 0..HEADER_LEN {
            assert_eq!(decode(&d[..n], 100), Err(WireError::Short(n)));
        }
        // Truncated payload, extra byte.
        assert!(matches!(
            decode(&d[..d.len() - 1], 100),
            Err(WireError::BadLength { .. })
        ));
        let mut long = d.clone();
        long.push(0);
        assert!(matches!(
            decode(&long, 100),
            Err(WireError::BadLength { .. })
        ));
        let mut m = d.clone();
        m[0] ^= 1;
        assert!(matches!(decode(&m, 100), Err(WireError::BadMagic(_))));
        let mut m = d.clone();
        m[2] = 2;
        assert_eq!(decode(&m, 100), Err(WireError::BadVersion(2)));
        let mut m = d.clone();
        m[3] = 9;
        assert_eq!(decode(&m, 100), Err(WireError::BadKind(9)));
        let mut m = d.clone();
        m[4] = 0x80;
        assert_eq!(decode(&m, 100), Err(WireError::BadFlags));
        let mut m = d.clone();
        m[6] = 1;
        assert_eq!(decode(&m, 100), Err(WireError::BadFlags));
        // A lying length field (huge): never an out-of-bounds slice.
        let mut m = d.clone();
        m[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&m, usize::MAX),
            Err(WireError::BadLength { .. })
        ));
        assert_eq!(decode(&d, 4), Err(WireError::Oversize(12)));
        // Every single-bit flip in the ids, watermark or payload is caught by the checksum.
        for byte in 8..d.len() {
            if (32..40).contains(&byte) {
                continue;
            }
            for bit in 0..8 {
                let mut m = d.clone();
                m[byte] ^= 1 << bit;
                assert_eq!(
                    decode(&m, 100),
                    Err(WireError::BadChecksum),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut r = rio_prng::Rng::new(42);
        for i in 0..20_000 {
            let len = r.below(120) as usize;
            let mut b = vec![0u8; len];
            r.fill(&mut b);
            if i % 2 == 0 && len >= 4 {
                b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
                b[2] = VERSION;
                b[3] = 1 + (i % 3) as u8;
            }
            let _ = decode(&b, 64);
        }
    }
}
