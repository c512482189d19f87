//! The line protocol between the host-side runner (`riovm`) and the guest agent.
//!
//! The channel is the guest's second serial port (`/dev/ttyS1`) in raw mode, which the host
//! reaches through a QEMU socket chardev. Every message is one ASCII line; payloads are hex so
//! that any bytes survive the trip.
//!
//! ```text
//! guest -> host   READY <boot-id>                 agent started (once per boot)
//! host  -> guest  RUN <id> <hex command>          run `/bin/sh -c command`, wait for it
//! guest -> host   OUT <id> <hex stdout>
//! guest -> host   ERR <id> <hex stderr>
//! guest -> host   EXIT <id> <status>              exit code, or 128 + signal number
//! host  -> guest  SPAWN <id> <hex command>        start it and do not wait (crash triggers)
//! guest -> host   STARTED <id> <pid>
//! guest -> host   FAIL <id> <hex message>         the agent itself could not do it
//! ```

pub mod hex;

/// A message on the agent channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The agent has started; the argument is the kernel's boot id.
    Ready(String),
    /// Run a shell command and report its output and status.
    Run(u64, Vec<u8>),
    /// Start a shell command without waiting for it.
    Spawn(u64, Vec<u8>),
    /// Standard output of a finished command.
    Out(u64, Vec<u8>),
    /// Standard error of a finished command.
    Err(u64, Vec<u8>),
    /// Exit status of a finished command.
    Exit(u64, i32),
    /// A spawned command's pid.
    Started(u64, u32),
    /// The agent failed to carry out a request.
    Fail(u64, Vec<u8>),
}

impl Message {
    /// Formats the message as one line, newline included.
    pub fn to_line(&self) -> String {
        match self {
            Message::Ready(id) => format!("READY {id}\n"),
            Message::Run(id, c) => format!("RUN {id} {}\n", hex::encode(c)),
            Message::Spawn(id, c) => format!("SPAWN {id} {}\n", hex::encode(c)),
            Message::Out(id, d) => format!("OUT {id} {}\n", hex::encode(d)),
            Message::Err(id, d) => format!("ERR {id} {}\n", hex::encode(d)),
            Message::Exit(id, s) => format!("EXIT {id} {s}\n"),
            Message::Started(id, p) => format!("STARTED {id} {p}\n"),
            Message::Fail(id, m) => format!("FAIL {id} {}\n", hex::encode(m)),
        }
    }

    /// Parses one line (without or with its newline). `None` if it is not a message, which
    /// lets the reader skip line noise on the serial port.
    pub fn parse(line: &str) -> Option<Message> {
        let line = line.trim_end_matches(['\n', '\r']);
        let mut parts = line.splitn(3, ' ');
        let kind = parts.next()?;
        let a = parts.next()?;
        let b = parts.next().unwrap_or("");
        if kind == "READY" {
            return Some(Message::Ready(a.to_string()));
        }
        let id: u64 = a.parse().ok()?;
        Some(match kind {
            "RUN" => Message::Run(id, hex::decode(b)?),
            "SPAWN" => Message::Spawn(id, hex::decode(b)?),
            "OUT" => Message::Out(id, hex::decode(b)?),
            "ERR" => Message::Err(id, hex::decode(b)?),
            "EXIT" => Message::Exit(id, b.parse().ok()?),
            "STARTED" => Message::Started(id, b.parse().ok()?),
            "FAIL" => Message::Fail(id, hex::decode(b)?),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            Message::Ready("abc-123".into()),
            Message::Run(7, b"echo 'hi'\n; exit 3".to_vec()),
            Message::Spawn(8, b"echo c > /proc/sysrq-trigger".to_vec()),
            Message::Out(7, (0..=255).collect()),
            Message::Err(7, vec![]),
            Message::Exit(7, -1),
            Message::Started(8, 42),
            Message::Fail(9, b"no such thing".to_vec()),
        ];
        for m in msgs {
            assert_eq!(Message::parse(&m.to_line()), Some(m.clone()), "{m:?}");
        }
    }

    #[test]
    fn noise_is_not_a_message() {
        for noise in [
            "",
            "hello",
            "RUN x 00",
            "RUN 1 0g",
            "EXIT 1 x",
            "UNKNOWN 1 00",
        ] {
            assert_eq!(Message::parse(noise), None, "{noise:?}");
        }
    }
}
