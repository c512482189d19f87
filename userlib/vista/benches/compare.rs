//! Vista against the stores a user would otherwise pick, on a disk directory and on tmpfs.
//!
//! Run with `scripts/bench-vista.sh` (or `cargo bench -p vista --features compare --bench
//! compare`). Prints markdown tables on stdout, progress on stderr.
//!
//! Environment:
//! * `VISTA_BENCH_SCALE` (default 1): multiplies the measuring time of every cell.
//! * `VISTA_BENCH_DIRS` (default `/var/tmp/vista-bench:/dev/shm/vista-bench`): where the
//!   stores live; the first is reported as "disk", the second as "tmpfs".
//! * `VISTA_BENCH_ONLY`: comma-separated substrings; only systems whose name matches run.
//!
//! Method: every workload runs through one small key-value interface (fixed-size records
//! in numbered tables, keys dense from 0), so each system does the same logical work: a
//! read of a record is a `get`, an update is a `put` of the whole record. Vista implements
//! it as one persistent array per table: `get` copies the record out, `put` is
//! `set_range` + copy. The "raw" rows use Vista's own API directly (begin, `set_range`,
//! store, commit) with no indirection. Each cell is the median of 7 timed rounds after a
//! warm-up; ratios are the system's time per transaction over Vista's (file, Memory).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use redb::ReadableTable;
use vista::{Backing, Durability, LogMode, PSlice, Segment, SegmentConfig};

type R<T> = Result<T, Box<dyn Error>>;

// ---------------------------------------------------------------------------------------
// Timing

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn scale() -> f64 {
    std::env::var("VISTA_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Median time per operation in nanoseconds.
fn measure(mut op: impl FnMut() -> R<()>) -> R<f64> {
    let round = Duration::from_secs_f64(0.06 * scale());
    // Calibrate a batch that takes at least 1 ms (or a tenth of a round).
    let target = Duration::from_millis(1).min(round / 10);
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            op()?;
        }
        if t.elapsed() >= target || batch >= 1 << 24 {
            break;
        }
        batch *= 2;
    }
    // Warm-up.
    let t = Instant::now();
    while t.elapsed() < round {
        for _ in 0..batch {
            op()?;
        }
    }
    let mut per_op = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < round {
            for _ in 0..batch {
                op()?;
            }
            n += batch;
        }
        per_op.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    per_op.sort_by(|a, b| a.total_cmp(b));
    Ok(per_op[3])
}

// ---------------------------------------------------------------------------------------
// The key-value interface

trait KvTx {
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> R<bool>;
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> R<()>;
}

trait Kv {
    /// Creates tables: (records, record size).
    fn create(&mut self, tables: &[(u64, usize)]) -> R<()>;
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> R<()>) -> R<()>;
    /// Called once the initial data is loaded.
    fn finish_load(&mut self) -> R<()> {
        Ok(())
    }
}

fn load(kv: &mut dyn Kv, tables: &[(u64, usize)], init: &dyn Fn(usize, u64, &mut [u8])) -> R<()> {
    kv.create(tables)?;
    for (t, &(n, size)) in tables.iter().enumerate() {
        let mut k = 0;
        while k < n {
            let end = (k + 20_000).min(n);
            kv.tx(&mut |tx| {
                let mut buf = vec![0u8; size];
                for key in k..end {
                    init(t, key, &mut buf);
                    tx.put(t, key, &buf)?;
                }
                Ok(())
            })?;
            k = end;
        }
    }
    kv.finish_load()
}

// Vista ----------------------------------------------------------------------------------

struct VistaKv {
    seg: Option<Segment>,
    tables: Vec<(usize, usize, u64)>, // base, record size, records
    path: PathBuf,
    addr: usize,
    durability: Durability,
}

struct VistaTx<'a, 'b> {
    tx: &'a mut vista::Tx<'b>,
    tables: &'a [(usize, usize, u64)],
}

impl KvTx for VistaTx<'_, '_> {
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> R<bool> {
        let (base, size, n) = self.tables[t];
        if k >= n || out.len() > size {
            return Ok(false);
        }
        let s = PSlice::<u8>::from_raw(base + k as usize * size, out.len());
        out.copy_from_slice(self.tx.get_slice(s)?);
        Ok(true)
    }
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> R<()> {
        let (base, size, n) = self.tables[t];
        if k >= n || v.len() > size {
            return Err("vista kv: key or value out of range".into());
        }
        let s = PSlice::<u8>::from_raw(base + k as usize * size, v.len());
        self.tx
            .update_slice(s, 0..v.len(), |x| x.copy_from_slice(v))?;
        Ok(())
    }
}

