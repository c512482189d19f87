//! The two applications of the thesis's Figures 6.6 and 6.7 under Discount Checking, as
//! computations of several processes on this machine (issue 16): `apps/heat.c` (a
//! message-passing stencil over UDP with its own retransmission, few visible events: the
//! role of TreadMarks Barnes-Hut) and `apps/chat.c` (a chat server and three clients over
//! UDP, a visible event per line: xpilot's role). Ordinary socket programs, nothing
//! Discount-Checking-specific but the launch. Each runs under the seven protocols (the
//! five single-process ones on each member, sends visible; CPV-2PC and CBNDV-2PC with
//! `dc coord`), with seeded SIGKILLs of random members.
//!
//! The oracles share no code with what they judge:
//! * heat: every worker's output equals the failure-free run's (run here without Discount
//!   Checking) with repetitions only, so the final checksums are the failure-free ones;
//! * chat: the server's order is consistent (a line number never gets two texts across
//!   rollbacks), every client shows exactly that conversation with repetitions only, and
//!   every input line of every client is in it exactly once;
//! * both: Save-work on the members' merged traces (Lamport causality; a distributed
//!   checkpoint's commits as one), and no run started over.
//!
//! Negative control: heat with each worker on its own and its sends not visible
//! (`DC_TEST_UNCOORDINATED=1` under CPVS: worker 0 commits before its output, the others
//! never, no coordinator): a computation without coordination, which the oracle must
//! reject (Save-work on the merged trace: worker 0's output depends on the other workers'
//! uncommitted receives).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::dist::{self, Plan, PROTOCOLS};

fn heat(protocol: &str, test: u16, uncoordinated: bool) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = dist::build_app("heat", t.path())?;
    let steps = 10000;
    let base = dist::port_base(test);
    let reference = dist::run(&Plan::new(None, dist::heat_members(&bin, base, steps)))?;
    let o = dist::run(&Plan {
        // No kill in the negative control: without coordination the failure-free run
        // already breaks the commit invariant, and the oracle must say so.
        kills: if uncoordinated { 0 } else { 3 },
        seed: 100 + test as u64,
        first_ms: 100,
        spread_ms: 300,
        deadline: Duration::from_secs(120),
        env: if uncoordinated {
            vec![("DC_TEST_UNCOORDINATED".into(), "1".into())]
        } else {
            Vec::new()
        },
        ..Plan::new(Some(protocol), dist::heat_members(&bin, base, steps))
    })?;
    for i in 0..dist::HEAT_WORKERS {
        let want: Vec<&str> = reference.outs[i].lines().collect();
        dist::repetitions_only(&format!("worker {i}"), &o.outs[i], &want)?;
    }
    dist::resumed(&o)?;
    dist::save_work(&o)?;
    eprintln!(
        "heat {protocol}: kills {:?}; {}",
        o.killed,
        o.coord_last.unwrap_or_default()
    );
    Ok(())
}

fn chat(protocol: &str, test: u16) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = dist::build_app("chat", t.path())?;
    let port = dist::port_base(test);
    let (members, _inputs) = dist::chat_members(&bin, port, t.path())?;
    let o = dist::run(&Plan {
        kills: 3,
        seed: 200 + test as u64,
        first_ms: 40,
        spread_ms: 120,
        deadline: Duration::from_secs(120),
        ..Plan::new(Some(protocol), members)
    })?;
    // chat's own invariants (consistent order, every line exactly once, every client
    // shows that conversation): the one definition the guest tests use too.
    dc_drive::dist::chat_consistent(&o.outs[0], &o.outs[1..])?;
    dist::resumed(&o)?;
    dist::save_work(&o)?;
    eprintln!(
        "chat {protocol}: kills {:?}; {}",
        o.killed,
        o.coord_last.unwrap_or_default()
    );
    Ok(())
}

macro_rules! cases {
    ($($name:ident: $app:ident($proto:expr, $test:expr);)*) => {
        $(
            #[test]
            fn $name() {
                if !common::sud_or_skip(stringify!($name)) {
                    return;
                }
                if let Err(e) = $app($proto, $test) {
                    panic!("{e:#}");
                }
            }
        )*
    };
}

fn heat_ok(p: &str, t: u16) -> Result<()> {
    heat(p, t, false)
}

cases! {
    heat_cpvs: heat_ok(PROTOCOLS[0], 0);
    heat_cand: heat_ok(PROTOCOLS[1], 1);
    heat_cbndvs: heat_ok(PROTOCOLS[2], 2);
    heat_cand_log: heat_ok(PROTOCOLS[3], 3);
    heat_cbndvs_log: heat_ok(PROTOCOLS[4], 4);
    heat_cpv_2pc: heat_ok(PROTOCOLS[5], 5);
    heat_cbndv_2pc: heat_ok(PROTOCOLS[6], 6);
    chat_cpvs: chat(PROTOCOLS[0], 7);
    chat_cand: chat(PROTOCOLS[1], 8);
    chat_cbndvs: chat(PROTOCOLS[2], 9);
    chat_cand_log: chat(PROTOCOLS[3], 10);
    chat_cbndvs_log: chat(PROTOCOLS[4], 11);
    chat_cpv_2pc: chat(PROTOCOLS[5], 12);
    chat_cbndv_2pc: chat(PROTOCOLS[6], 13);
}

#[test]
fn heat_without_coordination_is_caught_by_the_oracle() {
    if !common::sud_or_skip("heat_without_coordination_is_caught_by_the_oracle") {
        return;
    }
    match heat("cpvs", 14, true) {
        Ok(()) => panic!("a computation without coordination passed the oracle"),
        Err(e) => {
            let m = format!("{e:#}");
            eprintln!("as expected: {}", &m[..m.len().min(400)]);
            assert!(
                m.contains("Save-work"),
                "rejected, but not by Save-work: {m}"
            );
        }
    }
}
