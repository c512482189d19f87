//! What a state directory holds, for tools (`dc status`, `dc discard`): whether there is
//! a checkpoint, of which program, how old and how big, and forgetting it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::alloc::internal;
use crate::config::Config;
use crate::error::Result;
use crate::image::{self, Image, STATE_FINISHED, STATE_VALID};
use crate::reexec::ExecInfo;

/// The image's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    /// Created, no checkpoint committed yet.
    Empty,
    /// A checkpoint the program did not finish from: the next run resumes it.
    Valid,
    /// The program exited normally: the next run starts afresh.
    Finished,
}

/// A state directory's checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    /// Its state.
    pub state: ImageState,
    /// Checkpoints committed.
    pub seq: u64,
    /// How the program was first started (the `exec` file), if readable.
    pub exec: Option<ExecInfo>,
    /// Nanoseconds since the last commit (CLOCK_MONOTONIC; `None` if it was taken before
    /// the last boot).
    pub age_ns: Option<u64>,
    /// Bytes of the image's backings (members and undo log; sparse for the file store).
    pub image_bytes: u64,
    /// Bytes they occupy on disk (the file store; 0 for Rio objects).
    pub disk_bytes: u64,
    /// The last checkpoint is *prepared* for a distributed commit of this epoch (a member
    /// of a computation crashed in a 2PC round): the next run asks the coordinator
    /// whether to finish or roll it back. `seq` and the age are unknown until then.
    pub prepared: Option<u64>,
}

/// The checkpoint in `cfg`'s store, if an image exists. Opening it runs Vista's recovery
/// (a checkpoint that was being written when the program died is rolled back), as the
/// next run would.
pub fn inspect(cfg: &Config) -> Result<Option<CheckpointInfo>> {
    let store = internal(|| cfg.open_store())?;
    if !image::exists(store.as_ref()) {
        return Ok(None);
    }
    let ctl = image::CtlLayout::new(cfg.fundo_capacity, cfg.input_capacity);
    let img = match internal(|| Image::open(store.as_ref(), ctl)) {
        Ok(img) => img,
        Err(crate::Error::Vista(vista::Error::Prepared { tag })) => {
            let (image_bytes, disk_bytes) = backing_sizes(store.dir());
            return Ok(Some(CheckpointInfo {
                state: ImageState::Valid,
                seq: 0,
                exec: ExecInfo::load(store.dir()).ok(),
                age_ns: None,
                image_bytes,
                disk_bytes,
                prepared: Some(tag),
            }));
        }
        Err(e) => return Err(e),
    };
    img.check_header()?;
    // SAFETY: the header is mapped while `img` lives.
    let (st, seq, commit_ns) = unsafe {
        let h = &*img.header();
        (h.state, h.seq, h.commit_ns)
    };
    let now = crate::sys::mono_ns();
    let (image_bytes, disk_bytes) = backing_sizes(store.dir());
    Ok(Some(CheckpointInfo {
        state: match st {
            STATE_VALID => ImageState::Valid,
            STATE_FINISHED => ImageState::Finished,
            _ => ImageState::Empty,
        },
        seq,
        exec: ExecInfo::load(store.dir()).ok(),
        age_ns: (commit_ns > 0 && commit_ns <= now).then(|| now - commit_ns),
        image_bytes: if image_bytes > 0 {
            image_bytes
        } else {
            img.members.iter().map(|m| m.len as u64).sum()
        },
        disk_bytes,
        prepared: None,
    }))
}

/// Sizes of the file store's backings in `dir` (apparent, on disk).
fn backing_sizes(dir: &Path) -> (u64, u64) {
    let mut apparent = 0;
    let mut disk = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with(".vista") {
                if let Ok(m) = e.metadata() {
                    apparent += m.len();
                    disk += m.blocks() * 512;
                }
            }
        }
    }
    (apparent, disk)
}

/// Forgets the checkpoint: deletes the image (for the Rio store, its objects) and the
/// state directory with everything in it (the `exec` file, the graveyard of delayed
/// unlinks, the trace). The next run starts afresh.
pub fn discard(cfg: &Config) -> Result<()> {
    let store = internal(|| cfg.open_store())?;
    store.clear()?;
    std::fs::remove_dir_all(store.dir()).map_err(|source| crate::Error::Io {
        what: "remove the state directory",
        source,
    })
}
