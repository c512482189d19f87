// SPDX-License-Identifier: GPL-2.0
/*
 * riofs: the VFS side of the Rio file system, in C because the kernel's Rust crate has
 * no file system abstraction (as binder keeps rust_binderfs.c). Only glue lives here: the
 * file system type and superblock, the dentry cache (riofs keeps the whole tree in it, as
 * ramfs does, rebuilt from the arena at mount), iov_iter copies through a bounce buffer,
 * and the page-fault handler that maps arena frames. Every decision about the file system
 * -- its format, transactions, allocation, recovery -- is made in Rust (the riofs/ directory), through
 * the riofs_rs_* calls below.
 *
 * Locks: the VFS's i_rwsem and the mapping's invalidate_lock are taken before any
 * riofs_rs_* call (which takes the volume's mutex inside); user memory is only touched
 * here, outside the volume's mutex.
 */
#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/fs_parser.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/namei.h>
#include <linux/pagemap.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/statfs.h>
#include <linux/string.h>
#include <linux/uio.h>
#include <linux/vmalloc.h>
#include <linux/security.h>

#define RIOFS_BOUNCE (256 * 1024)
#define RIOFS_MAX_BYTES (((u64)10 + 1024 + 1024 * 1024) * 4096)

/* Mirrors riofs::ops::RiofsAttr (checked in Rust: 80 bytes). */
struct riofs_attr {
	u64 size, blocks;
	s64 atime_sec, mtime_sec, ctime_sec;
	u32 atime_nsec, mtime_nsec, ctime_nsec;
	u32 mode, uid, gid, nlink, rdev, generation, pad;
};
static_assert(sizeof(struct riofs_attr) == 80);

/* riofs::ops::SET_* */
#define RSET_MODE 1
#define RSET_UID 2
#define RSET_GID 4
#define RSET_SIZE 8
#define RSET_ATIME 16
#define RSET_MTIME 32
#define RSET_CTIME 64

/* The Rust side (riofs/vfs.rs). */
int riofs_rs_mount(const void *rio, const u8 *name, u32 len, u64 size, s64 sec, u32 nsec,
		   const void **vol);
void riofs_rs_unmount(const void *vol);
int riofs_rs_getattr(const void *vol, u32 ino, struct riofs_attr *a);
int riofs_rs_dir_next(const void *vol, u32 dir, u64 *cookie, u8 *name, u32 *len, u32 *ino,
		      u32 *dtype);
int riofs_rs_mknod(const void *vol, u32 dir, const u8 *name, u32 len, u32 mode, u32 uid,
		   u32 gid, u32 rdev, const u8 *target, u32 tlen, s64 sec, u32 nsec, u32 *ino,
		   u64 *slot);
int riofs_rs_link(const void *vol, u32 ino, u32 dir, const u8 *name, u32 len, s64 sec,
		  u32 nsec, u64 *slot);
int riofs_rs_unlink(const void *vol, u32 dir, const u8 *name, u32 len, u64 hint, u32 ino,
		    int is_dir, s64 sec, u32 nsec);
int riofs_rs_rename(const void *vol, u32 odir, const u8 *oname, u32 olen, u64 ohint, u32 ino,
		    u32 ndir, const u8 *nname, u32 nlen, u64 nhint, u32 target, s64 sec,
		    u32 nsec, u64 *nslot);
int riofs_rs_exchange(const void *vol, u32 odir, const u8 *oname, u32 olen, u64 ohint,
		      u32 ino, u32 ndir, const u8 *nname, u32 nlen, u64 nhint, u32 target,
		      s64 sec, u32 nsec, u64 *oslot, u64 *nslot);
int riofs_rs_setattr(const void *vol, u32 ino, u32 valid, const struct riofs_attr *a);
long riofs_rs_read(const void *vol, u32 ino, u64 pos, u8 *buf, u32 len);
long riofs_rs_write(const void *vol, u32 ino, u64 pos, const u8 *buf, u32 len, s64 sec,
		    u32 nsec, u64 *size);
int riofs_rs_fault(const void *vol, u32 ino, u64 pgoff, u64 *pfn);
void riofs_rs_evict(const void *vol, u32 ino);
void riofs_rs_statfs(const void *vol, u64 *out);
int riofs_rs_readlink(const void *vol, u32 ino, u8 *buf, u32 len);

