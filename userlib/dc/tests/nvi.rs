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

use std::path::Path;

use anyhow::{ensure, Result};
use common::pty::{self, Pacing};
use common::screen::{crash_case, Case, Program};
use discount::oracle;

/// The editing session: each entry is typed as one burst. No entry ends in ESC (nvi
/// would wait for the rest of a possible escape sequence, and the next entry might be
/// taken as one).
const SESSION: &[&str] = &[
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

/// The environment of both the failure-free run and the runs under dc: nvi's temporary
/// and recovery files in the case's own directory, no user start-up files.
fn env_for(home: &Path) -> Vec<(String, String)> {
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

fn setup(dir: &Path) -> Result<()> {
    for d in ["rec", "tmp"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    Ok(())
}

const NVI: Program<'static> = Program {
    binary: "nvi",
    args: &["notes.txt"],
    env: &env_for,
    setup: &setup,
    // nvi cleans up its temporary and recovery files, as without crashes.
    dirs: &["rec", "tmp"],
    session: SESSION,
    pacing: Pacing::Bursts,
};

#[test]
fn nvi_cpvs_survives_sigkill() -> Result<()> {
    crash_case(&NVI, &Case::new("nvi_cpvs", "cpvs", 61, 4))
}

#[test]
fn nvi_cand_survives_sigkill() -> Result<()> {
    crash_case(&NVI, &Case::new("nvi_cand", "cand", 62, 4))
}

#[test]
fn nvi_cbndvs_survives_sigkill() -> Result<()> {
    crash_case(&NVI, &Case::new("nvi_cbndvs", "cbndvs", 63, 4))
}

#[test]
fn nvi_cand_log_survives_sigkill() -> Result<()> {
    crash_case(&NVI, &Case::new("nvi_cand_log", "cand-log", 64, 4))
}

#[test]
fn nvi_cbndvs_log_survives_sigkill() -> Result<()> {
    crash_case(&NVI, &Case::new("nvi_cbndvs_log", "cbndvs-log", 65, 4))
}

/// The pacing's count of terminal reads across kills (both drivers use it), on traces
/// written down here. A kill between a checkpoint's commit point and its `C` line leaves
/// `R <seq>` with no `C <seq>`: the reads before the kill were committed and must not be
/// typed again (counting them as lost retyped the session's first inputs into nvi, the
/// fresh-clone CI's nvi_cpvs failure with seed 61).
#[test]
fn the_pacing_keeps_reads_committed_just_before_a_kill() -> Result<()> {
    use oracle::Event::{Commit, Nd, Recover, Start};
    let read = || Nd("read".into());
    // Two reads, commit 1, a read, crash, recovery of 1: the two committed reads remain.
    let t = [Start, read(), read(), Commit(1), read(), Recover(1)];
    ensure!(pty::reads_in_history(&t)? == 2);
    // The third read was committed as checkpoint 2 whose line the kill cut off.
    let t = [Start, read(), Commit(1), read(), read(), Recover(2)];
    ensure!(pty::reads_in_history(&t)? == 3);
    // And a later recovery of that checkpoint finds it where the kill left it.
    let t = [
        Start,
        read(),
        Commit(1),
        read(),
        Recover(2),
        read(),
        Recover(2),
    ];
    ensure!(pty::reads_in_history(&t)? == 2);
    // A fresh start forgets everything; a checkpoint never committed is an error.
    ensure!(pty::reads_in_history(&[read(), Commit(1), Start, read()])? == 1);
    ensure!(pty::reads_in_history(&[Start, Commit(1), Recover(3)]).is_err());
    ensure!(pty::reads_in_history(&[Start, Commit(1), Commit(2), Recover(1)]).is_err());
    Ok(())
}
