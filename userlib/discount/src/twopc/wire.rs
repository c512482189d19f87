//! The two-phase-commit messages between the members of a computation and its
//! coordinator: one definition for both sides (the members' runtime and `dc coord`).
//!
//! Every message is one UDP datagram of [`LEN`] bytes, little-endian:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 4 | magic `"DC2P"` |
//! | 4 | 1 | version (1) |
//! | 5 | 1 | kind ([`Kind`]) |
//! | 6 | 2 | member index (0 from the coordinator) |
//! | 8 | 8 | boot: the sending member process's random id, or the member process a coordinator message is for (0: any) |
//! | 16 | 8 | incarnation of the computation |
//! | 24 | 8 | epoch |
//! | 32 | 1 | flag (a decision or outcome: 1 commit, 0 abort; a member's [`Kind::Join`]: 1 if it has stream sockets) |
//! | 33 | 7 | zero |
//!
//! What arrives is untrusted: a datagram of another length, magic, version or kind, or
//! with non-zero padding, is rejected by [`Msg::decode`] (and dropped by its receiver).

/// Bytes of every message.
pub const LEN: usize = 40;
const MAGIC: &[u8; 4] = b"DC2P";
const VERSION: u8 = 1;

/// What a message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Member: "I am running from my checkpoint of `epoch`; let me in" (start-up, after
    /// recovery or a rollback). Repeated until [`Kind::Resume`].
    Join = 1,
    /// Member: "commit the computation past `epoch`" (before a visible event).
    Request = 2,
    /// Member: "prepared for `epoch`" (the yes vote). Repeated until [`Kind::Decide`].
    Vote = 3,
    /// Member: "what became of `epoch`?" (recovery found its checkpoint prepared).
    Ask = 4,
    /// Member: "I have exited after committing `epoch`".
    Leave = 5,
    /// Member: "quiesced for `epoch`": it sends nothing more and its stream sockets'
    /// send queues are empty (the answer to [`Kind::Quiesce`]). Repeated until
    /// [`Kind::Prepare`].
    Quiesced = 6,
    /// Member: "I am making my first stream socket" (so that the coordinator quiesces
    /// every later round). Repeated until [`Kind::StreamsOk`].
    Streams = 7,
    /// Coordinator: "prepare a checkpoint for `epoch`".
    Prepare = 16,
    /// Coordinator: the decision for `epoch` (`flag`).
    Decide = 17,
    /// Coordinator: "process `boot`, roll back to your last committed checkpoint and join
    /// again" (another member failed).
    Rollback = 18,
    /// Coordinator: "every member has joined incarnation `inc`: run" (also the answer to
    /// [`Kind::Leave`]).
    Resume = 19,
    /// Coordinator: the answer to [`Kind::Ask`] (`flag`).
    Outcome = 20,
    /// Coordinator: "round `epoch` opens: stop sending, drain, empty your stream sockets'
    /// send queues and say [`Kind::Quiesced`]" (the first step of a round when a member
    /// has stream sockets; [`Kind::Prepare`] follows when every member has answered).
    Quiesce = 21,
    /// Coordinator: the answer to [`Kind::Streams`] (given when no round is open that
    /// skipped the quiesce step).
    StreamsOk = 22,
}

impl Kind {
    fn from_u8(k: u8) -> Option<Kind> {
        Some(match k {
            1 => Kind::Join,
            2 => Kind::Request,
            3 => Kind::Vote,
            4 => Kind::Ask,
            5 => Kind::Leave,
            6 => Kind::Quiesced,
            7 => Kind::Streams,
            16 => Kind::Prepare,
            17 => Kind::Decide,
            18 => Kind::Rollback,
            19 => Kind::Resume,
            20 => Kind::Outcome,
            21 => Kind::Quiesce,
            22 => Kind::StreamsOk,
            _ => return None,
        })
    }

    /// Whether members send this kind (the coordinator sends the others).
    pub fn from_member(self) -> bool {
        (self as u8) < 16
    }
}

/// One message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    /// What it says.
    pub kind: Kind,
    /// The member index (members' messages).
    pub member: u16,
    /// The member process (see the table above).
    pub boot: u64,
    /// The computation's incarnation (coordinator's messages).
    pub inc: u64,
    /// The epoch it is about.
    pub epoch: u64,
    /// Commit (true) or abort, for [`Kind::Decide`] and [`Kind::Outcome`]; for a
    /// member's [`Kind::Join`]: it has stream sockets.
    pub flag: bool,
}

