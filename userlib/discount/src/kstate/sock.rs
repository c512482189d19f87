//! Datagram sockets as recovered kernel state (thesis 5.2.2: "Discount Checking intercepts
//! calls to bind, saves the name of the binding, and re-binds to this name during
//! recovery"; for a connected socket it "remembers the destination address").
//!
//! Recorded: `AF_INET` and `AF_INET6` `SOCK_DGRAM` (UDP) and `AF_UNIX` `SOCK_DGRAM`
//! sockets (bound to a path, to an abstract name, or unbound; pairs made by
//! `socketpair`). One [`SockRec`] per socket, i.e. per open file description
//! ([`SockRec::ofd`]); its descriptors (the one `socket` returned and its `dup`s) are in
//! the descriptor table with that id. Recovery makes the socket again at the lowest of its
//! numbers, duplicates it onto the others, sets its status flags, and redoes in order: the
//! options set before the bind (with their values at the bind), the bind (the name the
//! kernel gave it: for a system-chosen port, the port it chose), the options set after
//! the bind (their latest values), the connect (the peer, if still connected), the
//! shutdown. A name that cannot be bound again (another process holds the port or the
//! path now) or a peer that cannot be reached makes recovery fail with a message naming
//! the socket and the address: the program never gets a socket that silently changed.
//!
//! Stream sockets (TCP, `AF_UNIX` stream; issue 16) are recorded the same way, plus the
//! `listen` backlog ([`SockRec::listen`]), for an accepted socket the listener it came
//! from and its peer ([`SockRec::accepted_by`], [`SockRec::peer`]), and the bytes a
//! distributed checkpoint drained from it ([`SockRec::inbuf`], [`KState::drain_streams`]).
//! Recovery rebuilds listeners (bound, listening) and binds connecting sockets to their
//! recorded local port or abstract name; a member of a computation then connects and
//! accepts again after its join ([`KState::reconnect_streams`]); under the single-process
//! protocols, and under the 2PC protocols for a peer outside the computation
//! ([`SockRec::outside`], [`crate::outside`]), a connection is gone after a recovery and
//! comes back reset ([`dead_connection`]), and no round drains it or waits for it. The
//! design is in `intercept/net.rs`.

use super::{cstr, raw_close, KState};
use crate::error::{Error, Result};
use crate::sys::{self, check, sc, sc4, syscall6};

/// Largest socket address recorded (`sizeof(struct sockaddr_storage)`).
pub const ADDR_MAX: usize = 128;
/// Largest option value recorded.
pub const OPT_MAX: usize = 256;

/// `SockRec::shut` bit: reading was shut down.
pub const SHUT_RD_BIT: i32 = 1;
/// `SockRec::shut` bit: writing was shut down.
pub const SHUT_WR_BIT: i32 = 2;

/// One socket option the program set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockOpt {
    /// `SOL_SOCKET`, `IPPROTO_IP`, `IPPROTO_IPV6`.
    pub level: i32,
    /// The option.
    pub name: i32,
    /// The value the program passed.
    pub val: Vec<u8>,
    /// Set after the bind (redone after it); else set before (redone before it, with its
    /// value at the bind).
    pub after_bind: bool,
}

/// One datagram socket (checkpointed memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockRec {
    /// Its open-file-description id (its descriptors' [`super::FdEntry::ofd`]).
    pub ofd: u64,
    /// `AF_INET`, `AF_INET6`, `AF_UNIX`.
    pub domain: i32,
    /// `SOCK_DGRAM` (without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`, which are descriptor flags).
    pub ty: i32,
    /// The protocol argument of `socket`.
    pub proto: i32,
    /// Options, in the order first set.
    pub opts: Vec<SockOpt>,
    /// The name it is bound to (what `getsockname` returned after the bind).
    pub bound: Option<Vec<u8>>,
    /// The bind's port (or abstract name) was chosen by the kernel: a non-deterministic
    /// event when it happened.
    pub chosen: bool,
    /// For an `AF_UNIX` name relative to the working directory: that directory at the
    /// bind.
    pub bind_dir: Vec<u8>,
    /// The peer it is connected to.
    pub peer: Option<Vec<u8>>,
    /// For an `AF_UNIX` peer relative to the working directory: that directory at the
    /// connect.
    pub peer_dir: Vec<u8>,
    /// [`SHUT_RD_BIT`] | [`SHUT_WR_BIT`].
    pub shut: i32,
    /// `socketpair`: the other end's id (0: none).
    pub pair: u64,
    /// Stream sockets: the backlog of its `listen` (-1: not listening).
    pub listen: i32,
    /// Stream sockets: made by `accept` on the listener of this id (0: not accepted);
    /// [`SockRec::peer`] is then the peer the connection came from.
    pub accepted_by: u64,
    /// Stream sockets: bytes drained from the kernel at a distributed checkpoint (the
    /// quiesce-and-drain step, `intercept::net`) that the program has not read yet;
    /// its reads are served from here first.
    pub inbuf: Vec<u8>,
    /// Stream connections: the peer shut its writing end down (a drain read the end of
    /// the stream); recovery does not wait for it to connect again.
    pub eof: bool,
    /// Its peer is outside the computation ([`crate::outside`]: it matched `dc run
    /// --outside` at the `connect` or `accept`): under the 2PC protocols its sends are
    /// visible events, a round neither quiesces nor drains it, and after a recovery the
    /// connection is gone ([`dead_connection`]) instead of made again.
    pub outside: bool,
}

impl SockRec {
    /// A new, unbound socket.
    pub fn new(ofd: u64, domain: i32, ty: i32, proto: i32) -> SockRec {
        SockRec {
            ofd,
            domain,
            ty,
            proto,
            opts: Vec::new(),
            bound: None,
            chosen: false,
            bind_dir: Vec::new(),
            peer: None,
            peer_dir: Vec::new(),
            shut: 0,
            pair: 0,
            listen: -1,
            accepted_by: 0,
            inbuf: Vec::new(),
            eof: false,
            outside: false,
        }
    }

