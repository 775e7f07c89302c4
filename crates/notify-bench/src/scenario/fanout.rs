//! `fanout`: R rooms x M subscribers, S senders per room sending K messages each:
//! deliveries per second, latency, loss, duplicates, leaks, echoes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use super::{open_many, server_cpu};
use crate::client::Ws;
use crate::procfs;
use crate::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// Message size in bytes (at least 48).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages per second per sender; 0 sends unpaced.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Connect the senders to this server instead (another node: cross-node delivery).
    #[arg(long)]
    pub sender_addr: Option<std::net::SocketAddr>,
    /// The kernel's floor: no server; a thread of this process writes each message to
    /// every receiver's socket itself (one write per delivery) at the same rate and
    /// size (`--addr` is not used; "server CPU" is that thread's).
    #[arg(long)]
    pub floor: bool,
}

/// What one receiving connection saw.
#[derive(Debug, Default)]
struct Seen {
    received: u64,
    latencies_us: Vec<u32>,
    duplicates: u64,
    leaks: u64,
    echoes: u64,
    last: Option<Instant>,
    malformed: u64,
}

/// Payload: `s<sender> r<room> q<seq> t<ns>` padded with `.` to the size.
fn payload(sender: usize, room: usize, seq: usize, ns: u64, size: usize) -> String {
    let mut s = format!("s{sender} r{room} q{seq} t{ns} ");
    while s.len() < size {
        s.push('.');
    }
    s
}

