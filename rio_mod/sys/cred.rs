// SPDX-License-Identifier: GPL-2.0

//! Who is calling: the caller's identity in the *initial* user namespace, and whether it
//! holds `CAP_SYS_ADMIN` there.
//!
//! Object owners are stored as initial-namespace uids (the value of the kernel's `kuid_t`),
//! so a process that made itself uid 0 in a user namespace of its own (`unshare -Ur`) is
//! still uid 1000 to rio.ko, and `capable()` (which checks against the initial namespace)
//! says no to it. What rio.ko reports back is mapped into the caller's namespace.

use kernel::bindings;
use kernel::task::Kuid;

use crate::abi::OVERFLOW_UID;

/// The capability that makes a caller a Rio administrator (format, block devices, sync of
/// everything, the debug wild store, access to every object).
const CAP_SYS_ADMIN: core::ffi::c_int = bindings::CAP_SYS_ADMIN as core::ffi::c_int;

/// The calling task's identity, as rio.ko's permission checks see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller {
    /// Effective uid in the initial user namespace.
    pub(crate) uid: u32,
    /// Holds `CAP_SYS_ADMIN` in the initial user namespace.
    pub(crate) admin: bool,
}

/// The identity of the current task.
pub(crate) fn caller() -> Caller {
    // A `kuid_t` *is* the uid in the initial user namespace (`from_kuid(&init_user_ns, k)`
    // is `k.val`), which is the namespace rio.ko's owners live in.
    let uid = Kuid::current_euid().into_raw().val;
    // SAFETY: `capable` only reads the current task's credentials; any capability number
    // is accepted. It checks against the initial user namespace and records the use
    // (PF_SUPERPRIV), as a privileged operation should.
    let admin = unsafe { bindings::capable(CAP_SYS_ADMIN) };
    Caller { uid, admin }
}

impl Caller {
    /// `uid` (an initial-namespace uid) as the caller's user namespace sees it: the
    /// overflow uid (65534) if it has no mapping there.
    pub(crate) fn show_uid(&self, uid: u32) -> u32 {
        // SAFETY: `current_user_ns` returns the current task's user namespace, which lives
        // as long as the task's credentials, that is, past this call;
        // `from_kuid_munged` only reads its uid map.
        let shown = unsafe {
            bindings::from_kuid_munged(bindings::current_user_ns(), bindings::kuid_t { val: uid })
        };
        if shown == u32::MAX {
            OVERFLOW_UID
        } else {
            shown
        }
    }
}
