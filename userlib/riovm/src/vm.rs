//! A running guest: start it, run commands in it, crash it, reboot it, and always clean up.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rio_agent::Message;

use crate::config::VmConfig;
use crate::error::{Result, VmError};
use crate::qmp::Qmp;

/// What a command run in the guest produced.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit code, or 128 + signal.
    pub status: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl CmdOutput {
    /// Standard output as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// Standard error as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Default time a command may take.
pub const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// A guest under QEMU. Dropping it kills QEMU.
pub struct Vm {
    cfg: VmConfig,
    child: Child,
    qmp: Qmp,
    agent: UnixStream,
    incoming: Receiver<Message>,
    console: PathBuf,
    boot_id: String,
    boots: u32,
    next_id: u64,
}

impl Vm {
    /// Starts QEMU on `cfg` and waits until the guest agent reports in.
    /// If `cfg.ram_file` exists its contents are kept (a warm boot).
    pub fn start(cfg: VmConfig) -> Result<Vm> {
        let started = Instant::now();
        let vm = Self::start_inner(cfg);
        trace(started, || match &vm {
            Ok(_) => "QEMU started and the guest booted in".to_string(),
            Err(_) => "QEMU or the guest failed to start after".to_string(),
        });
        vm
    }

    fn start_inner(cfg: VmConfig) -> Result<Vm> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.workdir)
            .map_err(VmError::io(format!("create {}", cfg.workdir.display())))?;
        let qmp_path = cfg.workdir.join("qmp.sock");
        let agent_path = cfg.workdir.join("agent.sock");
        let console = next_console_path(&cfg.workdir);
        for p in [&qmp_path, &agent_path] {
            let _ = std::fs::remove_file(p);
        }
        let mut cmd = Command::new(&cfg.qemu);
        cmd.args(qemu_args(&cfg, &qmp_path, &agent_path, &console))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| VmError::Spawn {
            program: cfg.qemu.display().to_string(),
            source,
        })?;
        let qmp = match Qmp::connect(&qmp_path, Duration::from_secs(20)) {
            Ok(q) => q,
            Err(e) => {
                let why = qemu_failure(&mut child, &console);
                return Err(why.unwrap_or(e));
            }
        };
        let agent = match connect_retry(&agent_path, Duration::from_secs(10)) {
            Ok(a) => a,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let incoming = spawn_reader(agent.try_clone().map_err(VmError::io("agent socket"))?);
        let mut vm = Vm {
            cfg,
            child,
            qmp,
            agent,
            incoming,
            console,
            boot_id: String::new(),
            boots: 0,
            next_id: 1,
        };
        vm.wait_ready(vm.cfg.boot_timeout)?;
        Ok(vm)
    }

    /// The configuration this VM was started with.
    pub fn config(&self) -> &VmConfig {
        &self.cfg
    }

    /// The current boot's id (`/proc/sys/kernel/random/boot_id`).
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// How many times the guest has booted in this QEMU process.
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// The path of this QEMU process's console log.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// Everything the guest console has printed in this QEMU process.
    pub fn console(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        tail_lines(&self.console(), n)
    }

    fn timeout(&self, what: impl Into<String>, after: Duration) -> VmError {
        VmError::Timeout {
            what: what.into(),
            after,
            console_tail: self.console_tail(30),
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(VmError::QemuExited {
                status: status.to_string(),
                console_tail: self.console_tail(30),
            }),
            _ => Ok(()),
        }
    }

    /// Receives the next agent message, checking every 100 ms that QEMU is alive.
    fn recv(&mut self, deadline: Instant, what: &str) -> Result<Message> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout(what, self.cfg.boot_timeout));
            }
            let slice = (deadline - now).min(Duration::from_millis(100));
            match self.incoming.recv_timeout(slice) {
                Ok(m) => return Ok(m),
                Err(RecvTimeoutError::Timeout) => self.check_alive()?,
                Err(RecvTimeoutError::Disconnected) => {
                    self.check_alive()?;
                    return Err(VmError::Protocol("agent channel closed".into()));
                }
            }
        }
    }

    /// Waits for the agent's READY of a new boot.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .recv(deadline, "the guest to boot")
                .map_err(|e| match e {
                    VmError::Timeout { console_tail, .. } => VmError::Timeout {
                        what: "the guest agent to start".into(),
                        after: timeout,
                        console_tail,
                    },
                    e => e,
                })? {
                Message::Ready(id) if id != self.boot_id => {
                    self.boot_id = id;
                    self.boots += 1;
                    return Ok(());
                }
                _ => {} // stale output of the previous boot
            }
        }
    }

    fn send(&mut self, msg: &Message) -> Result<()> {
        self.agent
            .write_all(msg.to_line().as_bytes())
            .map_err(VmError::io("write to the guest agent"))
    }

    /// Runs `/bin/sh -c command` in the guest and waits for it, at most `timeout`.
    pub fn run_timeout(&mut self, command: &str, timeout: Duration) -> Result<CmdOutput> {
        let started = Instant::now();
        let out = self.run_inner(command, timeout);
        trace(started, || match &out {
            Ok(o) => format!("`{command}` exited {} in", o.status),
            Err(_) => format!("`{command}` failed after"),
        });
        out
    }

    fn run_inner(&mut self, command: &str, timeout: Duration) -> Result<CmdOutput> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Message::Run(id, command.as_bytes().to_vec()))?;
        let deadline = Instant::now() + timeout;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let what = format!("guest command `{command}`");
        loop {
            match self.recv(deadline, &what).map_err(|e| match e {
                VmError::Timeout { console_tail, .. } => VmError::Timeout {
                    what: what.clone(),
                    after: timeout,
                    console_tail,
                },
                e => e,
            })? {
                Message::Out(i, d) if i == id => stdout = d,
                Message::Err(i, d) if i == id => stderr = d,
                Message::Exit(i, status) if i == id => {
                    return Ok(CmdOutput {
                        status,
                        stdout,
                        stderr,
                    })
                }
                Message::Fail(i, m) if i == id => {
                    return Err(VmError::Protocol(format!(
                        "agent could not run `{command}`: {}",
                        String::from_utf8_lossy(&m)
                    )))
                }
                Message::Ready(boot) => {
                    self.boot_id = boot;
                    self.boots += 1;
                    return Err(VmError::Protocol(format!(
                        "the guest rebooted while running `{command}`"
                    )));
                }
                _ => {}
            }
        }
    }

    /// Runs a command with the default timeout.
    pub fn run(&mut self, command: &str) -> Result<CmdOutput> {
        self.run_timeout(command, DEFAULT_CMD_TIMEOUT)
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn sh(&mut self, command: &str) -> Result<String> {
        let out = self.run(command)?;
        if out.status != 0 {
            return Err(VmError::Protocol(format!(
                "guest command `{command}` exited {}: {}{}",
                out.status,
                out.stdout_str(),
                out.stderr_str()
            )));
        }
        Ok(out.stdout_str())
    }

    /// Starts a command in the guest without waiting for it (for example a crash trigger).
    pub fn spawn(&mut self, command: &str) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Message::Spawn(id, command.as_bytes().to_vec()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.recv(deadline, "the agent to start a command")? {
                Message::Started(i, _) if i == id => return Ok(()),
                Message::Fail(i, m) if i == id => {
                    return Err(VmError::Protocol(format!(
                        "agent could not spawn `{command}`: {}",
                        String::from_utf8_lossy(&m)
                    )))
                }
                _ => {}
            }
        }
    }

    /// Panics the guest kernel (`echo c > /proc/sysrq-trigger`): no sync, no flush.
    /// The guest reboots by itself one second later (`panic=1`) with RAM intact, unless the
    /// VM was configured with `no_reboot`.
    pub fn panic(&mut self) -> Result<()> {
        // The short delay lets the agent's STARTED reply leave the serial port before the
        // kernel dies; without it the reply can be lost and `spawn` would time out.
        self.spawn("sleep 0.2; echo c > /proc/sysrq-trigger")
    }

    /// Waits until the console shows `needle`, at most `timeout`.
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.console().contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.timeout(format!("console to show {needle:?}"), timeout));
            }
            self.check_alive()?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the guest to come back after it rebooted (warm: RAM is kept).
    pub fn wait_reboot(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let r = self.wait_ready(timeout);
        trace(started, || {
            "the guest came back after its reboot in".to_string()
        });
        r
    }

    /// Hard reset through QMP `system_reset` (RAM is kept), then waits for the new boot.
    pub fn system_reset(&mut self) -> Result<()> {
        self.qmp.execute("system_reset", None)?;
        self.wait_ready(self.cfg.boot_timeout)
    }

    /// Runs a QMP command.
    pub fn qmp(
        &mut self,
        command: &str,
        args: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.qmp.execute(command, args)
    }

    /// Stops QEMU at once, as a power cut would; the RAM file stays on disk, so a new
    /// [`Vm::start`] on the same configuration is a warm boot across processes.
    pub fn kill(mut self) -> Result<VmConfig> {
        self.stop();
        Ok(self.cfg.clone())
    }

    /// Powers the guest off with `poweroff -f` (falls back to killing QEMU).
    pub fn shutdown(mut self) -> Result<VmConfig> {
        let _ = self.spawn("sync; poweroff -f");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(self.cfg.clone());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Ok(self.cfg.clone())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Discards the RAM file so that the next start is a cold boot (power loss).
pub fn discard_ram(cfg: &VmConfig) -> Result<()> {
    match std::fs::remove_file(&cfg.ram_file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VmError::Io {
            context: format!("remove {}", cfg.ram_file.display()),
            source: e,
        }),
    }
}

