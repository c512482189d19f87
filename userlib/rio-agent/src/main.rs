//! rio-agent: started by the guest's init on the agent serial port; runs what the host asks.
//!
//! Usage: `rio-agent [PORT]` (default `/dev/ttyS1`). See the crate docs for the protocol.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use clap::Parser;
use rio_agent::Message;

/// The guest agent: runs the host's commands, read from a serial port, and sends back their
/// output and status.
#[derive(Parser)]
#[command(name = "rio-agent", version, about)]
struct Cli {
    /// The serial port the host speaks on (qemu/init passes the second one).
    #[arg(default_value = "/dev/ttyS1")]
    port: String,
}

/// Puts the serial line into raw mode: no echo, no line editing, no CR/LF translation.
fn make_raw(port: &File) -> std::io::Result<()> {
    let fd = port.as_raw_fd();
    // SAFETY: `termios` is plain data; tcgetattr fills it for a valid open fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the lifetime of `port`, `t` is a valid termios.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `t` is a valid termios obtained above.
    unsafe { libc::cfmakeraw(&mut t) };
    // The line speed is left alone: QEMU's UART is not paced by it.
    t.c_cflag |= libc::CLOCAL | libc::CREAD;
    // SAFETY: `fd` is valid and `t` is a fully initialised termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn send(out: &mut File, msg: &Message) {
    // A failed write means the host went away; the next request will find out again.
    let _ = out.write_all(msg.to_line().as_bytes());
    let _ = out.flush();
}

fn status_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn main() {
    let path = Cli::parse().port;
    let port = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rio-agent: cannot open {path}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = make_raw(&port) {
        eprintln!("rio-agent: cannot set {path} to raw mode: {e}");
        std::process::exit(1);
    }
    let mut out = match port.try_clone() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rio-agent: cannot duplicate {path}: {e}");
            std::process::exit(1);
        }
    };
    send(&mut out, &Message::Ready(boot_id()));
    let mut reader = BufReader::new(port);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Ok(_) => {}
            Err(e) => {
                eprintln!("rio-agent: read error on {path}: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        }
        match Message::parse(&line) {
            Some(Message::Run(id, cmd)) => {
                let cmd = String::from_utf8_lossy(&cmd).into_owned();
                match Command::new("/bin/sh")
                    .arg("-c")
                    .arg(&cmd)
                    .stdin(Stdio::null())
                    .output()
                {
                    Ok(o) => {
                        send(&mut out, &Message::Out(id, o.stdout));
                        send(&mut out, &Message::Err(id, o.stderr));
                        send(&mut out, &Message::Exit(id, status_code(o.status)));
                    }
                    Err(e) => send(&mut out, &Message::Fail(id, e.to_string().into_bytes())),
                }
            }
            Some(Message::Spawn(id, cmd)) => {
                let cmd = String::from_utf8_lossy(&cmd).into_owned();
                match Command::new("/bin/sh")
                    .arg("-c")
                    .arg(&cmd)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                {
                    Ok(mut child) => {
                        send(&mut out, &Message::Started(id, child.id()));
                        // Reap it in the background so it leaves no zombie.
                        std::thread::spawn(move || child.wait());
                    }
                    Err(e) => send(&mut out, &Message::Fail(id, e.to_string().into_bytes())),
                }
            }
            _ => {} // line noise or a host-bound message: ignore
        }
    }
}