/* Provided to Rust (riofs/vfs.rs). */
int rio_riofs_register_fs(const void *rio, u32 magic);
void rio_riofs_unregister_fs(void);

static const void *riofs_rio;
/* statfs's f_type: abi.rs's RIOFS_MAGIC, handed over at registration (one definition). */
static u32 riofs_magic;

static const struct super_operations riofs_sops;
static const struct inode_operations riofs_dir_iops;
static const struct inode_operations riofs_file_iops;
static const struct inode_operations riofs_symlink_iops;
static const struct inode_operations riofs_special_iops;
static const struct file_operations riofs_file_fops;
static const struct file_operations riofs_dir_fops;
static const struct vm_operations_struct riofs_vm_ops;

static inline const void *VOL(struct super_block *sb)
{
	return sb->s_fs_info;
}

/* The directory slot of a dentry's entry, as a hint (the Rust side checks it). */
static inline u64 slot_of(struct dentry *d)
{
	return (u64)(uintptr_t)d->d_fsdata;
}

static inline void set_slot(struct dentry *d, u64 slot)
{
	d->d_fsdata = (void *)(uintptr_t)slot;
}

static void now_of(s64 *sec, u32 *nsec)
{
	struct timespec64 t;

	ktime_get_real_ts64(&t);
	*sec = t.tv_sec;
	*nsec = t.tv_nsec;
}

/* Sets the VFS inode's attributes from the arena's. */
static void apply_attr(struct inode *inode, const struct riofs_attr *a)
{
	inode->i_mode = a->mode;
	i_uid_write(inode, a->uid);
	i_gid_write(inode, a->gid);
	set_nlink(inode, a->nlink);
	i_size_write(inode, a->size);
	inode->i_blocks = a->blocks;
	inode_set_atime(inode, a->atime_sec, a->atime_nsec);
	inode_set_mtime(inode, a->mtime_sec, a->mtime_nsec);
	inode_set_ctime(inode, a->ctime_sec, a->ctime_nsec);
	inode->i_generation = a->generation;
}

static int refresh(struct inode *inode)
{
	struct riofs_attr a;
	int err = riofs_rs_getattr(VOL(inode->i_sb), inode->i_ino, &a);

	if (!err)
		apply_attr(inode, &a);
	return err;
}

static struct inode *riofs_iget(struct super_block *sb, u32 ino)
{
	struct riofs_attr a;
	struct inode *inode;
	int err;

	inode = iget_locked(sb, ino);
	if (!inode)
		return ERR_PTR(-ENOMEM);
	if (!(inode_state_read_once(inode) & I_NEW))
		return inode;
	err = riofs_rs_getattr(VOL(sb), ino, &a);
	if (err) {
		iget_failed(inode);
		return ERR_PTR(err);
	}
	apply_attr(inode, &a);
	switch (a.mode & S_IFMT) {
	case S_IFDIR:
		inode->i_op = &riofs_dir_iops;
		inode->i_fop = &riofs_dir_fops;
		break;
	case S_IFREG:
		inode->i_op = &riofs_file_iops;
		inode->i_fop = &riofs_file_fops;
		break;
	case S_IFLNK:
		inode->i_op = &riofs_symlink_iops;
		break;
	default:
		inode->i_op = &riofs_special_iops;
		init_special_inode(inode, a.mode, new_decode_dev(a.rdev));
		break;
	}
	unlock_new_inode(inode);
	return inode;
}

/* ---- the namespace ---------------------------------------------------------------------- */

