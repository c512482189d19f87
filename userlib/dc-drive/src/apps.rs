//! The real programs the Discount Checking crash tests drive (host: `dc/tests/bc.rs`,
//! `ed.rs`, `nvi.rs`, `sc.rs`; guest: `tests/tests/discount_apps.rs`) and the protocol
//! study measures (`dc/benches/apps.rs`), each defined once: the binary and its
//! arguments, the data files it starts on, its environment, the session typed into it
//! and how the harness drives it.

use std::path::{Path, PathBuf};

use crate::Pacing;

/// The `DC_*` settings the crash tests give `dc run` (heap and undo log sizes); the
/// benchmark uses the same.
pub const DC_ENV: &[(&str, &str)] = &[("DC_HEAP_MB", "64"), ("DC_LOG_MB", "16")];

/// How the harness talks to a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// On pipes, answering the prompt `<name>[N]> ` the program prints (the host tests'
    /// `drive`).
    Prompts(&'static str),
    /// On pipes, for a program that reads its input a byte at a time (the host tests'
    /// `drive_bytes`).
    Bytes,
    /// On a pseudo-terminal ([`crate::run_once`]).
    Screen(Pacing),
}

/// A program and the session typed into it.
pub struct App {
    /// Short name (the benchmark's, and the tests' prefix).
    pub name: &'static str,
    /// The executable, looked up in PATH.
    pub binary: &'static str,
    /// Its arguments.
    pub args: &'static [&'static str],
    /// The session, as written down.
    pub session: &'static [&'static str],
    /// What the driver sends, made from the session (see [`App::inputs`]).
    pub make_inputs: fn(&[&str]) -> Vec<String>,
    /// The environment of both the reference and the runs under dc, given the working
    /// directory (for the full-screen programs also HOME).
    pub env: fn(&Path) -> Vec<(String, String)>,
    /// Prepares a fresh working directory (the program's data files, its directories).
    pub setup: fn(&Path) -> std::io::Result<()>,
    /// Subdirectories of the working directory whose files are compared too.
    pub dirs: &'static [&'static str],
    pub driver: Driver,
}

impl App {
    /// The inputs the driver sends, one entry per write (or per prompt).
    pub fn inputs(&self) -> Vec<String> {
        (self.make_inputs)(self.session)
    }

    /// The executable as PATH finds it, if it is installed.
    pub fn path(&self) -> Option<PathBuf> {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(self.binary))
            .find(|p| p.is_file())
    }
}

/// The four programs, in the benchmark's order.
pub static ALL: [&App; 4] = [&BC, &ED, &NVI, &SC];

// ---------------------------------------------------------------------------------------
// bc

/// bc's session: bc statements (functions, arrays, loops, big numbers, `scale`, `obase`).
const BC_SESSION: &[&str] = &[
    "define f(n) { if (n<2) return (1); return (n*f(n-1)); }",
    "f(20)",
    "x=2^200",
    "x%1000007",
    "a[0]=1; a[1]=1",
    "for(i=2;i<60;i++) a[i]=a[i-1]+a[i-2]",
    "a[59]",
    "scale=30",
    "sqrt(2)",
    "scale=0",
    "s=0; for(i=1;i<=2000;i++) s+=i^3",
    "s",
    "define g(n) { auto i,t; t=0; for(i=0;i<n;i++) t=t+i*i; return (t); }",
    "g(3000)",
    "obase=16",
    "255*255",
    "x",
    "obase=10",
    "y=f(30)/f(28)",
    "y",
    "z=0; while (z < 1000) z = z*2+1",
    "z",
    "f(25) % 1000000007",
    "g(100)+g(200)",
];

/// bc's input N: statement N, then the prompt for input N+1 (bc prints its own prompts,
/// `bc[N]> `, with `print`; `prompt.bc` prints the first).
fn bc_inputs(session: &[&str]) -> Vec<String> {
    session
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s}; print \"bc[{}]> \"", i + 1))
        .collect()
}

fn no_env(_: &Path) -> Vec<(String, String)> {
    Vec::new()
}

fn bc_setup(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("prompt.bc"), "print \"bc[0]> \"\n")?;
    Ok(())
}

/// Debian's `bc -q prompt.bc`, on pipes.
pub static BC: App = App {
    name: "bc",
    binary: "bc",
    args: &["-q", "prompt.bc"],
    session: BC_SESSION,
    make_inputs: bc_inputs,
    env: no_env,
    setup: bc_setup,
    dirs: &[],
    driver: Driver::Prompts("bc"),
};

// ---------------------------------------------------------------------------------------
// ed

/// The data file ed edits, as it is before the session.
const NOTES: &str = "\
Discount Checking: transparent checkpoints for whole programs.
The quick brown fox jumps over the lazy dog.
Rio keeps the file cache alive across crashes.
Vista commits a transaction with one store.
The thesis measured nvi, oleo, magic and xpilot.
";

/// ed's session: each entry is one command (with its text, for `a`, `i`, `c`), sent as
/// one write.
const ED_SESSION: &[&str] = &[
    "H",
    ",n",
    "$a\nCPVS commits before every visible event.\nCAND commits after every non-deterministic event.\n.",
    "1,3s/e/E/gp",
    "2d",
    "$m0",
    "/Rio/p",
    "s/Rio/RIO/p",
    "3,4t$",
    "g/the/s//THE/",
    ",p",
    "w",
    "2i\nAn inserted line, second of the file.\n.",
    "$c\nThe last line, changed.\n.",
    "1,2j",
    "u",
    "=",
    "/Vista/ka",
    "'a,$n",
    "v/o/d",
    ",n",
    "w notes.bak",
    "r notes.bak",
    "1,4s/^/> /",
    "$-2,$d",
    "w",
    ",n",
    "q",
];

