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

use anyhow::Result;
use common::apps::{program, SC};
use common::screen::{crash_case, Case};

#[test]
fn sc_cpvs_survives_sigkill() -> Result<()> {
    crash_case(&program(&SC)?, &Case::new("sc_cpvs", "cpvs", 71, 4))
}

#[test]
fn sc_cand_survives_sigkill() -> Result<()> {
    crash_case(&program(&SC)?, &Case::new("sc_cand", "cand", 72, 4))
}

#[test]
fn sc_cbndvs_survives_sigkill() -> Result<()> {
    crash_case(&program(&SC)?, &Case::new("sc_cbndvs", "cbndvs", 73, 4))
}

#[test]
fn sc_cand_log_survives_sigkill() -> Result<()> {
    crash_case(&program(&SC)?, &Case::new("sc_cand_log", "cand-log", 74, 4))
}

#[test]
fn sc_cbndvs_log_survives_sigkill() -> Result<()> {
    crash_case(
        &program(&SC)?,
        &Case::new("sc_cbndvs_log", "cbndvs-log", 75, 4),
    )
}
