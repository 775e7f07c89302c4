//! A client's WebSocket frames, however they are cut into reads: never a panic, never a
//! message over the bound, and nothing kept once a message is whole; and the server's
//! frames, however little the socket takes per write, come out whole and in order.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tsugi_notifyd::ws::{Incoming, Message, Reader, Writer};

/// Hands out `data` `step` bytes per read, then ends.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.data.len().min(self.step).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Takes at most `step` bytes per write.
struct Sink {
    taken: Vec<u8>,
    step: usize,
}

impl AsyncWrite for Sink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(self.step);
        self.taken.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(knobs & 0x3f) + 1;
    let max = 64 << (knobs >> 6);
    let mut cx = Context::from_waker(std::task::Waker::noop());

    // Client frames in.
    let mut io = Trickle { data: rest, step };
    let mut reader = Reader::new(max, Vec::new());
    while let Poll::Ready(Ok(incoming)) = reader.poll_next(&mut io, &mut cx) {
        if let Incoming::Message(m) = incoming {
            assert!(m.len() <= max);
        }
    }

    // Server frames out: each piece of the input as a binary message.
    let mut writer = Writer::default();
    let pieces: Vec<&[u8]> = rest.split(|&b| b == 0xff).collect();
    for p in &pieces {
        writer.push(Message::binary(p.to_vec()));
    }
    let mut sink = Sink {
        taken: Vec::new(),
        step,
    };
    assert!(matches!(
        writer.poll_write(&mut sink, &mut cx),
        Poll::Ready(Ok(()))
    ));
    assert!(writer.is_idle());
    let mut out = &sink.taken[..];
    for p in &pieces {
        assert_eq!(out[0], 0x82);
        let (len, at) = match out[1] {
            126 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
            127 => (usize::try_from(u64::from_be_bytes(out[2..10].try_into().unwrap())).unwrap(), 10),
            n => (usize::from(n), 2),
        };
        assert_eq!(&out[at..at + len], *p);
        out = &out[at + len..];
    }
    assert!(out.is_empty());
});

