#!/usr/bin/env python3
"""Negative control for tests/tests/rio_security.rs: undoes each hardening fix of rio.ko in
a copy of the sources (one small edit per point of the hardening issue), so that
scripts/negative-control.sh can build that module and show every regression test failing
for its own reason. Usage: break-hardening.py DIR (a copy of rio_mod/)."""
import sys, pathlib

d = pathlib.Path(sys.argv[1])

def edit(name, old, new):
    p = d / name
    s = p.read_text()
    if old not in s:
        sys.exit(f"break-hardening: {name}: text not found (the module changed?):\n{old}")
    p.write_text(s.replace(old, new, 1))

# 1: copy to the user under the store's lock (the old read path): ABBA with mmap_lock.
edit("device.rs", """                    src.read(0, &mut buf[..pc.n])?;
                    store.slow_reads += 1;
                    Ok(Some(ReadStep::Bounced(pc.n)))""", """                    src.read(0, &mut buf[..pc.n])?;
                    store.slow_reads += 1;
                    let got = iov.copy_to_iter(&buf[..pc.n]);
                    Ok(Some(ReadStep::Direct(got)))""")
edit("device.rs", """                Ok(Some(ReadStep::Direct(n))) => {
                    iov.advance(n);""", """                Ok(Some(ReadStep::Direct(n))) => {""")
edit("device.rs", """                        if crate::sys::copy_to_user_nofault(dst, src).is_ok() {
                            return Ok(Some(ReadStep::Direct(pc.n)));""", """                        if crate::sys::copy_to_user_nofault(dst, src).is_ok() {
                            iov.advance(pc.n);
                            return Ok(Some(ReadStep::Direct(pc.n)));""")
# 2: identity in the caller's own namespace; uid 0 there is root.
edit("sys/cred.rs", "    let uid = Kuid::current_euid().into_raw().val;",
     "    let uid = Kuid::current_euid().into_uid_in_current_ns();")
edit("sys/cred.rs", "    let admin = unsafe { bindings::capable(CAP_SYS_ADMIN) };",
     "    let _ = unsafe { bindings::capable(CAP_SYS_ADMIN) };\n    let admin = uid == 0;")
# 3: no privilege checks (wild store, block devices, exclusive open, sync).
edit("device.rs", "        if !self.rio.options.allow_wild_store || !crate::sys::caller().admin {",
     "        if !self.rio.options.allow_wild_store {")
edit("device.rs", """        // administrator may create one.
        if !crate::sys::caller().admin {
            return Err(EPERM);
        }""", "")
edit("device.rs", """    fn blkdev_remove(&self) -> Result<isize> {
        if !crate::sys::caller().admin {
            return Err(EPERM);
        }""", "    fn blkdev_remove(&self) -> Result<isize> {")
edit("device.rs", """        if exclusive && !self.can_write {
            return Err(EACCES);
        }""", "")
edit("device.rs", "        let only = (!who.admin).then_some(who.uid);", "        let only = None::<u32>;\n        let _ = who;")
# 4: no per-user limits.
edit("device.rs", """    if who.admin {
        return Ok(());
    }
    let max_pages""", """    if who.admin || rio.options.max_user_objects > 0 {
        return Ok(());
    }
    let max_pages""")
# 5: a failed restore leaves the arena formatted with the disk's identity.
edit("service.rs", "                            drop(store.unformat());", "                            drop(store);")
# 6: disk entries and arena slots trusted.
edit("backing.rs", "        b.check_table(geo)?;", "        b.check_table(geo)?;\n        for q in b.quarantined.iter_mut() {\n            *q = false;\n        }")
edit("backing.rs", """fn data_pos(start: u64, i: u64) -> Result<u64> {
    DISK_DATA_START""", """fn data_pos(start: u64, i: u64) -> Result<u64> {
    if start > 0 {
        return Ok((DISK_DATA_START + start + i) * PAGE_SIZE as u64);
    }
    DISK_DATA_START""")
edit("store/recovery.rs", "                Ok((s, _)) if s.in_use() && s.pages() > self.geo.data_pages => {",
     "                Ok((s, _)) if s.in_use() && s.pages() > self.geo.data_pages && s.size == 0 => {")
edit("store/recovery.rs", "                    if s.in_use()\n                        && self",
     "                    if s.size == u64::MAX && s.in_use()\n                        && self")
# 7: format the arena first, then fail on the disk, leaving no state.
edit("service.rs", """        if let Some(b) = inner.backing.as_mut() {
            b.blank().inspect_err""", """        if let Some(b) = inner.backing.as_mut().filter(|_| force && !force) {
            b.blank().inspect_err""")
edit("service.rs", """                    if let Err(e) = b.initialize(uuid) {
                        pr_err!(""", """                    if let Err(e) = b.initialize(uuid) {
                        if force || !force {
                            return Err(e);
                        }
                        pr_err!(""")
# 8: VM_SHARED (refuses read-only maps), the sticky flag decides shrinking, no settling.
edit("device.rs", "        if flags & vm_flags::MAYSHARE == 0 {", "        if flags & vm_flags::SHARED == 0 {")
edit("store/mod.rs", "        if o.maps > 0 && pages_for(size) < o.slot.pages() {",
     "        if o.slot.flags & OBJ_MAPPED != 0 && pages_for(size) < o.slot.pages() {")
edit("store/mod.rs", """        if o.slot.flags & OBJ_MAPPED == 0 || o.wmaps > 0 {
            return Ok(());
        }""", """        if o.slot.flags & OBJ_MAPPED != 0 || o.slot.flags & OBJ_MAPPED == 0 {
            return Ok(());
        }""")
print("break-hardening: every fix undone in", d)
