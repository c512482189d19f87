//! Peers outside the computation (issue 16: "communication with the outside world, a
//! peer that is not part of the computation, is visible output, handled as the thesis
//! does").
//!
//! Under CPV-2PC and CBNDV-2PC (thesis 6.2.2) a send to another member of the
//! computation is no visible event: the receiver commits together with the sender, so a
//! rollback undoes both. A send to a process *outside* the computation (a database, a web
//! server, a user's client) is different: nothing rolls that process back, so what it
//! received is output the commit invariant must cover (thesis 2.2.5, Theorem 2: a visible
//! event must come after a commit of every non-deterministic event it depends on;
//! thesis 6.2.2 applies it to the 2PC protocols: "commit prior to visible events", sends
//! within the computation excepted). A member therefore has to tell the two kinds of
//! peer apart.
//!
//! # The decision: an explicit list
//!
//! `dc run --outside ADDR` (repeatable; the environment form is `DC_OUTSIDE`, the
//! addresses separated by commas) names the peers outside the computation. A stream or
//! datagram socket whose peer matches one (for `connect`, the address connected to; for
//! `accept`, the peer address the kernel reports; for `sendto`/`sendmsg` with an address,
//! that address) talks to the outside world ([`crate::kstate::sock::SockRec::outside`]).
//! An address is
//!
//! * `IP:PORT` or `[IPv6]:PORT`: that host and port; port 0 means any port of that host
//!   (what an accepted connection from a client host looks like: its port is the
//!   client's ephemeral one), and the unspecified address (`0.0.0.0`, `[::]`) any host
//!   (`[::]` also every IPv4 host); an IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`) matches
//!   the IPv4 address;
//! * `unix:PATH` or an absolute `PATH`: the `AF_UNIX` socket bound at that path (a
//!   relative path is taken relative to the working directory at start-up; `dc run` makes
//!   it absolute); `unix:@NAME` or `@NAME`: the abstract `AF_UNIX` name `NAME`.
//!
//! Why explicit: which peer is a member is a property of the deployment, which the
//! person who starts the members knows and the kernel does not. An address says nothing
//! about membership (members and outside servers share hosts, and one host has many
//! addresses), and the automatic rule that comes to mind, "the coordinator knows every
//! member's listening addresses, anything else is outside", has races and blind spots a
//! list does not: a member's `connect` may complete before the coordinator has heard of
//! the listener it reaches (the listener's `listen` would have to wait for the
//! coordinator, and every `connect` ask it), a listener bound to the wildcard address is
//! reached through addresses nobody announced (another interface, a guest's NAT), and an
//! accepting member sees only the peer's ephemeral port, which no announcement names
//! before the connect (the connecting member would have to announce its bound port
//! before every connect, and the acceptor ask after every accept). A peer the list does
//! not name stays internal, as before: the conservative default for a computation,
//! whose connections are between members; the diagnostics of the quiesce step and of
//! recovery name the peer and point at `--outside` when an internal connection behaves
//! like an outside one (a send queue that does not empty, a peer that does not come back).
//!
//! One automatic rule is sound and is added: an `AF_UNIX` stream connection *accepted*
//! from an unnamed peer is outside. Every member's connecting `AF_UNIX` stream socket is
//! bound before its `connect` (`intercept::net`'s autobind, an abstract name, which the
//! listener's recovery needs to tell that connection again), so an unnamed peer is a
//! process not under Discount Checking; there is no race, since the peer's name is fixed
//! before its connect and read after the accept.
//!
//! # What an outside peer changes (under CPV-2PC and CBNDV-2PC)
//!
//! As the thesis treats the outside world (and as the single-process protocols treat
//! every stream): each send is a visible event (CPV-2PC: a distributed commit before it;
//! CBNDV-2PC: one if a non-deterministic event happened since the last commit; the trace
//! records it as `V`, not as a message `M`), each receive a non-deterministic event (no
//! message `G`); a round's quiesce step neither waits for its send queue nor drains it;
//! and after a rollback or recovery the connection is gone (it reads `ECONNRESET`, then
//! the end; writes fail with `EPIPE`), as after a network failure, rather than made again
//! (`kstate::sock`). A real program reconnects; an outside server then sees, at worst,
//! output repeated from an earlier point (Definition 2), never output from a state a
//! rollback undid. Not output: the connection itself (the `SYN` of a `connect`, the end a
//! crash or rollback causes), as under the single-process protocols; only bytes are.
//! Under the single-process protocols every peer is outside already and the list changes
//! nothing.
//!
//! `DC_TEST_OUTSIDE_INTERNAL=1` (negative controls only) ignores the list (and the rule
//! above): outside peers are treated as members, as before this distinction existed.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::kstate::sock::{family, port, unix_path};