static int riofs_new(struct inode *dir, struct dentry *dentry, umode_t mode, dev_t dev,
		     const char *target)
{
	u32 uid = from_kuid(&init_user_ns, current_fsuid());
	u32 gid = from_kgid(&init_user_ns, current_fsgid());
	struct inode *inode;
	u32 ino, tlen = target ? strlen(target) : 0;
	u64 slot;
	s64 sec;
	u32 nsec;
	int err;

	if (dentry->d_name.len > 255)
		return -ENAMETOOLONG;
	if (uid == (u32)-1 || gid == (u32)-1)
		return -EOVERFLOW;
	/* As inode_init_owner: a set-group-ID directory passes its group (and, to a
	 * subdirectory, the bit) down. */
	if (dir->i_mode & S_ISGID) {
		gid = i_gid_read(dir);
		if (S_ISDIR(mode))
			mode |= S_ISGID;
	}
	now_of(&sec, &nsec);
	err = riofs_rs_mknod(VOL(dir->i_sb), dir->i_ino, dentry->d_name.name,
			     dentry->d_name.len, mode, uid, gid, new_encode_dev(dev),
			     (const u8 *)target, tlen, sec, nsec, &ino, &slot);
	if (err)
		return err;
	inode = riofs_iget(dir->i_sb, ino);
	if (IS_ERR(inode))
		return PTR_ERR(inode);
	set_slot(dentry, slot);
	d_make_persistent(dentry, inode); /* the dentry owns our inode reference now */
	return refresh(dir);
}

static int riofs_mknod(struct mnt_idmap *idmap, struct inode *dir, struct dentry *dentry,
		       umode_t mode, dev_t dev)
{
	return riofs_new(dir, dentry, mode, dev, NULL);
}

static int riofs_create(struct mnt_idmap *idmap, struct inode *dir, struct dentry *dentry,
			umode_t mode)
{
	return riofs_new(dir, dentry, mode | S_IFREG, 0, NULL);
}

static struct dentry *riofs_mkdir(struct mnt_idmap *idmap, struct inode *dir,
				  struct dentry *dentry, umode_t mode)
{
	return ERR_PTR(riofs_new(dir, dentry, mode | S_IFDIR, 0, NULL));
}

static int riofs_symlink(struct mnt_idmap *idmap, struct inode *dir, struct dentry *dentry,
			 const char *target)
{
	size_t n = strlen(target);

	if (n == 0 || n >= PAGE_SIZE)
		return -ENAMETOOLONG;
	return riofs_new(dir, dentry, S_IFLNK | 0777, 0, target);
}

static int riofs_link(struct dentry *old, struct inode *dir, struct dentry *dentry)
{
	struct inode *inode = d_inode(old);
	u64 slot;
	s64 sec;
	u32 nsec;
	int err;

	now_of(&sec, &nsec);
	err = riofs_rs_link(VOL(dir->i_sb), inode->i_ino, dir->i_ino, dentry->d_name.name,
			    dentry->d_name.len, sec, nsec, &slot);
	if (err)
		return err;
	ihold(inode);
	set_slot(dentry, slot);
	d_make_persistent(dentry, inode);
	refresh(inode);
	return refresh(dir);
}

static int riofs_remove(struct inode *dir, struct dentry *dentry, bool is_dir)
{
	struct inode *inode = d_inode(dentry);
	s64 sec;
	u32 nsec;
	int err;

	if (is_dir && !simple_empty(dentry))
		return -ENOTEMPTY;
	now_of(&sec, &nsec);
	err = riofs_rs_unlink(VOL(dir->i_sb), dir->i_ino, dentry->d_name.name,
			      dentry->d_name.len, slot_of(dentry), inode->i_ino, is_dir, sec,
			      nsec);
	if (err)
		return err;
	if (is_dir)
		simple_rmdir(dir, dentry);
	else
		simple_unlink(dir, dentry);
	refresh(inode);
	if (is_dir)
		clear_nlink(inode);
	return refresh(dir);
}

static int riofs_unlink(struct inode *dir, struct dentry *dentry)
{
	return riofs_remove(dir, dentry, false);
}

static int riofs_rmdir(struct inode *dir, struct dentry *dentry)
{
	return riofs_remove(dir, dentry, true);
}

/*
 * renameat2(RENAME_EXCHANGE): the VFS has checked permissions, that both names exist and
 * that neither directory is inside the other's subtree; the arena swaps the two entries'
 * inodes in one transaction, then the dentry cache follows (simple_rename_exchange
 * moves a directory's count between the parents; d_exchange in the VFS swaps the
 * dentries, so each takes the other's slot hint).
 */
