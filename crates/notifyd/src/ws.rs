//! The server's side of RFC 6455 once the handshake is done: client frames in, server
//! frames out, holding memory only while something is in flight.
//!
//! An idle connection here is two empty vectors: bytes are read through a buffer on the
//! stack and kept only while a frame is incomplete, and frames wait to be written only
//! while the socket refuses them. A frame's payload is the message's own shared buffer
//! (server frames are not masked): fan-out to N receivers encodes N headers of 2 to 10
//! bytes and copies no payload before the kernel does, one `writev` per batch.
//! (tungstenite, which the handshake and the tests use, keeps a read buffer and a write
//! buffer per connection for its whole life and copies each payload into the latter.)

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
pub use tokio_tungstenite::tungstenite::Message;

/// The largest payload of a control frame (RFC 6455 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Bytes asked of the socket per read, into a buffer on the stack.
const READ_CHUNK: usize = 8 * 1024;

/// Frames given to one `writev`.
const MAX_IOV: usize = 64;

/// Opcodes (RFC 6455 5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// What a client sent.
#[derive(Debug)]
pub enum Incoming {
    /// A whole text or binary message.
    Message(Message),
    /// A ping, with its payload (answered by a pong carrying it).
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame: its code and reason, if it gave them.
    Close(Option<(u16, Utf8Bytes)>),
}

/// Why reading ended.
#[derive(Debug)]
pub enum ReadEnd {
    /// A message over the size bound (1009).
    TooBig,
    /// A text message, or a close reason, that is not UTF-8 (1007).
    Utf8,
    /// A frame RFC 6455 does not allow from a client (1002).
    Protocol,
    /// The socket failed.
    Io(io::Error),
    /// The client went away without a close frame.
    Eof,
}

/// A message whose frames are still arriving.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
}

/// Reads client frames.
#[derive(Debug)]
pub struct Reader {
    /// Bytes received (no allocation when there are none to keep) ...
    buf: Vec<u8>,
    /// ... of which those before this were made into frames.
    pos: usize,
    /// A fragmented message being put together.
    partial: Option<Box<Partial>>,
    /// The largest message, in payload bytes.
    max: usize,
}

/// A client frame's header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Its own length: 2 to 14 bytes.
    len: usize,
    /// The payload's length.
    payload: usize,
}

impl Reader {
    /// A reader of messages of at most `max` bytes that starts with `rest`: what the
    /// client sent after its request head.
    pub fn new(max: usize, rest: Vec<u8>) -> Self {
        Reader {
            buf: rest,
            pos: 0,
            partial: None,
            max,
        }
    }

