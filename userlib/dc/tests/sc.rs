//! sc, the Spreadsheet Calculator (Debian's unmodified binary, curses, vi-like keys),
//! under `dc run` on a real pseudo-terminal: the thesis's oleo (Lowell's thesis, 6.2: a
//! spreadsheet) as today's Debian has it, a full-screen program that edits its own data
//! file. It reads its keys one byte per `read` (ncurses' `getch`) and polls the terminal
//! between them, keeps a command history in `$HOME/.sc_history` and, when it saves, first
//! renames the old file to `ledger.sc~`.
//!
//! A scripted session on a small ledger (numbers, labels, formulas with `@sum` and
//! `@max`, a row inserted so that every formula below it is rewritten, a cell cleared,
//! two saves with edits between and after them) is typed like a user who types the next
//! command when sc waits for one; sc is SIGKILLed at seeded random points, often in the
//! middle of a command (the new run gets the rest of it, as a user who sees where sc
//! stands would type it), and the same `dc run` command is started again on a fresh
//! terminal. The oracle is [`common::screen`]'s: the files sc left (the ledger, its
//! backup, the history) and the screens equal a failure-free run's, every run after a kill
//! resumed, the output is the failure-free output with repetition only, and the trace
//! keeps the commit invariant.

mod common;

use std::path::Path;

use anyhow::Result;
use common::pty::Pacing;
use common::screen::{crash_case, Case, Program};

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

/// The session: `g` goes to a cell, `=` enters a number or formula, `<` and `>` a left
/// or right aligned label, `x` clears the cell, `ir` inserts a row, `P` saves to the
/// file sc was started on, `^L` redraws and `q` quits. No entry holds ESC (sc would wait
/// for the rest of a possible escape sequence).
const SESSION: &[&str] = &[
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
    // Redraw, as a user would after a crash (see `common::screen`).
    "\x0c",
    "q",
];

fn env_for(home: &Path) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), home.display().to_string()),
        ("TERM".into(), "xterm".into()),
        ("LC_ALL".into(), "C".into()),
    ]
}

fn setup(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("ledger.sc"), LEDGER)?;
    Ok(())
}

const SC: Program<'static> = Program {
    binary: "sc",
    args: &["ledger.sc"],
    env: &env_for,
    setup: &setup,
    dirs: &[],
    session: SESSION,
    pacing: Pacing::Bytes,
};

#[test]
fn sc_cpvs_survives_sigkill() -> Result<()> {
    crash_case(&SC, &Case::new("sc_cpvs", "cpvs", 71, 4))
}

#[test]
fn sc_cand_survives_sigkill() -> Result<()> {
    crash_case(&SC, &Case::new("sc_cand", "cand", 72, 4))
}

#[test]
fn sc_cbndvs_survives_sigkill() -> Result<()> {
    crash_case(&SC, &Case::new("sc_cbndvs", "cbndvs", 73, 4))
}

#[test]
fn sc_cand_log_survives_sigkill() -> Result<()> {
    crash_case(&SC, &Case::new("sc_cand_log", "cand-log", 74, 4))
}

#[test]
fn sc_cbndvs_log_survives_sigkill() -> Result<()> {
    crash_case(&SC, &Case::new("sc_cbndvs_log", "cbndvs-log", 75, 4))
}