    /// What kind of socket, for messages.
    pub fn kind(&self) -> &'static str {
        match (self.domain, self.stream()) {
            (libc::AF_INET, false) => "UDP",
            (libc::AF_INET6, false) => "UDP over IPv6",
            (libc::AF_INET, true) => "TCP",
            (libc::AF_INET6, true) => "TCP over IPv6",
            (_, false) => "AF_UNIX datagram",
            (_, true) => "AF_UNIX stream",
        }
    }

    /// A stream socket (`SOCK_STREAM`: TCP, `AF_UNIX` stream).
    pub fn stream(&self) -> bool {
        self.ty == libc::SOCK_STREAM
    }

    /// A stream socket with a connection (connected or accepted).
    pub fn connection(&self) -> bool {
        self.stream() && self.listen < 0 && (self.peer.is_some() || self.accepted_by != 0)
    }

    /// A stream connection to another member of a computation (not [`SockRec::outside`]):
    /// what a round quiesces and drains and recovery makes again (thesis 6.2.2's sends
    /// within the computation).
    pub fn member_connection(&self) -> bool {
        self.connection() && !self.outside
    }

    /// Records a `setsockopt` that succeeded. Before the bind, an option's value is
    /// replaced (only its value at the bind matters); after it, a second entry holds the
    /// latest value. Multicast memberships are a list: a join is added, a leave removes
    /// the same join.
    pub fn set_opt(&mut self, level: i32, name: i32, val: &[u8]) {
        let after_bind = self.bound.is_some();
        if let Some(join) = membership_leave(level, name) {
            if let Some(i) = self
                .opts
                .iter()
                .position(|o| o.level == level && o.name == join && o.val == val)
            {
                self.opts.remove(i);
                return;
            }
        }
        let list = membership_join(level, name) || membership_leave(level, name).is_some();
        if !list {
            if let Some(o) = self
                .opts
                .iter_mut()
                .find(|o| o.level == level && o.name == name && o.after_bind == after_bind)
            {
                o.val = val.to_vec();
                return;
            }
        }
        self.opts.push(SockOpt {
            level,
            name,
            val: val.to_vec(),
            after_bind,
        });
    }
}

fn membership_join(level: i32, name: i32) -> bool {
    (level == libc::IPPROTO_IP && name == libc::IP_ADD_MEMBERSHIP)
        || (level == libc::IPPROTO_IPV6 && name == libc::IPV6_ADD_MEMBERSHIP)
}

/// The join a leave undoes.
fn membership_leave(level: i32, name: i32) -> Option<i32> {
    match (level, name) {
        (libc::IPPROTO_IP, libc::IP_DROP_MEMBERSHIP) => Some(libc::IP_ADD_MEMBERSHIP),
        (libc::IPPROTO_IPV6, libc::IPV6_DROP_MEMBERSHIP) => Some(libc::IPV6_ADD_MEMBERSHIP),
        _ => None,
    }
}

/// Whether `setsockopt(level, name)` is one Discount Checking records and redoes (the
/// common options of datagram sockets; the value is plain data, no pointers).
pub fn opt_recorded(level: i32, name: i32) -> bool {
    match level {
        libc::SOL_SOCKET => matches!(
            name,
            libc::SO_REUSEADDR
                | libc::SO_REUSEPORT
                | libc::SO_RCVBUF
                | libc::SO_SNDBUF
                | libc::SO_BROADCAST
                | libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | 66 /* SO_RCVTIMEO_NEW */
                | 67 /* SO_SNDTIMEO_NEW */
                | libc::SO_PRIORITY
                | libc::SO_DONTROUTE
                | libc::SO_RCVLOWAT
                | libc::SO_TIMESTAMP
                | libc::SO_TIMESTAMPNS
                | libc::SO_BINDTODEVICE
                | libc::SO_NO_CHECK
                | libc::SO_PASSCRED
                | libc::SO_KEEPALIVE
                | libc::SO_LINGER
                | libc::SO_OOBINLINE
        ),
        libc::IPPROTO_TCP => matches!(
            name,
            libc::TCP_NODELAY
                | libc::TCP_KEEPIDLE
                | libc::TCP_KEEPINTVL
                | libc::TCP_KEEPCNT
                | libc::TCP_USER_TIMEOUT
                | libc::TCP_QUICKACK
        ),
        libc::IPPROTO_IP => matches!(
            name,
            libc::IP_TOS
                | libc::IP_TTL
                | libc::IP_MULTICAST_TTL
                | libc::IP_MULTICAST_LOOP
                | libc::IP_MULTICAST_IF
                | libc::IP_ADD_MEMBERSHIP
                | libc::IP_DROP_MEMBERSHIP
                | libc::IP_PKTINFO
                | libc::IP_RECVTOS
                | libc::IP_RECVTTL
                | libc::IP_RECVERR
                | libc::IP_MTU_DISCOVER
                | libc::IP_FREEBIND
        ),
        libc::IPPROTO_IPV6 => matches!(
            name,
            libc::IPV6_V6ONLY
                | libc::IPV6_UNICAST_HOPS
                | libc::IPV6_MULTICAST_HOPS
                | libc::IPV6_MULTICAST_LOOP
                | libc::IPV6_MULTICAST_IF
                | libc::IPV6_ADD_MEMBERSHIP
                | libc::IPV6_DROP_MEMBERSHIP
                | libc::IPV6_RECVPKTINFO
                | libc::IPV6_TCLASS
                | libc::IPV6_RECVERR
                | libc::IPV6_MTU_DISCOVER
        ),
        _ => false,
    }
}

/// The family of a socket address (`AF_UNSPEC` for one too short to have one).
pub fn family(addr: &[u8]) -> i32 {
    match addr {
        [a, b, ..] => i32::from(u16::from_ne_bytes([*a, *b])),
        _ => libc::AF_UNSPEC,
    }
}

/// The port of an `AF_INET`/`AF_INET6` address (None for other families).
pub fn port(addr: &[u8]) -> Option<u16> {
    match family(addr) {
        libc::AF_INET | libc::AF_INET6 if addr.len() >= 4 => {
            Some(u16::from_be_bytes([addr[2], addr[3]]))
        }
        _ => None,
    }
}

/// The path of an `AF_UNIX` address bound in the file system (None for an abstract or
/// unnamed one, or another family).
pub fn unix_path(addr: &[u8]) -> Option<&[u8]> {
    if family(addr) != libc::AF_UNIX {
        return None;
    }
    let p = addr.get(2..)?;
    let p = &p[..p.iter().position(|&c| c == 0).unwrap_or(p.len())];
    (!p.is_empty()).then_some(p)
}

/// A socket address, for messages: `127.0.0.1:5000`, `[::1]:5000`, `unix /run/x`, `unix
/// @name` (abstract), `unix (unnamed)`.
pub fn describe(addr: &[u8]) -> String {
    match family(addr) {
        libc::AF_INET if addr.len() >= 8 => format!(
            "{}.{}.{}.{}:{}",
            addr[4],
            addr[5],
            addr[6],
            addr[7],
            u16::from_be_bytes([addr[2], addr[3]])
        ),
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&addr[8..24]);
            format!(
                "[{}]:{}",
                std::net::Ipv6Addr::from(b),
                u16::from_be_bytes([addr[2], addr[3]])
            )
        }
        libc::AF_UNIX => match (unix_path(addr), addr.get(2)) {
            (Some(p), _) => format!("unix {}", String::from_utf8_lossy(p)),
            (None, Some(0)) => format!(
                "unix @{}",
                String::from_utf8_lossy(addr.get(3..).unwrap_or(&[]))
            ),
            _ => "unix (unnamed)".into(),
        },
        libc::AF_UNSPEC => "AF_UNSPEC".into(),
        f => format!("an address of family {f}"),
    }
}

