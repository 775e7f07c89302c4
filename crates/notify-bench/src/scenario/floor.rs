//! The kernel's floor for `fanout --floor`: no WebSocket server at all. A listener of
//! this process answers each client's upgrade with a bare 101, and then one thread
//! writes every message itself to every receiver's socket of its room, one write per
//! delivery, at the scenario's rate: what the same N, rate and size cost this machine
//! with nothing but the kernel between the writer and the readers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The accepted receivers, by room index (from their `room=r<index>` query).
pub struct Floor {
    addr: SocketAddr,
    accepting: std::thread::JoinHandle<anyhow::Result<HashMap<usize, Vec<TcpStream>>>>,
}

/// What the writer did.
pub struct Written {
    /// The writer thread's user + system CPU time, in seconds.
    pub cpu_secs: f64,
}

impl Floor {
    /// Listens on loopback and accepts `n` upgrades in a thread of its own.
    pub fn listen(n: usize) -> anyhow::Result<Floor> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let accepting = std::thread::spawn(move || {
            let mut rooms: HashMap<usize, Vec<TcpStream>> = HashMap::new();
            for _ in 0..n {
                let (mut s, _) = listener.accept()?;
                let room = upgrade(&mut s)?;
                s.set_nodelay(true)?;
                rooms.entry(room).or_default().push(s);
            }
            Ok(rooms)
        });
        Ok(Floor { addr, accepting })
    }

    /// Where the clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Once every client is in: writes `messages` messages from each of `senders`
    /// senders of each room, `payload(sender, room, seq, ns)` each, paced at `rate`
    /// per sender per second (0: unpaced), in one thread; `ns` counts from `base`.
    pub fn write(
        self,
        senders: usize,
        messages: usize,
        rate: f64,
        base: Instant,
        payload: impl Fn(usize, usize, usize, u64) -> String + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<Written>>> {
        let mut rooms = self
            .accepting
            .join()
            .map_err(|_| anyhow::anyhow!("the floor's accepting thread panicked"))??;
        Ok(std::thread::spawn(move || {
            let cpu0 = thread_cpu_secs();
            let start = Instant::now();
            let mut order: Vec<usize> = rooms.keys().copied().collect();
            order.sort_unstable();
            let mut frame = Vec::new();
            for q in 0..messages {
                if rate > 0.0 {
                    let due = start + Duration::from_secs_f64(q as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                // Every sender of every room sends now, as the scenario's senders do at
                // their tick: each message's time is the tick's, whatever room is
                // written first.
                let ns = base.elapsed().as_nanos() as u64;
                for &r in &order {
                    for s in 0..senders {
                        let text = payload(s, r, q, ns);
                        frame.clear();
                        encode_text(&mut frame, text.as_bytes());
                        for socket in rooms.get_mut(&r).into_iter().flatten() {
                            socket.write_all(&frame)?;
                        }
                    }
                }
            }
            Ok(Written {
                cpu_secs: thread_cpu_secs() - cpu0,
            })
        }))
    }
}

/// Reads a client's upgrade request and answers 101; returns its room index.
fn upgrade(s: &mut TcpStream) -> anyhow::Result<usize> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        anyhow::ensure!(n > 0 && head.len() < 16 * 1024, "bad upgrade request");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim())
        })
        .ok_or_else(|| anyhow::anyhow!("no Sec-WebSocket-Key"))?;
    let room = head
        .split(['?', '&', ' '])
        .find_map(|p| p.strip_prefix("room=r")?.parse().ok())
        .unwrap_or(0);
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    s.write_all(answer.as_bytes())?;
    Ok(room)
}

/// A server's (unmasked) text frame of `payload`.
fn encode_text(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// This thread's user + system CPU time, in seconds (USER_HZ is 100).
fn thread_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}