static NEXT_ADDR: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0x3b00_0000_0000);

fn vista_addr() -> usize {
    NEXT_ADDR.fetch_add(1 << 36, std::sync::atomic::Ordering::Relaxed)
}

impl VistaKv {
    /// The initial load runs with the Memory policy; `finish_load` reopens the segment
    /// with the policy under test (loading 100k records with one msync each would take
    /// minutes and measure nothing of interest).
    fn new(dir: &Path, dur: Durability, data_len: usize) -> R<VistaKv> {
        let cfg = SegmentConfig::new(data_len).log_capacity(8 << 20);
        let path = dir.join("vista.seg");
        let addr = vista_addr();
        let seg = Segment::create_file(&path, addr, &cfg, Durability::Memory)?;
        Ok(VistaKv {
            seg: Some(seg),
            tables: Vec::new(),
            path,
            addr,
            durability: dur,
        })
    }

    fn seg(&mut self) -> R<&mut Segment> {
        self.seg.as_mut().ok_or_else(|| "segment not open".into())
    }
}

impl Kv for VistaKv {
    fn create(&mut self, tables: &[(u64, usize)]) -> R<()> {
        let mut tx = self.seg()?.begin()?;
        let mut out = Vec::new();
        for (i, &(n, size)) in tables.iter().enumerate() {
            let size8 = size.div_ceil(8) * 8;
            let s = tx.alloc_slice::<u64>(n as usize * size8 / 8, 0)?;
            tx.set_root_slice(&format!("t{i}"), s)?;
            out.push((s.addr(), size8, n));
        }
        tx.commit()?;
        self.tables = out;
        Ok(())
    }
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> R<()>) -> R<()> {
        let seg = self.seg.as_mut().ok_or("segment not open")?;
        let mut tx = seg.begin()?;
        f(&mut VistaTx {
            tx: &mut tx,
            tables: &self.tables,
        })?;
        tx.commit()?;
        Ok(())
    }
    fn finish_load(&mut self) -> R<()> {
        if self.durability != Durability::Memory {
            self.seg = None;
            self.seg = Some(Segment::open_file(&self.path, self.addr, self.durability)?);
        }
        Ok(())
    }
}

// SQLite ---------------------------------------------------------------------------------

struct SqliteKv {
    conn: rusqlite::Connection,
}

