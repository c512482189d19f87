//! Unit tests of the model, the generator, the checker and verify.

use crate::fsmodel::page_end;
use crate::gen::generate;
use crate::host::{find_splat, parse_acks, parse_mismatch};
use crate::model::*;
use crate::ops::*;
use crate::verify::{compare, Recovered};

fn model() -> Model {
    Model::new(Config::defaults(16000), 42)
}

fn op(proc: ProcId, kind: OpKind) -> Op {
    Op { proc, kind }
}

/// Steps op `i` and returns what the model expects.
fn ex(m: &mut Model, i: u32, o: Op) -> Expect {
    m.step(i, &o)
        .map(|p| p.expect)
        .unwrap_or_else(|| panic!("op {i} ({o}) does not apply"))
}

const ROOT: ProcId = 0;
const U1000: ProcId = 1;
const U1001: ProcId = 2;
const NS: ProcId = 3;

#[test]
fn owner_and_other_bits_decide_and_group_bits_do_not() {
    let mut m = model();
    assert_eq!(
        ex(
            &mut m,
            0,
            op(
                U1000,
                OpKind::Create {
                    name: 0,
                    size: 100,
                    mode: 0o640
                }
            )
        ),
        Expect::Ok(0)
    );
    // Owner: rw.
    assert_eq!(
        ex(
            &mut m,
            1,
            op(
                U1000,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::ReadWrite
                }
            )
        ),
        Expect::Ok(0)
    );
    // Other: no bits (group bits 4 are not used).
    assert_eq!(
        ex(
            &mut m,
            2,
            op(
                U1001,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::ReadOnly
                }
            )
        ),
        Expect::Err(libc::EACCES)
    );
    // The namespaced root is not admin.
    assert_eq!(
        ex(
            &mut m,
            3,
            op(
                NS,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::ReadOnly
                }
            )
        ),
        Expect::Err(libc::EACCES)
    );
    // The real root is.
    assert_eq!(
        ex(
            &mut m,
            4,
            op(
                ROOT,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::ReadWrite
                }
            )
        ),
        Expect::Ok(0)
    );
    // 0604: others may read, not write.
    assert_eq!(
        ex(
            &mut m,
            5,
            op(
                U1001,
                OpKind::Create {
                    name: 1,
                    size: 10,
                    mode: 0o604
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            6,
            op(
                U1000,
                OpKind::Open {
                    name: 1,
                    how: OpenHow::ReadOnly
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            7,
            op(
                U1000,
                OpKind::Open {
                    name: 1,
                    how: OpenHow::ReadWrite
                }
            )
        ),
        Expect::Err(libc::EACCES)
    );
    // Delete: owner or admin only; busy while open.
    assert_eq!(
        ex(&mut m, 8, op(U1000, OpKind::Delete { name: 1 })),
        Expect::Err(libc::EACCES)
    );
    assert_eq!(
        ex(&mut m, 9, op(U1001, OpKind::Delete { name: 1 })),
        Expect::Err(libc::EBUSY)
    );
    assert_eq!(
        ex(&mut m, 10, op(U1000, OpKind::Close { h: 6 })),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(&mut m, 11, op(U1001, OpKind::Delete { name: 1 })),
        Expect::Ok(0)
    );
}

#[test]
fn namespaced_actor_owns_as_1002_and_sees_ids_in_its_namespace() {
    let mut m = model();
    ex(
        &mut m,
        0,
        op(
            NS,
            OpKind::Create {
                name: 0,
                size: 5000,
                mode: 0o600,
            },
        ),
    );
    ex(
        &mut m,
        1,
        op(
            ROOT,
            OpKind::Create {
                name: 1,
                size: 0,
                mode: 0o644,
            },
        ),
    );
    assert_eq!(m.objs["o0"].owner, 1002);
    let Expect::Objs(v) = ex(&mut m, 2, op(NS, OpKind::List)) else {
        panic!()
    };
    assert_eq!((v[0].uid, v[1].uid), (0, OVERFLOW_UID));
    let Expect::Objs(v) = ex(&mut m, 3, op(ROOT, OpKind::List)) else {
        panic!()
    };
    assert_eq!((v[0].uid, v[1].uid), (1002, 0));
    assert_eq!(v[0].pages, 2);
    // Not admin: no block devices, no format.
    ex(
        &mut m,
        4,
        op(
            NS,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadWrite,
            },
        ),
    );
    assert_eq!(
        ex(&mut m, 5, op(NS, OpKind::BlkAdd { h: 4 })),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(&mut m, 6, op(NS, OpKind::Format)),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(&mut m, 7, op(NS, OpKind::WildStore)),
        Expect::Err(libc::EPERM)
    );
}

#[test]
fn exclusive_opens_and_rebinding() {
    let mut m = model();
    ex(
        &mut m,
        0,
        op(
            U1000,
            OpKind::Create {
                name: 0,
                size: 10,
                mode: 0o666,
            },
        ),
    );
    assert_eq!(
        ex(
            &mut m,
            1,
            op(
                U1000,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::ExclusiveReadOnly
                }
            )
        ),
        Expect::Err(libc::EACCES)
    );
    assert_eq!(
        ex(
            &mut m,
            2,
            op(
                U1000,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::Exclusive
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            3,
            op(
                U1001,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::ReadOnly
                }
            )
        ),
        Expect::Err(libc::EBUSY)
    );
    assert_eq!(
        ex(
            &mut m,
            4,
            op(
                ROOT,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::ReadOnly
                }
            )
        ),
        Expect::Err(libc::EBUSY)
    );
    assert_eq!(
        ex(&mut m, 5, op(U1000, OpKind::Rebind { h: 2, name: 0 })),
        Expect::Err(libc::EBUSY)
    );
    // A child inherits the exclusive fd: closing it in the parent keeps it open.
    assert_eq!(ex(&mut m, 6, op(U1000, OpKind::Fork)), Expect::AnyOk);
    ex(&mut m, 7, op(U1000, OpKind::Close { h: 2 }));
    assert_eq!(
        ex(
            &mut m,
            8,
            op(
                U1001,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::ReadOnly
                }
            )
        ),
        Expect::Err(libc::EBUSY)
    );
    assert_eq!(
        ex(
            &mut m,
            9,
            op(
                U1000,
                OpKind::Exit {
                    child: CHILD_BASE + 6
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            10,
            op(
                U1001,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::ReadOnly
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            11,
            op(
                U1000,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::Exclusive
                }
            )
        ),
        Expect::Err(libc::EBUSY)
    );
}

#[test]
fn mappings_hold_the_object_and_block_shrinking() {
    let mut m = model();
    ex(
        &mut m,
        0,
        op(
            U1000,
            OpKind::Create {
                name: 0,
                size: 5 * PAGE,
                mode: 0o644,
            },
        ),
    );
    ex(
        &mut m,
        1,
        op(
            U1000,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadWrite,
            },
        ),
    );
    ex(
        &mut m,
        2,
        op(
            U1001,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadOnly,
            },
        ),
    );
    // Read-only fd: no writable mapping, no private one, nothing past the end.
    assert_eq!(
        ex(
            &mut m,
            3,
            op(
                U1001,
                OpKind::Mmap {
                    h: 2,
                    page_off: 0,
                    pages: 1,
                    write: true,
                    private: false
                }
            )
        ),
        Expect::Err(libc::EACCES)
    );
    assert_eq!(
        ex(
            &mut m,
            4,
            op(
                U1001,
                OpKind::Mmap {
                    h: 2,
                    page_off: 0,
                    pages: 1,
                    write: false,
                    private: true
                }
            )
        ),
        Expect::Err(libc::EINVAL)
    );
    assert_eq!(
        ex(
            &mut m,
            5,
            op(
                U1001,
                OpKind::Mmap {
                    h: 2,
                    page_off: 4,
                    pages: 2,
                    write: false,
                    private: false
                }
            )
        ),
        Expect::Err(libc::ENXIO)
    );
    // Someone else's read-only mapping of pages 2..4 blocks shrinking below 4 pages.
    assert_eq!(
        ex(
            &mut m,
            6,
            op(
                U1001,
                OpKind::Mmap {
                    h: 2,
                    page_off: 2,
                    pages: 2,
                    write: false,
                    private: false
                }
            )
        ),
        Expect::Ok(0)
    );
    ex(&mut m, 7, op(U1001, OpKind::Close { h: 2 }));
    assert_eq!(
        ex(
            &mut m,
            8,
            op(
                U1000,
                OpKind::Resize {
                    h: 1,
                    size: 3 * PAGE
                }
            )
        ),
        Expect::Err(libc::EBUSY)
    );
    assert_eq!(
        ex(
            &mut m,
            9,
            op(
                U1000,
                OpKind::Resize {
                    h: 1,
                    size: 3 * PAGE + 1
                }
            )
        ),
        // Any live mapping refuses a shrink to fewer pages, whatever range it covers.
        Expect::Err(libc::EBUSY)
    );
    assert_eq!(
        ex(
            &mut m,
            9,
            op(
                U1000,
                OpKind::Resize {
                    h: 1,
                    size: 5 * PAGE - 100
                }
            )
        ),
        // Within the last page: the page count stays, and so do the mappings.
        Expect::Ok(0)
    );
    // The mapping keeps the closed fd's binding open: delete is busy.
    ex(&mut m, 10, op(U1000, OpKind::Close { h: 1 }));
    assert_eq!(
        ex(&mut m, 11, op(U1000, OpKind::Delete { name: 0 })),
        Expect::Err(libc::EBUSY)
    );
    ex(&mut m, 12, op(U1001, OpKind::Munmap { m: 6 }));
    assert_eq!(
        ex(&mut m, 13, op(U1000, OpKind::Delete { name: 0 })),
        Expect::Ok(0)
    );
}