static int riofs_exchange(struct mnt_idmap *idmap, struct inode *odir, struct dentry *old,
			  struct inode *ndir, struct dentry *new, unsigned int flags)
{
	struct inode *a = d_inode(old), *b = d_inode(new);
	u64 oslot, nslot;
	s64 sec;
	u32 nsec;
	int err;

	now_of(&sec, &nsec);
	err = riofs_rs_exchange(VOL(odir->i_sb), odir->i_ino, old->d_name.name, old->d_name.len,
				slot_of(old), a->i_ino, ndir->i_ino, new->d_name.name,
				new->d_name.len, slot_of(new), b->i_ino, sec, nsec, &oslot, &nslot);
	if (err)
		return err;
	err = simple_rename(idmap, odir, old, ndir, new, flags);
	if (err)
		pr_err("riofs: dentry cache out of step after an exchange (error %d)\n", err);
	/* After the VFS's d_exchange, `old` names ndir/nname and `new` names odir/oname. */
	set_slot(old, nslot);
	set_slot(new, oslot);
	refresh(a);
	refresh(b);
	refresh(odir);
	if (ndir != odir)
		refresh(ndir);
	return 0;
}

static int riofs_rename(struct mnt_idmap *idmap, struct inode *odir, struct dentry *old,
			struct inode *ndir, struct dentry *new, unsigned int flags)
{
	struct inode *inode = d_inode(old);
	struct inode *target = d_inode(new);
	u64 nslot;
	s64 sec;
	u32 nsec;
	int err;

	/* RENAME_WHITEOUT is not supported (yet): it is overlayfs's, and needs a whiteout
	 * device node created in the same transaction. */
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if (flags & RENAME_EXCHANGE)
		return riofs_exchange(idmap, odir, old, ndir, new, flags);
	if (target && d_is_dir(new) && !simple_empty(new))
		return -ENOTEMPTY;
	now_of(&sec, &nsec);
	err = riofs_rs_rename(VOL(odir->i_sb), odir->i_ino, old->d_name.name, old->d_name.len,
			      slot_of(old), inode->i_ino, ndir->i_ino, new->d_name.name,
			      new->d_name.len, target ? slot_of(new) : 0,
			      target ? target->i_ino : 0, sec, nsec, &nslot);
	if (err)
		return err;
	/* The dentry cache's bookkeeping (nlink, dropping the replaced dentry), then the
	 * arena's values; the VFS moves the dentry afterwards. */
	err = simple_rename(idmap, odir, old, ndir, new, flags);
	if (err)
		pr_err("riofs: dentry cache out of step after a rename (error %d)\n", err);
	set_slot(old, nslot);
	refresh(inode);
	if (target) {
		refresh(target);
		if (S_ISDIR(target->i_mode))
			clear_nlink(target);
	}
	refresh(odir);
	if (ndir != odir)
		refresh(ndir);
	return 0;
}

/* ---- attributes ------------------------------------------------------------------------- */

static int riofs_setattr(struct mnt_idmap *idmap, struct dentry *dentry, struct iattr *ia)
{
	struct inode *inode = d_inode(dentry);
	struct address_space *mapping = inode->i_mapping;
	struct riofs_attr a = {};
	u32 valid = 0;
	bool resize;
	int err;

	err = setattr_prepare(idmap, dentry, ia);
	if (err)
		return err;
	resize = (ia->ia_valid & ATTR_SIZE) && ia->ia_size != i_size_read(inode);
	if (resize && ia->ia_size > RIOFS_MAX_BYTES)
		return -EFBIG;
	/* setattr_copy applies the VFS's rules (ATTR_KILL_SGID and the like) to the VFS
	 * inode; the result is what the arena gets. If the arena refuses, the VFS inode is
	 * set back from the arena. */
	setattr_copy(idmap, inode, ia);
	if (ia->ia_valid & ATTR_MODE)
		valid |= RSET_MODE;
	if (ia->ia_valid & ATTR_UID)
		valid |= RSET_UID;
	if (ia->ia_valid & ATTR_GID)
		valid |= RSET_GID;
	if (ia->ia_valid & ATTR_ATIME)
		valid |= RSET_ATIME;
	if (ia->ia_valid & ATTR_MTIME)
		valid |= RSET_MTIME;
	if (ia->ia_valid & ATTR_CTIME)
		valid |= RSET_CTIME;
	a.mode = inode->i_mode;
	a.uid = i_uid_read(inode);
	a.gid = i_gid_read(inode);
	a.atime_sec = inode_get_atime_sec(inode);
	a.atime_nsec = inode_get_atime_nsec(inode);
	a.mtime_sec = inode_get_mtime_sec(inode);
	a.mtime_nsec = inode_get_mtime_nsec(inode);
	a.ctime_sec = inode_get_ctime_sec(inode);
	a.ctime_nsec = inode_get_ctime_nsec(inode);
	if (resize) {
		valid |= RSET_SIZE;
		a.size = ia->ia_size;
		/* No process may keep a page the truncation frees: unmap them first, and keep
		 * faults out (invalidate_lock) until the blocks are gone. */
		filemap_invalidate_lock(mapping);
		if (ia->ia_size < i_size_read(inode))
			unmap_mapping_range(mapping, round_up(ia->ia_size, PAGE_SIZE), 0, 1);
		err = riofs_rs_setattr(VOL(inode->i_sb), inode->i_ino, valid, &a);
		filemap_invalidate_unlock(mapping);
	} else {
		err = riofs_rs_setattr(VOL(inode->i_sb), inode->i_ino, valid, &a);
	}
	refresh(inode);
	return err;
}

