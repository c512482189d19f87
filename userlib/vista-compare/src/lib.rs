//! Benchmark workloads, shared by `benches/compare.rs` (Vista on files against SQLite, redb
//! and LMDB) and the guest program `vista-rio` (Vista on Rio against the same stores). Not
//! part of Vista: this crate uses only Vista's public API.
//!
//! Every workload runs through one small key-value interface ([`Kv`], [`KvTx`]): fixed-size
//! records in numbered tables, keys dense from 0, so each system does the same logical
//! work: a read of a record is a `get`, an update is a `put` of the whole record. Vista
//! implements it as one persistent array per table ([`VistaKv`]): `get` copies the record
//! out, `put` is `set_range` + copy. [`raw_small`] uses Vista's own API directly (begin,
//! `set_range`, store, commit). Each measurement is the median of 7 timed rounds after a
//! warm-up ([`measure`]).

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use redb::ReadableTable;

use vista::{Durability, PSlice, Segment, SegmentConfig};

/// What can go wrong in a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Vista failed.
    #[error("vista: {0}")]
    Vista(#[from] vista::Error),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// redb failed (boxed: redb's error is large).
    #[error("redb: {0}")]
    Redb(Box<redb::Error>),
    /// LMDB failed.
    #[error("lmdb: {0}")]
    Lmdb(#[from] heed::Error),
    /// A file operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The workload found the store in a state it did not put it in.
    #[error("workload: {0}")]
    Workload(String),
}

macro_rules! redb_errors {
    ($($t:ty),*) => {
        $(impl From<$t> for BenchError {
            fn from(e: $t) -> BenchError {
                BenchError::Redb(Box::new(e.into()))
            }
        })*
    };
}
redb_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Result alias.
pub type Result<T> = std::result::Result<T, BenchError>;

// ---------------------------------------------------------------------------------------
// Timing

/// The benchmarks' generator (shared with every seeded test and workload).
pub use rio_prng::Rng;

/// Median time per operation in nanoseconds: `op` runs in calibrated batches for a
/// warm-up `round`, then for 7 timed rounds of `round` each.
pub fn measure(round: Duration, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
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

/// A duration in ns, µs or ms.
pub fn fmt_time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

// ---------------------------------------------------------------------------------------
// The key-value interface

/// Inside one transaction of a [`Kv`].
pub trait KvTx {
    /// Copies the first `out.len()` bytes of record `k` of table `t` into `out`; whether
    /// the record exists.
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> Result<bool>;
    /// Stores `v` as (the first bytes of) record `k` of table `t`.
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> Result<()>;
}

/// A transactional store of fixed-size records in numbered tables.
pub trait Kv {
    /// Creates tables: (records, record size).
    fn create(&mut self, tables: &[(u64, usize)]) -> Result<()>;
    /// Runs `f` in one transaction and commits it (aborts if `f` fails).
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> Result<()>) -> Result<()>;
    /// Called once the initial data is loaded.
    fn finish_load(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Creates `tables` and fills every record with `init(table, key, bytes)`, 20,000 records
/// per transaction.
pub fn load(
    kv: &mut dyn Kv,
    tables: &[(u64, usize)],
    init: &dyn Fn(usize, u64, &mut [u8]),
) -> Result<()> {
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

/// [`Kv`] over a Vista segment with a heap: one persistent array per table.
pub struct VistaKv {
    seg: Option<Segment>,
    tables: Vec<(usize, usize, u64)>, // base, record size, records
    /// For a file segment loaded with `Memory`: reopen it with this policy after loading.
    reopen: Option<(PathBuf, usize, Durability)>,
}

struct VistaTx<'a, 'b> {
    tx: &'a mut vista::Tx<'b>,
    tables: &'a [(usize, usize, u64)],
}

impl KvTx for VistaTx<'_, '_> {
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> Result<bool> {
        let (base, size, n) = self.tables[t];
        if k >= n || out.len() > size {
            return Ok(false);
        }
        let s = PSlice::<u8>::from_raw(base + k as usize * size, out.len());
        out.copy_from_slice(self.tx.get_slice(s)?);
        Ok(true)
    }
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> Result<()> {
        let (base, size, n) = self.tables[t];
        if k >= n || v.len() > size {
            return Err(BenchError::Workload(
                "vista kv: key or value out of range".into(),
            ));
        }
        let s = PSlice::<u8>::from_raw(base + k as usize * size, v.len());
        self.tx
            .update_slice(s, 0..v.len(), |x| x.copy_from_slice(v))?;
        Ok(())
    }
}

static NEXT_ADDR: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0x3b00_0000_0000);

/// A fresh address for a benchmark segment (64 GiB apart).
pub fn vista_addr() -> usize {
    NEXT_ADDR.fetch_add(1 << 36, std::sync::atomic::Ordering::Relaxed)
}

impl VistaKv {
    /// A new segment in `dir/vista.seg` with room for `data_len` bytes of tables. The
    /// initial load runs with the Memory policy; `finish_load` reopens the segment with
    /// `dur` (loading 100k records with one msync each would take minutes and measure
    /// nothing of interest).
    pub fn file(dir: &Path, dur: Durability, data_len: usize) -> Result<VistaKv> {
        let cfg = SegmentConfig::new(data_len).log_capacity(8 << 20);
        let path = dir.join("vista.seg");
        let addr = vista_addr();
        let seg = Segment::create_file(&path, addr, &cfg, Durability::Memory)?;
        Ok(VistaKv {
            seg: Some(seg),
            tables: Vec::new(),
            reopen: (dur != Durability::Memory).then_some((path, addr, dur)),
        })
    }

    /// Over an empty segment (with a heap and a log of at least the 20,000 records of one
    /// load transaction, e.g. 8 MiB) created by the caller, e.g. in a Rio object.
    pub fn from_segment(seg: Segment) -> VistaKv {
        VistaKv {
            seg: Some(seg),
            tables: Vec::new(),
            reopen: None,
        }
    }

    /// Gives the segment back (to delete its backing, for example).
    pub fn into_segment(self) -> Option<Segment> {
        self.seg
    }

    fn seg(&mut self) -> Result<&mut Segment> {
        self.seg
            .as_mut()
            .ok_or_else(|| BenchError::Workload("segment not open".into()))
    }
}

impl Kv for VistaKv {
    fn create(&mut self, tables: &[(u64, usize)]) -> Result<()> {
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
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> Result<()>) -> Result<()> {
        let seg = self
            .seg
            .as_mut()
            .ok_or_else(|| BenchError::Workload("segment not open".into()))?;
        let mut tx = seg.begin()?;
        f(&mut VistaTx {
            tx: &mut tx,
            tables: &self.tables,
        })?;
        tx.commit()?;
        Ok(())
    }
    fn finish_load(&mut self) -> Result<()> {
        if let Some((path, addr, dur)) = &self.reopen {
            self.seg = None;
            self.seg = Some(Segment::open_file(path, *addr, *dur)?);
        }
        Ok(())
    }
}

// SQLite ---------------------------------------------------------------------------------

/// [`Kv`] over SQLite: one table per table, WAL journal.
pub struct SqliteKv {
    conn: rusqlite::Connection,
}

impl SqliteKv {
    /// `dir/sqlite.db` in WAL mode with `PRAGMA synchronous=sync` (FULL, NORMAL, OFF).
    pub fn new(dir: &Path, sync: &str) -> Result<SqliteKv> {
        let conn = rusqlite::Connection::open(dir.join("sqlite.db"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if mode != "wal" {
            return Err(BenchError::Workload(format!("journal_mode is {mode}")));
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
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> Result<bool> {
        let mut st = self.conn.prepare_cached(SQL_GET[t])?;
        let mut rows = st.query([k as i64])?;
        match rows.next()? {
            Some(row) => {
                let b = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
                let n = out.len().min(b.len());
                out[..n].copy_from_slice(&b[..n]);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> Result<()> {
        let mut st = self.conn.prepare_cached(SQL_PUT[t])?;
        st.execute(rusqlite::params![k as i64, v])?;
        Ok(())
    }
}

impl Kv for SqliteKv {
    fn create(&mut self, tables: &[(u64, usize)]) -> Result<()> {
        for i in 0..tables.len() {
            self.conn
                .execute_batch(&format!("CREATE TABLE t{i}(k INTEGER PRIMARY KEY, v BLOB)"))?;
        }
        Ok(())
    }
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> Result<()>) -> Result<()> {
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

/// [`Kv`] over redb (default `Durability::Immediate`).
pub struct RedbKv {
    db: redb::Database,
}

impl RedbKv {
    /// A new database `dir/redb.db`.
    pub fn new(dir: &Path) -> Result<RedbKv> {
        Ok(RedbKv {
            db: redb::Database::create(dir.join("redb.db"))?,
        })
    }
}

struct RedbTx<'a> {
    tables: Vec<Option<redb::Table<'a, u64, &'static [u8]>>>,
    wtx: &'a redb::WriteTransaction,
}

impl<'a> RedbTx<'a> {
    fn table(&mut self, t: usize) -> Result<&mut redb::Table<'a, u64, &'static [u8]>> {
        if self.tables[t].is_none() {
            self.tables[t] = Some(self.wtx.open_table(REDB_TABLES[t])?);
        }
        self.tables[t]
            .as_mut()
            .ok_or_else(|| BenchError::Workload("table".into()))
    }
}

impl KvTx for RedbTx<'_> {
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> Result<bool> {
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
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> Result<()> {
        self.table(t)?.insert(k, v)?;
        Ok(())
    }
}

impl Kv for RedbKv {
    fn create(&mut self, _tables: &[(u64, usize)]) -> Result<()> {
        Ok(())
    }
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> Result<()>) -> Result<()> {
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

/// [`Kv`] over LMDB through heed (default, synchronous commits).
pub struct HeedKv {
    env: heed::Env,
    dbs: Vec<HeedDb>,
}

impl HeedKv {
    /// A new environment in `dir/lmdb` (2 GiB map).
    pub fn new(dir: &Path) -> Result<HeedKv> {
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
    fn get(&mut self, t: usize, k: u64, out: &mut [u8]) -> Result<bool> {
        match self.dbs[t].get(self.txn, &k)? {
            Some(b) => {
                let n = out.len().min(b.len());
                out[..n].copy_from_slice(&b[..n]);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn put(&mut self, t: usize, k: u64, v: &[u8]) -> Result<()> {
        self.dbs[t].put(self.txn, &k, v)?;
        Ok(())
    }
}

impl Kv for HeedKv {
    fn create(&mut self, tables: &[(u64, usize)]) -> Result<()> {
        let mut w = self.env.write_txn()?;
        for i in 0..tables.len() {
            let db: HeedDb = self.env.create_database(&mut w, Some(&format!("t{i}")))?;
            self.dbs.push(db);
        }
        w.commit()?;
        Ok(())
    }
    fn tx(&mut self, f: &mut dyn FnMut(&mut dyn KvTx) -> Result<()>) -> Result<()> {
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
// Workloads

/// Records of the small-update workload.
pub const SMALL_RECORDS: u64 = 100_000;

/// Small update: loads 100,000 records of 64 bytes, then measures transactions that each
/// put `size` bytes at a random record. Returns ns per transaction.
pub fn small(kv: &mut dyn Kv, size: usize, round: Duration) -> Result<f64> {
    load(kv, &[(SMALL_RECORDS, 64)], &|_, k, b| {
        b[..8].copy_from_slice(&k.to_le_bytes())
    })?;
    let mut rng = Rng::new(7);
    let v = vec![0xabu8; size];
    measure(round, || {
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

fn get_pod<T: Pod>(tx: &mut dyn KvTx, t: usize, k: u64) -> Result<T> {
    let mut v = T::zeroed();
    if !tx.get(t, k, bytemuck::bytes_of_mut(&mut v))? {
        return Err(BenchError::Workload(format!("missing record {t}/{k}")));
    }
    Ok(v)
}

fn put_pod<T: Pod>(tx: &mut dyn KvTx, t: usize, k: u64, v: &T) -> Result<()> {
    tx.put(t, k, bytemuck::bytes_of(v))
}

/// Debit-credit (TPC-B-like): update account, teller, branch balances; append history to a
/// 2 MB circular buffer. Returns ns per transaction.
pub fn debit_credit(kv: &mut dyn Kv, round: Duration) -> Result<f64> {
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
    let mut rng = Rng::new(11);
    let mut ts = 0u64;
    measure(round, || {
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
pub fn order_entry(kv: &mut dyn Kv, round: Duration) -> Result<f64> {
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
    let mut rng = Rng::new(13);
    let mut now = 0u64;
    measure(round, || {
        now += 1;
        let kind = rng.below(93);
        let d = rng.below(OE_DISTRICTS);
        let c = d * OE_CUSTOMERS + rng.below(OE_CUSTOMERS);
        let seed = rng.next_u64();
        kv.tx(&mut |tx| {
            let mut r = Rng::new(seed | 1);
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
// Vista's raw API

/// Raw small transaction on `seg` (a segment without a heap, whose first `window` bytes
/// are scratch space): begin, `set_range` of `size` bytes (at most 64) at a random 8-byte
/// aligned offset below `window`, store, commit. `window` = 64 KiB keeps the data hot in
/// cache; 64 MiB misses the cache per transaction, like the paper's 50 MB database. The
/// window is written once beforehand (outside any transaction) so that no page fault is
/// measured. Returns ns per transaction.
pub fn raw_small(seg: &mut Segment, size: usize, window: usize, round: Duration) -> Result<f64> {
    if size > 64 || window < 128 || window > seg.len() || seg.info().heap.is_some() {
        return Err(BenchError::Workload(format!(
            "raw_small: size {size} window {window} on a segment of {} bytes (heap: {})",
            seg.len(),
            seg.info().heap.is_some()
        )));
    }
    let base = seg.base() as usize;
    // SAFETY: the window lies inside the segment's data mapping (checked above), which has
    // no heap, so these bytes hold nothing but scratch; no transaction is active.
    unsafe { std::ptr::write_bytes(base as *mut u8, 1, window) };
    let mut rng = Rng::new(3);
    let data = [0x5au8; 64];
    measure(round, || {
        let off = (rng.below((window - 64) as u64) as usize) & !7;
        let mut tx = seg.begin()?;
        tx.set_range((base + off) as *const u8, size)?;
        // SAFETY: inside the segment (off + size <= window <= len), logged just above.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), (base + off) as *mut u8, size) };
        tx.commit()?;
        Ok(())
    })
}
