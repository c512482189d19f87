//! A UDP server made recoverable by Discount Checking: it binds a port (`--port 0`: one
//! the kernel chooses) and prints `port N`, then answers numbered requests `req K V` with
//! `ans K S`, where `S` is the running sum of the values of requests 1..=K. Request K is
//! applied once, when it is the next one; a retransmitted request is answered again from
//! the history of sums (clients retransmit, since datagrams and answers may be lost,
//! e.g. while the server is down). Each applied request prints `req K value V sum S`;
//! after request `--count` it prints `done S` and exits. Killed and run again, it comes
//! back on the same port with its sums (the socket is recovered kernel state).

use std::net::{SocketAddr, UdpSocket};

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Recoverable UDP server (Discount Checking demo)")]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    addr: std::net::IpAddr,
    /// Port to bind (0: the kernel chooses one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Requests to apply before exiting.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Instead: try to make a TCP listener and a UNIX stream socket, print what happened
    /// (Discount Checking records the listener and refuses the stream pair) and exit.
    #[arg(long)]
    stream_probe: bool,
}

/// `req K V` as (K, V).
fn parse(msg: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(msg).ok()?;
    let mut w = s.split_whitespace();
    if w.next()? != "req" {
        return None;
    }
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

fn main() -> Result<()> {
    discount::init(discount::Config::from_env()?)?;
    let a = Args::parse();
    if a.stream_probe {
        match std::net::TcpListener::bind(SocketAddr::new(a.addr, 0)) {
            Ok(l) => println!("tcp listener on {}", l.local_addr()?),
            Err(e) => println!("tcp: {e}"),
        }
        match std::os::unix::net::UnixStream::pair() {
            Ok(_) => println!("unix stream pair made"),
            Err(e) => println!("unix stream: {e}"),
        }
        return Ok(());
    }
    let sock = UdpSocket::bind(SocketAddr::new(a.addr, a.port)).context("bind")?;
    println!("port {}", sock.local_addr()?.port());
    // sums[k - 1]: the sum after request k.
    let mut sums: Vec<u64> = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = sock.recv_from(&mut buf).context("recv_from")?;
        let Some((k, v)) = parse(&buf[..n]) else {
            continue;
        };
        if k == sums.len() as u64 + 1 {
            let s = sums.last().copied().unwrap_or(0) + v;
            sums.push(s);
            println!("req {k} value {v} sum {s}");
        }
        if let Some(s) = k.checked_sub(1).and_then(|i| sums.get(i as usize)) {
            sock.send_to(format!("ans {k} {s}").as_bytes(), from)
                .context("send_to")?;
        }
        if sums.len() as u64 == a.count {
            println!("done {}", sums.last().copied().unwrap_or(0));
            return Ok(());
        }
    }
}