static int riofs_getattr(struct mnt_idmap *idmap, const struct path *path, struct kstat *stat,
			 u32 request_mask, unsigned int query_flags)
{
	struct inode *inode = d_inode(path->dentry);

	generic_fillattr(idmap, request_mask, inode, stat);
	stat->blksize = PAGE_SIZE;
	return 0;
}

/* ---- symbolic links --------------------------------------------------------------------- */

static const char *riofs_get_link(struct dentry *dentry, struct inode *inode,
				  struct delayed_call *done)
{
	char *buf;
	int n;

	if (!dentry)
		return ERR_PTR(-ECHILD);
	buf = kmalloc(PAGE_SIZE, GFP_KERNEL);
	if (!buf)
		return ERR_PTR(-ENOMEM);
	n = riofs_rs_readlink(VOL(inode->i_sb), inode->i_ino, buf, PAGE_SIZE - 1);
	if (n < 0) {
		kfree(buf);
		return ERR_PTR(n);
	}
	buf[n] = 0;
	set_delayed_call(done, kfree_link, buf);
	return buf;
}

/* ---- data ------------------------------------------------------------------------------- */

static ssize_t riofs_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	size_t want = iov_iter_count(to), chunk;
	ssize_t done = 0;
	u8 *buf;

	if (!want)
		return 0;
	chunk = min_t(size_t, want, RIOFS_BOUNCE);
	buf = kvmalloc(chunk, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	while (iov_iter_count(to)) {
		size_t n = min_t(size_t, iov_iter_count(to), chunk);
		long got = riofs_rs_read(VOL(inode->i_sb), inode->i_ino, iocb->ki_pos, buf, n);
		size_t copied;

		if (got < 0) {
			if (!done)
				done = got;
			break;
		}
		if (got == 0)
			break;
		copied = copy_to_iter(buf, got, to);
		iocb->ki_pos += copied;
		done += copied;
		if (copied < got) {
			if (!done)
				done = -EFAULT;
			break;
		}
		if (got < n)
			break;
	}
	kvfree(buf);
	return done;
}

static ssize_t riofs_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	struct file *file = iocb->ki_filp;
	struct inode *inode = file_inode(file);
	ssize_t ret, done = 0;
	size_t chunk;
	u8 *buf;

	inode_lock(inode);
	ret = generic_write_checks(iocb, from);
	if (ret <= 0)
		goto out;
	ret = file_remove_privs(file);
	if (ret)
		goto out;
	chunk = min_t(size_t, iov_iter_count(from), RIOFS_BOUNCE);
	buf = kvmalloc(chunk, GFP_KERNEL);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	while (iov_iter_count(from)) {
		size_t n = min_t(size_t, iov_iter_count(from), chunk);
		size_t got = copy_from_iter(buf, n, from);
		u64 size;
		s64 sec;
		u32 nsec;
		long w;

		if (!got) {
			if (!done)
				done = -EFAULT;
			break;
		}
		now_of(&sec, &nsec);
		w = riofs_rs_write(VOL(inode->i_sb), inode->i_ino, iocb->ki_pos, buf, got, sec,
				   nsec, &size);
		if (w < 0) {
			if (!done)
				done = w;
			break;
		}
		i_size_write(inode, size);
		iocb->ki_pos += w;
		done += w;
		if (w < got)
			break;
	}
	kvfree(buf);
	refresh(inode);
	ret = done;