/// `getsockname` (`peer`: `getpeername`) of `fd`.
pub fn sock_name(fd: i32, peer: bool) -> std::result::Result<Vec<u8>, i32> {
    let mut buf = [0u8; ADDR_MAX];
    let mut len = ADDR_MAX as libc::socklen_t;
    let nr = if peer {
        libc::SYS_getpeername
    } else {
        libc::SYS_getsockname
    };
    // SAFETY: getsockname writes at most `len` bytes into the buffer and the length
    // into the live local.
    let r = unsafe {
        sc(
            nr,
            fd as usize,
            buf.as_mut_ptr() as usize,
            &mut len as *mut libc::socklen_t as usize,
        )
    };
    check(r)?;
    Ok(buf[..(len as usize).min(ADDR_MAX)].to_vec())
}

/// Runs `f` with the working directory `dir` (if not empty and not `cwd`), then goes back
/// to `cwd`: an `AF_UNIX` name relative to the directory it was bound or connected in.
fn in_dir<T>(dir: &[u8], cwd: &[u8], f: impl FnOnce() -> T) -> T {
    let moved = !dir.is_empty() && dir != cwd && {
        let c = cstr(dir);
        // SAFETY: chdir to a NUL-terminated path.
        unsafe { sc(libc::SYS_chdir, c.as_ptr() as usize, 0, 0) == 0 }
    };
    let r = f();
    if moved {
        let c = cstr(cwd);
        // SAFETY: chdir to a NUL-terminated path.
        unsafe { sc(libc::SYS_chdir, c.as_ptr() as usize, 0, 0) };
    }
    r
}

fn addr_call(nr: i64, fd: i32, addr: &[u8]) -> std::result::Result<(), i32> {
    // SAFETY: bind/connect read `addr.len()` bytes of socket address from the slice.
    let r = unsafe { sc(nr, fd as usize, addr.as_ptr() as usize, addr.len()) };
    check(r).map(|_| ())
}

/// Whether a live socket (another process's) is bound at `addr`'s path: a probe's
/// `connect` is refused by a socket file nobody holds any more.
fn unix_name_held(domain: i32, addr: &[u8]) -> bool {
    // SAFETY: socket takes numbers only.
    let Ok(p) = check(unsafe {
        sc(
            libc::SYS_socket,
            domain as usize,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as usize,
            0,
        )
    }) else {
        return false;
    };
    let r = addr_call(libc::SYS_connect, p as i32, addr);
    raw_close(p as i32);
    // Connected: someone is there; a stream socket there (EPROTOTYPE) is someone too.
    matches!(r, Ok(()) | Err(libc::EPROTOTYPE))
}

impl KState {
    /// The record of the socket `fd` refers to.
    pub fn sock(&self, fd: i32) -> Option<&SockRec> {
        let ofd = self.entry_ref(fd)?.ofd;
        self.socks.iter().find(|s| ofd != 0 && s.ofd == ofd)
    }

    /// The record of the socket `fd` refers to, to change.
    pub fn sock_mut(&mut self, fd: i32) -> Option<&mut SockRec> {
        let ofd = self.entry_ref(fd)?.ofd;
        self.socks.iter_mut().find(|s| ofd != 0 && s.ofd == ofd)
    }

    /// Whether `ofd` is a recorded socket.
    pub fn is_sock_ofd(&self, ofd: u64) -> bool {
        ofd != 0 && self.socks.iter().any(|s| s.ofd == ofd)
    }

    /// A socket the program made at `fd` (`flags`: `O_NONBLOCK`, `O_CLOEXEC` from its
    /// type).
    pub fn add_sock(&mut self, fd: i32, rec: SockRec, flags: i32) {
        self.set_entry(
            fd,
            Some(super::FdEntry {
                flags: libc::O_RDWR | flags,
                ofd: rec.ofd,
                ..super::FdEntry::inherited(false)
            }),
        );
        self.socks.retain(|s| s.ofd != rec.ofd);
        self.socks.push(rec);
    }

    /// The descriptors of open file description `ofd`, lowest first.
    pub(super) fn fds_of(&self, ofd: u64) -> Vec<i32> {
        self.fds
            .iter()
            .enumerate()
            .filter(|(_, e)| e.as_ref().is_some_and(|e| e.ofd == ofd))
            .map(|(i, _)| i as i32)
            .collect()
    }

    /// Puts the new socket `n` at the descriptors of `ofd` (the lowest gets it, the
    /// others are duplicates), with each one's close-on-exec flag and the shared status
    /// flags. Returns the lowest. (Also how a pipe or FIFO is put back, `kstate::pipe`.)
    pub(super) fn place_sock(&self, n: i32, ofd: u64) -> Option<i32> {
        let fds = self.fds_of(ofd);
        let Some(&first) = fds.first() else {
            raw_close(n);
            return None;
        };
        let cloexec = |fd: i32| self.entry_ref(fd).map_or(0, |e| e.flags & libc::O_CLOEXEC);
        if n == first {
            let fl = if cloexec(first) != 0 {
                libc::FD_CLOEXEC
            } else {
                0
            };
            // SAFETY: F_SETFD on our new descriptor takes numbers only.
            unsafe {
                sc(
                    libc::SYS_fcntl,
                    n as usize,
                    libc::F_SETFD as usize,
                    fl as usize,
                )
            };
        } else {
            // SAFETY: dup3 onto the recorded number (ours are >= FD_FLOOR).
            unsafe {
                sc(
                    libc::SYS_dup3,
                    n as usize,
                    first as usize,
                    cloexec(first) as usize,
                )
            };
            raw_close(n);
        }
        for &fd in &fds[1..] {
            // SAFETY: dup3 onto the recorded number.
            unsafe {
                sc(
                    libc::SYS_dup3,
                    first as usize,
                    fd as usize,
                    cloexec(fd) as usize,
                )
            };
        }
        let nonblock = self
            .entry_ref(first)
            .map_or(0, |e| e.flags & libc::O_NONBLOCK);
        // SAFETY: F_SETFL takes numbers only.
        unsafe {
            sc(
                libc::SYS_fcntl,
                first as usize,
                libc::F_SETFL as usize,
                nonblock as usize,
            )
        };
        Some(first)
    }