    /// The next thing the client sent: what is buffered first, then the socket.
    pub fn poll_next<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Incoming, ReadEnd>> {
        loop {
            if let Some(incoming) = self.parse()? {
                return Poll::Ready(Ok(incoming));
            }
            // What was parsed goes before more is read (once per read: a buffer of many
            // small frames is not moved once per frame).
            self.buf.drain(..self.pos);
            self.pos = 0;
            // A large frame's room is not kept for what follows it.
            let keep = self.buf.len().max(READ_CHUNK);
            if self.buf.capacity() > 2 * keep {
                self.buf.shrink_to(keep);
            }
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut read)).map_err(ReadEnd::Io)?;
            if read.filled().is_empty() {
                return Poll::Ready(Err(ReadEnd::Eof));
            }
            self.buf.extend_from_slice(read.filled());
        }
    }

    /// Takes the frames the buffer holds until one makes something to hand over.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadEnd> {
        loop {
            let Some(h) = self.header()? else {
                return Ok(None);
            };
            let start = self.pos + h.len;
            let end = start + h.payload;
            if self.buf.len() < end {
                return Ok(None);
            }
            let mut payload = self.buf[start..end].to_vec();
            unmask(&mut payload, h.mask);
            self.pos = end;
            if end == self.buf.len() {
                // All made into frames: an idle reader holds nothing.
                self.buf = Vec::new();
                self.pos = 0;
            }
            match h.opcode {
                // (`header` refused a message inside a message, and a continuation of
                // nothing.)
                TEXT | BINARY => {
                    let text = h.opcode == TEXT;
                    if h.fin {
                        return message(text, payload).map(Some);
                    }
                    self.partial = Some(Box::new(Partial {
                        text,
                        data: payload,
                    }));
                }
                CONTINUATION => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(ReadEnd::Protocol);
                    };
                    partial.data.extend_from_slice(&payload);
                    if h.fin {
                        let Partial { text, data } = *self.partial.take().expect("checked above");
                        return message(text, data).map(Some);
                    }
                }
                PING => return Ok(Some(Incoming::Ping(payload.into()))),
                PONG => return Ok(Some(Incoming::Pong)),
                CLOSE => return close_payload(payload).map(|c| Some(Incoming::Close(c))),
                _ => return Err(ReadEnd::Protocol),
            }
        }
    }

    /// The header at the start of the buffer, checked as soon as its bytes are in
    /// (before any payload is waited for): `None` until they are.
    fn header(&self) -> Result<Option<Header>, ReadEnd> {
        let b = &self.buf[self.pos..];
        let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
            return Ok(None);
        };
        // No extension is negotiated, so no reserved bit may be set.
        if b0 & 0x70 != 0 {
            return Err(ReadEnd::Protocol);
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        // Every client frame is masked (RFC 6455 5.1).
        if b1 & 0x80 == 0 {
            return Err(ReadEnd::Protocol);
        }
        let control = opcode & 0x8 != 0;
        if control && (!fin || usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD) {
            return Err(ReadEnd::Protocol);
        }
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(ReadEnd::Protocol);
        }
        // A continuation of nothing, or a new message inside one, is refused before its
        // payload is waited for.
        match (opcode, self.partial.is_some()) {
            (CONTINUATION, false) | (TEXT | BINARY, true) => return Err(ReadEnd::Protocol),
            _ => {}
        }
        let (payload, at) = match b1 & 0x7F {
            126 => match b.get(2..4) {
                Some(n) => (u64::from(u16::from_be_bytes([n[0], n[1]])), 4),
                None => return Ok(None),
            },
            127 => match b.get(2..10) {
                Some(n) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(n);
                    (u64::from_be_bytes(be), 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        // The size bound holds before anything of the payload is waited for.
        let held = self.partial.as_ref().map_or(0, |p| p.data.len());
        if !control && payload.saturating_add(held as u64) > self.max as u64 {
            return Err(ReadEnd::TooBig);
        }
        let Some(m) = b.get(at..at + 4) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask: [m[0], m[1], m[2], m[3]],
            len: at + 4,
            // Within `max` (or 125): it fits.
            payload: usize::try_from(payload).map_err(|_| ReadEnd::TooBig)?,
        }))
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        for (b, m) in c.iter_mut().zip(mask) {
            *b ^= m;
        }
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

fn message(text: bool, data: Vec<u8>) -> Result<Incoming, ReadEnd> {
    let bytes = Bytes::from(data);
    Ok(Incoming::Message(if text {
        Message::Text(Utf8Bytes::try_from(bytes).map_err(|_| ReadEnd::Utf8)?)
    } else {
        Message::Binary(bytes)
    }))
}