out:
	inode_unlock(inode);
	return ret;
}

/* A write is in the arena when it returns: there is nothing to flush. */
static int riofs_fsync(struct file *file, loff_t start, loff_t end, int datasync)
{
	return 0;
}

static vm_fault_t riofs_fault(struct vm_fault *vmf)
{
	struct inode *inode = file_inode(vmf->vma->vm_file);
	struct address_space *mapping = inode->i_mapping;
	vm_fault_t ret;
	u64 pfn;
	int err;

	filemap_invalidate_lock_shared(mapping);
	err = riofs_rs_fault(VOL(inode->i_sb), inode->i_ino, vmf->pgoff, &pfn);
	if (err) {
		ret = err == -ENOMEM ? VM_FAULT_OOM : VM_FAULT_SIGBUS;
		goto out;
	}
	if (vmf->cow_page) {
		/* A private mapping's first write: the core copies vmf->page into its COW
		 * page, so hand it a copy of the arena frame (freed by the core). */
		struct page *page = alloc_page(GFP_HIGHUSER);
		void *dst;
		long got;

		if (!page) {
			ret = VM_FAULT_OOM;
			goto out;
		}
		dst = kmap_local_page(page);
		got = riofs_rs_read(VOL(inode->i_sb), inode->i_ino, (u64)vmf->pgoff << PAGE_SHIFT,
				    dst, PAGE_SIZE);
		if (got >= 0 && got < PAGE_SIZE)
			memset(dst + got, 0, PAGE_SIZE - got);
		kunmap_local(dst);
		if (got < 0) {
			__free_page(page);
			ret = VM_FAULT_SIGBUS;
			goto out;
		}
		vmf->page = page;
		ret = 0;
		goto out;
	}
	ret = vmf_insert_mixed(vmf->vma, vmf->address, pfn);
out:
	filemap_invalidate_unlock_shared(mapping);
	return ret;
}

static const struct vm_operations_struct riofs_vm_ops = {
	.fault = riofs_fault,
};

static int riofs_mmap(struct file *file, struct vm_area_struct *vma)
{
	file_accessed(file);
	/* Arena frames, inserted at fault time (as DAX does): stores go straight to the
	 * protected arena's frames, durable as they execute. */
	vm_flags_set(vma, VM_MIXEDMAP);
	vma->vm_ops = &riofs_vm_ops;
	return 0;
}

/* ---- directories ------------------------------------------------------------------------ */

struct riofs_walk {
	struct list_head list;
	struct dentry *dir;
};

/*
 * Builds the dentry cache from the arena (riofs keeps the whole tree there, pinned, as
 * ramfs does): every entry of every directory, breadth first. A directory reached twice,
 * or an entry naming a bad inode, means a corrupt image: the mount fails.
 */