impl SqliteKv {
    fn new(dir: &Path, sync: &str) -> R<SqliteKv> {
        let conn = rusqlite::Connection::open(dir.join("sqlite.db"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if mode != "wal" {
            return Err(format!("journal_mode is {mode}").into());
        }
        conn.execute_batch(&format!("PRAGMA synchronous={sync}"))?;
        Ok(SqliteKv { conn })
    }
}

struct SqliteTx<'a> {
    conn: &'a rusqlite::Connection,
}

const SQL_GET: [&str; 10] = [
    "SELECT v FROM t0 WHERE k=?1",
    "SELECT v FROM t1 WHERE k=?1",
    "SELECT v FROM t2 WHERE k=?1",
    "SELECT v FROM t3 WHERE k=?1",
    "SELECT v FROM t4 WHERE k=?1",
    "SELECT v FROM t5 WHERE k=?1",
    "SELECT v FROM t6 WHERE k=?1",
    "SELECT v FROM t7 WHERE k=?1",
    "SELECT v FROM t8 WHERE k=?1",
    "SELECT v FROM t9 WHERE k=?1",
];
const SQL_PUT: [&str; 10] = [
    "INSERT INTO t0(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
    "INSERT INTO t1(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
    "INSERT INTO t2(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
    "INSERT INTO t3(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
    "INSERT INTO t4(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
    "INSERT INTO t5(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
    "INSERT INTO t6(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
    "INSERT INTO t7(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
    "INSERT INTO t8(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
    "INSERT INTO t9(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
];

impl KvTx for SqliteTx<'_> {
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> R<bool> {
        let mut st = self.conn.prepare_cached(SQL_GET[t])?;
        let mut rows = st.query([k as i64])?;
        match rows.next()? {
            Some(row) => {
                let b = row.get_ref(0)?.as_blob()?;
                let n = out.len().min(b.len());
                out[..n].copy_from_slice(&b[..n]);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> R<()> {
        let mut st = self.conn.prepare_cached(SQL_PUT[t])?;
        st.execute(rusqlite::params![k as i64, v])?;
        Ok(())
    }
}

impl Kv for SqliteKv {
    fn create(&mut self, tables: &[(u64, usize)]) -> R<()> {
        for i in 0..tables.len() {
            self.conn
                .execute_batch(&format!("CREATE TABLE t{i}(k INTEGER PRIMARY KEY, v BLOB)"))?;
        }
        Ok(())
    }
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> R<()>) -> R<()> {
        self.conn.execute_batch("BEGIN")?;
        let r = f(&mut SqliteTx { conn: &self.conn });
        match r {
            Ok(()) => self.conn.execute_batch("COMMIT")?,
            Err(e) => {
                self.conn.execute_batch("ROLLBACK")?;
                return Err(e);
            }
        }
        Ok(())
    }
}

// redb -----------------------------------------------------------------------------------

const REDB_TABLES: [redb::TableDefinition<u64, &[u8]>; 10] = [
    redb::TableDefinition::new("t0"),
    redb::TableDefinition::new("t1"),
    redb::TableDefinition::new("t2"),
    redb::TableDefinition::new("t3"),
    redb::TableDefinition::new("t4"),
    redb::TableDefinition::new("t5"),
    redb::TableDefinition::new("t6"),
    redb::TableDefinition::new("t7"),
    redb::TableDefinition::new("t8"),
    redb::TableDefinition::new("t9"),
];

struct RedbKv {
    db: redb::Database,
}

struct RedbTx<'a> {
    tables: Vec<Option<redb::Table<'a, u64, &'static [u8]>>>,
    wtx: &'a redb::WriteTransaction,
}

impl<'a> RedbTx<'a> {
    fn table(&mut self, t: usize) -> R<&mut redb::Table<'a, u64, &'static [u8]>> {
        if self.tables[t].is_none() {
            self.tables[t] = Some(self.wtx.open_table(REDB_TABLES[t])?);
        }
        self.tables[t].as_mut().ok_or_else(|| "table".into())
    }
}

impl KvTx for RedbTx<'_> {
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> R<bool> {
        let table = self.table(t)?;
        match table.get(k)? {
            Some(g) => {
                let b = g.value();
                let n = out.len().min(b.len());
                out[..n].copy_from_slice(&b[..n]);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> R<()> {
        self.table(t)?.insert(k, v)?;
        Ok(())
    }
}

impl Kv for RedbKv {
    fn create(&mut self, _tables: &[(u64, usize)]) -> R<()> {
        Ok(())
    }
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> R<()>) -> R<()> {
        let wtx = self.db.begin_write()?;
        {
            let mut t = RedbTx {
                tables: (0..10).map(|_| None).collect(),
                wtx: &wtx,
            };
            f(&mut t)?;
        }
        wtx.commit()?;
        Ok(())
    }
}

// LMDB (heed) ----------------------------------------------------------------------------

type HeedDb = heed::Database<heed::types::U64<heed::byteorder::BigEndian>, heed::types::Bytes>;

struct HeedKv {
    env: heed::Env,
    dbs: Vec<HeedDb>,
}

impl HeedKv {
    fn new(dir: &Path) -> R<HeedKv> {
        let path = dir.join("lmdb");
        std::fs::create_dir_all(&path)?;
        // SAFETY: the environment directory is private to this benchmark and opened once.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(2 << 30)
                .max_dbs(16)
                .open(&path)?
        };
        Ok(HeedKv {
            env,
            dbs: Vec::new(),
        })
    }
}

struct HeedTx<'a, 'e> {
    txn: &'a mut heed::RwTxn<'e>,
    dbs: &'a [HeedDb],
}

impl KvTx for HeedTx<'_, '_> {
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> R<bool> {
        match self.dbs[t].get(self.txn, &k)? {
            Some(b) => {
                let n = out.len().min(b.len());
                out[..n].copy_from_slice(&b[..n]);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> R<()> {
        self.dbs[t].put(self.txn, &k, v)?;
        Ok(())
    }
}

impl Kv for HeedKv {
    fn create(&mut self, tables: &[(u64, usize)]) -> R<()> {
        let mut w = self.env.write_txn()?;
        for i in 0..tables.len() {
            let db: HeedDb = self.env.create_database(&mut w, Some(&format!("t{i}")))?;
            self.dbs.push(db);
        }
        w.commit()?;
        Ok(())
    }
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> R<()>) -> R<()> {
        let mut w = self.env.write_txn()?;
        f(&mut HeedTx {
            txn: &mut w,
            dbs: &self.dbs,
        })?;
        w.commit()?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Systems

#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    VistaMemory,
    VistaMsync,
    VistaMsyncWal,
    SqliteFull,
    SqliteNormal,
    Redb,
    Lmdb,
}

const SYSTEMS: [System; 7] = [
    System::VistaMemory,
    System::VistaMsync,
    System::VistaMsyncWal,
    System::SqliteFull,
    System::SqliteNormal,
    System::Redb,
    System::Lmdb,
];

impl System {
    fn name(self) -> &'static str {
        match self {
            System::VistaMemory => "Vista (file, Memory)",
            System::VistaMsync => "Vista (file, Msync)",
            System::VistaMsyncWal => "Vista (file, MsyncWal)",
            System::SqliteFull => "SQLite WAL, synchronous=FULL",
            System::SqliteNormal => "SQLite WAL, synchronous=NORMAL",
            System::Redb => "redb (Durability::Immediate)",
            System::Lmdb => "LMDB via heed (default sync)",
        }
    }

    fn open(self, dir: &Path, vista_len: usize) -> R<Box<dyn Kv>> {
        Ok(match self {
            System::VistaMemory => Box::new(VistaKv::new(dir, Durability::Memory, vista_len)?),
            System::VistaMsync => Box::new(VistaKv::new(dir, Durability::Msync, vista_len)?),
            System::VistaMsyncWal => Box::new(VistaKv::new(dir, Durability::MsyncWal, vista_len)?),
            System::SqliteFull => Box::new(SqliteKv::new(dir, "FULL")?),
            System::SqliteNormal => Box::new(SqliteKv::new(dir, "NORMAL")?),
            System::Redb => Box::new(RedbKv {
                db: redb::Database::create(dir.join("redb.db"))?,
            }),
            System::Lmdb => Box::new(HeedKv::new(dir)?),
        })
    }
}

fn selected(s: System) -> bool {
    match std::env::var("VISTA_BENCH_ONLY") {
        Ok(f) => f
            .split(',')
            .any(|p| s.name().to_lowercase().contains(&p.to_lowercase())),
        Err(_) => true,
    }
}

// ---------------------------------------------------------------------------------------
// Workloads

const SMALL_RECORDS: u64 = 100_000;

/// One small update: put `size` bytes at a random record.
fn small(kv: &mut dyn Kv, size: usize) -> R<f64> {
    load(kv, &[(SMALL_RECORDS, 64)], &|_, k, b| {
        b[..8].copy_from_slice(&k.to_le_bytes())
    })?;
    let mut rng = Rng(7);
    let v = vec![0xabu8; size];
    measure(|| {
        let k = rng.below(SMALL_RECORDS);
        kv.tx(&mut |tx| tx.put(0, k, &v))
    })
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Account {
    id: u64,
    balance: i64,
    filler: [u8; 88],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct History {
    a: u64,
    b: u64,
    c: u64,
    delta: i64,
    ts: u64,
    pad: u64,
}

const DC_ACCOUNTS: u64 = 100_000;
const DC_TELLERS: u64 = 10;
const DC_BRANCHES: u64 = 1;
const HISTORY: u64 = (2 << 20) / 48;

fn get_pod<T: Pod>(tx: &mut dyn KvTx, t: usize, k: u64) -> R<T> {
    let mut v = T::zeroed();
    if !tx.get(t, k, bytemuck::bytes_of_mut(&mut v))? {
        return Err(format!("missing record {t}/{k}").into());
    }
    Ok(v)
}

fn put_pod<T: Pod>(tx: &mut dyn KvTx, t: usize, k: u64, v: &T) -> R<()> {
    tx.put(t, k, bytemuck::bytes_of(v))
}

/// Debit-credit (TPC-B-like): update account, teller, branch balances; append history to a
/// 2 MB circular buffer. Returns ns per transaction.
fn debit_credit(kv: &mut dyn Kv) -> R<f64> {
    let rec = std::mem::size_of::<Account>();
    let tables = [
        (DC_ACCOUNTS, rec),
        (DC_TELLERS, rec),
        (DC_BRANCHES, rec),
        (HISTORY, std::mem::size_of::<History>()),
        (1, 8),
    ];
    load(kv, &tables, &|t, k, b| {
        if t < 3 {
            b[..8].copy_from_slice(&k.to_le_bytes());
        }
    })?;
    let mut rng = Rng(11);
    let mut ts = 0u64;
    measure(|| {
        let (a, t, br) = (
            rng.below(DC_ACCOUNTS),
            rng.below(DC_TELLERS),
            rng.below(DC_BRANCHES),
        );
        let delta = rng.below(2000) as i64 - 1000;
        ts += 1;
        kv.tx(&mut |tx| {
            for (table, key) in [(0, a), (1, t), (2, br)] {
                let mut acc: Account = get_pod(tx, table, key)?;
                acc.balance += delta;
                put_pod(tx, table, key, &acc)?;
            }
            let head: u64 = get_pod(tx, 4, 0)?;
            let h = History {
                a,
                b: br,
                c: t,
                delta,
                ts,
                pad: 0,
            };
            put_pod(tx, 3, head % HISTORY, &h)?;
            put_pod(tx, 4, 0, &(head + 1))
        })
    })
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct District {
    ytd: i64,
    next_o_id: u64,
    no_head: u64,
    no_tail: u64,
    tax: i64,
    pad: [u64; 7],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Customer {
    balance: i64,
    ytd_payment: i64,
    payment_cnt: u64,
    delivery_cnt: u64,
    discount: i64,
    pad: [u64; 7],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Stock {
    quantity: i64,
    ytd: i64,
    order_cnt: u64,
    remote_cnt: u64,
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Line {
    item: u64,
    qty: u64,
    amount: i64,
    delivery_d: u64,
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Order {
    o_id: u64,
    c_id: u64,
    ol_cnt: u64,
    carrier: u64,
    entry_d: u64,
    pad: u64,
    lines: [Line; 15],
}

const OE_DISTRICTS: u64 = 10;
const OE_CUSTOMERS: u64 = 3000; // per district
const OE_ITEMS: u64 = 100_000;
const OE_RING: u64 = 1024; // orders kept per district
                           // Tables.
const T_WAREHOUSE: usize = 0;
const T_DISTRICT: usize = 1;
const T_CUSTOMER: usize = 2;
const T_STOCK: usize = 3;
const T_ITEM: usize = 4;
const T_ORDER: usize = 5;
const T_NEWORDER: usize = 6;
const T_HISTORY: usize = 7;
const T_META: usize = 8;

/// Order-entry (TPC-C-like): new-order, payment and delivery in the ratio 45:43:5, run
/// serially. Returns ns per transaction.
fn order_entry(kv: &mut dyn Kv) -> R<f64> {
    let tables = [
        (1, 16),
        (OE_DISTRICTS, std::mem::size_of::<District>()),
        (OE_DISTRICTS * OE_CUSTOMERS, std::mem::size_of::<Customer>()),
        (OE_ITEMS, std::mem::size_of::<Stock>()),
        (OE_ITEMS, 8),
        (OE_DISTRICTS * OE_RING, std::mem::size_of::<Order>()),
        (OE_DISTRICTS * OE_RING, 8),
        (HISTORY, std::mem::size_of::<History>()),
        (1, 8),
    ];
    load(kv, &tables, &|t, k, b| match t {
        T_STOCK => b.copy_from_slice(bytemuck::bytes_of(&Stock {
            quantity: 50 + (k % 50) as i64,
            ytd: 0,
            order_cnt: 0,
            remote_cnt: 0,
        })),
        T_ITEM => b.copy_from_slice(&(100 + (k % 9900) as i64).to_le_bytes()),
        _ => {}
    })?;
    let mut rng = Rng(13);
    let mut now = 0u64;
    measure(|| {
        now += 1;
        let kind = rng.below(93);
        let d = rng.below(OE_DISTRICTS);
        let c = d * OE_CUSTOMERS + rng.below(OE_CUSTOMERS);
        let seed = rng.next();
        kv.tx(&mut |tx| {
            let mut r = Rng(seed | 1);
            if kind < 45 {
                // New-order.
                let mut dist: District = get_pod(tx, T_DISTRICT, d)?;
                let o_id = dist.next_o_id;
                dist.next_o_id += 1;
                let mut order = Order::zeroed();
                order.o_id = o_id;
                order.c_id = c;
                order.entry_d = now;
                order.ol_cnt = 5 + r.below(11);
                for l in 0..order.ol_cnt as usize {
                    let item = r.below(OE_ITEMS);
                    let qty = 1 + r.below(10);
                    let price: i64 = get_pod(tx, T_ITEM, item)?;
                    let mut s: Stock = get_pod(tx, T_STOCK, item)?;
                    s.quantity = if s.quantity - qty as i64 >= 10 {
                        s.quantity - qty as i64
                    } else {
                        s.quantity - qty as i64 + 91
                    };
                    s.ytd += qty as i64;
                    s.order_cnt += 1;
                    put_pod(tx, T_STOCK, item, &s)?;
                    order.lines[l] = Line {
                        item,
                        qty,
                        amount: price * qty as i64,
                        delivery_d: 0,
                    };
                }
                put_pod(tx, T_ORDER, d * OE_RING + o_id % OE_RING, &order)?;
                if dist.no_tail - dist.no_head < OE_RING {
                    put_pod(tx, T_NEWORDER, d * OE_RING + dist.no_tail % OE_RING, &o_id)?;
                    dist.no_tail += 1;
                }
                put_pod(tx, T_DISTRICT, d, &dist)?;
            } else if kind < 88 {
                // Payment.
                let h = 1 + r.below(5000) as i64;
                let mut w: [i64; 2] = get_pod(tx, T_WAREHOUSE, 0)?;
                w[0] += h;
                put_pod(tx, T_WAREHOUSE, 0, &w)?;
                let mut dist: District = get_pod(tx, T_DISTRICT, d)?;
                dist.ytd += h;
                put_pod(tx, T_DISTRICT, d, &dist)?;
                let mut cu: Customer = get_pod(tx, T_CUSTOMER, c)?;
                cu.balance -= h;
                cu.ytd_payment += h;
                cu.payment_cnt += 1;
                put_pod(tx, T_CUSTOMER, c, &cu)?;
                let head: u64 = get_pod(tx, T_META, 0)?;
                let hist = History {
                    a: c,
                    b: d,
                    c: 0,
                    delta: h,
                    ts: now,
                    pad: 0,
                };
                put_pod(tx, T_HISTORY, head % HISTORY, &hist)?;
                put_pod(tx, T_META, 0, &(head + 1))?;
            } else {
                // Delivery: the oldest undelivered order of every district.
                let carrier = 1 + r.below(10);
                for dd in 0..OE_DISTRICTS {
                    let mut dist: District = get_pod(tx, T_DISTRICT, dd)?;
                    if dist.no_head == dist.no_tail {
                        continue;
                    }
                    let o_id: u64 = get_pod(tx, T_NEWORDER, dd * OE_RING + dist.no_head % OE_RING)?;
                    dist.no_head += 1;
                    put_pod(tx, T_DISTRICT, dd, &dist)?;
                    let key = dd * OE_RING + o_id % OE_RING;
                    let mut order: Order = get_pod(tx, T_ORDER, key)?;
                    order.carrier = carrier;
                    let mut sum = 0;
                    for l in 0..order.ol_cnt as usize {
                        order.lines[l].delivery_d = now;
                        sum += order.lines[l].amount;
                    }
                    put_pod(tx, T_ORDER, key, &order)?;
                    let mut cu: Customer = get_pod(tx, T_CUSTOMER, order.c_id)?;
                    cu.balance += sum;
                    cu.delivery_cnt += 1;
                    put_pod(tx, T_CUSTOMER, order.c_id, &cu)?;
                }
            }
            Ok(())
        })
    })
}

// ---------------------------------------------------------------------------------------
// Vista-only measurements (raw API)

/// `window`: bytes over which the random locations spread (64 KiB: in cache; 64 MiB: a
/// cache miss per transaction, as in the paper's 50 MB database).
fn vista_raw_small(dir: &Path, dur: Durability, size: usize, window: usize) -> R<f64> {
    let len = 64 << 20;
    let mut seg = Segment::create_file(
        dir.join("raw.seg"),
        vista_addr(),
        &SegmentConfig::new(len).heap(false).log_capacity(1 << 20),
        dur,
    )?;
    let base = seg.base() as usize;
    // SAFETY: pre-touching the whole data area outside any transaction.
    unsafe { std::ptr::write_bytes(base as *mut u8, 1, len) };
    let mut rng = Rng(3);
    let data = [0x5au8; 64];
    let r = measure(|| {
        let off = (rng.below((window - 64) as u64) as usize) & !7;
        let mut tx = seg.begin()?;
        tx.set_range((base + off) as *const u8, size)?;
        // SAFETY: inside the segment, logged just above.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), (base + off) as *mut u8, size) };
        tx.commit()?;
        Ok(())
    });
    drop(seg);
    std::fs::remove_file(dir.join("raw.seg"))?;
    r
}

/// (size, ns with transaction, ns without) for a range of sizes.
fn vista_per_kb(dir: &Path) -> R<Vec<(usize, f64, f64)>> {
    let len = 64 << 20;
    let mut seg = Segment::create_file(
        dir.join("kb.seg"),
        vista_addr(),
        &SegmentConfig::new(len).heap(false).log_capacity(2 << 20),
        Durability::Memory,
    )?;
    let base = seg.base() as usize;
    // SAFETY: pre-touching the whole data area outside any transaction.
    unsafe { std::ptr::write_bytes(base as *mut u8, 1, len) };
    let mut out = Vec::new();
    let mut rng = Rng(5);
    for size in [
        8usize,
        64,
        256,
        1024,
        4096,
        16 << 10,
        64 << 10,
        256 << 10,
        1 << 20,
    ] {
        let mut fill = 0u8;
        let with = measure(|| {
            let off = (rng.below((len - size) as u64) as usize) & !63;
            fill = fill.wrapping_add(1);
            let mut tx = seg.begin()?;
            tx.set_range((base + off) as *const u8, size)?;
            // SAFETY: inside the segment, logged just above.
            unsafe { std::ptr::write_bytes((base + off) as *mut u8, fill, size) };
            tx.commit()?;
            Ok(())
        })?;
        let without = measure(|| {
            let off = (rng.below((len - size) as u64) as usize) & !63;
            fill = fill.wrapping_add(1);
            // SAFETY: inside the segment (no transaction: the baseline).
            unsafe { std::ptr::write_bytes((base + off) as *mut u8, fill, size) };
            Ok(())
        })?;
        out.push((size, with, without));
    }
    drop(seg);
    std::fs::remove_file(dir.join("kb.seg"))?;
    Ok(out)
}

/// ns per transaction that writes 8 bytes into each of `pages` random pages, in `mode`.
fn vista_implicit(dir: &Path, mode: LogMode, pages: usize) -> R<f64> {
    let len = 64 << 20;
    let path = dir.join("imp.seg");
    let _ = std::fs::remove_file(&path);
    let b = Backing::create_file(
        &path,
        Segment::backing_len(&SegmentConfig::new(len).heap(false).log_capacity(8 << 20))?,
        Durability::Memory,
    )?;
    let mut seg = Segment::create(
        b,
        vista_addr(),
        &SegmentConfig::new(len).heap(false).log_capacity(8 << 20),
    )?;
    let base = seg.base() as usize;
    // SAFETY: pre-touching the whole data area outside any transaction.
    unsafe { std::ptr::write_bytes(base as *mut u8, 1, len) };
    seg.set_mode(mode)?;
    let mut rng = Rng(9);
    let n_pages = len / vista::PAGE;
    let r = measure(|| {
        let tx = seg.begin()?;
        for _ in 0..pages {
            let p = rng.below(n_pages as u64) as usize;
            // SAFETY: inside the segment; logged by the fault handler in implicit modes.
            unsafe { ((base + p * vista::PAGE) as *mut u64).write_volatile(p as u64) };
        }
        tx.commit()?;
        Ok(())
    });
    drop(seg);
    std::fs::remove_file(&path)?;
    r
}

// ---------------------------------------------------------------------------------------
// Driver and report

fn fresh_dir(root: &Path, name: &str) -> R<PathBuf> {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

type Workload = fn(&mut dyn Kv) -> R<f64>;

fn fmt_time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn main() -> R<()> {
    // `cargo bench` passes `--bench`; ignore arguments.
    let dirs_env = std::env::var("VISTA_BENCH_DIRS")
        .unwrap_or_else(|_| "/var/tmp/vista-bench:/dev/shm/vista-bench".into());
    let dirs: Vec<PathBuf> = dirs_env.split(':').map(PathBuf::from).collect();
    let labels: Vec<String> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let kind = match i {
                0 => "disk",
                1 => "tmpfs",
                _ => "dir",
            };
            format!("{kind} ({})", d.display())
        })
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d)?;
    }
    let t0 = Instant::now();
    println!("# Vista benchmarks\n");
    println!(
        "Machine: {} cores; scale {}; medians of 7 rounds. Ratio = time per transaction / Vista (file, Memory) on the same directory.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        scale()
    );

    // Vista raw API.
    println!("## Vista raw API: small transaction latency (begin, set_range, store, commit)\n");
    println!("Random location within a 64 KiB window (hot in cache) or within 64 MiB (a cache miss to read the before-image, like the paper's 50 MB database).\n");
    println!("| durability | dir | 8 B, hot | 64 B, hot | 8 B, 64 MiB | 64 B, 64 MiB |\n|---|---|---:|---:|---:|---:|");
    for (d, label) in dirs.iter().zip(&labels) {
        for dur in [Durability::Memory, Durability::Msync, Durability::MsyncWal] {
            let w = fresh_dir(d, "raw")?;
            let mut cells = Vec::new();
            for window in [64 << 10, 64 << 20] {
                for size in [8, 64] {
                    cells.push(fmt_time(vista_raw_small(&w, dur, size, window)?));
                }
            }
            println!("| {dur:?} | {label} | {} |", cells.join(" | "));
            eprintln!("[{:.0}s] raw {dur:?} {label}", t0.elapsed().as_secs_f64());
        }
    }
    println!();

    println!(
        "## Vista cost per size logged (Memory policy, {})\n",
        labels[0]
    );
    println!("| bytes logged | transaction | plain stores | overhead |\n|---:|---:|---:|---:|");
    let kb = vista_per_kb(&fresh_dir(&dirs[0], "kb")?)?;
    for &(size, with, without) in &kb {
        println!(
            "| {size} | {} | {} | {} |",
            fmt_time(with),
            fmt_time(without),
            fmt_time(with - without)
        );
    }
    let pick = |s: usize| {
        kb.iter()
            .find(|x| x.0 == s)
            .map(|x| x.1 - x.2)
            .unwrap_or(0.0)
    };
    let slope = (pick(1 << 20) - pick(1024)) / ((1 << 20) as f64 / 1024.0 - 1.0);
    println!(
        "\nOverhead above 1 KB: **{:.3} µs per KB** (paper: 17.9 µs/KB on a 175 MHz Alpha).\n",
        slope / 1e3
    );
    eprintln!("[{:.0}s] per-KB", t0.elapsed().as_secs_f64());

    println!("## Implicit mode: transaction writing one word in each of N random pages\n");
    println!("| dir | mode | N=1 | N=64 | per page |\n|---|---|---:|---:|---:|");
    for (d, label) in dirs.iter().zip(&labels) {
        for mode in [LogMode::Explicit, LogMode::Implicit, LogMode::ImplicitUffd] {
            let w = fresh_dir(d, "imp")?;
            let one = vista_implicit(&w, mode, 1);
            let many = vista_implicit(&w, mode, 64);
            match (one, many) {
                (Ok(a), Ok(b)) => println!(
                    "| {label} | {mode:?} | {} | {} | {} |",
                    fmt_time(a),
                    fmt_time(b),
                    fmt_time((b - a) / 63.0)
                ),
                (Err(e), _) | (_, Err(e)) => {
                    println!("| {label} | {mode:?} | unavailable: {e} | | |")
                }
            }
        }
    }
    println!("\n(Explicit = the same stores without any logging: the baseline.)\n");
    eprintln!("[{:.0}s] implicit", t0.elapsed().as_secs_f64());

    let workloads: [(&str, &str, Workload); 4] = [
        ("Small update, 8 bytes", "latency", |kv| small(kv, 8)),
        ("Small update, 64 bytes", "latency", |kv| small(kv, 64)),
        ("Debit-credit (TPC-B-like)", "throughput", debit_credit),
        (
            "Order-entry (TPC-C-like: new-order, payment, delivery)",
            "throughput",
            order_entry,
        ),
    ];
    for (title, kind, wl) in workloads {
        println!("## {title}\n");
        let mut header = String::from("| system |");
        let mut sep = String::from("|---|");
        for l in &labels {
            header += &format!(" {l} | ratio |");
            sep += "---:|---:|";
        }
        println!("{header}\n{sep}");
        let mut base: Vec<Option<f64>> = vec![None; dirs.len()];
        for sys in SYSTEMS {
            if !selected(sys) {
                continue;
            }
            let mut row = format!("| {} |", sys.name());
            for (i, d) in dirs.iter().enumerate() {
                let w = fresh_dir(d, "kv")?;
                let res = sys.open(&w, 64 << 20).and_then(|mut kv| wl(kv.as_mut()));
                let _ = std::fs::remove_dir_all(&w);
                match res {
                    Ok(ns) => {
                        if sys == System::VistaMemory {
                            base[i] = Some(ns);
                        }
                        let shown = if kind == "latency" {
                            fmt_time(ns)
                        } else {
                            format!("{:.0} tx/s", 1e9 / ns)
                        };
                        let ratio = base[i]
                            .map(|b| format!("{:.1}x", ns / b))
                            .unwrap_or_default();
                        row += &format!(" {shown} | {ratio} |");
                    }
                    Err(e) => row += &format!(" error: {e} | |"),
                }
                eprintln!(
                    "[{:.0}s] {title}: {} on {}",
                    t0.elapsed().as_secs_f64(),
                    sys.name(),
                    labels[i]
                );
            }
            println!("{row}");
        }
        println!();
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    println!("Total time: {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}