/// A close frame's code and reason (RFC 6455 5.5.1, 7.4).
fn close_payload(payload: Vec<u8>) -> Result<Option<(u16, Utf8Bytes)>, ReadEnd> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ReadEnd::Protocol),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            // The codes a client may send (RFC 6455 7.4, as tungstenite takes them).
            let known = matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999);
            if !known {
                return Err(ReadEnd::Protocol);
            }
            let reason =
                Utf8Bytes::try_from(Bytes::from(payload).slice(2..)).map_err(|_| ReadEnd::Utf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Server frames waiting for the socket, the first of them perhaps partly written.
#[derive(Debug, Default)]
pub struct Writer {
    /// Each frame's opcode and payload.
    frames: VecDeque<(u8, Bytes)>,
    /// Bytes of the first frame (header and payload) already written.
    sent: usize,
    /// The answer to the latest ping, written at the next frame boundary (a newer ping
    /// replaces an unsent answer: a client that pings and reads nothing queues one).
    pong: Option<Bytes>,
    /// A ping of ours, written at the next frame boundary (one at a time).
    ping: bool,
    /// Written and not yet flushed (TLS holds records until the socket takes them).
    unflushed: bool,
}

impl Writer {
    /// Nothing to write.
    pub fn is_idle(&self) -> bool {
        self.frames.is_empty() && self.pong.is_none() && !self.ping && !self.unflushed
    }

    /// Frames are waiting (a ping or an answer counts once it is among them: when the
    /// socket has refused it).
    pub fn has_frames(&self) -> bool {
        !self.frames.is_empty()
    }

    /// Queues a text or binary message as a frame (the server sends no other kind as a
    /// message: see [`Writer::ping`], [`Writer::pong`] and [`Writer::close`]).
    pub fn push(&mut self, msg: Message) {
        match msg {
            Message::Text(t) => self.frames.push_back((TEXT, Bytes::from(t))),
            Message::Binary(b) => self.frames.push_back((BINARY, b)),
            _ => debug_assert!(false, "not a message: {msg:?}"),
        }
    }

    /// Pings the client (with nothing: its answer only shows it is there).
    pub fn ping(&mut self) {
        self.ping = true;
    }

    /// Answers a ping.
    pub fn pong(&mut self, payload: Bytes) {
        self.pong = Some(payload);
    }

    /// Drops the frames not yet begun (a frame partly written is finished: the stream
    /// stays well formed), then queues a close frame with this code and reason (none:
    /// an empty close frame).
    pub fn close(&mut self, close: Option<(u16, &str)>) {
        self.frames.truncate(usize::from(self.sent > 0));
        self.pong = None;
        self.ping = false;
        let payload = close_frame(close.map(|(c, r)| (c, Utf8Bytes::from(r.to_owned()))));
        self.frames.push_back((CLOSE, payload));
    }

    /// Writes until everything is written and flushed, or the socket refuses more.
    pub fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.sent == 0 {
                // Nothing of the first frames is out: an answer or a ping still waiting
                // there (the socket refused them whole) is the one to send, not another
                // one beside it.
                if let Some(p) = self.pong.take() {
                    match self.frames.iter_mut().take(2).find(|(op, _)| *op == PONG) {
                        Some(waiting) => waiting.1 = p,
                        None => self.frames.push_front((PONG, p)),
                    }
                }
                if std::mem::take(&mut self.ping)
                    && !self.frames.iter().take(2).any(|(op, _)| *op == PING)
                {
                    self.frames.push_front((PING, Bytes::new()));
                }
            }
            if self.frames.is_empty() {
                break;
            }
            let n = self.frames.len().min(MAX_IOV);
            let mut heads = [([0u8; 10], 0usize); MAX_IOV];
            for (h, (op, payload)) in heads.iter_mut().zip(self.frames.iter()) {
                *h = header(*op, payload.len());
            }
            let mut slices = [IoSlice::new(&[]); 2 * MAX_IOV];
            let mut k = 0;
            let mut skip = self.sent;
            for ((head, hlen), (_, payload)) in heads.iter().zip(self.frames.iter()).take(n) {
                let head = &head[..*hlen];
                for part in [head, payload.as_ref()] {
                    let from = skip.min(part.len());
                    skip -= from;
                    if from < part.len() {
                        slices[k] = IoSlice::new(&part[from..]);
                        k += 1;
                    }
                }
            }
            let mut written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..k]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unflushed = true;
            while written > 0 {
                let (op, payload) = &self.frames[0];
                let whole = header(*op, payload.len()).1 + payload.len();
                let left = whole - self.sent;
                if written >= left {
                    written -= left;
                    self.sent = 0;
                    self.frames.pop_front();
                } else {
                    self.sent += written;
                    written = 0;
                }
            }
        }
        if self.unflushed {
            ready!(Pin::new(&mut *io).poll_flush(cx))?;
            self.unflushed = false;
        }
        // An idle writer holds nothing.
        if self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }
}