#[test]
fn pread_pwrite_store_and_resize_keep_exact_contents() {
    let mut m = model();
    ex(
        &mut m,
        0,
        op(
            U1000,
            OpKind::Create {
                name: 0,
                size: 3 * PAGE,
                mode: 0o600,
            },
        ),
    );
    ex(
        &mut m,
        1,
        op(
            U1000,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadWrite,
            },
        ),
    );
    assert_eq!(
        ex(
            &mut m,
            2,
            op(
                U1000,
                OpKind::Pwrite {
                    h: 1,
                    off: 3 * PAGE - 10,
                    len: 100
                }
            )
        ),
        Expect::Ok(10)
    );
    assert_eq!(
        ex(
            &mut m,
            3,
            op(
                U1000,
                OpKind::Pwrite {
                    h: 1,
                    off: 3 * PAGE,
                    len: 1
                }
            )
        ),
        Expect::Err(libc::EFBIG)
    );
    let w = crate::prng::payload(42, 2, 10);
    assert_eq!(
        ex(
            &mut m,
            4,
            op(
                U1000,
                OpKind::Pread {
                    h: 1,
                    off: 3 * PAGE - 10,
                    len: 50
                }
            )
        ),
        Expect::Data(w)
    );
    assert_eq!(
        ex(
            &mut m,
            5,
            op(
                U1000,
                OpKind::Pread {
                    h: 1,
                    off: 5 * PAGE,
                    len: 50
                }
            )
        ),
        Expect::Data(vec![])
    );
    ex(
        &mut m,
        6,
        op(
            U1000,
            OpKind::Mmap {
                h: 1,
                page_off: 1,
                pages: 2,
                write: true,
                private: false,
            },
        ),
    );
    ex(
        &mut m,
        7,
        op(
            U1000,
            OpKind::Store {
                m: 6,
                off: 5,
                len: 3,
            },
        ),
    );
    let s = crate::prng::payload(42, 7, 3);
    assert_eq!(
        ex(
            &mut m,
            8,
            op(
                U1000,
                OpKind::Pread {
                    h: 1,
                    off: PAGE + 5,
                    len: 3
                }
            )
        ),
        Expect::Data(s.clone())
    );
    assert_eq!(
        ex(
            &mut m,
            9,
            op(
                U1000,
                OpKind::MapRead {
                    m: 6,
                    off: 5,
                    len: 3
                }
            )
        ),
        Expect::Data(s)
    );
    // Shrink (within the mapping's pages) and grow: the new bytes read as zero.
    ex(
        &mut m,
        10,
        op(
            U1000,
            OpKind::Resize {
                h: 1,
                size: 3 * PAGE - 20,
            },
        ),
    );
    ex(
        &mut m,
        11,
        op(
            U1000,
            OpKind::Resize {
                h: 1,
                size: 3 * PAGE,
            },
        ),
    );
    assert_eq!(
        ex(
            &mut m,
            12,
            op(
                U1000,
                OpKind::Pread {
                    h: 1,
                    off: 3 * PAGE - 20,
                    len: 20
                }
            )
        ),
        Expect::Data(vec![0; 20])
    );
    // A store outside the object does not apply (the op is skipped).
    assert!(m
        .step(
            13,
            &op(
                U1000,
                OpKind::Store {
                    m: 6,
                    off: 2 * PAGE as u32 - 1,
                    len: 2
                }
            )
        )
        .is_none());
    // Read-only binding: no pwrite, no resize.
    ex(
        &mut m,
        14,
        op(
            U1000,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadOnly,
            },
        ),
    );
    assert_eq!(
        ex(
            &mut m,
            15,
            op(
                U1000,
                OpKind::Pwrite {
                    h: 14,
                    off: 0,
                    len: 1
                }
            )
        ),
        Expect::Err(libc::EBADF)
    );
    assert_eq!(
        ex(&mut m, 16, op(U1000, OpKind::Resize { h: 14, size: 1 })),
        Expect::Err(libc::EBADF)
    );
}

#[test]
fn block_devices_are_admin_only_and_pin_their_object() {
    let mut m = model();
    ex(
        &mut m,
        0,
        op(
            ROOT,
            OpKind::Create {
                name: 0,
                size: 2 * PAGE,
                mode: 0o666,
            },
        ),
    );
    ex(
        &mut m,
        1,
        op(
            U1000,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadWrite,
            },
        ),
    );
    ex(
        &mut m,
        2,
        op(
            ROOT,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadWrite,
            },
        ),
    );
    ex(
        &mut m,
        3,
        op(
            ROOT,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadOnly,
            },
        ),
    );
    assert_eq!(
        ex(&mut m, 4, op(U1000, OpKind::BlkAdd { h: 1 })),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(&mut m, 5, op(ROOT, OpKind::BlkAdd { h: 3 })),
        Expect::Err(libc::EBADF)
    );
    assert_eq!(
        ex(&mut m, 6, op(ROOT, OpKind::BlkRemove { h: 3 })),
        Expect::Err(libc::ENODEV)
    );
    assert_eq!(
        ex(&mut m, 7, op(ROOT, OpKind::BlkAdd { h: 2 })),
        Expect::AnyOk
    );
    assert_eq!(
        ex(&mut m, 8, op(ROOT, OpKind::BlkAdd { h: 2 })),
        Expect::Err(libc::EEXIST)
    );
    assert_eq!(
        ex(&mut m, 9, op(U1000, OpKind::Resize { h: 1, size: PAGE })),
        Expect::Err(libc::EBUSY)
    );
    for (i, h) in [(10, 1), (11, 2), (12, 3)] {
        ex(
            &mut m,
            i,
            op(if h == 1 { U1000 } else { ROOT }, OpKind::Close { h }),
        );
    }
    assert_eq!(m.open_count("o0"), 1);
    assert_eq!(
        ex(&mut m, 13, op(ROOT, OpKind::Delete { name: 0 })),
        Expect::Err(libc::EBUSY)
    );
    assert_eq!(
        ex(
            &mut m,
            14,
            op(
                ROOT,
                OpKind::Open {
                    name: 0,
                    how: OpenHow::Exclusive
                }
            )
        ),
        Expect::Err(libc::EBUSY)
    );
    ex(
        &mut m,
        15,
        op(
            ROOT,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadOnly,
            },
        ),
    );
    assert_eq!(
        ex(&mut m, 16, op(ROOT, OpKind::BlkRemove { h: 15 })),
        Expect::Ok(0)
    );
}