/// Creates a raw disk image of `size` bytes (sparse) for use as a virtio disk.
pub fn create_disk(path: &Path, size: u64) -> Result<()> {
    let f =
        std::fs::File::create(path).map_err(VmError::io(format!("create {}", path.display())))?;
    f.set_len(size)
        .map_err(VmError::io(format!("size {}", path.display())))
}

/// A QEMU command for a person at a terminal: the console (with the QEMU monitor behind
/// Ctrl-A C) on standard input and output, and a shell on it in the guest (`rio.shell`).
/// The agent port stays available on `workdir/agent.sock`.
pub fn interactive_command(cfg: &VmConfig) -> Result<Command> {
    let mut cfg = cfg.clone();
    cfg.validate()?;
    cfg.append.push("rio.shell".into());
    std::fs::create_dir_all(&cfg.workdir)
        .map_err(VmError::io(format!("create {}", cfg.workdir.display())))?;
    let mut args = qemu_args(
        &cfg,
        &cfg.workdir.join("qmp.sock"),
        &cfg.workdir.join("agent.sock"),
        Path::new(""),
    );
    // Swap the console file for the terminal.
    if let Some(i) = args.iter().position(|a| a.starts_with("file,id=con0")) {
        args[i] = "stdio,id=con0,mux=on,signal=off".into();
        args.insert(i + 1, "-mon".into());
        args.insert(i + 2, "chardev=con0".into());
    }
    let mut cmd = Command::new(&cfg.qemu);
    cmd.args(args);
    Ok(cmd)
}

