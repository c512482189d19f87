//! nvi, the thesis's own benchmark (Lowell's thesis, 6.2: "nvi", a full-screen editor),
//! Debian's unmodified binary under `dc run`, driven through a real pseudo-terminal.
//!
//! A scripted editing session (insert text, move, change, delete, put, search,
//! substitute, undo, join, write, quit) is typed into nvi like a user who types the next
//! command when it waits for one; nvi is SIGKILLed at seeded random points and the same
//! `dc run` command is started again on a fresh terminal after each kill, while one
//! emulated screen (`vt100`) persists across the runs like the user's terminal window.
//! nvi puts the terminal in raw mode (`tcsetattr`): a resumed run gets its mode back on
//! the new terminal from Discount Checking's termios record (thesis 6.1: the full-screen
//! program comes back in the mode it was in), or it could not read its keystrokes one by
//! one, and nvi's own files (its temporary and recovery files, kept by `flock` locks
//! it takes, and the file it writes) are rolled back with it.
//!
//! The oracle ([`common::screen`], which sc's test shares), against the same session in
//! plain nvi (no dc): the file nvi wrote equals
//! the failure-free run's byte for byte; the emulated screen before the final `:wq` (after
//! a redraw, `^L`: a repeated write, which Definition 2 allows, is not idempotent on a
//! terminal) and after nvi's exit equal the failure-free run's; `discount::oracle::check_resumed` on
//! the traces (every run after a kill resumed the last checkpoint, none started over,
//! the output of all runs is the failure-free output with repetition only, for CPVS at
//! most the last write); as many recoveries as kills; no commit-invariant violation.

mod common;

use anyhow::Result;
use common::apps::{program, NVI};
use common::screen::{crash_case, Case};

#[test]
fn nvi_cpvs_survives_sigkill() -> Result<()> {
    crash_case(&program(&NVI)?, &Case::new("nvi_cpvs", "cpvs", 61, 4))
}

#[test]
fn nvi_cand_survives_sigkill() -> Result<()> {
    crash_case(&program(&NVI)?, &Case::new("nvi_cand", "cand", 62, 4))
}

#[test]
fn nvi_cbndvs_survives_sigkill() -> Result<()> {
    crash_case(&program(&NVI)?, &Case::new("nvi_cbndvs", "cbndvs", 63, 4))
}

#[test]
fn nvi_cand_log_survives_sigkill() -> Result<()> {
    crash_case(
        &program(&NVI)?,
        &Case::new("nvi_cand_log", "cand-log", 64, 4),
    )
}

#[test]
fn nvi_cbndvs_log_survives_sigkill() -> Result<()> {
    crash_case(
        &program(&NVI)?,
        &Case::new("nvi_cbndvs_log", "cbndvs-log", 65, 4),
    )
}