/// The `data` of a `message` frame of tsugi-notify.v1.
fn data_of(frame: &str) -> Option<&str> {
    if !frame.starts_with(r#"{"type":"message""#) {
        return None;
    }
    let start = frame.find(r#""data":""#)? + 8;
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

fn parse(p: &str) -> Option<(usize, usize, usize, u64)> {
    let mut it = p.split(' ');
    let s = it.next()?.strip_prefix('s')?.parse().ok()?;
    let r = it.next()?.strip_prefix('r')?.parse().ok()?;
    let q = it.next()?.strip_prefix('q')?.parse().ok()?;
    let t = it.next()?.strip_prefix('t')?.parse().ok()?;
    Some((s, r, q, t))
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    mut stream: futures_util::stream::SplitStream<Ws>,
    me: usize,
    room: usize,
    senders_in_room: std::ops::Range<usize>,
    expected: u64,
    messages: usize,
    base: Instant,
    stop: Arc<Notify>,
    activity: Arc<AtomicU64>,
) -> Seen {
    let mut seen = Seen::default();
    let width = senders_in_room.len();
    let mut bits = vec![0u64; (width * messages).div_ceil(64)];
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        if seen.received >= expected && expected > 0 {
            break;
        }
        let msg = tokio::select! {
            () = &mut stopped => break,
            m = stream.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => break,
        };
        let now = Instant::now();
        activity.fetch_max(
            now.duration_since(base).as_nanos() as u64,
            Ordering::Relaxed,
        );
        // A frame of the protocol: the payload is its `data` (ours need no escape);
        // the other frames (hello, presence, join, ack) are not messages.
        let text: &str = if text.starts_with('{') {
            match data_of(&text) {
                Some(d) => d,
                None => continue,
            }
        } else {
            &text
        };
        let Some((s, r, q, t)) = parse(text) else {
            seen.malformed += 1;
            continue;
        };
        seen.received += 1;
        seen.last = Some(now);
        let sent = base + Duration::from_nanos(t);
        seen.latencies_us.push(
            now.saturating_duration_since(sent)
                .as_micros()
                .min(u128::from(u32::MAX)) as u32,
        );
        if s == me {
            seen.echoes += 1;
        }
        if r != room || !senders_in_room.contains(&s) || q >= messages {
            seen.leaks += 1;
            continue;
        }
        let bit = (s - senders_in_room.start) * messages + q;
        if bits[bit / 64] & (1 << (bit % 64)) != 0 {
            seen.duplicates += 1;
        }
        bits[bit / 64] |= 1 << (bit % 64);
    }
    seen
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(mut f: Args) -> anyhow::Result<Option<String>> {
    f.size = f.size.max(48);
    let (r_n, m_n, s_n) = (f.rooms, f.subscribers, f.senders);
    let floor = if f.floor {
        let floor = super::floor::Floor::listen(r_n * m_n)?;
        f.target.addr = floor.addr();
        f.target.server_pid = None;
        Some(floor)
    } else {
        None
    };
    let target = &f.target;
    let subs_total = r_n * m_n;
    // Subscribers first (ids 0..R*M), then senders (ids R*M..): sender s of room r is
    // id R*M + r*S + s.
    let total = subs_total + r_n * s_n;
    let room_of = move |i: usize| {
        if i < subs_total {
            i / m_n
        } else {
            (i - subs_total) / s_n
        }
    };
    let t0 = Instant::now();
    let spec = |i: usize| {
        let r = room_of(i);
        (format!("bench{r}"), format!("r{r}"))
    };
    let mut conns = open_many(target, subs_total, spec).await?;
    let mut sender_target = target.clone();
    if let Some(a) = f.sender_addr {
        sender_target.addr = a;
    }
    // (The floor has no senders: it writes as they would.)
    if floor.is_none() {
        conns.extend(open_many(&sender_target, r_n * s_n, |i| spec(subs_total + i)).await?);
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    eprintln!("fanout: {total} connections open in {connect_secs:.2} s");
    let base = Instant::now();
    let stop = Arc::new(Notify::new());
    let activity = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut sinks = Vec::new();
    for (i, ws) in conns.into_iter().enumerate() {
        let r = room_of(i);
        let (sink, stream) = ws.split();
        let senders = subs_total + r * s_n..subs_total + (r + 1) * s_n;
        let is_sender = i >= subs_total;
        let expected = ((s_n - usize::from(is_sender)) * f.messages) as u64;
        receivers.push(tokio::spawn(receive(
            stream,
            i,
            r,
            senders,
            expected,
            f.messages,
            base,
            stop.clone(),
            activity.clone(),
        )));
        if is_sender {
            sinks.push((i, r, sink));
        }
    }
    // Give every connection a moment to be joined before the first message.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_server0 = server_cpu(target);
    let cpu_client0 = procfs::own_cpu_secs();
    let send_start = Instant::now();
    let mut send_tasks = Vec::new();
    let mut floor_cpu = None;
    if let Some(floor) = floor {
        let size = f.size;
        let writer = floor.write(s_n, f.messages, f.rate, base, move |s, r, q, ns| {
            payload(subs_total + r * s_n + s, r, q, ns, size)
        })?;
        let written = tokio::task::spawn_blocking(move || writer.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the floor's writer panicked"))??;
        floor_cpu = Some(written.cpu_secs);
    }
    for (id, r, mut sink) in sinks {
        let (messages, size, rate) = (f.messages, f.size, f.rate);
        send_tasks.push(tokio::spawn(async move {
            let mut tick = (rate > 0.0).then(|| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            for q in 0..messages {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let ns = base.elapsed().as_nanos() as u64;
                let msg = Message::text(payload(id, r, q, ns, size));
                let paced = tick.is_some();
                let res = if paced || q % 32 == 31 || q + 1 == messages {
                    sink.send(msg).await
                } else {
                    sink.feed(msg).await
                };
                if res.is_err() {
                    return (q, sink);
                }
            }
            (messages, sink)
        }));
    }
    let mut sent = if floor_cpu.is_some() {
        r_n * s_n * f.messages
    } else {
        0
    };
    let mut keep = Vec::new();
    for t in send_tasks {
        let (n, sink) = t.await?;
        sent += n;
        keep.push(sink);
    }
    let send_secs = send_start.elapsed().as_secs_f64();
    // Let deliveries drain: receivers stop when complete, or when nothing has arrived
    // anywhere for 3 s.
    let quiet = tokio::spawn({
        let stop = stop.clone();
        let activity = activity.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let last = Duration::from_nanos(activity.load(Ordering::Relaxed));
                let idle = base
                    .elapsed()
                    .saturating_sub(last.max(send_start.duration_since(base)));
                if idle > Duration::from_secs(3) {
                    stop.notify_waiters();
                    return;
                }
            }
        }
    });
    let mut all = Seen::default();
    let mut last = send_start;
    for r in receivers {
        let s = r.await?;
        all.received += s.received;
        all.duplicates += s.duplicates;
        all.leaks += s.leaks;
        all.echoes += s.echoes;
        all.malformed += s.malformed;
        all.latencies_us.extend(s.latencies_us);
        if let Some(l) = s.last {
            last = last.max(l);
        }
    }
    quiet.abort();
    let cpu_server = floor_cpu.or_else(|| server_cpu(target).zip(cpu_server0).map(|(a, b)| a - b));
    let cpu_client = procfs::own_cpu_secs() - cpu_client0;
    drop(keep);
    // Every subscriber gets every sender's messages, and every sender the others'
    // (the floor has no sender sockets).
    let senders_hearing = if f.floor { 0 } else { s_n - 1 };
    let expected = (r_n * s_n * f.messages * (m_n + senders_hearing)) as u64;
    let secs = last
        .saturating_duration_since(send_start)
        .as_secs_f64()
        .max(1e-9);
    all.latencies_us.sort_unstable();
    let l = &all.latencies_us;
    let per_delivery_us = cpu_server.map(|c| c * 1e6 / all.received.max(1) as f64);
    let report = json!({
        "scenario": if f.floor { "floor" } else { "fanout" },
        "rooms": r_n, "subscribers": m_n, "senders": s_n, "messages": f.messages,
        "size": f.size, "rate": f.rate,
        "sent": sent,
        "deliveries": all.received,
        "expected": expected,
        "loss": expected.saturating_sub(all.received),
        "duplicates": all.duplicates,
        "leaks": all.leaks,
        "echoes": all.echoes,
        "malformed": all.malformed,
        "seconds": secs,
        "send_seconds": send_secs,
        "deliveries_per_sec": all.received as f64 / secs,
        "latency_us": {
            "p50": percentile(l, 0.50), "p90": percentile(l, 0.90),
            "p99": percentile(l, 0.99), "max": l.last().copied().unwrap_or(0),
        },
        "server_cpu_secs": cpu_server,
        "server_cpu_us_per_delivery": per_delivery_us,
        "client_cpu_secs": cpu_client,
        "client_cpu_share": cpu_client / secs,
    });
    eprintln!(
        "fanout: {} of {expected} deliveries in {secs:.2} s = {:.0}/s; p50 {} us, p99 {} us; loss {}, dup {}, leaks {}, echoes {}; server CPU {} us/delivery; client CPU {:.0}%",
        all.received,
        all.received as f64 / secs,
        percentile(l, 0.5),
        percentile(l, 0.99),
        expected.saturating_sub(all.received),
        all.duplicates,
        all.leaks,
        all.echoes,
        per_delivery_us.map_or("?".into(), |u| format!("{u:.2}")),
        100.0 * cpu_client / secs,
    );
    Ok(Some(report.to_string()))
}