    /// Recovery: every recorded socket, at its descriptors, bound, connected and set up
    /// as it was at the checkpoint (run after the files are reopened, before the epoll
    /// instances, which may watch sockets).
    pub fn restore_socks(&self) -> Result<()> {
        let twopc = crate::twopc::configured();
        for s in &self.socks {
            if s.pair != 0 && s.pair < s.ofd {
                continue; // made with the other end
            }
            if s.stream() {
                crate::vol::get()
                    .tp_streams
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            if s.connection() && (!twopc || s.eof || s.outside) {
                // A connection to the outside world (single-process protocols, or a peer
                // outside the computation, `crate::outside`) is gone after a recovery:
                // the program reads ECONNRESET (then the end) and a write fails with
                // EPIPE, as after a network failure; nothing rolled its peer back, so it
                // cannot be made again (thesis 6.2.2: only the computation's processes
                // roll back together). One whose peer had ended it reads the end.
                let n = dead_connection(!s.eof).map_err(|errno| self.make_failed(s, errno))?;
                self.place_sock(n, s.ofd);
                continue;
            }
            if s.accepted_by != 0 {
                continue; // accepted again after the join (`reconnect_streams`)
            }
            let ty = (s.ty | libc::SOCK_CLOEXEC) as usize;
            let made = if s.pair != 0 {
                let mut sv = [0i32; 2];
                // SAFETY: socketpair writes two descriptors into the live array.
                check(unsafe {
                    sc4(
                        libc::SYS_socketpair,
                        s.domain as usize,
                        ty,
                        s.proto as usize,
                        sv.as_mut_ptr() as usize,
                    )
                })
                // Out of the program's numbers first: placing one end must not close the
                // other, which the kernel may have put at the first one's number.
                .map(|_| (sys::move_high(sv[0]), Some(sys::move_high(sv[1]))))
            } else {
                // SAFETY: socket takes numbers only.
                check(unsafe { sc(libc::SYS_socket, s.domain as usize, ty, s.proto as usize) })
                    .map(|n| (n as i32, None))
            };
            let (n, other) = made.map_err(|errno| self.make_failed(s, errno))?;
            if let Some(fd) = self.place_sock(n, s.ofd) {
                // A connection of a computation is connected again after the join.
                self.redo_sock(fd, s, !s.connection())?;
            }
            if let (Some(m), Some(o)) = (other, self.socks.iter().find(|o| o.ofd == s.pair)) {
                if let Some(fd) = self.place_sock(m, o.ofd) {
                    self.redo_sock(fd, o, true)?;
                }
            }
        }
        Ok(())
    }

    fn make_failed(&self, s: &SockRec, errno: i32) -> Error {
        Error::Restore(format!(
            "cannot make the {} socket of fd {} again: {} ({errno})",
            s.kind(),
            self.first_fd(s.ofd).unwrap_or(-1),
            sys::errno_name(errno)
        ))
    }

    /// The lowest descriptor of `ofd` (no allocation).
    pub(super) fn first_fd(&self, ofd: u64) -> Option<i32> {
        self.fds
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| ofd != 0 && e.ofd == ofd))
            .map(|i| i as i32)
    }

    /// Recovery of a member of a computation (2PC), after it joined, i.e. after every
    /// member has rebuilt its listeners (issue 16): each recorded connection is made
    /// again (thesis 5.2.2's rebind and reconnect, extended to connections). A connecting socket (bound at recovery to the local port or abstract name
    /// it had) connects to its peer again, retrying for [`RECONNECT_S`] seconds until the
    /// peer's listener is back; then each accepted socket takes the connection that comes
    /// from the peer it had, installed at its descriptor (connections from other peers,
    /// which the program had not accepted yet at the checkpoint, are kept for its next
    /// `accept`). The connections carry none of the old bytes: those were drained into
    /// the checkpoint ([`KState::drain_streams`]) or are sent again by the re-executed
    /// sender.
    pub fn reconnect_streams(&self) -> Result<()> {
        if !crate::twopc::configured() {
            return Ok(());
        }
        let deadline = sys::mono_ns() + RECONNECT_S * 1_000_000_000;
        for s in self
            .socks
            .iter()
            .filter(|s| s.member_connection() && !s.eof)
        {
            let Some(fd) = self.first_fd(s.ofd) else {
                continue;
            };
            let Some(peer) = &s.peer else { continue };
            if s.accepted_by != 0 {
                continue;
            }
            let fl = set_blocking(fd);
            let r = loop {
                let r = in_dir(&s.peer_dir, &self.cwd, || {
                    addr_call(libc::SYS_connect, fd, peer)
                });
                match r {
                    Ok(()) | Err(libc::EISCONN) => break Ok(()),
                    Err(
                        libc::ECONNREFUSED
                        | libc::ENOENT
                        | libc::EADDRNOTAVAIL
                        | libc::EAGAIN
                        | libc::EINTR
                        | libc::ETIMEDOUT
                        | libc::ECONNRESET,
                    ) if sys::mono_ns() < deadline => sys::sleep_ms(10),
                    Err(e) => break Err(e),
                }
            };
            restore_flags(fd, fl);
            r.map_err(|errno| {
                Error::Restore(format!(
                    "the {} socket of fd {fd}: cannot connect to {} again: {} ({errno}){}",
                    s.kind(),
                    describe(peer),
                    sys::errno_name(errno),
                    if errno == libc::ECONNREFUSED {
                        " (no listener there within the 10 s recovery allows; a peer outside \
                         the computation is named with `dc run --outside`)"
                    } else {
                        ""
                    }
                ))
            })?;
            self.redo_shutdown(fd, s)?;
        }
        for s in self
            .socks
            .iter()
            .filter(|s| s.accepted_by != 0 && !s.eof && !s.outside)
        {
            let (Some(peer), Some(lfd)) = (&s.peer, self.first_fd(s.accepted_by)) else {
                continue;
            };
            let n = accept_from(lfd, peer, deadline).map_err(|errno| {
                Error::Restore(format!(
                    "the {} socket accepted from {} at the checkpoint (listener fd {lfd}): no \
                     connection from it came again in {RECONNECT_S} s: {} ({errno}) (a \
                     peer outside the computation is named with `dc run --outside`)",
                    s.kind(),
                    describe(peer),
                    sys::errno_name(errno)
                ))
            })?;
            if let Some(fd) = self.place_sock(n, s.ofd) {
                self.redo_opts(fd, s, true)?;
                self.redo_shutdown(fd, s)?;
            }
        }
        Ok(())
    }

    /// A distributed checkpoint's drain (issue 16): every stream connection's readable
    /// bytes, read without blocking until the kernel has no more, appended to its
    /// [`SockRec::inbuf`] (checkpointed memory); the end of the stream sets
    /// [`SockRec::eof`]. Returns the bytes drained. A connection to a peer outside the
    /// computation is not drained: its bytes are input, read when the program reads them.
    pub fn drain_streams(&mut self) -> usize {
        let mut total = 0;
        let mut buf = [0u8; 4096];
        for i in 0..self.socks.len() {
            if !self.socks[i].member_connection() || self.socks[i].eof {
                continue;
            }
            let Some(fd) = self.first_fd(self.socks[i].ofd) else {
                continue;
            };
            loop {
                let r = sys::recv_nowait(fd, &mut buf);
                if r == 0 {
                    self.socks[i].eof = true;
                }
                if r <= 0 {
                    break;
                }
                self.socks[i].inbuf.extend_from_slice(&buf[..r as usize]);
                total += r as usize;
            }
        }
        total
    }

    /// The bytes the stream connections' send queues still hold (`SIOCOUTQ`: for TCP
    /// sent but not acknowledged, for `AF_UNIX` not yet read by the peer). Connections to
    /// peers outside the computation do not count: nothing of theirs is drained into a
    /// member's checkpoint, so a round does not wait for them (and an outside peer that
    /// does not read would hold every round up).
    pub fn streams_outq(&self) -> usize {
        self.socks
            .iter()
            .filter(|s| s.member_connection())
            .filter_map(|s| self.first_fd(s.ofd))
            .map(outq)
            .sum()
    }

    /// For a diagnostic: the member connections whose send queues are not empty, each as
    /// `fd N (KIND to PEER, B bytes)`.
    pub fn streams_stuck(&self) -> String {
        let mut v = Vec::new();
        for s in self.socks.iter().filter(|s| s.member_connection()) {
            let Some(fd) = self.first_fd(s.ofd) else {
                continue;
            };
            let q = outq(fd);
            if q > 0 {
                let peer = s.peer.as_deref().map_or("?".into(), describe);
                v.push(format!("fd {fd} ({} to {peer}, {q} bytes)", s.kind()));
            }
        }
        v.join(", ")
    }

    /// Redoes the options of `s` set before (`after`: after) its bind on `fd`.
    fn redo_opts(&self, fd: i32, s: &SockRec, after: bool) -> Result<()> {
        {
            for o in s.opts.iter().filter(|o| o.after_bind == after) {
                // SAFETY: setsockopt reads `val.len()` bytes of option value.
                let r = unsafe {
                    syscall6(
                        libc::SYS_setsockopt,
                        [
                            fd as usize,
                            o.level as usize,
                            o.name as usize,
                            o.val.as_ptr() as usize,
                            o.val.len(),
                            0,
                        ],
                    )
                };
                if let Err(errno) = check(r) {
                    let what = format!("option {}/{}", o.level, o.name);
                    return Err(sock_fail(s, fd, "set", &what, errno, ""));
                }
            }
            Ok(())
        }
    }

    /// Redoes the shutdown of `s` on `fd`.
    fn redo_shutdown(&self, fd: i32, s: &SockRec) -> Result<()> {
        let how = match s.shut {
            0 => None,
            SHUT_RD_BIT => Some(libc::SHUT_RD),
            SHUT_WR_BIT => Some(libc::SHUT_WR),
            _ => Some(libc::SHUT_RDWR),
        };
        if let Some(how) = how {
            // SAFETY: shutdown takes numbers only.
            let r = unsafe { sc(libc::SYS_shutdown, fd as usize, how as usize, 0) };
            // An unconnected datagram socket answers ENOTCONN but is shut down all the
            // same (as when the program did it).
            match check(r) {
                Ok(_) | Err(libc::ENOTCONN) => {}
                Err(errno) => return Err(sock_fail(s, fd, "shut down", "the socket", errno, "")),
            }
        }
        Ok(())
    }

    /// Redoes what the program did to socket `s`, now at `fd`: options, bind, listen,
    /// and (`connect`) the connect and shutdown.
    fn redo_sock(&self, fd: i32, s: &SockRec, connect: bool) -> Result<()> {
        let fail = |what: &str, addr: &str, errno: i32, why: &str| {
            sock_fail(s, fd, what, addr, errno, why)
        };
        if s.stream() && s.domain != libc::AF_UNIX {
            // The crashed run's connections on this port may linger (TIME_WAIT): the
            // same port is bound again all the same (as at the first bind, `net`).
            reuse_addr(fd);
        }
        self.redo_opts(fd, s, false)?;
        if let Some(addr) = &s.bound {
            let r = in_dir(&s.bind_dir, &self.cwd, || {
                let path = unix_path(addr);
                // After the file undo, the file system is as it was at the checkpoint:
                // a socket file there is the crashed run's (unless a live process holds
                // it: then the name is taken), none means the program had unlinked it.
                let there = path.and_then(|p| super::stat_at(p, libc::AT_SYMLINK_NOFOLLOW));
                if let (Some(p), Some(st)) = (path, there) {
                    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                        return Err((libc::EADDRINUSE, ": a file that is no socket is there"));
                    }
                    if unix_name_held(s.domain, addr) {
                        return Err((libc::EADDRINUSE, ": another process holds it now"));
                    }
                    let _ = super::raw_unlink(p);
                }
                addr_call(libc::SYS_bind, fd, addr).map_err(|e| {
                    let why = if e == libc::EADDRINUSE {
                        ": another process holds it now"
                    } else {
                        ""
                    };
                    (e, why)
                })?;
                if let (Some(p), None) = (path, there) {
                    let _ = super::raw_unlink(p);
                }
                Ok(())
            });
            r.map_err(|(errno, why)| fail("bind", &describe(addr), errno, why))?;
        }
        self.redo_opts(fd, s, true)?;
        if s.listen >= 0 {
            // SAFETY: listen takes numbers only.
            let r = unsafe { sc(libc::SYS_listen, fd as usize, s.listen as usize, 0) };
            check(r).map_err(|errno| fail("listen on", "its name", errno, ""))?;
        }
        if !connect {
            return Ok(());
        }
        if let Some(addr) = &s.peer {
            in_dir(&s.peer_dir, &self.cwd, || {
                addr_call(libc::SYS_connect, fd, addr)
            })
            .map_err(|errno| fail("connect to", &describe(addr), errno, ""))?;
        }
        self.redo_shutdown(fd, s)
    }
}