/// QEMU is killed when the thread that started it dies, so a runner killed by a timeout
/// (or by hand) leaves no guest behind. (`Drop` covers every orderly exit.) A [`Vm`] must
/// therefore stay with the thread that started it, or one that outlives it.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only makes the
    // async-signal-safe prctl call.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn qemu_args(cfg: &VmConfig, qmp: &Path, agent: &Path, console: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-accel".into(),
        "tcg".into(),
        "-cpu".into(),
        "max".into(),
        "-smp".into(),
        cfg.cpus.to_string(),
        "-m".into(),
        format!("{}M", cfg.memory_mib),
        "-object".into(),
        format!(
            "memory-backend-file,id=ram0,size={}M,mem-path={},share=on",
            cfg.memory_mib,
            cfg.ram_file.display()
        ),
        "-machine".into(),
        "pc,memory-backend=ram0".into(),
        "-kernel".into(),
        cfg.artifacts.kernel.display().to_string(),
        "-initrd".into(),
        cfg.artifacts.initramfs.display().to_string(),
        "-append".into(),
        cfg.cmdline(),
        "-chardev".into(),
        format!("file,id=con0,path={}", console.display()),
        "-serial".into(),
        "chardev:con0".into(),
        "-chardev".into(),
        format!(
            "socket,id=agent0,path={},server=on,wait=off",
            agent.display()
        ),
        "-serial".into(),
        "chardev:agent0".into(),
        // Third port (ttyS2): a log that guest workloads write to and the host reads (the
        // crash campaign's acknowledged writes), appended across reboots and processes.
        "-chardev".into(),
        format!(
            "file,id=log0,path={},append=on",
            workload_log_path(&cfg.workdir).display()
        ),
        "-serial".into(),
        "chardev:log0".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ];
    for (i, d) in cfg.disks.iter().enumerate() {
        let file = match cfg.fail_writes_at {
            // blkdebug: the raw driver reports each write as a `write_aio` event to the
            // blkdebug layer under it, which fails those that touch the sector.
            Some((disk, sector)) if disk == i => {
                let rules = cfg.workdir.join(format!("blkdebug-{i}.conf"));
                let text = format!(
                    "[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nsector = \"{sector}\"\nonce = \"off\"\n"
                );
                if let Err(e) = std::fs::write(&rules, text) {
                    eprintln!("riovm: cannot write {}: {e}", rules.display());
                }
                format!("blkdebug:{}:{}", rules.display(), d.path.display())
            }
            _ => d.path.display().to_string(),
        };
        a.push("-drive".into());
        a.push(format!(
            "file={file},if=none,id=disk{i},format=raw,cache=writeback"
        ));
        a.push("-device".into());
        a.push(format!("virtio-blk-pci,drive=disk{i}"));
    }
    if let Some(n) = cfg.net {
        a.extend(n.qemu_args());
    }
    if cfg.no_reboot {
        a.push("-no-reboot".into());
    }
    a
}

