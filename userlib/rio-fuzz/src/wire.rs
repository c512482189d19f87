//! The coordinator's messages to actors and their answers, over pipes: a frame is a `u32`
//! length and the payload, little endian.

use crate::fsmodel::FileStat;
use crate::model::{ObjView, Reply};

/// The op index that tells an actor to exit.
pub const QUIT: u32 = u32::MAX;

/// A message to an actor: run op `index` (from the list every process has) with `arg`.
pub fn encode_cmd(index: u32, arg: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(8);
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(&arg.to_le_bytes());
    v
}

/// Parses [`encode_cmd`].
pub fn decode_cmd(b: &[u8]) -> Option<(u32, u32)> {
    let mut c = Cursor(b);
    Some((c.u32()?, c.u32()?))
}

/// Encodes an answer.
pub fn encode_reply(r: &Reply) -> Vec<u8> {
    let mut v = Vec::new();
    match r {
        Reply::Ok(x) => {
            v.push(0);
            v.extend_from_slice(&x.to_le_bytes());
        }
        Reply::Err(e) => {
            v.push(1);
            v.extend_from_slice(&e.to_le_bytes());
        }
        Reply::Data(d) => {
            v.push(2);
            v.extend_from_slice(d);
        }
        Reply::Objs(objs) => {
            v.push(3);
            v.extend_from_slice(&(objs.len() as u32).to_le_bytes());
            for o in objs {
                let n = o.name.as_bytes();
                v.push(n.len().min(255) as u8);
                v.extend_from_slice(&n[..n.len().min(255)]);
                v.extend_from_slice(&o.size.to_le_bytes());
                v.extend_from_slice(&o.uid.to_le_bytes());
                v.extend_from_slice(&o.mode.to_le_bytes());
                v.extend_from_slice(&o.pages.to_le_bytes());
                v.extend_from_slice(&o.open_count.to_le_bytes());
                v.push(u8::from(o.blockdev) | (u8::from(o.damaged) << 1));
            }
        }
        Reply::Stats {
            objects,
            pages_in_use,
        } => {
            v.push(4);
            v.extend_from_slice(&objects.to_le_bytes());
            v.extend_from_slice(&pages_in_use.to_le_bytes());
        }
        Reply::Info { abi, state } => {
            v.push(5);
            v.extend_from_slice(&abi.to_le_bytes());
            v.extend_from_slice(&state.to_le_bytes());
        }
        Reply::FStat(st) => {
            v.push(6);
            for x in [st.mode, st.uid, st.gid, st.nlink] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.extend_from_slice(&st.size.to_le_bytes());
        }
        Reply::Signal(sig) => {
            v.push(7);
            v.extend_from_slice(&sig.to_le_bytes());
        }
    }
    v
}

/// The whole frame (length and payload) of `Reply::Signal(sig)`, built without allocating:
/// a signal handler sends it.
pub const fn signal_frame(sig: i32) -> [u8; 9] {
    let s = sig.to_le_bytes();
    [5, 0, 0, 0, 7, s[0], s[1], s[2], s[3]]
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
}

/// Parses [`encode_reply`].
pub fn decode_reply(b: &[u8]) -> Option<Reply> {
    let mut c = Cursor(b);
    Some(match c.u8()? {
        0 => Reply::Ok(c.u64()?),
        1 => Reply::Err(c.u32()? as i32),
        2 => Reply::Data(c.0.to_vec()),
        3 => {
            let n = c.u32()?;
            let mut v = Vec::new();
            for _ in 0..n {
                let len = c.u8()?;
                let name = String::from_utf8_lossy(c.take(usize::from(len))?).into_owned();
                let size = c.u64()?;
                let uid = c.u32()?;
                let mode = c.u32()?;
                let pages = c.u64()?;
                let open_count = c.u32()?;
                let f = c.u8()?;
                v.push(ObjView {
                    name,
                    size,
                    uid,
                    mode,
                    pages,
                    open_count,
                    blockdev: f & 1 != 0,
                    damaged: f & 2 != 0,
                });
            }
            Reply::Objs(v)
        }
        4 => Reply::Stats {
            objects: c.u64()?,
            pages_in_use: c.u64()?,
        },
        5 => Reply::Info {
            abi: c.u32()?,
            state: c.u32()?,
        },
        6 => Reply::FStat(FileStat {
            mode: c.u32()?,
            uid: c.u32()?,
            gid: c.u32()?,
            nlink: c.u32()?,
            size: c.u64()?,
        }),
        7 => Reply::Signal(c.u32()? as i32),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        let o = ObjView {
            name: "o1".into(),
            size: 5,
            uid: 65534,
            mode: 0o644,
            pages: 1,
            open_count: 2,
            blockdev: true,
            damaged: false,
        };
        for r in [
            Reply::Ok(7),
            Reply::Err(libc::EACCES),
            Reply::Data(vec![1, 2, 3]),
            Reply::Objs(vec![o.clone(), o]),
            Reply::Stats {
                objects: 3,
                pages_in_use: 9,
            },
            Reply::Info { abi: 3, state: 2 },
            Reply::FStat(FileStat {
                mode: 0o100644,
                uid: 65534,
                gid: 0,
                nlink: 2,
                size: 1 << 40,
            }),
            Reply::Signal(libc::SIGBUS),
        ] {
            assert_eq!(decode_reply(&encode_reply(&r)), Some(r));
        }
        let f = signal_frame(libc::SIGSEGV);
        let mut want = 5u32.to_le_bytes().to_vec();
        want.extend_from_slice(&encode_reply(&Reply::Signal(libc::SIGSEGV)));
        assert_eq!(f.to_vec(), want);
        assert_eq!(decode_cmd(&encode_cmd(5, 1)), Some((5, 1)));
        assert_eq!(decode_reply(&[9]), None);
    }
}