/// The bytes `fd`'s send queue holds (`SIOCOUTQ`; 0 if it cannot say).
fn outq(fd: i32) -> usize {
    let mut q: i32 = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int into the live local.
    let r = unsafe {
        sc(
            libc::SYS_ioctl,
            fd as usize,
            libc::TIOCOUTQ as usize,
            &mut q as *mut i32 as usize,
        )
    };
    if r == 0 && q > 0 {
        q as usize
    } else {
        0
    }
}

/// How long recovery waits for a connection of the computation to come back.
pub const RECONNECT_S: u64 = 10;

fn sock_fail(s: &SockRec, fd: i32, what: &str, addr: &str, errno: i32, why: &str) -> Error {
    Error::Restore(format!(
        "the {} socket of fd {fd}: cannot {what} {addr} again: {} ({errno}){why}",
        s.kind(),
        sys::errno_name(errno)
    ))
}

/// `SO_REUSEADDR` on a TCP socket before its bind (our own, not the program's: a port
/// whose old connections are in TIME_WAIT can be bound again).
pub fn reuse_addr(fd: i32) {
    let one: i32 = 1;
    // SAFETY: setsockopt reads one int from the live local.
    unsafe {
        syscall6(
            libc::SYS_setsockopt,
            [
                fd as usize,
                libc::SOL_SOCKET as usize,
                libc::SO_REUSEADDR as usize,
                &one as *const i32 as usize,
                4,
                0,
            ],
        )
    };
}

