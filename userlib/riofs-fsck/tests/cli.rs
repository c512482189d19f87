//! The command line: output, exit codes (0 clean or warnings, 1 errors, 2 usage or I/O),
//! and --repair writing the image in place.

use std::path::Path;
use std::process::Command;

use rio_format::riofs::{Inode, Super, BLOCK, LOG_MAGIC, ROOT_INO, SUPER_SIZE, S_IFDIR};

const BLOCKS: u32 = 200;

/// What mkfs leaves: superblock, log magic, bitmap (metadata and past-the-end bits set),
/// an empty root.
fn mkfs() -> (Vec<u8>, Super) {
    let sb = Super::for_blocks(BLOCKS, [1; 16], 7).expect("geometry");
    let mut b = vec![0u8; BLOCKS as usize * BLOCK];
    sb.encode(&mut b[..SUPER_SIZE]);
    let lp = sb.log_pos() as usize;
    b[lp + 8..lp + 16].copy_from_slice(&LOG_MAGIC.to_le_bytes());
    let base = sb.bitmap_start as usize * BLOCK;
    for bit in 0..sb.bitmap_blocks as usize * BLOCK * 8 {
        if bit < sb.data_start as usize || bit >= sb.blocks as usize {
            b[base + bit / 8] |= 1 << (bit % 8);
        }
    }
    let root = Inode {
        mode: S_IFDIR | 0o755,
        nlink: 2,
        ..Inode::default()
    };
    let at = sb.inode_pos(ROOT_INO).expect("root") as usize;
    root.encode(&mut b[at..at + 128]);
    (b, sb)
}

fn fsck(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_riofs-fsck"))
        .args(args)
        .output()
        .expect("run riofs-fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn clean_errors_and_io_errors_have_their_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("img");
    let (mut b, sb) = mkfs();
    std::fs::write(&img, &b).expect("write");
    let (code, out) = fsck(&[path(&img)]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().last(), Some("clean"), "{out}");
    assert!(out.contains("riofs of 200 blocks"), "{out}");

    // One flipped byte of the root inode: an error, exit 1.
    let at = sb.inode_pos(ROOT_INO).expect("root") as usize;
    b[at + 1] ^= 0x20;
    std::fs::write(&img, &b).expect("write");
    let (code, out) = fsck(&["-q", path(&img)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: inode 1: record checksum mismatch"),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.ends_with("errors, 0 warnings")),
        "{out}"
    );

    // No such file, no arguments, both an image and a disk: exit 2.
    let (code, out) = fsck(&[path(&dir.path().join("missing"))]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("riofs-fsck: reading"), "{out}");
    assert_eq!(fsck(&[]).0, 2);
    assert_eq!(fsck(&[path(&img), "--disk", "x", "--object", "y"]).0, 2);
    // A file that is not a Rio disk.
    let (code, out) = fsck(&["--disk", path(&img), "--object", "data"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a Rio backing disk"), "{out}");
}

#[test]
fn warnings_exit_zero_and_repair_fixes_them_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("img");
    let (mut b, sb) = mkfs();
    // A leaked block: marked used, reached by nothing.
    let leak = sb.data_start + 3;
    b[sb.bitmap_start as usize * BLOCK + leak as usize / 8] |= 1 << (leak % 8);
    std::fs::write(&img, &b).expect("write");
    let (code, out) = fsck(&[path(&img)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "warning: bitmap: block {leak} marked used but unreachable"
        )),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("0 errors, 1 warning"), "{out}");
    assert_eq!(
        std::fs::read(&img).expect("read"),
        b,
        "a check changes nothing"
    );

    let (code, out) = fsck(&["--repair", path(&img)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 bitmap bits changed"), "{out}");
    assert_eq!(out.lines().last(), Some("clean"), "{out}");
    let (code, out) = fsck(&[path(&img)]);
    assert_eq!((code, out.lines().last()), (0, Some("clean")), "{out}");
    assert_eq!(fsck(&["--repair", "--disk", "d", "--object", "o"]).0, 2);
}