static int riofs_populate(struct super_block *sb)
{
	LIST_HEAD(todo);
	struct riofs_walk *w;
	u8 *name;
	int err = 0;

	name = kmalloc(256, GFP_KERNEL);
	w = kmalloc(sizeof(*w), GFP_KERNEL);
	if (!name || !w) {
		kfree(name);
		kfree(w);
		return -ENOMEM;
	}
	w->dir = dget(sb->s_root);
	list_add_tail(&w->list, &todo);
	while (!list_empty(&todo)) {
		struct dentry *dir;
		u64 cookie = 0;

		w = list_first_entry(&todo, struct riofs_walk, list);
		list_del(&w->list);
		dir = w->dir;
		kfree(w);
		while (!err) {
			struct dentry *d, *dup;
			struct inode *inode;
			u32 len, ino, dtype;
			u64 slot = cookie;
			int r = riofs_rs_dir_next(VOL(sb), d_inode(dir)->i_ino, &cookie, name, &len,
						  &ino, &dtype);

			if (r <= 0) {
				err = r;
				break;
			}
			/* dir_next advanced past the slot it returned. */
			slot = cookie - 1;
			inode = riofs_iget(sb, ino);
			if (IS_ERR(inode)) {
				pr_err("riofs: entry '%.*s' names a bad inode %u (error %ld)\n", len,
				       name, ino, PTR_ERR(inode));
				err = -EUCLEAN;
				break;
			}
			if (S_ISDIR(inode->i_mode) && !hlist_empty(&inode->i_dentry)) {
				pr_err("riofs: directory inode %u is linked twice\n", ino);
				iput(inode);
				err = -EUCLEAN;
				break;
			}
			name[len] = 0; /* names hold no NUL (the Rust side checked) */
			d = d_alloc_name(dir, name);
			if (!d) {
				iput(inode);
				err = -ENOMEM;
				break;
			}
			dup = d_lookup(dir, &d->d_name);
			if (dup) {
				/* A name twice in one directory. */
				pr_err("riofs: name '%.*s' appears twice in directory %llu\n", len, name,
				       (unsigned long long)d_inode(dir)->i_ino);
				dput(dup);
				dput(d);
				iput(inode);
				err = -EUCLEAN;
				break;
			}
			set_slot(d, slot);
			d_make_persistent(d, inode); /* owns our inode reference */
			if (S_ISDIR(inode->i_mode)) {
				w = kmalloc(sizeof(*w), GFP_KERNEL);
				if (!w) {
					dput(d);
					err = -ENOMEM;
					break;
				}
				w->dir = d; /* keeps our reference until visited */
				list_add_tail(&w->list, &todo);
			} else {
				dput(d);
			}
		}
		dput(dir);
	}
	while (!list_empty(&todo)) {
		w = list_first_entry(&todo, struct riofs_walk, list);
		list_del(&w->list);
		dput(w->dir);
		kfree(w);
	}
	kfree(name);
	return err;
}

/* ---- the superblock --------------------------------------------------------------------- */

static void riofs_evict_inode(struct inode *inode)
{
	truncate_inode_pages_final(&inode->i_data);
	clear_inode(inode);
	if (!inode->i_nlink && VOL(inode->i_sb))
		riofs_rs_evict(VOL(inode->i_sb), inode->i_ino);
}

static int riofs_statfs(struct dentry *dentry, struct kstatfs *buf)
{
	u64 v[4];

	riofs_rs_statfs(VOL(dentry->d_sb), v);
	buf->f_type = riofs_magic;
	buf->f_bsize = PAGE_SIZE;
	buf->f_frsize = PAGE_SIZE;
	buf->f_blocks = v[0];
	buf->f_bfree = v[1];
	buf->f_bavail = v[1];
	buf->f_files = v[2];
	buf->f_ffree = v[3];
	buf->f_namelen = 255;
	return 0;
}

static int riofs_sync_fs(struct super_block *sb, int wait)
{
	return 0;
}

static const struct super_operations riofs_sops = {
	.statfs = riofs_statfs,
	.evict_inode = riofs_evict_inode,
	.sync_fs = riofs_sync_fs,
	.drop_inode = inode_just_drop,
};

static const struct inode_operations riofs_dir_iops = {
	.create = riofs_create,
	.lookup = simple_lookup,
	.link = riofs_link,
	.unlink = riofs_unlink,
	.symlink = riofs_symlink,
	.mkdir = riofs_mkdir,
	.rmdir = riofs_rmdir,
	.mknod = riofs_mknod,
	.rename = riofs_rename,
	.setattr = riofs_setattr,
	.getattr = riofs_getattr,
};

static const struct inode_operations riofs_file_iops = {
	.setattr = riofs_setattr,
	.getattr = riofs_getattr,
};

static const struct inode_operations riofs_symlink_iops = {
	.get_link = riofs_get_link,
	.setattr = riofs_setattr,
	.getattr = riofs_getattr,
};

static const struct inode_operations riofs_special_iops = {
	.setattr = riofs_setattr,
	.getattr = riofs_getattr,
};