/// Clears `O_NONBLOCK` on `fd`; returns the status flags it had.
fn set_blocking(fd: i32) -> usize {
    // SAFETY: fcntl F_GETFL/F_SETFL take numbers only.
    unsafe {
        let fl = sc(libc::SYS_fcntl, fd as usize, libc::F_GETFL as usize, 0).max(0) as usize;
        sc(
            libc::SYS_fcntl,
            fd as usize,
            libc::F_SETFL as usize,
            fl & !(libc::O_NONBLOCK as usize),
        );
        fl
    }
}

fn restore_flags(fd: i32, fl: usize) {
    // SAFETY: fcntl F_SETFL takes numbers only.
    unsafe { sc(libc::SYS_fcntl, fd as usize, libc::F_SETFL as usize, fl) };
}

/// A connection that is gone (`reset`: the next read fails with ECONNRESET; else it reads
/// the end of the stream); writes fail with EPIPE. An `AF_UNIX` stream pair whose other
/// end is closed, with a byte left unread in it when `reset` (how the kernel reports a
/// reset on `AF_UNIX`).
pub fn dead_connection(reset: bool) -> std::result::Result<i32, i32> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into the live array.
    check(unsafe {
        sc4(
            libc::SYS_socketpair,
            libc::AF_UNIX as usize,
            (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as usize,
            0,
            sv.as_mut_ptr() as usize,
        )
    })?;
    if reset {
        let b = [0u8; 1];
        // SAFETY: write reads one byte from the live local.
        unsafe { sc(libc::SYS_write, sv[0] as usize, b.as_ptr() as usize, 1) };
    }
    raw_close(sv[1]);
    Ok(sv[0])
}

