//! The bank: accounts spread over servers, transfers between them by clients whose
//! transfers are persistent state machines (withdraw at A, then deposit at B, each
//! request/response cycle in its own transactions), resumed after a crash.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytemuck::{Pod, Zeroable};
use clap::Args;
use vista::{PPtr, PSlice};
use vistagrams::table::{Header, RESP_FREE};
use vistagrams::{Endpoint, Error, RequestId};

use crate::{open_segment, Common};

/// Request operations.
pub const OP_WITHDRAW: u32 = 1;
/// Deposit.
pub const OP_DEPOSIT: u32 = 2;
/// Balance.
pub const OP_BALANCE: u32 = 3;

/// Response status: done.
pub const ST_OK: u32 = 1;
/// Insufficient funds.
pub const ST_INSUFFICIENT: u32 = 2;
/// Malformed request.
pub const ST_BAD: u32 = 3;

/// A bank request.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BankReq {
    /// `OP_*`.
    pub op: u32,
    /// Account number at that server.
    pub account: u32,
    /// Amount (withdraw, deposit).
    pub amount: i64,
    /// The client's transfer number (for tracing).
    pub transfer: u64,
}

/// A bank response.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BankResp {
    /// `ST_*`.
    pub status: u32,
    /// Zero.
    pub _pad: u32,
    /// Balance after the operation.
    pub balance: i64,
}

#[derive(Args)]
pub struct ServerArgs {
    #[command(flatten)]
    common: Common,
    /// Address to serve on.
    #[arg(long)]
    addr: SocketAddr,
    /// Number of accounts (at creation).
    #[arg(long, default_value_t = 4)]
    accounts: u32,
    /// Initial balance of every account (at creation).
    #[arg(long, default_value_t = 1_000_000)]
    initial: i64,
}

const ACCOUNTS: &str = "bank.accounts";
const CLIENT: &str = "bank.client";
const ENDPOINT: &str = "bank";

fn handle(tx: &mut vistagrams::VgTx<'_, '_>, accts: PSlice<i64>, r: &BankReq) -> Result<BankResp> {
    let bad = BankResp {
        status: ST_BAD,
        _pad: 0,
        balance: 0,
    };
    let Some(p) = accts.at(r.account as usize) else {
        return Ok(bad);
    };
    let bal = tx.read(p)?;
    let (status, nb) = match r.op {
        OP_WITHDRAW if r.amount >= 0 && bal >= r.amount => (ST_OK, bal - r.amount),
        OP_WITHDRAW if r.amount >= 0 => (ST_INSUFFICIENT, bal),
        OP_DEPOSIT if r.amount >= 0 => (ST_OK, bal.saturating_add(r.amount)),
        OP_BALANCE => (ST_OK, bal),
        _ => return Ok(bad),
    };
    if nb != bal {
        tx.write(p, nb)?;
    }
    Ok(BankResp {
        status,
        _pad: 0,
        balance: nb,
    })
}