impl Msg {
    /// A message of `kind` about `epoch`, every other field zero.
    pub fn new(kind: Kind, epoch: u64) -> Msg {
        Msg {
            kind,
            member: 0,
            boot: 0,
            inc: 0,
            epoch,
            flag: false,
        }
    }

    /// The datagram.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = self.kind as u8;
        b[6..8].copy_from_slice(&self.member.to_le_bytes());
        b[8..16].copy_from_slice(&self.boot.to_le_bytes());
        b[16..24].copy_from_slice(&self.inc.to_le_bytes());
        b[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        b[32] = self.flag as u8;
        b
    }

    /// Parses a datagram; `None` for anything that is not exactly a message.
    pub fn decode(b: &[u8]) -> Option<Msg> {
        if b.len() != LEN || &b[0..4] != MAGIC || b[4] != VERSION || b[32] > 1 {
            return None;
        }
        if b[33..].iter().any(|&x| x != 0) {
            return None;
        }
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        Some(Msg {
            kind: Kind::from_u8(b[5])?,
            member: u16::from_le_bytes([b[6], b[7]]),
            boot: u64_at(8),
            inc: u64_at(16),
            epoch: u64_at(24),
            flag: b[32] == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_golden_bytes() {
        let m = Msg {
            kind: Kind::Decide,
            member: 0x0102,
            boot: 0x1122_3344_5566_7788,
            inc: 3,
            epoch: 9,
            flag: true,
        };
        let b = m.encode();
        assert_eq!(&b[..8], b"DC2P\x01\x11\x02\x01");
        assert_eq!(&b[8..16], &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(b[16], 3);
        assert_eq!(b[24], 9);
        assert_eq!(b[32], 1);
        assert_eq!(Msg::decode(&b), Some(m));
        for k in 0..=255u8 {
            if let Some(kind) = Kind::from_u8(k) {
                assert_eq!(kind as u8, k);
                assert_eq!(kind.from_member(), k < 16);
            }
        }
    }

    #[test]
    fn golden_bytes_of_the_stream_messages() {
        // The quiesce step (issue 16): the bytes are the protocol, so they are pinned.
        let q = Msg {
            inc: 2,
            ..Msg::new(Kind::Quiesce, 5)
        }
        .encode();
        assert_eq!(&q[..8], b"DC2P\x01\x15\x00\x00");
        assert_eq!((q[16], q[24], q[32]), (2, 5, 0));
        let a = Msg {
            member: 3,
            boot: 0xaabb,
            ..Msg::new(Kind::Quiesced, 5)
        }
        .encode();
        assert_eq!(&a[..10], b"DC2P\x01\x06\x03\x00\xbb\xaa");
        assert_eq!(a[24], 5);
        let s = Msg::new(Kind::Streams, 0).encode();
        assert_eq!(s[5], 7);
        let ok = Msg::new(Kind::StreamsOk, 0).encode();
        assert_eq!(ok[5], 22);
        let j = Msg {
            flag: true,
            ..Msg::new(Kind::Join, 4)
        }
        .encode();
        assert_eq!((j[5], j[24], j[32]), (1, 4, 1));
        for k in [
            Kind::Quiesce,
            Kind::Quiesced,
            Kind::Streams,
            Kind::StreamsOk,
        ] {
            let m = Msg::new(k, 9);
            assert_eq!(Msg::decode(&m.encode()), Some(m));
        }
        assert!(Kind::Quiesced.from_member() && Kind::Streams.from_member());
        assert!(!Kind::Quiesce.from_member() && !Kind::StreamsOk.from_member());
    }

    #[test]
    fn anything_else_is_rejected() {
        let good = Msg::new(Kind::Join, 1).encode();
        assert!(Msg::decode(&good[..LEN - 1]).is_none());
        let mut longer = good.to_vec();
        longer.push(0);
        assert!(Msg::decode(&longer).is_none());
        for (i, v) in [(0, b'X'), (4, 2), (5, 0), (5, 99), (32, 2), (39, 1)] {
            let mut b = good;
            b[i] = v;
            assert!(Msg::decode(&b).is_none(), "byte {i} = {v}");
        }
    }
}