/// The file behind the guest's third serial port, `/dev/ttyS2`.
pub fn workload_log_path(workdir: &Path) -> PathBuf {
    workdir.join("workload.log")
}

fn next_console_path(workdir: &Path) -> PathBuf {
    (0u32..)
        .map(|n| workdir.join(format!("console-{n}.log")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| workdir.join("console.log"))
}

fn connect_retry(path: &Path, timeout: Duration) -> Result<UnixStream> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(_) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(VmError::Io {
                    context: format!("connect to agent socket {}", path.display()),
                    source: e,
                })
            }
        }
    }
}

/// Reads agent lines on a thread and forwards the parsed messages.
fn spawn_reader(stream: UnixStream) -> Receiver<Message> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    // Bytes sent before the guest set the port to raw mode can be glued to
                    // the front of a line: look for the message from its keyword on.
                    if let Some(m) = find_message(&line) {
                        if tx.send(m).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    rx
}

fn find_message(line: &str) -> Option<Message> {
    const KEYWORDS: [&str; 7] = [
        "READY ", "OUT ", "ERR ", "EXIT ", "STARTED ", "FAIL ", "RUN ",
    ];
    KEYWORDS
        .iter()
        .filter_map(|k| line.find(k))
        .min()
        .and_then(|i| Message::parse(&line[i..]))
}

/// If QEMU died, explain why from its stderr.
fn qemu_failure(child: &mut Child, console: &Path) -> Option<VmError> {
    let _ = child.kill();
    let status = child.wait().ok()?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let tail = std::fs::read_to_string(console).unwrap_or_default();
    Some(VmError::QemuExited {
        status: format!("{status}; stderr: {}", err.trim()),
        console_tail: tail_lines(&tail, 20),
    })
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// With `RIOVM_TRACE` set, one line on standard error per guest command and per start:
/// what it was and how long it took, so that a slow test can be profiled without guessing
/// (`RIOVM_TRACE=1 cargo test --test X -- --nocapture`).
fn trace(started: Instant, what: impl FnOnce() -> String) {
    if std::env::var_os("RIOVM_TRACE").is_some() {
        eprintln!("riovm: {} {:.2} s", what(), started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_messages_behind_line_noise() {
        assert_eq!(
            find_message("\u{1b}[0mgarbageREADY 1234\n"),
            Some(Message::Ready("1234".into()))
        );
        assert_eq!(find_message("EXIT 3 0\n"), Some(Message::Exit(3, 0)));
        assert_eq!(find_message("nothing here\n"), None);
    }

    #[test]
    fn a_networked_guest_gets_a_nic_a_netdev_and_its_address() {
        let mut cfg = VmConfig::new(
            crate::Artifacts {
                kernel: "/nonexistent/bzImage".into(),
                initramfs: "/nonexistent/initramfs".into(),
            },
            "/tmp/riovm-unit",
        );
        let p = Path::new("/nonexistent");
        let none = qemu_args(&cfg, p, p, p).join(" ");
        assert!(
            !none.contains("-netdev") && !none.contains("virtio-net"),
            "{none}"
        );
        assert!(!cfg.cmdline().contains("rio.ip="));
        cfg.net = Some(crate::NetConfig::new(3, 40000));
        let args = qemu_args(&cfg, p, p, p).join(" ");
        assert!(
            args.contains(
                "-netdev dgram,id=net0,local.type=inet,local.host=127.0.0.1,local.port=0,\
                 remote.type=inet,remote.host=127.0.0.1,remote.port=40000"
            ),
            "{args}"
        );
        assert!(
            args.contains("-device virtio-net-pci,netdev=net0,mac=52:54:00:77:00:03"),
            "{args}"
        );
        let line = cfg.cmdline();
        assert!(
            line.split(' ').any(|w| w == "rio.ip=10.77.0.3/24"),
            "{line}"
        );
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }
}