static const struct file_operations riofs_file_fops = {
	.llseek = generic_file_llseek,
	.read_iter = riofs_read_iter,
	.write_iter = riofs_write_iter,
	.mmap = riofs_mmap,
	.fsync = riofs_fsync,
	.splice_read = copy_splice_read,
	.splice_write = iter_file_splice_write,
	.open = generic_file_open,
};

static const struct file_operations riofs_dir_fops = {
	.open = dcache_dir_open,
	.release = dcache_dir_close,
	.llseek = dcache_dir_lseek,
	.read = generic_read_dir,
	.iterate_shared = dcache_readdir,
	.fsync = riofs_fsync,
};

struct riofs_fc {
	u64 size;
};

enum { Opt_size };

static const struct fs_parameter_spec riofs_params[] = {
	fsparam_string("size", Opt_size),
	{}
};

static int riofs_parse_param(struct fs_context *fc, struct fs_parameter *param)
{
	struct riofs_fc *ctx = fc->fs_private;
	struct fs_parse_result result;
	char *rest;
	int opt;

	opt = fs_parse(fc, riofs_params, param, &result);
	if (opt < 0)
		return opt;
	switch (opt) {
	case Opt_size:
		ctx->size = memparse(param->string, &rest);
		if (*rest || !ctx->size)
			return invalfc(fc, "riofs: bad size '%s' (bytes, with K, M or G)",
				       param->string);
		break;
	}
	return 0;
}

static int riofs_fill_super(struct super_block *sb, struct fs_context *fc)
{
	struct riofs_fc *ctx = fc->fs_private;
	struct inode *root;
	const void *vol = NULL;
	s64 sec;
	u32 nsec;
	int err;

	if (!fc->source || !*fc->source)
		return invalfc(fc, "riofs: give the object's name as the source");
	sb->s_maxbytes = RIOFS_MAX_BYTES;
	sb->s_blocksize = PAGE_SIZE;
	sb->s_blocksize_bits = PAGE_SHIFT;
	sb->s_magic = riofs_magic;
	sb->s_op = &riofs_sops;
	sb->s_time_gran = 1;
	/* atime is not kept up to date (as with noatime): a read stays a read. */
	sb->s_flags |= SB_NOATIME;
	now_of(&sec, &nsec);
	err = riofs_rs_mount(riofs_rio, fc->source, strlen(fc->source), ctx->size, sec, nsec,
			     &vol);
	if (err)
		return err;
	sb->s_fs_info = (void *)vol;
	root = riofs_iget(sb, 1);
	if (IS_ERR(root))
		return PTR_ERR(root);
	sb->s_root = d_make_root(root);
	if (!sb->s_root)
		return -ENOMEM;
	return riofs_populate(sb);
}

static int riofs_get_tree(struct fs_context *fc)
{
	return get_tree_nodev(fc, riofs_fill_super);
}

static void riofs_free_fc(struct fs_context *fc)
{
	kfree(fc->fs_private);
}

static const struct fs_context_operations riofs_context_ops = {
	.free = riofs_free_fc,
	.parse_param = riofs_parse_param,
	.get_tree = riofs_get_tree,
};

static int riofs_init_fs_context(struct fs_context *fc)
{
	struct riofs_fc *ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);

	if (!ctx)
		return -ENOMEM;
	fc->fs_private = ctx;
	fc->ops = &riofs_context_ops;
	return 0;
}

static void riofs_kill_sb(struct super_block *sb)
{
	const void *vol = sb->s_fs_info;

	kill_anon_super(sb); /* evicts every inode: orphans are freed */
	sb->s_fs_info = NULL;
	riofs_rs_unmount(vol);
}

static struct file_system_type riofs_type = {
	.owner = THIS_MODULE,
	.name = "riofs",
	.init_fs_context = riofs_init_fs_context,
	.parameters = riofs_params,
	.kill_sb = riofs_kill_sb,
};

int rio_riofs_register_fs(const void *rio, u32 magic)
{
	int err;

	riofs_rio = rio;
	riofs_magic = magic;
	err = register_filesystem(&riofs_type);
	if (err)
		riofs_rio = NULL;
	return err;
}

void rio_riofs_unregister_fs(void)
{
	unregister_filesystem(&riofs_type);
	riofs_rio = NULL;
}