/// One address outside the computation (`dc run --outside`, `DC_OUTSIDE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outside {
    /// A host and port: port 0 is any port, the unspecified address any host.
    Inet {
        /// The host (canonical: an IPv4-mapped IPv6 address is the IPv4 one).
        ip: IpAddr,
        /// The port (0: any).
        port: u16,
    },
    /// An `AF_UNIX` name: an absolute path, or an abstract name (its leading NUL
    /// included).
    Unix(Vec<u8>),
}

impl std::str::FromStr for Outside {
    type Err = Error;

    /// `IP:PORT`, `[IPv6]:PORT`, `unix:PATH`, `/PATH`, `unix:@NAME`, `@NAME`.
    fn from_str(s: &str) -> Result<Outside> {
        let bad = |why: &str| {
            Error::Config(format!(
                "outside address {s:?}: {why} (IP:PORT, [IPv6]:PORT, unix:PATH or unix:@NAME)"
            ))
        };
        let unix = s.strip_prefix("unix:");
        if unix.is_some() || s.starts_with('/') || s.starts_with('@') {
            let name = unix.unwrap_or(s);
            if let Some(abs) = name.strip_prefix('@') {
                if abs.is_empty() || abs.len() > 106 {
                    return Err(bad("an abstract name of 1 to 106 bytes"));
                }
                let mut v = vec![0u8];
                v.extend_from_slice(abs.as_bytes());
                return Ok(Outside::Unix(v));
            }
            if name.is_empty() || name.len() > 107 || name.contains('\0') {
                return Err(bad("a path of 1 to 107 bytes"));
            }
            let p = std::path::Path::new(name);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|_| bad("a relative path, and no working directory"))?
                    .join(p)
            };
            return Ok(Outside::Unix(
                std::os::unix::ffi::OsStrExt::as_bytes(abs.as_os_str()).to_vec(),
            ));
        }
        let a: std::net::SocketAddr = s.parse().map_err(|_| bad("not an address"))?;
        Ok(Outside::Inet {
            ip: a.ip().to_canonical(),
            port: a.port(),
        })
    }
}

impl std::fmt::Display for Outside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outside::Inet {
                ip: IpAddr::V6(ip),
                port,
            } => write!(f, "[{ip}]:{port}"),
            Outside::Inet { ip, port } => write!(f, "{ip}:{port}"),
            Outside::Unix(n) if n.first() == Some(&0) => {
                write!(f, "unix:@{}", String::from_utf8_lossy(&n[1..]))
            }
            Outside::Unix(n) => write!(f, "unix:{}", String::from_utf8_lossy(n)),
        }
    }
}

/// Parses `DC_OUTSIDE`: addresses separated by commas (empty parts ignored).
pub fn parse_list(s: &str) -> Result<Vec<Outside>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

/// The host of an `AF_INET`/`AF_INET6` socket address (canonical, see [`Outside`]).
fn host(addr: &[u8]) -> Option<IpAddr> {
    match family(addr) {
        libc::AF_INET if addr.len() >= 8 => {
            Some(IpAddr::from([addr[4], addr[5], addr[6], addr[7]]))
        }
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&addr[8..24]);
            Some(IpAddr::from(b).to_canonical())
        }
        _ => None,
    }
}

impl Outside {
    /// Whether the socket address `addr` (as the kernel takes or returns it) is this one;
    /// an `AF_UNIX` path relative to the working directory is taken relative to `cwd`.
    pub fn matches(&self, addr: &[u8], cwd: &[u8]) -> bool {
        match self {
            Outside::Inet { ip, port: want } => {
                let (Some(h), Some(p)) = (host(addr), port(addr)) else {
                    return false;
                };
                let host_ok = *ip == h
                    || match ip {
                        IpAddr::V4(a) => a.is_unspecified() && h.is_ipv4(),
                        IpAddr::V6(a) => a.is_unspecified(),
                    };
                host_ok && (*want == 0 || *want == p)
            }
            Outside::Unix(name) if name.first() == Some(&0) => {
                family(addr) == libc::AF_UNIX && addr.get(2..) == Some(&name[..])
            }
            Outside::Unix(name) => unix_path(addr)
                .is_some_and(|p| crate::kstate::absolutize(cwd, libc::AT_FDCWD, p) == *name),
        }
    }
}