pub fn server(a: ServerArgs) -> Result<()> {
    let mut seg = open_segment(&a.common.segment)?;
    let accts = match seg.root_slice::<i64>(ACCOUNTS)? {
        Some(s) => s,
        None => {
            let mut tx = seg.begin()?;
            let s = tx.alloc_slice(a.accounts as usize, a.initial)?;
            tx.set_root_slice(ACCOUNTS, s)?;
            tx.commit()?;
            s
        }
    };
    let mut ep = Endpoint::open(&mut seg, ENDPOINT, a.addr, a.common.endpoint_config())?;
    eprintln!("bank-server {} ready", a.addr);
    loop {
        let mut tx = ep.begin(&mut seg)?;
        match tx.receive_request_typed::<BankReq>(Some(Duration::from_millis(500))) {
            Ok(Some((id, r))) => {
                let resp = handle(&mut tx, accts, &r)?;
                tx.send_response_typed(id, &resp)?;
            }
            Ok(None) => {}
            Err(Error::MessageSize { id, .. }) => {
                let bad = BankResp {
                    status: ST_BAD,
                    _pad: 0,
                    balance: 0,
                };
                tx.send_response_typed(id, &bad)?;
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit()?;
    }
}

#[derive(Args)]
pub struct ClientArgs {
    #[command(flatten)]
    common: Common,
    /// The servers, comma-separated (account numbers are per server).
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<SocketAddr>,
    /// Accounts per server.
    #[arg(long, default_value_t = 4)]
    accounts: u32,
    /// Transfers to make.
    #[arg(long)]
    transfers: u64,
    /// Seed of the transfers (which accounts, what amounts).
    #[arg(long)]
    transfer_seed: u64,
    /// Largest amount.
    #[arg(long, default_value_t = 100)]
    max_amount: u64,
    /// The client's own address (port 0: any); in a guest, its network address, so that
    /// its requests leave through eth0 rather than the loopback.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Pause after each committed step, milliseconds (the "work" between messages).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

/// Transfer `k` of a client: (from server, from account, to server, to account, amount).
/// The crash test recomputes the same from the seed.
pub fn transfer_params(
    seed: u64,
    k: u64,
    servers: u64,
    accounts: u64,
    max: u64,
) -> (u64, u64, u64, u64, i64) {
    let mut r = rio_prng::Rng::stream(seed, k);
    let fs = r.below(servers);
    let fa = r.below(accounts);
    let ts = r.below(servers);
    let mut ta = r.below(accounts);
    if fs == ts && fa == ta {
        ta = (ta + 1) % accounts;
    }
    let amount = 1 + r.below(max) as i64;
    (fs, fa, ts, ta, amount)
}

const IDLE: u32 = 0;
const WITHDRAWING: u32 = 1;
const DEPOSITING: u32 = 2;

/// The client's persistent state.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct ClientState {
    /// Next transfer number.
    next: u64,
    /// IDLE, WITHDRAWING or DEPOSITING (transfer `next`).
    stage: u32,
    _pad: u32,
    /// The outstanding request of the current stage.
    req: RequestId,
    done: u64,
    rejected: u64,
}

pub fn client(a: ClientArgs) -> Result<()> {
    if a.accounts < 2 || a.servers.is_empty() || a.max_amount == 0 {
        bail!("need at least 2 accounts, 1 server and a positive max amount");
    }
    let mut seg = open_segment(&a.common.segment)?;
    let st: PPtr<ClientState> = match seg.root::<ClientState>(CLIENT)? {
        Some(p) => p,
        None => {
            let mut tx = seg.begin()?;
            let p = tx.alloc(ClientState::zeroed())?;
            tx.set_root(CLIENT, p)?;
            tx.commit()?;
            p
        }
    };
    let local = a.bind;
    let mut ep = Endpoint::open(&mut seg, ENDPOINT, local, a.common.endpoint_config())?;
    let ns = a.servers.len() as u64;
    let wait = Some(Duration::from_secs(1));
    loop {
        let s = *seg.get(st)?;
        if s.stage == IDLE && s.next >= a.transfers {
            ep.flush_acks();
            println!("done {} rejected {}", s.done, s.rejected);
            return Ok(());
        }
        let (fs, fa, ts, ta, amount) =
            transfer_params(a.transfer_seed, s.next, ns, a.accounts as u64, a.max_amount);
        let mut tx = ep.begin(&mut seg)?;
        match s.stage {
            IDLE => {
                let r = BankReq {
                    op: OP_WITHDRAW,
                    account: fa as u32,
                    amount,
                    transfer: s.next,
                };
                let id = tx.send_request_typed(a.servers[fs as usize], &r)?;
                tx.update(st, |c| {
                    c.stage = WITHDRAWING;
                    c.req = id;
                })?;
            }
            WITHDRAWING => {
                let Some(resp) = tx.receive_response_typed::<BankResp>(s.req, wait)? else {
                    continue; // drops (aborts) the transaction; retransmission goes on
                };
                if resp.status == ST_OK {
                    let r = BankReq {
                        op: OP_DEPOSIT,
                        account: ta as u32,
                        amount,
                        transfer: s.next,
                    };
                    let id = tx.send_request_typed(a.servers[ts as usize], &r)?;
                    tx.update(st, |c| {
                        c.stage = DEPOSITING;
                        c.req = id;
                    })?;
                } else {
                    tx.update(st, |c| {
                        c.stage = IDLE;
                        c.next += 1;
                        c.rejected += 1;
                    })?;
                }
            }
            DEPOSITING => {
                let Some(resp) = tx.receive_response_typed::<BankResp>(s.req, wait)? else {
                    continue;
                };
                if resp.status != ST_OK {
                    bail!(
                        "deposit of transfer {} refused: status {}",
                        s.next,
                        resp.status
                    );
                }
                tx.update(st, |c| {
                    c.stage = IDLE;
                    c.next += 1;
                    c.done += 1;
                })?;
            }
            x => bail!("corrupt client state: stage {x}"),
        }
        tx.commit()?;
        if a.pause_ms > 0 {
            std::thread::sleep(Duration::from_millis(a.pause_ms));
        }
    }
}

#[derive(Args)]
pub struct DumpArgs {
    /// The server's segment file.
    #[arg(long)]
    segment: std::path::PathBuf,
}

pub fn dump(a: DumpArgs) -> Result<()> {
    let seg = open_segment(&a.segment)?;
    let accts = seg
        .root_slice::<i64>(ACCOUNTS)?
        .context("no accounts in this segment")?;
    for (i, b) in seg.get_slice(accts)?.iter().enumerate() {
        println!("balance {i} {b}");
    }
    if let Some(h) = seg.root::<Header>(&vistagrams::root_name(ENDPOINT))? {
        let h = *seg.get(h)?;
        let used = seg
            .get_slice(h.responses)?
            .iter()
            .filter(|e| e.state != RESP_FREE)
            .count();
        println!("responses_used {used}");
    }
    Ok(())
}