/// A server frame's header (final, unmasked): its bytes and its length.
fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(n) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&n.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// A close frame's payload: the code and the reason, cut to fit a control frame.
fn close_frame(close: Option<(u16, Utf8Bytes)>) -> Bytes {
    let Some((code, reason)) = close else {
        return Bytes::new();
    };
    let mut reason = reason.as_str();
    while reason.len() > MAX_CONTROL_PAYLOAD - 2 {
        let mut cut = MAX_CONTROL_PAYLOAD - 2;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    p.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A socket that hands out these chunks, one per read, then ends (or, once
    /// `wait` is set, waits).
    struct Chunks(VecDeque<Vec<u8>>, bool);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut c) = self.0.pop_front() {
                let n = c.len().min(buf.remaining());
                buf.put_slice(&c[..n]);
                if n < c.len() {
                    self.0.push_front(c.split_off(n));
                }
            } else if self.1 {
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }
    }

    /// A client frame: masked, with this first byte (FIN, RSV and opcode).
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![b0];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        f
    }

    /// Everything a reader of `max` bytes makes of `bytes` given in chunks of `step`,
    /// up to the first fault (or the end).
    fn read_all(max: usize, bytes: &[u8], step: usize) -> (Vec<Incoming>, ReadEnd) {
        let chunks = bytes.chunks(step.max(1)).map(<[u8]>::to_vec).collect();
        let mut io = Chunks(chunks, false);
        let mut reader = Reader::new(max, Vec::new());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut got = Vec::new();
        loop {
            match reader.poll_next(&mut io, &mut cx) {
                Poll::Ready(Ok(i)) => got.push(i),
                Poll::Ready(Err(f)) => return (got, f),
                Poll::Pending => unreachable!("the test socket never waits"),
            }
        }
    }

    fn text(i: &Incoming) -> &str {
        match i {
            Incoming::Message(Message::Text(t)) => t.as_str(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn frames_are_read_whatever_the_chunks() {
        let mut bytes = client_frame(0x81, b"hello");
        bytes.extend(client_frame(0x82, &[0u8, 1, 2]));
        bytes.extend(client_frame(0x81, &vec![b'a'; 300]));
        bytes.extend(client_frame(0x81, &vec![b'b'; 70_000]));
        // Fragmented, with a ping between the fragments.
        bytes.extend(client_frame(0x01, b"frag"));
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x00, b"men"));
        bytes.extend(client_frame(0x80, b"ted"));
        bytes.extend(client_frame(0x8A, b""));
        bytes.extend(client_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        for step in [1, 2, 3, 7, 13, 1000, 100_000] {
            let (got, end) = read_all(100_000, &bytes, step);
            assert!(matches!(end, ReadEnd::Eof), "step {step}");
            assert_eq!(got.len(), 8, "step {step}");
            assert_eq!(text(&got[0]), "hello");
            assert!(matches!(&got[1], Incoming::Message(Message::Binary(b)) if b[..] == [0, 1, 2]));
            assert_eq!(text(&got[2]), "a".repeat(300));
            assert_eq!(text(&got[3]), "b".repeat(70_000));
            assert!(matches!(&got[4], Incoming::Ping(p) if &p[..] == b"p"));
            assert_eq!(text(&got[5]), "fragmented");
            assert!(matches!(&got[6], Incoming::Pong));
            assert!(matches!(&got[7], Incoming::Close(Some((1000, r))) if r.as_str() == "bye"));
        }
    }

    #[test]
    fn a_reader_holds_nothing_between_messages() {
        let bytes = client_frame(0x81, &vec![b'x'; 5000]);
        let mut io = Chunks(bytes.chunks(100).map(<[u8]>::to_vec).collect(), false);
        let mut reader = Reader::new(10_000, Vec::new());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            reader.poll_next(&mut io, &mut cx),
            Poll::Ready(Ok(_))
        ));
        assert_eq!(reader.buf.capacity(), 0);
        assert!(reader.partial.is_none());
    }

    #[test]
    fn a_large_frame_s_room_is_not_kept_for_what_follows() {
        let mut bytes = client_frame(0x82, &vec![0u8; 65_536]);
        // The first byte of the next frame: the buffer cannot be emptied.
        bytes.push(0x89);
        let mut io = Chunks(bytes.chunks(8192).map(<[u8]>::to_vec).collect(), true);
        let mut reader = Reader::new(100_000, Vec::new());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            reader.poll_next(&mut io, &mut cx),
            Poll::Ready(Ok(_))
        ));
        assert!(reader.poll_next(&mut io, &mut cx).is_pending());
        assert_eq!(reader.buf.len(), 1);
        assert!(
            reader.buf.capacity() <= 2 * READ_CHUNK,
            "{}",
            reader.buf.capacity()
        );
    }

    #[test]
    fn what_rfc_6455_forbids_a_client_is_a_protocol_error() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("a reserved bit", client_frame(0xC1, b"x")),
            ("an unknown opcode", client_frame(0x83, b"x")),
            ("an unknown control opcode", client_frame(0x8B, b"")),
            ("an unmasked frame", vec![0x81, 0x01, b'x']),
            ("a fragmented ping", client_frame(0x09, b"")),
            ("a ping over 125 bytes", client_frame(0x89, &[0u8; 126])),
            ("a continuation of nothing", client_frame(0x80, b"x")),
            // Refused at its header, before its payload is waited for.
            (
                "a continuation of nothing, its header only",
                client_frame(0x80, &[0u8; 500])[..8].to_vec(),
            ),
            ("a message inside a message, its header only", {
                let mut b = client_frame(0x01, b"x");
                b.extend_from_slice(&client_frame(0x82, &[0u8; 500])[..8]);
                b
            }),
            ("a message inside a message", {
                let mut b = client_frame(0x01, b"x");
                b.extend(client_frame(0x81, b"y"));
                b
            }),
            ("a close of one byte", client_frame(0x88, &[3])),
            (
                "close code 1005",
                client_frame(0x88, &1005u16.to_be_bytes()),
            ),
            ("close code 999", client_frame(0x88, &999u16.to_be_bytes())),
            (
                "close code 5000",
                client_frame(0x88, &5000u16.to_be_bytes()),
            ),
        ];
        for (what, bytes) in cases {
            let (_, end) = read_all(1000, &bytes, 1);
            assert!(matches!(end, ReadEnd::Protocol), "{what}: {end:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_refused_in_text_and_close_reasons() {
        let (_, end) = read_all(1000, &client_frame(0x81, &[0xff, 0xfe]), 5);
        assert!(matches!(end, ReadEnd::Utf8));
        // Split inside a character across fragments: valid once whole.
        let mut b = client_frame(0x01, &"é".as_bytes()[..1]);
        b.extend(client_frame(0x80, &"é".as_bytes()[1..]));
        let (got, _) = read_all(1000, &b, 1);
        assert_eq!(text(&got[0]), "é");
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.push(0xff);
        let (_, end) = read_all(1000, &client_frame(0x88, &close), 1);
        assert!(matches!(end, ReadEnd::Utf8));
    }

    #[test]
    fn a_message_too_big_is_refused_at_its_header() {
        // Only the header is sent: the bound holds before any payload is waited for.
        let frame = client_frame(0x82, &vec![0u8; 2000]);
        let (_, end) = read_all(1000, &frame[..8], 1);
        assert!(matches!(end, ReadEnd::TooBig));
        // Across fragments.
        let mut b = client_frame(0x02, &[0u8; 600]);
        b.extend(client_frame(0x80, &[0u8; 600]));
        let (got, end) = read_all(1000, &b, 50);
        assert!(got.is_empty() && matches!(end, ReadEnd::TooBig));
        // A length past 2^63.
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        let (_, end) = read_all(1000, &huge, 1);
        assert!(matches!(end, ReadEnd::TooBig));
        // Exactly the bound is fine.
        let (got, _) = read_all(1000, &client_frame(0x82, &[7u8; 1000]), 64);
        assert_eq!(got.len(), 1);
    }

    /// A socket that takes at most `step` bytes per write and keeps them, and refuses
    /// every `refuse`th write (0: never).
    struct Sink {
        taken: Vec<u8>,
        step: usize,
        refuse: usize,
        writes: usize,
    }

    impl Sink {
        fn new(step: usize, refuse: usize) -> Self {
            Sink {
                taken: Vec::new(),
                step,
                refuse,
                writes: 0,
            }
        }

        fn refuses(&mut self) -> bool {
            self.writes += 1;
            self.refuse > 0 && self.writes % self.refuse == 0
        }
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.refuses() {
                return Poll::Pending;
            }
            let n = buf.len().min(self.step);
            self.taken.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if self.refuses() {
                return Poll::Pending;
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.step - n);
                self.taken.extend_from_slice(&b[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The frames of a server's byte stream: (FIN and opcode byte, payload).
    fn server_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
            let (len, at) = match b[1] {
                126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (usize::from(n), 2),
            };
            out.push((b[0], b[at..at + len].to_vec()));
            b = &b[at + len..];
        }
        out
    }

    #[test]
    fn frames_are_written_whole_and_in_order_whatever_the_socket_takes() {
        let sizes = [0usize, 1, 125, 126, 65_535, 65_536, 70_000];
        for (step, refuse) in [(1usize, 0usize), (3, 2), (10, 3), (4096, 2), (1 << 20, 0)] {
            let mut w = Writer::default();
            for (i, n) in sizes.iter().enumerate() {
                w.push(Message::binary(vec![i as u8; *n]));
            }
            w.push(Message::text("é"));
            // More frames than one writev takes.
            for i in 0..200u8 {
                w.push(Message::binary(vec![i; 3]));
            }
            w.pong(Bytes::from_static(b"old"));
            w.pong(Bytes::from_static(b"new"));
            let mut sink = Sink::new(step, refuse);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut polls = 0;
            loop {
                polls += 1;
                match w.poll_write(&mut sink, &mut cx) {
                    Poll::Ready(r) => break r.unwrap(),
                    // Refused part-way (perhaps inside a frame): a ping and an answer
                    // come now, and go out at the next frame boundary.
                    Poll::Pending if polls == 2 => {
                        w.ping();
                        w.pong(Bytes::from_static(b"later"));
                    }
                    Poll::Pending => {}
                }
            }
            assert!(
                w.is_idle() && w.frames.capacity() == 0,
                "an idle writer holds nothing"
            );
            let frames = server_frames(&sink.taken);
            // The answer to the newest ping goes first, at a frame boundary.
            assert_eq!(frames[0], (0x8A, b"new".to_vec()), "step {step}");
            let data: Vec<_> = frames.iter().filter(|(op, _)| *op & 0x8 == 0).collect();
            for (i, n) in sizes.iter().enumerate() {
                assert_eq!(*data[i], (0x82, vec![i as u8; *n]), "step {step}");
            }
            assert_eq!(*data[sizes.len()], (0x81, "é".as_bytes().to_vec()));
            for i in 0..200u8 {
                assert_eq!(*data[sizes.len() + 1 + usize::from(i)], (0x82, vec![i; 3]));
            }
            assert_eq!(data.len(), sizes.len() + 201);
            if polls > 2 {
                assert!(
                    frames.contains(&(0x89, Vec::new())),
                    "step {step}: the ping"
                );
                assert!(frames.contains(&(0x8A, b"later".to_vec())), "step {step}");
                assert_eq!(frames.len(), sizes.len() + 204);
            }
        }
    }

    #[test]
    fn a_client_that_pings_and_reads_nothing_has_one_answer_waiting() {
        let mut w = Writer::default();
        w.push(Message::binary(vec![1u8; 10]));
        let mut sink = Sink::new(1 << 20, 1);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for i in 0..100u8 {
            w.pong(Bytes::from(vec![i]));
            w.ping();
            assert!(w.poll_write(&mut sink, &mut cx).is_pending());
        }
        // The message, one ping and the answer to the latest ping.
        assert_eq!(w.frames.len(), 3);
        assert!(w.frames.contains(&(PONG, Bytes::from(vec![99u8]))));
        sink.refuse = 0;
        assert!(matches!(
            w.poll_write(&mut sink, &mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(server_frames(&sink.taken).len(), 3);
    }

    #[test]
    fn a_close_finishes_the_frame_begun_and_drops_the_rest() {
        let mut w = Writer::default();
        w.push(Message::binary(vec![1u8; 100]));
        w.push(Message::binary(vec![2u8; 100]));
        // As if the socket had taken part of the first frame.
        w.sent = 10;
        w.close(Some((1008, &"x".repeat(200))));
        let mut sink = Sink::new(1 << 20, 0);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            w.poll_write(&mut sink, &mut cx),
            Poll::Ready(Ok(()))
        ));
        // The rest of the first frame, then the close (its reason cut to fit 125).
        assert!(
            sink.taken[..92].iter().all(|&b| b == 1),
            "the first frame's rest"
        );
        assert_eq!(sink.taken.len(), 102 - 10 + 2 + 125);
        let close = server_frames(&sink.taken[102 - 10..]);
        assert_eq!(close[0].0, 0x88);
        assert_eq!(close[0].1[..2], 1008u16.to_be_bytes());
        assert_eq!(close[0].1.len(), 125);
    }

    #[test]
    fn a_reason_is_cut_at_a_character_boundary() {
        let p = close_frame(Some((1000, Utf8Bytes::from("é".repeat(100)))));
        assert!(p.len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}