/// Whether `addr` is an unnamed `AF_UNIX` address (what `getpeername` reports for a peer
/// that was never bound).
pub fn unnamed_unix(addr: &[u8]) -> bool {
    family(addr) == libc::AF_UNIX && addr.len() <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&ip);
        a
    }

    fn inet6(ip: std::net::Ipv6Addr, port: u16) -> Vec<u8> {
        let mut a = vec![0u8; 28];
        a[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[8..24].copy_from_slice(&ip.octets());
        a
    }

    fn unix(name: &[u8]) -> Vec<u8> {
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(name);
        a
    }

    fn o(s: &str) -> Outside {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_parse_and_print() {
        assert_eq!(
            o("127.0.0.1:5432"),
            Outside::Inet {
                ip: [127, 0, 0, 1].into(),
                port: 5432
            }
        );
        assert_eq!(o("[::ffff:10.0.0.2]:80"), o("10.0.0.2:80"));
        assert_eq!(
            o("unix:/run/db.sock"),
            Outside::Unix(b"/run/db.sock".to_vec())
        );
        assert_eq!(o("/run/db.sock"), o("unix:/run/db.sock"));
        assert_eq!(o("@dbus"), Outside::Unix(b"\0dbus".to_vec()));
        assert_eq!(o("unix:@dbus"), o("@dbus"));
        let rel = o("unix:db.sock");
        let here = std::env::current_dir().unwrap().join("db.sock");
        assert_eq!(
            rel,
            Outside::Unix(here.to_string_lossy().as_bytes().to_vec())
        );
        for s in ["[::1]:8", "1.2.3.4:0", "unix:/x", "unix:@n"] {
            assert_eq!(o(s).to_string(), s);
        }
        for bad in ["", "localhost:80", "1.2.3.4", "unix:", "@", "unix:@"] {
            assert!(
                matches!(bad.parse::<Outside>(), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
        let l = parse_list("127.0.0.1:1, unix:/a,,@b").unwrap();
        assert_eq!(l, vec![o("127.0.0.1:1"), o("/a"), o("@b")]);
        assert!(parse_list("127.0.0.1:1,nonsense").is_err());
        assert!(parse_list("").unwrap().is_empty());
    }

    #[test]
    fn matching_hosts_ports_and_names() {
        let db = o("127.0.0.1:5432");
        assert!(db.matches(&inet([127, 0, 0, 1], 5432), b"/"));
        assert!(!db.matches(&inet([127, 0, 0, 1], 5433), b"/"));
        assert!(!db.matches(&inet([127, 0, 0, 2], 5432), b"/"));
        let mapped = "::ffff:127.0.0.1".parse().unwrap();
        assert!(db.matches(&inet6(mapped, 5432), b"/"), "IPv4-mapped");
        // Port 0: any port of the host (an accepted client's ephemeral port).
        let host = o("127.0.0.2:0");
        assert!(host.matches(&inet([127, 0, 0, 2], 40000), b"/"));
        assert!(!host.matches(&inet([127, 0, 0, 1], 40000), b"/"));
        // The unspecified address: any host.
        assert!(o("0.0.0.0:80").matches(&inet([10, 1, 2, 3], 80), b"/"));
        assert!(!o("0.0.0.0:80").matches(&inet6("::1".parse().unwrap(), 80), b"/"));
        assert!(o("[::]:80").matches(&inet([10, 1, 2, 3], 80), b"/"));
        assert!(o("[::1]:0").matches(&inet6("::1".parse().unwrap(), 9), b"/"));
        assert!(!db.matches(&unix(b"/run/db.sock\0"), b"/"));
        // AF_UNIX: paths (relative ones against the working directory), abstract names.
        let p = o("/run/db.sock");
        assert!(p.matches(&unix(b"/run/db.sock\0"), b"/"));
        assert!(p.matches(&unix(b"db.sock"), b"/run"));
        assert!(!p.matches(&unix(b"db.sock"), b"/tmp"));
        assert!(!p.matches(&inet([127, 0, 0, 1], 1), b"/"));
        let a = o("@dbus");
        assert!(a.matches(&unix(b"\0dbus"), b"/"));
        assert!(!a.matches(&unix(b"\0dbus2"), b"/"));
        assert!(!a.matches(&unix(b"/dbus\0"), b"/"));
        assert!(unnamed_unix(&unix(b"")));
        assert!(!unnamed_unix(&unix(b"\0abcde")));
        assert!(!unnamed_unix(&inet([127, 0, 0, 1], 1)));
    }
}