/// Accepts on listener `lfd` until a connection from `peer` comes (before `deadline`),
/// keeping the others for the program ([`crate::vol::Vol::st_pending`]).
fn accept_from(lfd: i32, peer: &[u8], deadline: u64) -> std::result::Result<i32, i32> {
    if let Some(n) = take_pending(lfd, Some(peer)) {
        return Ok(n);
    }
    loop {
        let left = deadline.saturating_sub(sys::mono_ns()) / 1_000_000;
        if left == 0 {
            return Err(libc::ETIMEDOUT);
        }
        let mut p = [libc::pollfd {
            fd: lfd,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll reads and writes one pollfd of the live local.
        unsafe { sc(libc::SYS_poll, p.as_mut_ptr() as usize, 1, left as usize) };
        // SAFETY: accept4 without an address takes numbers only.
        let r = unsafe {
            sc4(
                libc::SYS_accept4,
                lfd as usize,
                0,
                0,
                libc::SOCK_CLOEXEC as usize,
            )
        };
        let Ok(n) = check(r) else { continue };
        let n = n as i32;
        if sock_name(n, true).is_ok_and(|a| a == peer) {
            return Ok(n);
        }
        let n = sys::move_high(n);
        if !put_pending(lfd, n) {
            raw_close(n);
            crate::diag::diag(
                "recovery: too many connections not yet accepted by the program: one closed",
            );
        }
    }
}

/// Keeps connection `n`, accepted on `lfd` by recovery, for the program's next `accept`.
fn put_pending(lfd: i32, n: i32) -> bool {
    let word = ((lfd as u64 + 1) << 32) | n as u32 as u64;
    crate::vol::get().st_pending.iter().any(|slot| {
        slot.compare_exchange(
            0,
            word,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Relaxed,
        )
        .is_ok()
    })
}

/// A connection recovery accepted on `lfd` and kept (from `peer`, or any), taken out.
pub fn take_pending(lfd: i32, peer: Option<&[u8]>) -> Option<i32> {
    for slot in crate::vol::get().st_pending.iter() {
        let w = slot.load(std::sync::atomic::Ordering::Acquire);
        if w == 0 || (w >> 32) != lfd as u64 + 1 {
            continue;
        }
        let n = w as u32 as i32;
        if peer.is_some_and(|p| !sock_name(n, true).is_ok_and(|a| a == p)) {
            continue;
        }
        slot.store(0, std::sync::atomic::Ordering::Release);
        return Some(n);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::FdEntry;
    use super::*;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::unix::ffi::OsStrExt;

    fn inet(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&ip);
        a
    }

    fn unix(path: &[u8]) -> Vec<u8> {
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(path);
        a
    }

    /// A port nobody holds now.
    fn free_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn close_all(fds: &[i32]) {
        for &f in fds {
            // SAFETY: closing descriptors this test made.
            unsafe { libc::close(f) };
        }
    }

    fn getsockopt_int(fd: i32, level: i32, name: i32) -> i32 {
        let mut v: i32 = 0;
        let mut l = 4 as libc::socklen_t;
        // SAFETY: getsockopt writes one int into the live local.
        let r = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut i32).cast(), &mut l) };
        assert_eq!(r, 0);
        v
    }

    fn udp(ks: &mut KState, fd: i32, flags: i32) -> u64 {
        let ofd = ks.new_ofd();
        ks.add_sock(
            fd,
            SockRec::new(ofd, libc::AF_INET, libc::SOCK_DGRAM, 0),
            flags,
        );
        ofd
    }

    #[test]
    fn options_before_and_after_the_bind() {
        let mut s = SockRec::new(1, libc::AF_INET, libc::SOCK_DGRAM, 0);
        s.set_opt(libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32.to_ne_bytes());
        s.set_opt(libc::SOL_SOCKET, libc::SO_REUSEADDR, &0i32.to_ne_bytes());
        assert_eq!(
            s.opts.len(),
            1,
            "before the bind only the last value matters"
        );
        s.bound = Some(inet([127, 0, 0, 1], 9));
        s.set_opt(libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32.to_ne_bytes());
        s.set_opt(libc::SOL_SOCKET, libc::SO_RCVBUF, &65536i32.to_ne_bytes());
        s.set_opt(libc::SOL_SOCKET, libc::SO_RCVBUF, &32768i32.to_ne_bytes());
        let kept: Vec<(i32, bool)> = s.opts.iter().map(|o| (o.name, o.after_bind)).collect();
        assert_eq!(
            kept,
            vec![
                (libc::SO_REUSEADDR, false),
                (libc::SO_REUSEADDR, true),
                (libc::SO_RCVBUF, true)
            ]
        );
        assert_eq!(s.opts[0].val, 0i32.to_ne_bytes());
        assert_eq!(s.opts[2].val, 32768i32.to_ne_bytes());
        // Memberships are a list: two joins, a leave of the first.
        let (g1, g2) = ([239u8, 1, 1, 1, 0, 0, 0, 0], [239u8, 1, 1, 2, 0, 0, 0, 0]);
        s.set_opt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &g1);
        s.set_opt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &g2);
        s.set_opt(libc::IPPROTO_IP, libc::IP_DROP_MEMBERSHIP, &g1);
        let groups: Vec<&[u8]> = s
            .opts
            .iter()
            .filter(|o| o.level == libc::IPPROTO_IP)
            .map(|o| &o.val[..])
            .collect();
        assert_eq!(groups, vec![&g2[..]]);
        assert!(opt_recorded(libc::SOL_SOCKET, libc::SO_BROADCAST));
        assert!(!opt_recorded(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER));
        assert_eq!(describe(&inet([10, 0, 0, 2], 53)), "10.0.0.2:53");
        assert_eq!(describe(&unix(b"/tmp/x\0")), "unix /tmp/x");
        assert_eq!(describe(&unix(b"\0abc")), "unix @abc");
        assert_eq!(port(&inet([0; 4], 7)), Some(7));
    }

    #[test]
    fn udp_socket_comes_back_bound_connected_and_set_up() {
        let port = free_port();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = match peer.local_addr().unwrap() {
            SocketAddr::V4(a) => inet(a.ip().octets(), a.port()),
            SocketAddr::V6(_) => unreachable!(),
        };
        let mut ks = KState::new();
        let ofd = udp(&mut ks, 650, libc::O_NONBLOCK);
        // A dup at 651 (close-on-exec), as `dup_entry` records it.
        ks.set_entry(
            651,
            Some(FdEntry {
                flags: libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
                ofd,
                ..FdEntry::inherited(false)
            }),
        );
        let s = ks.sock_mut(650).unwrap();
        s.set_opt(libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32.to_ne_bytes());
        s.bound = Some(inet([127, 0, 0, 1], port));
        s.set_opt(libc::SOL_SOCKET, libc::SO_BROADCAST, &1i32.to_ne_bytes());
        s.peer = Some(peer_addr.clone());
        ks.restore_socks().unwrap();
        assert_eq!(sock_name(650, false).unwrap(), inet([127, 0, 0, 1], port));
        assert_eq!(sock_name(651, false).unwrap(), inet([127, 0, 0, 1], port));
        assert_eq!(sock_name(650, true).unwrap(), peer_addr);
        assert_eq!(getsockopt_int(650, libc::SOL_SOCKET, libc::SO_REUSEADDR), 1);
        assert_eq!(getsockopt_int(650, libc::SOL_SOCKET, libc::SO_BROADCAST), 1);
        // SAFETY: F_GETFL/F_GETFD on descriptors the restore made.
        let (fl, fd0, fd1) = unsafe {
            (
                libc::fcntl(650, libc::F_GETFL),
                libc::fcntl(650, libc::F_GETFD),
                libc::fcntl(651, libc::F_GETFD),
            )
        };
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        assert_eq!((fd0, fd1), (0, libc::FD_CLOEXEC));
        // It receives what the peer sends to the name it had, and its sends reach the peer.
        peer.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 16];
        let mut n = -1;
        for _ in 0..200 {
            // SAFETY: recv into the live local buffer.
            n = unsafe { libc::recv(651, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(&buf[..n.max(0) as usize], b"ping");
        // SAFETY: send from the live local buffer.
        assert_eq!(unsafe { libc::send(650, b"pong".as_ptr().cast(), 4, 0) }, 4);
        let (m, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..m], from.port()), (&b"pong"[..], port));
        close_all(&[650, 651]);
    }

    #[test]
    fn a_port_taken_meanwhile_fails_recovery_naming_socket_and_address() {
        let thief = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = thief.local_addr().unwrap().port();
        let mut ks = KState::new();
        udp(&mut ks, 652, 0);
        ks.sock_mut(652).unwrap().bound = Some(inet([127, 0, 0, 1], port));
        let err = ks.restore_socks().unwrap_err().to_string();
        assert!(
            err.contains("fd 652")
                && err.contains(&format!("bind 127.0.0.1:{port}"))
                && err.contains("EADDRINUSE"),
            "{err}"
        );
        close_all(&[652]);
    }

    #[test]
    fn unix_names_come_back_and_stale_files_are_replaced() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().as_os_str().as_bytes().to_vec();
        // The names are relative to `dir`, which is not the working directory (recovery
        // has restored the checkpoint's, `ks.cwd`): the bind goes there and back.
        let here = std::env::current_dir()
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let mut ks = KState::new();
        ks.cwd = here.clone();
        // Bound to a relative path whose file the crashed run left; and a second one
        // whose file the program had unlinked before the checkpoint.
        {
            let s = std::os::unix::net::UnixDatagram::bind(d.path().join("srv")).unwrap();
            drop(s); // the crashed run's socket: its file stays
        }
        for (fd, name) in [(653, &b"srv"[..]), (654, &b"gone"[..])] {
            let ofd = ks.new_ofd();
            let mut r = SockRec::new(ofd, libc::AF_UNIX, libc::SOCK_DGRAM, 0);
            r.bound = Some(unix(name));
            r.bind_dir = dir.clone();
            ks.add_sock(fd, r, 0);
        }
        ks.restore_socks().unwrap();
        assert_eq!(sock_name(653, false).unwrap(), unix(b"srv\0"));
        assert!(d.path().join("srv").exists());
        assert!(
            !d.path().join("gone").exists(),
            "an unlinked name stays unlinked"
        );
        let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
        c.send_to(b"hi", d.path().join("srv")).unwrap();
        let mut buf = [0u8; 8];
        // SAFETY: recv into the live local buffer.
        let n = unsafe { libc::recv(653, buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert_eq!(&buf[..n.max(0) as usize], b"hi");
        // A live socket holding the path: recovery fails, naming it.
        let mut ks2 = KState::new();
        ks2.cwd = here.clone();
        let ofd = ks2.new_ofd();
        let mut r = SockRec::new(ofd, libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        r.bound = Some(unix(b"srv"));
        r.bind_dir = dir.clone();
        ks2.add_sock(655, r, 0);
        let err = ks2.restore_socks().unwrap_err().to_string();
        assert!(err.contains("fd 655") && err.contains("unix srv"), "{err}");
        close_all(&[653, 654, 655]);
        assert_eq!(
            std::env::current_dir().unwrap().as_os_str().as_bytes(),
            &here[..]
        );
    }

    #[test]
    fn socket_pairs_and_shutdowns_are_redone() {
        let mut ks = KState::new();
        let (a, b) = (ks.new_ofd(), ks.new_ofd());
        let mut ra = SockRec::new(a, libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        let mut rb = SockRec::new(b, libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        ra.pair = b;
        rb.pair = a;
        rb.shut = SHUT_WR_BIT;
        ks.add_sock(656, ra, 0);
        ks.add_sock(657, rb, 0);
        ks.restore_socks().unwrap();
        // SAFETY: send/recv on the pair the restore made, with live local buffers.
        unsafe {
            assert_eq!(libc::send(656, b"x".as_ptr().cast(), 1, 0), 1);
            let mut c = [0u8; 1];
            assert_eq!(libc::recv(657, c.as_mut_ptr().cast(), 1, 0), 1);
            assert_eq!(
                libc::send(657, b"y".as_ptr().cast(), 1, libc::MSG_NOSIGNAL),
                -1,
                "the shutdown of writing must be redone"
            );
        }
        // Closing the last descriptor forgets the socket; a dup keeps it.
        ks.set_entry(
            658,
            Some(FdEntry {
                ofd: a,
                ..FdEntry::inherited(false)
            }),
        );
        ks.closing(656);
        ks.set_entry(656, None);
        assert!(ks.is_sock_ofd(a));
        ks.closing(658);
        ks.set_entry(658, None);
        assert!(!ks.is_sock_ofd(a) && ks.is_sock_ofd(b));
        close_all(&[656, 657]);
    }

    fn tcp(ks: &mut KState, fd: i32) -> u64 {
        let ofd = ks.new_ofd();
        ks.add_sock(
            fd,
            SockRec::new(ofd, libc::AF_INET, libc::SOCK_STREAM, 0),
            0,
        );
        ofd
    }

    #[test]
    fn stream_records_listeners_and_outside_connections() {
        // Not a member of a computation: a listener comes back listening on its port, a
        // connection comes back reset (the outside world's end is gone).
        let port = free_port();
        let mut ks = KState::new();
        tcp(&mut ks, 660);
        {
            let s = ks.sock_mut(660).unwrap();
            s.bound = Some(inet([127, 0, 0, 1], port));
            s.listen = 4;
            assert!(s.stream() && !s.connection() && s.kind() == "TCP");
        }
        let lofd = ks.sock(660).unwrap().ofd;
        let ofd = tcp(&mut ks, 661);
        {
            let s = ks.sock_mut(661).unwrap();
            s.bound = Some(inet([127, 0, 0, 1], port));
            s.peer = Some(inet([127, 0, 0, 1], 1));
            s.accepted_by = lofd;
            s.inbuf = b"left".to_vec();
            assert!(s.connection());
        }
        assert!(!crate::twopc::configured());
        ks.restore_socks().unwrap();
        ks.reconnect_streams().unwrap();
        assert_eq!(sock_name(660, false).unwrap(), inet([127, 0, 0, 1], port));
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening again");
        drop(c);
        let mut b = [0u8; 4];
        // SAFETY: read into the live local buffer.
        let r = unsafe { libc::read(661, b.as_mut_ptr().cast(), 4) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((r, errno), (-1, Some(libc::ECONNRESET)));
        // The drained bytes stay in the record (the program reads them first).
        assert_eq!(
            ks.socks.iter().find(|s| s.ofd == ofd).unwrap().inbuf,
            b"left"
        );
        close_all(&[660, 661]);
    }

    #[test]
    fn a_drain_takes_every_readable_byte_and_the_end() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, _) = l.accept().unwrap();
        // SAFETY: dup3 of a live descriptor onto a free number.
        assert_eq!(unsafe { libc::dup3(conn.as_raw_fd(), 662, 0) }, 662);
        let mut ks = KState::new();
        tcp(&mut ks, 662);
        ks.sock_mut(662).unwrap().peer = Some(inet([127, 0, 0, 1], 9));
        peer.write_all(&[7u8; 10000]).unwrap();
        let mut got = 0;
        for _ in 0..200 {
            got += ks.drain_streams();
            if got == 10000 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(got, 10000);
        assert_eq!(ks.sock(662).unwrap().inbuf.len(), 10000);
        assert_eq!(ks.streams_outq(), 0);
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        for _ in 0..200 {
            ks.drain_streams();
            if ks.sock(662).unwrap().eof {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(
            ks.sock(662).unwrap().eof,
            "the end of the stream is recorded"
        );
        close_all(&[662]);
    }

    #[test]
    fn outside_connections_are_neither_drained_nor_waited_for() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        // Two connections with bytes to read and bytes not yet read by their peers
        // (AF_UNIX: SIOCOUTQ counts what the peer has not read): one to a member, one to
        // a peer outside the computation.
        let (mine, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mine2, mut peer2) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut ks = KState::new();
        for (fd, s) in [(663, &mine), (664, &mine2)] {
            // SAFETY: dup3 of a live descriptor onto a free number.
            assert_eq!(unsafe { libc::dup3(s.as_raw_fd(), fd, 0) }, fd);
            let ofd = ks.new_ofd();
            let mut r = SockRec::new(ofd, libc::AF_UNIX, libc::SOCK_STREAM, 0);
            r.peer = Some(unix(b"\0peer"));
            r.outside = fd == 664;
            ks.add_sock(fd, r, 0);
            assert_eq!(ks.sock(fd).unwrap().member_connection(), fd == 663);
        }
        peer.write_all(b"in").unwrap();
        peer2.write_all(b"out").unwrap();
        for fd in [663, 664] {
            // SAFETY: write from a live local buffer.
            assert_eq!(unsafe { libc::write(fd, b"xyz".as_ptr().cast(), 3) }, 3);
        }
        let mut drained = 0;
        for _ in 0..200 {
            drained += ks.drain_streams();
            if drained == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(drained, 2, "only the member connection is drained");
        assert_eq!(ks.sock(663).unwrap().inbuf, b"in");
        assert!(ks.sock(664).unwrap().inbuf.is_empty());
        let q = ks.streams_outq();
        assert!(q > 0, "the member connection's unread bytes count");
        assert!(ks.streams_stuck().contains("fd 663") && !ks.streams_stuck().contains("fd 664"));
        let mut b = [0u8; 8];
        use std::io::Read;
        assert_eq!(peer.read(&mut b).unwrap(), 3);
        assert_eq!(
            ks.streams_outq(),
            0,
            "the outside peer's unread bytes do not count"
        );
        // Recovery: the outside connection is gone (reset), as under the single-process
        // protocols.
        drop(peer2);
        close_all(&[664]);
        ks.restore_socks().unwrap();
        // SAFETY: read into the live local buffer.
        let r = unsafe { libc::read(664, b.as_mut_ptr().cast(), 4) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((r, errno), (-1, Some(libc::ECONNRESET)));
        close_all(&[663, 664]);
    }
}