fn ed_inputs(session: &[&str]) -> Vec<String> {
    session.iter().map(|s| format!("{s}\n")).collect()
}

fn ed_env(_: &Path) -> Vec<(String, String)> {
    vec![("LC_ALL".into(), "C".into())]
}

fn ed_setup(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("notes.txt"), NOTES)?;
    Ok(())
}

/// GNU ed, `ed -p 'ed> ' notes.txt`, on pipes (it reads its commands a byte at a time).
pub static ED: App = App {
    name: "ed",
    binary: "ed",
    args: &["-p", "ed> ", "notes.txt"],
    session: ED_SESSION,
    make_inputs: ed_inputs,
    env: ed_env,
    setup: ed_setup,
    dirs: &[],
    driver: Driver::Bytes,
};

// ---------------------------------------------------------------------------------------
// nvi

/// nvi's editing session: each entry is typed as one burst. No entry ends in ESC (nvi
/// would wait for the rest of a possible escape sequence, and the next entry might be
/// taken as one).
const NVI_SESSION: &[&str] = &[
    "iThe quick brown fox jumps over the lazy dog.\x1b0",
    "oDiscount Checking makes failures transparent.\x1b0",
    "oRio keeps the file cache alive across crashes.\x1b0",
    "oVista commits a transaction with one store.\x1b0",
    "oThe thesis measured nvi, oleo, magic and xpilot.\x1b0",
    "1G",
    "/fox\r",
    "cwcat\x1b0",
    "j",
    "dd",
    "P",
    "G",
    "oThe end of the first part.\x1b0",
    ":%s/The/THE/g\r",
    "u",
    ":2,3s/e/E/\r",
    "yyp",
    "x",
    "3Gdw",
    ":w\r",
    "Aappended text\x1b0",
    "/Rio\r",
    "J",
    "G",
    "O-- a line above the last --\x1b0",
    // Redraw (^L), as a user would after a crash: output since the last commit may be
    // repeated (Definition 2), and on a terminal a repeated write is not idempotent (the
    // echo of typed text lands where the cursor is now). The redraw paints nvi's own
    // model of the screen, so the screen compared below is what nvi believes it shows.
    "\x0c",
    ":wq\r",
];

/// The session as typed (each entry one write).
fn as_typed(session: &[&str]) -> Vec<String> {
    session.iter().map(|s| s.to_string()).collect()
}

/// The environment of both the failure-free run and the runs under dc: nvi's temporary
/// and recovery files in the case's own directory, no user start-up files.
fn nvi_env(home: &Path) -> Vec<(String, String)> {
    let d = home.display();
    vec![
        ("HOME".into(), d.to_string()),
        ("TERM".into(), "xterm".into()),
        ("LC_ALL".into(), "C".into()),
        (
            "EXINIT".into(),
            format!("set recdir={d}/rec directory={d}/tmp"),
        ),
    ]
}

fn nvi_setup(dir: &Path) -> std::io::Result<()> {
    for d in ["rec", "tmp"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    Ok(())
}

/// nvi, `nvi notes.txt`, on a pseudo-terminal (it reads a burst of typing per read).
pub static NVI: App = App {
    name: "nvi",
    binary: "nvi",
    args: &["notes.txt"],
    session: NVI_SESSION,
    make_inputs: as_typed,
    env: nvi_env,
    setup: nvi_setup,
    // nvi cleans up its temporary and recovery files, as without crashes.
    dirs: &["rec", "tmp"],
    driver: Driver::Screen(Pacing::Bursts),
};

// ---------------------------------------------------------------------------------------
// sc

/// The ledger sc starts on (sc's own file format).
const LEDGER: &str = "\
# A household ledger
let A0 = 1200
let A1 = 300
let A2 = 150
leftstring B0 = \"rent\"
leftstring B1 = \"food\"
leftstring B2 = \"power\"
";

/// sc's session: `g` goes to a cell, `=` enters a number or formula, `<` and `>` a left
/// or right aligned label, `x` clears the cell, `ir` inserts a row, `P` saves to the
/// file sc was started on, `^L` redraws and `q` quits. No entry holds ESC (sc would wait
/// for the rest of a possible escape sequence).
const SC_SESSION: &[&str] = &[
    "gA3\r",
    "=@sum(A0:A2)\r",
    "gB3\r",
    "<total\r",
    "gC0\r",
    "=A0/A3*100\r",
    "j",
    "=A1/A3*100\r",
    "j",
    "=A2/A3*100\r",
    "gA4\r",
    "=A3*12\r",
    "gB4\r",
    ">per year\r",
    "gA1\r",
    "=320\r",
    "gD0\r",
    "<checked\r",
    "x",
    "gA5\r",
    "=@max(A0:A2)\r",
    "gA2\r",
    "ir",
    "=45\r",
    "gB2\r",
    "<water\r",
    "P\r",
    "gA0\r",
    "=1250\r",
    "gB7\r",
    "<after the save\r",
    "P\r",
    // Redraw, as a user would after a crash (see the host tests' `common/screen.rs`).
    "\x0c",
    "q",
];

fn sc_env(home: &Path) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), home.display().to_string()),
        ("TERM".into(), "xterm".into()),
        ("LC_ALL".into(), "C".into()),
    ]
}

fn sc_setup(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("ledger.sc"), LEDGER)?;
    Ok(())
}

/// sc, `sc ledger.sc`, on a pseudo-terminal (it reads a key per read).
pub static SC: App = App {
    name: "sc",
    binary: "sc",
    args: &["ledger.sc"],
    session: SC_SESSION,
    make_inputs: as_typed,
    env: sc_env,
    setup: sc_setup,
    dirs: &[],
    driver: Driver::Screen(Pacing::Bytes),
};