#[test]
fn per_user_limits_give_edquot_but_not_to_the_admin() {
    let mut cfg = Config::defaults(100);
    cfg.max_user_objects = 2;
    cfg.max_user_pages = 10;
    let mut m = Model::new(cfg, 1);
    assert_eq!(
        ex(
            &mut m,
            0,
            op(
                U1000,
                OpKind::Create {
                    name: 0,
                    size: 8 * PAGE,
                    mode: 0o600
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            1,
            op(
                U1000,
                OpKind::Create {
                    name: 1,
                    size: 3 * PAGE,
                    mode: 0o600
                }
            )
        ),
        Expect::Err(libc::EDQUOT)
    );
    assert_eq!(
        ex(
            &mut m,
            2,
            op(
                U1000,
                OpKind::Create {
                    name: 1,
                    size: 2 * PAGE,
                    mode: 0o600
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            3,
            op(
                U1000,
                OpKind::Create {
                    name: 2,
                    size: 0,
                    mode: 0o600
                }
            )
        ),
        Expect::Err(libc::EDQUOT)
    );
    assert_eq!(
        ex(
            &mut m,
            4,
            op(
                NS,
                OpKind::Create {
                    name: 2,
                    size: 0,
                    mode: 0o600
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            5,
            op(
                ROOT,
                OpKind::Create {
                    name: 3,
                    size: 80 * PAGE,
                    mode: 0o600
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            6,
            op(
                ROOT,
                OpKind::Create {
                    name: 4,
                    size: 11 * PAGE,
                    mode: 0o600
                }
            )
        ),
        Expect::Err(libc::ENOSPC)
    );
    ex(
        &mut m,
        7,
        op(
            U1000,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadWrite,
            },
        ),
    );
    assert_eq!(
        ex(
            &mut m,
            8,
            op(
                U1000,
                OpKind::Resize {
                    h: 7,
                    size: 9 * PAGE
                }
            )
        ),
        Expect::Err(libc::EDQUOT)
    );
    assert_eq!(
        ex(
            &mut m,
            9,
            op(
                U1000,
                OpKind::Resize {
                    h: 7,
                    size: 7 * PAGE
                }
            )
        ),
        Expect::Ok(0)
    );
}

#[test]
fn the_checker_catches_a_wrong_answer() {
    // A deliberately wrong answer for each kind of expectation must be caught.
    assert!(check(&Expect::Err(libc::EACCES), &Reply::Ok(0)).is_err());
    assert!(check(&Expect::Err(libc::EACCES), &Reply::Err(libc::EBUSY)).is_err());
    assert!(check(&Expect::Ok(10), &Reply::Ok(9)).is_err());
    assert!(check(&Expect::Data(vec![1, 2, 3]), &Reply::Data(vec![1, 2, 4])).is_err());
    assert!(check(&Expect::Data(vec![1, 2, 3]), &Reply::Data(vec![1, 2])).is_err());
    let v = ObjView {
        name: "o0".into(),
        size: 1,
        uid: 0,
        mode: 0o600,
        pages: 1,
        open_count: 0,
        blockdev: false,
        damaged: false,
    };
    let mut w = v.clone();
    w.uid = 1002;
    assert!(check(&Expect::Objs(vec![v.clone()]), &Reply::Objs(vec![w])).is_err());
    assert!(check(&Expect::Objs(vec![v.clone()]), &Reply::Objs(vec![])).is_err());
    assert!(check(&Expect::Objs(vec![]), &Reply::Objs(vec![v.clone()])).is_err());
    // And right answers pass.
    assert!(check(&Expect::Objs(vec![v.clone()]), &Reply::Objs(vec![v])).is_ok());
    assert!(check(&Expect::AnyOk, &Reply::Ok(3)).is_ok());
    assert!(check(&Expect::Err(libc::EBUSY), &Reply::Err(libc::EBUSY)).is_ok());
}

/// The old module's rule (root of any user namespace is admin): a "kernel" answering by it
/// must be caught by the checker on a generated history. This is the failure the fuzzer is
/// named for, shown once on the host.
#[test]
fn a_kernel_that_treats_the_namespaced_root_as_admin_is_caught() {
    let cfg = Config::defaults(16000);
    let mut caught = None;
    'seeds: for seed in 0..50 {
        let ops = generate(seed, 300, &cfg);
        let mut spec = Model::new(cfg.clone(), seed);
        let mut wrong = Model::new(cfg.clone(), seed);
        for (i, o) in ops.iter().enumerate() {
            let Some(e) = spec.step(i as u32, o) else {
                continue;
            };
            // The wrong kernel: the same op, done as the real root when nsroot asks.
            let mut o2 = o.clone();
            if o2.proc == NS {
                o2.proc = ROOT;
            }
            let reply = match wrong.step(i as u32, &o2).map(|p| p.expect) {
                Some(Expect::Ok(v)) => Reply::Ok(v),
                Some(Expect::AnyOk) => Reply::Ok(0),
                Some(Expect::Err(e)) => Reply::Err(e),
                Some(Expect::Data(d)) => Reply::Data(d),
                Some(Expect::Objs(v)) => Reply::Objs(v),
                Some(Expect::Stats {
                    objects,
                    pages_in_use,
                }) => Reply::Stats {
                    objects,
                    pages_in_use,
                },
                Some(Expect::Info { abi, state }) => Reply::Info { abi, state },
                Some(Expect::FStat(s)) => Reply::FStat(s),
                Some(Expect::Signal(s)) => Reply::Signal(s),
                None => Reply::Err(libc::EBADF),
            };
            if check(&e.expect, &reply).is_err() {
                caught = Some((seed, i, o.to_string()));
                break 'seeds;
            }
        }
    }
    let (seed, i, o) = caught.expect("a history where the namespaced root acts as admin is caught");
    assert!(
        o.starts_with("nsroot:"),
        "caught at seed {seed} op {i}: {o}"
    );
}

#[test]
fn generation_is_deterministic_and_varied() {
    let cfg = Config::defaults(16000);
    let a = generate(7, 400, &cfg);
    assert_eq!(a, generate(7, 400, &cfg));
    assert_ne!(a, generate(8, 400, &cfg));
    // Every kind of op shows up in a few seeds, and most ops apply.
    let mut words = std::collections::BTreeSet::new();
    let mut applied = 0;
    for seed in 0..5 {
        let ops = generate(seed, 400, &cfg);
        let mut m = Model::new(cfg.clone(), seed);
        for (i, o) in ops.iter().enumerate() {
            words.insert(o.kind.word());
            if m.step(i as u32, o).is_some() {
                applied += 1;
            }
        }
    }
    for w in [
        "create",
        "open",
        "close",
        "pread",
        "pwrite",
        "mmap",
        "store",
        "load",
        "munmap",
        "resize",
        "delete",
        "list",
        "stat",
        "stats",
        "sync",
        "blkdev-add",
        "blkdev-remove",
        "fork",
        "exit",
        "rebind",
    ] {
        assert!(words.contains(w), "no {w} in 5 seeds: {words:?}");
    }
    assert!(applied > 1900, "only {applied} of 2000 ops apply");
}

#[test]
fn any_subset_of_a_history_runs_in_the_model() {
    let cfg = Config::defaults(16000);
    let ops = generate(3, 300, &cfg);
    let mut m = Model::new(cfg, 3);
    for (i, o) in ops.iter().enumerate() {
        if i % 3 != 1 {
            let _ = m.step(i as u32, o);
        }
    }
}

fn rec(name: &str, size: u64, uid: u32, mode: u32, data: Vec<u8>) -> Recovered {
    Recovered {
        name: name.into(),
        size,
        uid,
        mode,
        damaged: false,
        data,
    }
}

#[test]
fn verify_accepts_old_or_new_and_torn_writes_only_within_their_range() {
    let mut m = model();
    ex(
        &mut m,
        0,
        op(
            U1000,
            OpKind::Create {
                name: 0,
                size: 100,
                mode: 0o600,
            },
        ),
    );
    ex(
        &mut m,
        1,
        op(
            U1000,
            OpKind::Open {
                name: 0,
                how: OpenHow::ReadWrite,
            },
        ),
    );
    let acked = m.clone();
    let w = op(
        U1000,
        OpKind::Pwrite {
            h: 1,
            off: 10,
            len: 20,
        },
    );
    let mut after = m.clone();
    after.step(2, &w);
    let old = vec![0u8; 100];
    let new = after.objs["o0"].data.clone().unwrap();
    let none = |_: &str| false;
    assert!(compare(
        &acked,
        Some((&after, &w)),
        &[rec("o0", 100, 1000, 0o600, old.clone())],
        none
    )
    .is_empty());
    assert!(compare(
        &acked,
        Some((&after, &w)),
        &[rec("o0", 100, 1000, 0o600, new.clone())],
        none
    )
    .is_empty());
    let mut torn = old.clone();
    torn[10..15].copy_from_slice(&new[10..15]);
    assert!(compare(
        &acked,
        Some((&after, &w)),
        &[rec("o0", 100, 1000, 0o600, torn.clone())],
        none
    )
    .is_empty());
    // A changed byte outside the write's range is caught; so is a torn write with no write
    // in flight, a lost object, a wrong owner and an object the model does not have.
    let mut bad = torn.clone();
    bad[50] = 1;
    assert!(!compare(
        &acked,
        Some((&after, &w)),
        &[rec("o0", 100, 1000, 0o600, bad)],
        none
    )
    .is_empty());
    assert!(!compare(&acked, None, &[rec("o0", 100, 1000, 0o600, torn)], none).is_empty());
    assert!(!compare(&acked, None, &[], none).is_empty());
    assert!(!compare(&acked, None, &[rec("o0", 100, 0, 0o600, old.clone())], none).is_empty());
    assert!(!compare(
        &acked,
        None,
        &[
            rec("o0", 100, 1000, 0o600, old.clone()),
            rec("x", 1, 0, 0o600, vec![0])
        ],
        none
    )
    .is_empty());
    assert!(compare(
        &acked,
        None,
        &[
            rec("o0", 100, 1000, 0o600, old),
            rec("noise0", 1, 0, 0o600, vec![0])
        ],
        |n: &str| n.starts_with("noise")
    )
    .is_empty());
}

#[test]
fn host_parsers() {
    let report = "MISMATCH seed 5 op 17: nsroot: blkdev add h3\n  expected: EPERM\n  got:      Ok(2)\n  detail: x\n  signature: blkdev-add:nsroot/base:EPERM->ok\n";
    assert_eq!(
        parse_mismatch(report),
        Some((17, "blkdev-add:nsroot/base:EPERM->ok".into()))
    );
    assert_eq!(parse_acks("M x\r\nA 0\r\nA 2\r\nA 5\r\n"), (3, Some(5)));
    assert_eq!(parse_acks(""), (0, None));
    assert!(
        find_splat("ok\n[ 1.0] BUG: sleeping function called\nmore\n")
            .is_some_and(|s| s.starts_with("[ 1.0] BUG"))
    );
    assert!(find_splat("all fine\n").is_none());
}

// ---- riofs ----------------------------------------------------------------------------

fn fs_model() -> Model {
    let mut cfg = Config::defaults(16000);
    cfg.riofs = true;
    Model::new(cfg, 42)
}

fn fopen(path: &str, read: bool, write: bool, creat: bool, excl: bool, mode: u32) -> OpKind {
    OpKind::FOpen {
        path: path.into(),
        flags: OFlags {
            read,
            write,
            creat,
            excl,
            trunc: false,
            append: false,
        },
        mode,
    }
}

fn p(s: &str) -> String {
    s.to_string()
}

#[test]
fn riofs_sticky_dir_private_dirs_and_umask() {
    let mut m = fs_model();
    // u1000 makes pub/f0 (0666 & ~umask 002 = 0664) and writes to it.
    assert_eq!(
        ex(
            &mut m,
            0,
            op(U1000, fopen("pub/f0", false, true, true, true, 0o666))
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            1,
            op(
                U1000,
                OpKind::FWrite {
                    h: 0,
                    off: 10,
                    len: 5
                }
            )
        ),
        Expect::Ok(5)
    );
    let Expect::FStat(st) = ex(
        &mut m,
        2,
        op(
            U1001,
            OpKind::PStat {
                path: p("pub/f0"),
                follow: true,
            },
        ),
    ) else {
        panic!("stat")
    };
    assert_eq!(
        (st.mode, st.uid, st.gid, st.nlink, st.size),
        (0o100664, 1000, 1000, 1, 15)
    );
    // Others may not remove or rename it out of the sticky directory; the owner and root may.
    let unlink = |path: &str| OpKind::Unlink { path: path.into() };
    assert_eq!(
        ex(&mut m, 3, op(U1001, unlink("pub/f0"))),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(&mut m, 4, op(NS, unlink("pub/f0"))),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(
            &mut m,
            5,
            op(
                U1001,
                OpKind::Rename {
                    from: p("pub/f0"),
                    to: p("pub/f1")
                }
            )
        ),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(
            &mut m,
            6,
            op(
                U1000,
                OpKind::Rename {
                    from: p("pub/f0"),
                    to: p("pub/f1")
                }
            )
        ),
        Expect::Ok(0)
    );
    // Private directories: others cannot even look; a user cannot create in ro or /.
    assert_eq!(
        ex(
            &mut m,
            7,
            op(
                U1001,
                OpKind::PStat {
                    path: p("u1000/x"),
                    follow: false
                }
            )
        ),
        Expect::Err(libc::EACCES)
    );
    assert_eq!(
        ex(
            &mut m,
            8,
            op(
                U1000,
                OpKind::Mkdir {
                    path: p("ro/d0"),
                    mode: 0o755
                }
            )
        ),
        Expect::Err(libc::EACCES)
    );
    // ... but an existing name gives EEXIST first.
    assert_eq!(
        ex(
            &mut m,
            9,
            op(
                U1000,
                OpKind::Mkdir {
                    path: p("ro"),
                    mode: 0o755
                }
            )
        ),
        Expect::Err(libc::EEXIST)
    );
    // u1001 may write (group/other 6 via 0666? no: 0664 gives others read only).
    assert_eq!(
        ex(
            &mut m,
            10,
            op(U1001, fopen("pub/f1", true, true, false, false, 0))
        ),
        Expect::Err(libc::EACCES)
    );
    assert_eq!(
        ex(
            &mut m,
            11,
            op(U1001, fopen("pub/f1", true, false, false, false, 0))
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            12,
            op(
                U1001,
                OpKind::FRead {
                    h: 11,
                    off: 8,
                    len: 100
                }
            )
        ),
        Expect::Data([vec![0, 0], crate::prng::payload(42, 1, 5)].concat())
    );
    assert_eq!(
        ex(
            &mut m,
            13,
            op(
                U1001,
                OpKind::FWrite {
                    h: 11,
                    off: 0,
                    len: 1
                }
            )
        ),
        Expect::Err(libc::EBADF)
    );
    assert_eq!(ex(&mut m, 14, op(ROOT, unlink("pub/f1"))), Expect::Ok(0));
    // The open file outlives its name.
    assert_eq!(
        ex(
            &mut m,
            15,
            op(
                U1000,
                OpKind::FWrite {
                    h: 0,
                    off: 0,
                    len: 3
                }
            )
        ),
        Expect::Ok(3)
    );
    let Expect::FStat(st) = ex(&mut m, 16, op(U1000, OpKind::FStat { h: 0 })) else {
        panic!("fstat")
    };
    assert_eq!((st.nlink, st.size), (0, 15));
}

#[test]
fn riofs_chown_chmod_and_the_namespaced_root() {
    let mut m = fs_model();
    ex(
        &mut m,
        0,
        op(NS, fopen("u1002/f0", true, true, true, false, 0o000)),
    );
    // nsroot is privileged over its own inodes (uid and gid 1002): mode 0 does not stop it.
    assert_eq!(
        ex(
            &mut m,
            1,
            op(NS, fopen("u1002/f0", true, true, false, false, 0))
        ),
        Expect::Ok(0)
    );
    let chown = |path: &str, uid| OpKind::Chown {
        path: path.into(),
        uid,
    };
    assert_eq!(
        ex(&mut m, 2, op(NS, chown("u1002/f0", 1000))),
        Expect::Err(libc::EINVAL)
    );
    assert_eq!(
        ex(&mut m, 3, op(NS, chown("u1002/f0", 1002))),
        Expect::Ok(0)
    );
    ex(
        &mut m,
        4,
        op(U1000, fopen("pub/f0", false, true, true, false, 0o644)),
    );
    assert_eq!(
        ex(&mut m, 5, op(U1000, chown("pub/f0", 1001))),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(&mut m, 6, op(U1000, chown("pub/f0", 1000))),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(&mut m, 7, op(U1001, chown("pub/f0", 1001))),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(&mut m, 8, op(ROOT, chown("pub/f0", 1002))),
        Expect::Ok(0)
    );
    // Now uid 1002 but gid 1000: nsroot owns it but is not privileged over it.
    let Expect::FStat(st) = ex(
        &mut m,
        9,
        op(
            NS,
            OpKind::PStat {
                path: p("pub/f0"),
                follow: false,
            },
        ),
    ) else {
        panic!("stat")
    };
    assert_eq!((st.uid, st.gid), (0, OVERFLOW_UID));
    let chmod = |path: &str, mode| OpKind::Chmod {
        path: path.into(),
        mode,
    };
    assert_eq!(
        ex(&mut m, 10, op(NS, chmod("pub/f0", 0o000))),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            11,
            op(NS, fopen("pub/f0", true, false, false, false, 0))
        ),
        Expect::Err(libc::EACCES)
    );
    assert_eq!(
        ex(&mut m, 12, op(U1000, chmod("pub/f0", 0o644))),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(
            &mut m,
            13,
            op(ROOT, fopen("pub/f0", true, true, false, false, 0))
        ),
        Expect::Ok(0)
    );
    // The u1002 directory's owner (nsroot) may remove others' files from it if it is sticky.
    assert_eq!(
        ex(&mut m, 14, op(NS, chmod("u1002", 0o1777))),
        Expect::Ok(0)
    );
    ex(
        &mut m,
        15,
        op(U1000, fopen("u1002/f1", false, true, true, false, 0o600)),
    );
    assert_eq!(
        ex(
            &mut m,
            16,
            op(
                U1001,
                OpKind::Unlink {
                    path: p("u1002/f1")
                }
            )
        ),
        Expect::Err(libc::EPERM)
    );
    assert_eq!(
        ex(
            &mut m,
            17,
            op(
                NS,
                OpKind::Unlink {
                    path: p("u1002/f1")
                }
            )
        ),
        Expect::Ok(0)
    );
}

#[test]
fn riofs_namespace_errors_links_and_renames() {
    let mut m = fs_model();
    let mkdir = |path: &str| OpKind::Mkdir {
        path: path.into(),
        mode: 0o755,
    };
    let rename = |a: &str, b: &str| OpKind::Rename {
        from: a.into(),
        to: b.into(),
    };
    ex(&mut m, 0, op(ROOT, mkdir("pub/d0")));
    ex(&mut m, 1, op(ROOT, mkdir("pub/d0/d1")));
    ex(
        &mut m,
        2,
        op(ROOT, fopen("pub/d0/f0", false, true, true, false, 0o644)),
    );
    assert_eq!(
        ex(&mut m, 3, op(ROOT, OpKind::Rmdir { path: p("pub/d0") })),
        Expect::Err(libc::ENOTEMPTY)
    );
    assert_eq!(
        ex(&mut m, 4, op(ROOT, OpKind::Unlink { path: p("pub/d0") })),
        Expect::Err(libc::EISDIR)
    );
    assert_eq!(
        ex(
            &mut m,
            5,
            op(
                ROOT,
                OpKind::Rmdir {
                    path: p("pub/d0/f0")
                }
            )
        ),
        Expect::Err(libc::ENOTDIR)
    );
    assert_eq!(
        ex(
            &mut m,
            6,
            op(
                ROOT,
                OpKind::PStat {
                    path: p("pub/d0/f0/x"),
                    follow: false
                }
            )
        ),
        Expect::Err(libc::ENOTDIR)
    );
    // Into its own subtree; onto an ancestor; directory over file and back.
    assert_eq!(
        ex(&mut m, 7, op(ROOT, rename("pub/d0", "pub/d0/d1/d2"))),
        Expect::Err(libc::EINVAL)
    );
    assert_eq!(
        ex(&mut m, 8, op(ROOT, rename("pub/d0/d1", "pub/d0"))),
        Expect::Err(libc::ENOTEMPTY)
    );
    assert_eq!(
        ex(&mut m, 9, op(ROOT, rename("pub/d0/d1", "pub/d0/f0"))),
        Expect::Err(libc::ENOTDIR)
    );
    assert_eq!(
        ex(&mut m, 10, op(ROOT, rename("pub/d0/f0", "pub/d0/d1"))),
        Expect::Err(libc::EISDIR)
    );
    // Hard links: nlink 2; renaming one onto the other does nothing.
    assert_eq!(
        ex(
            &mut m,
            11,
            op(
                ROOT,
                OpKind::Link {
                    from: p("pub/d0/f0"),
                    to: p("ro/f1")
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(&mut m, 12, op(ROOT, rename("ro/f1", "pub/d0/f0"))),
        Expect::Ok(0)
    );
    let Expect::FStat(st) = ex(
        &mut m,
        13,
        op(
            ROOT,
            OpKind::PStat {
                path: p("ro/f1"),
                follow: false,
            },
        ),
    ) else {
        panic!("stat")
    };
    assert_eq!(st.nlink, 2);
    assert_eq!(
        ex(
            &mut m,
            14,
            op(
                ROOT,
                OpKind::Link {
                    from: p("pub/d0"),
                    to: p("ro/d9")
                }
            )
        ),
        Expect::Err(libc::EPERM)
    );
    // Moving a directory across: parents' nlink follows.
    assert_eq!(
        ex(&mut m, 15, op(ROOT, rename("pub/d0/d1", "ro/d1"))),
        Expect::Ok(0)
    );
    let nlink = |m: &mut Model, i, path: &str| match ex(
        m,
        i,
        op(
            ROOT,
            OpKind::PStat {
                path: path.into(),
                follow: false,
            },
        ),
    ) {
        Expect::FStat(s) => s.nlink,
        e => panic!("{e:?}"),
    };
    assert_eq!(
        (nlink(&mut m, 16, "pub/d0"), nlink(&mut m, 17, "ro")),
        (2, 3)
    );
    // Symbolic links never resolve: following gives ENOENT, lstat sees the link.
    assert_eq!(
        ex(
            &mut m,
            18,
            op(
                ROOT,
                OpKind::Symlink {
                    path: p("ro/l0"),
                    target: 0
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            19,
            op(ROOT, fopen("ro/l0", true, false, true, false, 0o644))
        ),
        Expect::Err(libc::ENOENT)
    );
    assert_eq!(
        ex(
            &mut m,
            20,
            op(ROOT, fopen("ro/l0", true, false, true, true, 0o644))
        ),
        Expect::Err(libc::EEXIST)
    );
    let Expect::FStat(st) = ex(
        &mut m,
        21,
        op(
            ROOT,
            OpKind::PStat {
                path: p("ro/l0"),
                follow: false,
            },
        ),
    ) else {
        panic!("lstat")
    };
    assert_eq!((st.mode, st.size), (0o120777, 15));
    // A user cannot move its own directory out of ro (no write on ro) nor make one there.
    assert_eq!(
        ex(&mut m, 22, op(U1000, rename("u1000", "pub/x"))),
        Expect::Err(libc::EACCES)
    );
    // The tree as verify reads it.
    let l = m.fs.as_ref().unwrap().listing();
    assert_eq!(l[0].path, "");
    assert!(l.iter().any(|e| e.path == "ro/d1" && e.st.mode == 0o40755));
}

#[test]
fn riofs_generation_is_varied_and_subsets_run() {
    let mut cfg = Config::defaults(16000);
    cfg.riofs = true;
    let mut words = std::collections::BTreeSet::new();
    let mut errs = std::collections::BTreeSet::new();
    for seed in 0..5 {
        let ops = generate(seed, 400, &cfg);
        assert_eq!(ops, generate(seed, 400, &cfg));
        let mut m = Model::new(cfg.clone(), seed);
        for (i, o) in ops.iter().enumerate() {
            words.insert(o.kind.word());
            if let Some(Expect::Err(e)) = m.step(i as u32, o).map(|p| p.expect) {
                if o.kind.is_fs() {
                    errs.insert(e);
                }
            }
        }
        // Every other op dropped: still runs in the model.
        let mut m = Model::new(cfg.clone(), seed);
        for (i, o) in ops.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            let _ = m.step(i as u32, o);
        }
    }
    for w in [
        "fs-open",
        "fs-close",
        "fs-pread",
        "fs-pwrite",
        "fs-ftruncate",
        "fs-fstat",
        "fs-truncate",
        "fs-unlink",
        "fs-mkdir",
        "fs-rmdir",
        "fs-rename",
        "fs-link",
        "fs-symlink",
        "fs-chmod",
        "fs-chown",
        "fs-stat",
        "create",
        "pwrite",
    ] {
        assert!(words.contains(w), "no {w} in 5 seeds");
    }
    for e in [
        libc::EACCES,
        libc::EPERM,
        libc::ENOENT,
        libc::EEXIST,
        libc::ENOTEMPTY,
        libc::EISDIR,
        libc::ENOTDIR,
    ] {
        assert!(
            errs.contains(&e),
            "no {} in 5 seeds: {errs:?}",
            errno_name(e)
        );
    }
}

#[test]
fn riofs_tree_diff_and_setup_states() {
    let fs = crate::fsmodel::Fs::new();
    let a = fs.listing();
    assert!(crate::fsmodel::diff_listings(&a, &a, 5).is_empty());
    let mut b = a.clone();
    b[1].st.uid = 7;
    b.pop();
    assert_eq!(crate::fsmodel::diff_listings(&a, &b, 5).len(), 2);
    let states = crate::fsmodel::Fs::setup_states();
    assert_eq!(states.len(), 1 + 3 * crate::fsmodel::TOPS.len());
    assert_eq!(states.last().unwrap().listing(), a);
}

// ---- riofs mappings ----------------------------------------------------------------------

fn fmmap(h: Handle, page_off: u32, pages: u32, write: bool, shared: bool) -> OpKind {
    OpKind::FMmap {
        h,
        page_off,
        pages,
        write,
        shared,
    }
}

fn fstore(m: MapId, off: u32, len: u32) -> OpKind {
    OpKind::FStore { m, off, len }
}

fn fload(m: MapId, off: u32, len: u32) -> OpKind {
    OpKind::FLoad { m, off, len }
}

fn fread(h: Handle, off: u64, len: u32) -> OpKind {
    OpKind::FRead { h, off, len }
}

/// Steps op `i` and returns its expectation and its `arg`.
fn exa(m: &mut Model, i: u32, o: Op) -> (Expect, u32) {
    m.step(i, &o)
        .map(|p| (p.expect, p.arg))
        .unwrap_or_else(|| panic!("op {i} ({o}) does not apply"))
}

fn data(e: Expect) -> Vec<u8> {
    match e {
        Expect::Data(d) => d,
        e => panic!("expected data, the model says {e:?}"),
    }
}

#[test]
fn riofs_mmap_permissions() {
    let mut m = fs_model();
    // u1000's files: f0 opened O_RDONLY, O_WRONLY and O_RDWR; the directory itself.
    assert_eq!(
        ex(
            &mut m,
            0,
            op(U1000, fopen("u1000/f0", false, true, true, false, 0o644))
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            1,
            op(
                U1000,
                OpKind::FWrite {
                    h: 0,
                    off: 0,
                    len: 100
                }
            )
        ),
        Expect::Ok(100)
    );
    assert_eq!(
        ex(
            &mut m,
            2,
            op(U1000, fopen("u1000/f0", true, false, false, false, 0))
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            3,
            op(U1000, fopen("u1000/f0", true, true, false, false, 0))
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            4,
            op(U1000, fopen("u1000", true, false, false, false, 0))
        ),
        Expect::Ok(0)
    );
    let cases = [
        // (handle, write, shared, outcome)
        (2, true, true, Expect::Err(libc::EACCES)), // PROT_WRITE shared on O_RDONLY
        (2, false, true, Expect::Ok(0)),
        (2, true, false, Expect::Ok(0)), // private: copy-on-write, allowed
        (0, false, true, Expect::Err(libc::EACCES)), // O_WRONLY: nothing maps
        (0, true, true, Expect::Err(libc::EACCES)),
        (0, false, false, Expect::Err(libc::EACCES)),
        (3, true, true, Expect::Ok(0)), // O_RDWR shared writable works
        (4, false, true, Expect::Err(libc::ENODEV)), // a directory has no mmap
        (4, true, true, Expect::Err(libc::EACCES)), // ... but the write check comes first
    ];
    for (k, (h, write, shared, want)) in cases.into_iter().enumerate() {
        let i = 10 + k as u32;
        assert_eq!(
            ex(&mut m, i, op(U1000, fmmap(h, 0, 1, write, shared))),
            want,
            "case {k}"
        );
    }
    // Only the successful ones are mappings.
    let ids: Vec<MapId> = m.fmaps(U1000).iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![11, 12, 16]);
    // A store into a mapping without PROT_WRITE: SIGSEGV, in a probe child, nothing stored.
    let before = m.fs.clone();
    assert_eq!(
        exa(&mut m, 30, op(U1000, fstore(11, 0, 10))),
        (Expect::Signal(libc::SIGSEGV), ARG_PROBE)
    );
    assert_eq!(m.fs, before);
    // Stores into a private writable mapping are not modelled: the op does not apply.
    assert!(m.step(31, &op(U1000, fstore(12, 0, 10))).is_none());
    // Another process cannot use u1000's mappings.
    assert!(m.step(32, &op(U1001, fload(16, 0, 10))).is_none());
}

#[test]
fn riofs_stores_and_writes_meet_at_once_and_sigbus_past_the_last_page() {
    let mut m = fs_model();
    let seed = m.seed;
    assert_eq!(
        ex(
            &mut m,
            0,
            op(U1000, fopen("pub/f0", true, true, true, false, 0o666))
        ),
        Expect::Ok(0)
    );
    // 5000 bytes: pages 0 and 1 may be touched, page 2 is SIGBUS.
    let w = |off, len| OpKind::FWrite { h: 0, off, len };
    assert_eq!(ex(&mut m, 1, op(U1000, w(0, 5000))), Expect::Ok(5000));
    let pw = crate::prng::payload(seed, 1, 5000);
    assert_eq!(
        ex(&mut m, 2, op(U1000, fmmap(0, 0, 3, true, true))),
        Expect::Ok(0)
    );
    // The mapping sees the write.
    assert_eq!(data(ex(&mut m, 3, op(U1000, fload(2, 0, 100)))), pw[..100]);
    // A store is in the file at once: pread and other processes' mappings see it.
    assert_eq!(
        exa(&mut m, 4, op(U1000, fstore(2, 10, 20))),
        (Expect::Ok(0), 0)
    );
    let st = crate::prng::payload(seed, 4, 20);
    let got = data(ex(&mut m, 5, op(U1000, fread(0, 0, 40))));
    assert_eq!(got[..10], pw[..10]);
    assert_eq!(got[10..30], st[..]);
    assert_eq!(got[30..], pw[30..40]);
    // Past the end in the last page: zeros, and a store there does not change the file.
    assert_eq!(
        data(ex(&mut m, 6, op(U1000, fload(2, 5000, 100)))),
        vec![0; 100]
    );
    assert_eq!(
        exa(&mut m, 7, op(U1000, fstore(2, 6000, 8))),
        (Expect::Ok(0), 0)
    );
    let tail = crate::prng::payload(seed, 7, 8);
    assert_eq!(
        data(ex(&mut m, 8, op(U1000, fread(0, 4000, 5000)))).len(),
        1000
    );
    assert_eq!(data(ex(&mut m, 9, op(U1000, fload(2, 6000, 8)))), tail);
    // Page 2: SIGBUS, probed in a child.
    assert_eq!(
        exa(&mut m, 10, op(U1000, fload(2, 8192, 1))),
        (Expect::Signal(libc::SIGBUS), ARG_PROBE)
    );
    // A store across into page 2 stores the bytes before it, then SIGBUS.
    assert_eq!(
        exa(&mut m, 11, op(U1000, fstore(2, 8190, 10))),
        (Expect::Signal(libc::SIGBUS), ARG_PROBE)
    );
    let across = crate::prng::payload(seed, 11, 10);
    assert_eq!(
        data(ex(&mut m, 12, op(U1000, fload(2, 8190, 2)))),
        across[..2]
    );
    // A load across is SIGBUS too (and shows nothing).
    assert_eq!(
        exa(&mut m, 13, op(U1000, fload(2, 8000, 300))),
        (Expect::Signal(libc::SIGBUS), ARG_PROBE)
    );
    // msync: within the mapping succeeds; bad flags or a start inside a page: EINVAL.
    let ms = |off, len, flags| OpKind::FMsync {
        m: 2,
        off,
        len,
        flags,
    };
    let flag = |f: i32| MSYNC_FLAGS.iter().position(|&x| x == f).unwrap() as u8;
    assert_eq!(
        ex(&mut m, 14, op(U1000, ms(0, 12288, flag(libc::MS_SYNC)))),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            15,
            op(
                U1000,
                ms(4096, 1, flag(libc::MS_ASYNC | libc::MS_INVALIDATE))
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(&mut m, 16, op(U1000, ms(4096, 1, flag(0)))),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(&mut m, 17, op(U1000, ms(1, 100, flag(libc::MS_SYNC)))),
        Expect::Err(libc::EINVAL)
    );
    assert_eq!(
        ex(
            &mut m,
            18,
            op(U1000, ms(0, 100, flag(libc::MS_SYNC | libc::MS_ASYNC)))
        ),
        Expect::Err(libc::EINVAL)
    );
    assert_eq!(
        ex(&mut m, 19, op(U1000, ms(0, 100, 7))),
        Expect::Err(libc::EINVAL)
    );
    // Past the mapping: not generated, does not apply.
    assert!(m.step(20, &op(U1000, fload(2, 12288, 1))).is_none());
    assert!(m.step(21, &op(U1000, ms(0, 12289, 0))).is_none());
}

#[test]
fn riofs_truncation_zeroes_the_tail_and_moves_the_sigbus_line() {
    let mut m = fs_model();
    let seed = m.seed;
    assert_eq!(
        ex(
            &mut m,
            0,
            op(U1000, fopen("pub/f0", true, true, true, false, 0o666))
        ),
        Expect::Ok(0)
    );
    let w = |off, len| OpKind::FWrite { h: 0, off, len };
    let tr = |size| OpKind::FTruncate { h: 0, size };
    assert_eq!(ex(&mut m, 1, op(U1000, w(0, 5000))), Expect::Ok(5000));
    // A mapping made past the end of the file: four pages, two of them beyond it.
    assert_eq!(
        ex(&mut m, 2, op(U1000, fmmap(0, 0, 4, true, true))),
        Expect::Ok(0)
    );
    let stored = |m: &mut Model, i, off, len| {
        assert_eq!(
            exa(m, i, op(U1000, fstore(2, off, len))),
            (Expect::Ok(0), 0)
        );
        crate::prng::payload(seed, i, len as usize)
    };
    let t = stored(&mut m, 3, 7000, 4);
    // The same size: nothing changes, not even the tail.
    assert_eq!(ex(&mut m, 4, op(U1000, tr(5000))), Expect::Ok(0));
    assert_eq!(data(ex(&mut m, 5, op(U1000, fload(2, 7000, 4)))), t);
    // Shrinking into page 1: what lies past the new end is zero; page 2.. is gone.
    let t = stored(&mut m, 6, 4200, 4);
    assert_eq!(ex(&mut m, 7, op(U1000, tr(4100))), Expect::Ok(0));
    assert_eq!(
        data(ex(&mut m, 8, op(U1000, fload(2, 4100, 4092)))),
        vec![0; 4092]
    );
    let _ = t;
    // Shrinking to a page boundary: page 1 is SIGBUS now.
    assert_eq!(ex(&mut m, 9, op(U1000, tr(4096))), Expect::Ok(0));
    assert_eq!(
        exa(&mut m, 10, op(U1000, fload(2, 4096, 1))).0,
        Expect::Signal(libc::SIGBUS)
    );
    // Growing: the new pages are there, zero; the old bytes stay.
    assert_eq!(
        ex(
            &mut m,
            11,
            op(
                U1000,
                OpKind::Truncate {
                    path: p("pub/f0"),
                    size: 3 * 4096 + 1
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        data(ex(&mut m, 12, op(U1000, fload(2, 4096, 3 * 4096)))),
        vec![0; 3 * 4096]
    );
    // A tail store, then a write that starts at the end: the tail past the write stays...
    assert_eq!(ex(&mut m, 13, op(U1000, tr(100))), Expect::Ok(0));
    let t = stored(&mut m, 14, 3000, 4);
    assert_eq!(ex(&mut m, 15, op(U1000, w(100, 10))), Expect::Ok(10));
    assert_eq!(data(ex(&mut m, 16, op(U1000, fload(2, 3000, 4)))), t);
    // ... and the file still ends at 110 with no trace of it.
    assert_eq!(
        data(ex(&mut m, 17, op(U1000, fread(0, 0, 5000)))).len(),
        110
    );
    // A write that starts past the end zeroes the tail first: the gap reads as zeros.
    assert_eq!(ex(&mut m, 18, op(U1000, w(3500, 10))), Expect::Ok(10));
    let d = data(ex(&mut m, 19, op(U1000, fread(0, 110, 5000))));
    assert_eq!(d.len(), 3400);
    assert!(d[..3390].iter().all(|&b| b == 0));
    assert_eq!(d[3390..], crate::prng::payload(seed, 18, 10)[..]);
    // O_TRUNC empties it: everything is SIGBUS.
    assert_eq!(
        ex(
            &mut m,
            20,
            op(
                U1000,
                OpKind::FOpen {
                    path: p("pub/f0"),
                    flags: OFlags {
                        read: false,
                        write: true,
                        creat: false,
                        excl: false,
                        trunc: true,
                        append: false
                    },
                    mode: 0
                }
            )
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        exa(&mut m, 21, op(U1000, fstore(2, 0, 1))).0,
        Expect::Signal(libc::SIGBUS)
    );
}

#[test]
fn riofs_mappings_outlive_close_and_unlink_and_are_inherited() {
    let mut m = fs_model();
    let seed = m.seed;
    assert_eq!(
        ex(
            &mut m,
            0,
            op(U1000, fopen("u1000/f1", true, true, true, false, 0o600))
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(&mut m, 1, op(U1000, OpKind::FTruncate { h: 0, size: 8192 })),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(&mut m, 2, op(U1000, fmmap(0, 1, 1, true, true))),
        Expect::Ok(0)
    );
    let ino = m.fmaps(U1000)[0].ino;
    // Closed and unlinked: the mapping still holds the file.
    assert_eq!(
        ex(&mut m, 3, op(U1000, OpKind::FClose { h: 0 })),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            4,
            op(
                U1000,
                OpKind::Unlink {
                    path: p("u1000/f1")
                }
            )
        ),
        Expect::Ok(0)
    );
    assert!(m.fs.as_ref().unwrap().nodes.contains_key(&ino));
    assert!(m.fs.as_ref().unwrap().names_of(ino).is_empty());
    assert_eq!(
        exa(&mut m, 5, op(U1000, fstore(2, 0, 16))),
        (Expect::Ok(0), 0)
    );
    let s5 = crate::prng::payload(seed, 5, 16);
    // A child inherits the mapping: it sees the store, and its stores are the parent's.
    assert_eq!(ex(&mut m, 6, op(U1000, OpKind::Fork)), Expect::AnyOk);
    let child = CHILD_BASE + 6;
    assert_eq!(data(ex(&mut m, 7, op(child, fload(2, 0, 16)))), s5);
    assert_eq!(
        exa(&mut m, 8, op(child, fstore(2, 8, 16))),
        (Expect::Ok(0), 0)
    );
    let s8 = crate::prng::payload(seed, 8, 16);
    let got = data(ex(&mut m, 9, op(U1000, fload(2, 0, 24))));
    assert_eq!(got[..8], s5[..8]);
    assert_eq!(got[8..], s8[..]);
    // The parent unmaps; the child's copy still holds the file.
    assert_eq!(
        ex(&mut m, 10, op(U1000, OpKind::FMunmap { m: 2 })),
        Expect::Ok(0)
    );
    assert!(m.fs.as_ref().unwrap().nodes.contains_key(&ino));
    assert_eq!(data(ex(&mut m, 11, op(child, fload(2, 8, 16)))), s8);
    // When the child exits, the last holder is gone and so is the file.
    assert_eq!(
        ex(&mut m, 12, op(U1000, OpKind::Exit { child })),
        Expect::Ok(0)
    );
    assert!(!m.fs.as_ref().unwrap().nodes.contains_key(&ino));
    assert!(m.fs.as_ref().unwrap().files.is_empty());

    // A mapping's stores stay in the file after munmap, and the tree shows them.
    assert_eq!(
        ex(
            &mut m,
            20,
            op(U1001, fopen("pub/f2", true, true, true, false, 0o644))
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(
            &mut m,
            21,
            op(U1001, OpKind::FTruncate { h: 20, size: 300 })
        ),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(&mut m, 22, op(U1001, fmmap(20, 0, 1, true, true))),
        Expect::Ok(0)
    );
    assert_eq!(
        exa(&mut m, 23, op(U1001, fstore(22, 100, 50))),
        (Expect::Ok(0), 0)
    );
    assert_eq!(
        ex(&mut m, 24, op(U1001, OpKind::FMunmap { m: 22 })),
        Expect::Ok(0)
    );
    assert_eq!(
        ex(&mut m, 25, op(U1001, OpKind::FClose { h: 20 })),
        Expect::Ok(0)
    );
    let l = m.fs.as_ref().unwrap().listing();
    let e = l.iter().find(|e| e.path == "pub/f2").unwrap();
    assert_eq!(e.data[100..150], crate::prng::payload(seed, 23, 50)[..]);
    assert!(e.data[..100].iter().all(|&b| b == 0));
}

#[test]
fn riofs_mapping_ops_are_generated_and_every_subset_runs() {
    let mut cfg = Config::defaults(16000);
    cfg.riofs = true;
    let mut words = std::collections::BTreeMap::<&str, u32>::new();
    let mut outcomes = std::collections::BTreeSet::new();
    let mut nonzero_loads = 0;
    for seed in 0..8 {
        let ops = generate(seed, 400, &cfg);
        let mut m = Model::new(cfg.clone(), seed);
        for (i, o) in ops.iter().enumerate() {
            let Some(pl) = m.step(i as u32, o) else {
                continue;
            };
            let w = o.kind.word();
            if !["fs-mmap", "fs-store", "fs-load", "fs-msync", "fs-munmap"].contains(&w) {
                continue;
            }
            *words.entry(w).or_default() += 1;
            if let Expect::Data(d) = &pl.expect {
                nonzero_loads += u32::from(d.iter().any(|&b| b != 0));
            }
            // The probe goes with the signals, and only with them.
            assert_eq!(
                pl.arg == ARG_PROBE,
                matches!(pl.expect, Expect::Signal(_)),
                "seed {seed} op {i}: {o}"
            );
            outcomes.insert(format!("{w}:{}", outcome_class_expect(&pl.expect)));
        }
        for keep in [2, 3] {
            let mut m = Model::new(cfg.clone(), seed);
            for (i, o) in ops.iter().enumerate().filter(|(i, _)| i % keep != 1) {
                let _ = m.step(i as u32, o);
            }
        }
    }
    for w in ["fs-mmap", "fs-store", "fs-load", "fs-msync", "fs-munmap"] {
        assert!(words.get(w).is_some_and(|&n| n >= 10), "{w}: {words:?}");
    }
    for o in [
        "fs-mmap:ok",
        "fs-mmap:EACCES",
        "fs-store:ok",
        "fs-store:SIGBUS",
        "fs-store:SIGSEGV",
        "fs-load:value",
        "fs-load:SIGBUS",
        "fs-msync:ok",
        "fs-msync:EINVAL",
        "fs-munmap:ok",
    ] {
        assert!(outcomes.contains(o), "no {o} in 8 seeds: {outcomes:?}");
    }
    assert!(nonzero_loads > 10, "loads see data: {nonzero_loads}");
}

/// A kernel whose mappings do not reach the file (stores lost, as with a stale copy) must
/// be caught on generated histories: it answers every store with success but does not
/// apply it; a later load or pread, or the tree at the end, shows the difference.
#[test]
fn a_kernel_that_loses_mapped_stores_is_caught() {
    let mut cfg = Config::defaults(16000);
    cfg.riofs = true;
    let (mut caught, mut storing) = (0, 0);
    for seed in 0..12 {
        let ops = generate(seed, 300, &cfg);
        let mut spec = Model::new(cfg.clone(), seed);
        let mut wrong = Model::new(cfg.clone(), seed);
        let (mut stored, mut seen) = (false, false);
        for (i, o) in ops.iter().enumerate() {
            let Some(e) = spec.step(i as u32, o) else {
                continue;
            };
            let reply = if matches!(o.kind, OpKind::FStore { .. }) && e.expect == Expect::Ok(0) {
                stored = true;
                Reply::Ok(0)
            } else {
                match wrong.step(i as u32, o).map(|p| p.expect) {
                    Some(Expect::Data(d)) => Reply::Data(d),
                    Some(Expect::Ok(v)) => Reply::Ok(v),
                    Some(Expect::Err(e)) => Reply::Err(e),
                    Some(Expect::Signal(s)) => Reply::Signal(s),
                    Some(Expect::FStat(s)) => Reply::FStat(s),
                    _ => continue,
                }
            };
            if check(&e.expect, &reply).is_err() {
                seen = true;
                break;
            }
        }
        // As the coordinator does after the history: the whole tree.
        let tree = |m: &Model| m.fs.as_ref().map(crate::fsmodel::Fs::listing);
        seen = seen || tree(&spec) != tree(&wrong);
        storing += u32::from(stored);
        caught += u32::from(seen);
    }
    assert!(
        storing >= 6,
        "only {storing} of 12 seeds store through a mapping"
    );
    // (A seed whose stored bytes were all truncated away, overwritten or only in a tail
    // before anything looked cannot show it.)
    assert!(
        caught >= 3 && 2 * caught >= storing,
        "only {caught} of {storing} seeds caught lost stores"
    );
}

#[test]
fn verify_accepts_a_torn_store_in_flight_and_nothing_else() {
    use crate::fsmodel::{torn_store_fits, Entry, FileStat};
    let st = FileStat {
        mode: 0o100644,
        uid: 0,
        gid: 0,
        nlink: 1,
        size: 4,
    };
    let e = |d: &[u8]| {
        vec![Entry {
            path: "pub/f0".into(),
            st: st.clone(),
            data: d.to_vec(),
        }]
    };
    let (a, b) = (e(&[0, 0, 0, 0]), e(&[1, 2, 3, 4]));
    assert!(torn_store_fits(&a, &b, &e(&[1, 2, 0, 0])));
    assert!(torn_store_fits(&a, &b, &e(&[0, 2, 0, 4])));
    assert!(torn_store_fits(&a, &b, &a));
    assert!(!torn_store_fits(&a, &b, &e(&[9, 2, 0, 0])));
    assert!(!torn_store_fits(&a, &b, &e(&[1, 2, 3])));
    assert!(!torn_store_fits(&a, &b, &[]));
}

/// The interactions the mapping ops are for do occur in generated histories: accesses
/// through a mapping whose descriptor was closed, whose file was unlinked, that a child
/// inherited, in the tail past the end, and SIGBUS where a truncation took pages away.
#[test]
fn riofs_mapping_interactions_are_generated() {
    let mut cfg = Config::defaults(16000);
    cfg.riofs = true;
    let mut seen = std::collections::BTreeMap::<&str, u32>::new();
    for seed in 0..16 {
        let ops = generate(seed, 300, &cfg);
        let mut m = Model::new(cfg.clone(), seed);
        // Mappings that a truncation took pages from.
        let mut shrunk = std::collections::BTreeSet::new();
        for (i, o) in ops.iter().enumerate() {
            let (kind, p) = (&o.kind, o.proc);
            let before: Vec<FMapView> = m.procs.keys().flat_map(|&q| m.fmaps(q)).collect();
            let sizes: Vec<u64> = before
                .iter()
                .map(|v| m.fs.as_ref().map_or(0, |fs| fs.size_of(v.h)))
                .collect();
            let view = match kind {
                OpKind::FStore { m: id, off, .. } | OpKind::FLoad { m: id, off, .. } => m
                    .fmaps(p)
                    .into_iter()
                    .find(|v| v.id == *id)
                    .map(|v| (v, u64::from(*off))),
                _ => None,
            };
            let Some(pl) = m.step(i as u32, o) else {
                continue;
            };
            let fs = m.fs.as_ref().unwrap();
            for (v, s0) in before.iter().zip(&sizes) {
                let (now, then) = (page_end(fs.size_of(v.h)), page_end(*s0));
                if fs.files.contains_key(&v.h) && now < then && now < v.first + v.len {
                    shrunk.insert(v.id);
                }
            }
            let Some((v, off)) = view else { continue };
            let ok = matches!(pl.expect, Expect::Ok(_) | Expect::Data(_));
            let mut note = |k| *seen.entry(k).or_default() += 1;
            if ok && !m.rfds(p).contains(&v.h) {
                note("after close");
            }
            if ok && fs.names_of(v.ino).is_empty() {
                note("after unlink");
            }
            if ok && p >= CHILD_BASE && v.id < p - CHILD_BASE {
                note("inherited");
            }
            if ok && v.first + off >= fs.size_of(v.h) {
                note("in the tail");
            }
            if pl.expect == Expect::Signal(libc::SIGBUS) && shrunk.contains(&v.id) {
                note("SIGBUS after a shrink");
            }
        }
    }
    for k in [
        "after close",
        "after unlink",
        "inherited",
        "in the tail",
        "SIGBUS after a shrink",
    ] {
        assert!(seen.get(k).is_some_and(|&n| n >= 2), "{k}: {seen:?}");
    }
}
