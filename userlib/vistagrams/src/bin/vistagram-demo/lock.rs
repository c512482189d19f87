//! The lock manager of the thesis's Figure 4.4.
//!
//! The client sets its lock status to PENDING and sends the lock request in one
//! transaction (the send goes out at commit), then receives the grant and sets LOCKED in a
//! second. After a crash it redoes the second transaction if it finds PENDING. The server
//! needs no recovery code at all.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use bytemuck::{Pod, Zeroable};
use clap::Args;
use vista::PPtr;
use vistagrams::{Endpoint, Error, RequestId};

use crate::{open_segment, Common};

const OP_ACQUIRE: u32 = 1;
const OP_RELEASE: u32 = 2;
const ST_GRANTED: u32 = 1;
const ST_BUSY: u32 = 2;
const ST_RELEASED: u32 = 3;
const ST_BAD: u32 = 4;

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct LockReq {
    op: u32,
    _pad: u32,
    client: u64,
}

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct LockResp {
    status: u32,
    _pad: u32,
}

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct LockState {
    holder: u64,
    grants: u64,
}

#[derive(Args)]
pub struct ServerArgs {
    #[command(flatten)]
    common: Common,
    /// Address to serve on.
    #[arg(long)]
    addr: SocketAddr,
}

pub fn server(a: ServerArgs) -> Result<()> {
    let mut seg = open_segment(&a.common.segment)?;
    let lock: PPtr<LockState> = match seg.root::<LockState>("lock.state")? {
        Some(p) => p,
        None => {
            let mut tx = seg.begin()?;
            let p = tx.alloc(LockState::zeroed())?;
            tx.set_root("lock.state", p)?;
            tx.commit()?;
            p
        }
    };
    let mut ep = Endpoint::open(&mut seg, "lock", a.addr, a.common.endpoint_config())?;
    eprintln!("lock-server {} ready", a.addr);
    loop {
        let mut tx = ep.begin(&mut seg)?;
        let (id, status) =
            match tx.receive_request_typed::<LockReq>(Some(Duration::from_millis(500))) {
                Ok(Some((id, r))) => {
                    let l = tx.read(lock)?;
                    let status = match r.op {
                        OP_ACQUIRE if r.client != 0 && (l.holder == 0 || l.holder == r.client) => {
                            tx.update(lock, |l| {
                                l.holder = r.client;
                                l.grants += 1;
                            })?;
                            ST_GRANTED
                        }
                        OP_ACQUIRE => ST_BUSY,
                        OP_RELEASE if l.holder == r.client => {
                            tx.update(lock, |l| l.holder = 0)?;
                            ST_RELEASED
                        }
                        _ => ST_BAD,
                    };
                    (id, status)
                }
                Ok(None) => {
                    tx.commit()?;
                    continue;
                }
                Err(Error::MessageSize { id, .. }) => (id, ST_BAD),
                Err(e) => return Err(e.into()),
            };
        tx.send_response_typed(id, &LockResp { status, _pad: 0 })?;
        tx.commit()?;
    }
}

#[derive(Args)]
pub struct ClientArgs {
    #[command(flatten)]
    common: Common,
    /// The lock server.
    #[arg(long)]
    server: SocketAddr,
    /// This client's name (non-zero).
    #[arg(long)]
    name: u64,
    /// Times to acquire and release the lock.
    #[arg(long)]
    rounds: u64,
    /// The log of visible events (appended to).
    #[arg(long)]
    log: PathBuf,
    /// How long to hold the lock, milliseconds.
    #[arg(long, default_value_t = 5)]
    hold_ms: u64,
}

const FREE: u32 = 0;
const PENDING: u32 = 1;
const LOCKED: u32 = 2;
const RELEASING: u32 = 3;

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct ClientState {
    status: u32,
    _pad: u32,
    req: RequestId,
    round: u64,
}

fn visible(log: &std::path::Path, line: String) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    // One write(2) per line on an O_APPEND file: lines of concurrent clients never mix.
    f.write_all(line.as_bytes())?;
    Ok(())
}

pub fn client(a: ClientArgs) -> Result<()> {
    if a.name == 0 {
        bail!("--name must be non-zero");
    }
    let mut seg = open_segment(&a.common.segment)?;
    let st: PPtr<ClientState> = match seg.root::<ClientState>("lock.client")? {
        Some(p) => p,
        None => {
            let mut tx = seg.begin()?;
            let p = tx.alloc(ClientState::zeroed())?;
            tx.set_root("lock.client", p)?;
            tx.commit()?;
            p
        }
    };
    let local: SocketAddr = "127.0.0.1:0".parse()?;
    let mut ep = Endpoint::open(&mut seg, "lock", local, a.common.endpoint_config())?;
    let wait = Some(Duration::from_secs(1));
    loop {
        let s = *seg.get(st)?;
        match s.status {
            FREE if s.round >= a.rounds => {
                ep.flush_acks();
                println!("done {}", s.round);
                return Ok(());
            }
            FREE => {
                // Figure 4.4, first transaction: PENDING and the request, atomically.
                let mut tx = ep.begin(&mut seg)?;
                tx.update(st, |c| c.status = PENDING)?;
                let r = LockReq {
                    op: OP_ACQUIRE,
                    _pad: 0,
                    client: a.name,
                };
                let id = tx.send_request_typed(a.server, &r)?;
                tx.update(st, |c| c.req = id)?;
                tx.commit()?;
            }
            PENDING => {
                // Second transaction (redone after a crash while PENDING).
                let mut tx = ep.begin(&mut seg)?;
                let Some(resp) = tx.receive_response_typed::<LockResp>(s.req, wait)? else {
                    continue;
                };
                let busy = resp.status == ST_BUSY;
                match resp.status {
                    ST_GRANTED => tx.update(st, |c| c.status = LOCKED)?,
                    ST_BUSY => tx.update(st, |c| c.status = FREE)?,
                    x => bail!("lock server answered {x} to an acquire"),
                }
                tx.commit()?;
                if busy {
                    std::thread::sleep(Duration::from_millis(2 + a.name % 5));
                }
            }
            LOCKED => {
                // Visible events, after the commit that made us the holder. After a crash
                // here they are repeated (same name and round), never interleaved with
                // another holder's.
                visible(&a.log, format!("ACQ {} {}\n", a.name, s.round))?;
                std::thread::sleep(Duration::from_millis(a.hold_ms));
                visible(&a.log, format!("REL {} {}\n", a.name, s.round))?;
                let mut tx = ep.begin(&mut seg)?;
                tx.update(st, |c| c.status = RELEASING)?;
                let r = LockReq {
                    op: OP_RELEASE,
                    _pad: 0,
                    client: a.name,
                };
                let id = tx.send_request_typed(a.server, &r)?;
                tx.update(st, |c| c.req = id)?;
                tx.commit()?;
            }
            RELEASING => {
                let mut tx = ep.begin(&mut seg)?;
                let Some(resp) = tx.receive_response_typed::<LockResp>(s.req, wait)? else {
                    continue;
                };
                if resp.status != ST_RELEASED {
                    bail!("lock server answered {} to a release", resp.status);
                }
                tx.update(st, |c| {
                    c.status = FREE;
                    c.round += 1;
                })?;
                tx.commit()?;
            }
            x => bail!("corrupt client state: status {x}"),
        }
    }
}
