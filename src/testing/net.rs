//! The in-memory network: links between transports (or a transport and a test-driven
//! peer), with seeded faults. It is the harness's [`Io`].

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind, IoSlice};
use std::time::{Duration, Instant};

use super::dgram::DgramNet;
use super::rng::Rng;
use crate::datagram::{DatagramAddr, RecvMeta};
use crate::{Handle, Io};

/// One direction of a link: bytes the sending side's socket accepted, on their way to the
/// receiving side.
#[derive(Debug, Default)]
pub(crate) struct Dir {
    /// (arrival time, bytes, bytes already read) — arrival times never decrease.
    in_flight: VecDeque<(Instant, Vec<u8>, usize)>,
    /// Bytes accepted and not yet read: what limits the sender (the socket buffers).
    unread: usize,
    /// The sender shut down its write side (or closed): EOF after the bytes in flight.
    pub(crate) eof: bool,
    /// The connection was reset: the receiver's next operation fails.
    pub(crate) reset: bool,
    /// Bytes accepted from the sender, exactly as given, not yet checked against a
    /// delivery (byte conservation; corruption is applied after this copy).
    pub(crate) verify: VecDeque<u8>,
    /// Total bytes accepted.
    pub(crate) accepted: u64,
}

impl Dir {
    /// Queues bytes that arrive at `at`.
    pub(crate) fn push(&mut self, at: Instant, data: &[u8]) {
        if !data.is_empty() {
            self.unread += data.len();
            self.in_flight.push_back((at, data.to_vec(), 0));
        }
    }

    /// Bytes that have arrived and can be read now.
    fn arrived(&self, now: Instant) -> usize {
        self.in_flight.iter().take_while(|c| c.0 <= now).map(|c| c.1.len() - c.2).sum()
    }

    /// The earliest arrival still in the future.
    pub(crate) fn next_arrival(&self, now: Instant) -> Option<Instant> {
        self.in_flight.iter().map(|c| c.0).find(|&t| t > now)
    }

    /// True when reading would return data, EOF or an error now.
    pub(crate) fn readable(&self, now: Instant) -> bool {
        self.reset || self.arrived(now) > 0 || (self.eof && self.unread == 0)
    }

    fn read(&mut self, now: Instant, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some((at, data, off)) = self.in_flight.front_mut() else { break };
            if *at > now {
                break;
            }
            let take = (data.len() - *off).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&data[*off..*off + take]);
            *off += take;
            n += take;
            if *off == data.len() {
                self.in_flight.pop_front();
            }
        }
        self.unread -= n;
        n
    }
}

/// Who holds one end of a link.
#[derive(Debug)]
pub(crate) enum End {
    /// A transport of the loop.
    Transport(Handle),
    /// The test itself ([`Sim::open`](super::Sim::open)).
    Peer(PeerState),
    /// Closed (`Io::close` was called for the transport).
    Gone,
}

/// A test-driven peer: reads everything that arrives unless paused.
#[derive(Debug, Default)]
pub(crate) struct PeerState {
    pub(crate) received: Vec<u8>,
    pub(crate) reading: bool,
    pub(crate) saw_eof: bool,
    pub(crate) saw_reset: bool,
}

/// Two ends; `dirs[i]` carries bytes from end `i` to end `1 - i`.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) ends: [End; 2],
    pub(crate) dirs: [Dir; 2],
}

/// The faults a link applies, from the seeded RNG.
#[derive(Debug, Clone)]
pub(crate) struct Faults {
    pub(crate) max_send: Option<usize>,
    pub(crate) max_read: Option<usize>,
    pub(crate) refuse_percent: u8,
    pub(crate) latency: Duration,
    pub(crate) capacity: usize,
    pub(crate) corrupt_percent: u8,
    /// Stream links do zero-copy sendfile (`Io::sendfile_supported`).
    pub(crate) zero_copy: bool,
}

/// The harness's socket table.
#[derive(Debug)]
pub(crate) struct Net {
    pub(crate) rng: Rng,
    pub(crate) faults: Faults,
    pub(crate) links: Vec<Link>,
    /// Transport → (link, end). Kept after the transport closes, for the checker.
    pub(crate) ends: BTreeMap<Handle, (usize, usize)>,
    pub(crate) now: Instant,
    /// `Io::close` calls per handle (must be exactly one).
    pub(crate) closes: BTreeMap<Handle, u32>,
    /// The datagram endpoints.
    pub(crate) dgram: DgramNet,
}

impl Net {
    pub(crate) fn new(rng: Rng, faults: Faults, now: Instant) -> Self {
        Net {
            rng,
            faults,
            links: Vec::new(),
            ends: BTreeMap::new(),
            now,
            closes: BTreeMap::new(),
            dgram: DgramNet::default(),
        }
    }

    pub(crate) fn add_link(&mut self, a: End, b: End) -> usize {
        let link = Link { ends: [a, b], dirs: [Dir::default(), Dir::default()] };
        self.links.push(link);
        let id = self.links.len() - 1;
        for side in 0..2 {
            if let End::Transport(h) = self.links[id].ends[side] {
                self.ends.insert(h, (id, side));
            }
        }
        id
    }

    fn locate(&self, h: Handle) -> io::Result<(usize, usize)> {
        match self.ends.get(&h) {
            Some(&(link, side)) if matches!(self.links[link].ends[side], End::Transport(_)) => {
                Ok((link, side))
            }
            _ => Err(io::Error::new(ErrorKind::NotConnected, format!("no open socket for {h:?}"))),
        }
    }

    /// Sends from end `side` of `link`: what the faults let through.
    pub(crate) fn send(
        &mut self,
        link: usize,
        side: usize,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let (capacity, latency, max_send) =
            (self.faults.capacity, self.faults.latency, self.faults.max_send);
        let l = &mut self.links[link];
        let peer_gone = matches!(l.ends[1 - side], End::Gone);
        if l.dirs[0].reset || l.dirs[1].reset {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let out = &mut l.dirs[side];
        if peer_gone {
            return Err(ErrorKind::BrokenPipe.into());
        }
        if total == 0 {
            return Ok(0);
        }
        if self.rng.chance(self.faults.refuse_percent) {
            return Err(ErrorKind::WouldBlock.into());
        }
        let mut n = total.min(capacity.saturating_sub(out.unread));
        if let Some(max) = max_send {
            n = n.min(self.rng.size(max));
        }
        if n == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let mut data = Vec::with_capacity(n);
        for b in bufs {
            let take = (n - data.len()).min(b.len());
            data.extend_from_slice(&b[..take]);
            if data.len() == n {
                break;
            }
        }
        out.verify.extend(&data);
        out.accepted += n as u64;
        if self.rng.chance(self.faults.corrupt_percent) {
            // A deliberately broken network: one byte duplicated.
            let i = self.rng.below(data.len() as u64) as usize;
            data.insert(i, data[i]);
        }
        out.unread += data.len();
        out.in_flight.push_back((self.now + latency, data, 0));
        Ok(n)
    }

    /// Receives at end `side` of `link`.
    pub(crate) fn recv(&mut self, link: usize, side: usize, buf: &mut [u8]) -> io::Result<usize> {
        let max_read = self.faults.max_read;
        let now = self.now;
        let limit = match max_read {
            Some(max) => buf.len().min(self.rng.size(max)),
            None => buf.len(),
        };
        if self.links[link].dirs.iter().any(|d| d.reset) {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let inbound = &mut self.links[link].dirs[1 - side];
        if inbound.arrived(now) == 0 {
            return if inbound.eof && inbound.unread == 0 {
                Ok(0)
            } else {
                Err(ErrorKind::WouldBlock.into())
            };
        }
        Ok(inbound.read(now, &mut buf[..limit]))
    }

    /// Lets a test-driven peer read what has arrived; returns true if it made progress.
    pub(crate) fn peer_read(&mut self, link: usize, side: usize) -> bool {
        let now = self.now;
        let max = self.faults.max_read.map_or(usize::MAX, |m| self.rng.size(m));
        let l = &mut self.links[link];
        let reset = l.dirs[0].reset || l.dirs[1].reset;
        let End::Peer(peer) = &mut l.ends[side] else { return false };
        let inbound = &mut l.dirs[1 - side];
        if !peer.reading || peer.saw_reset || peer.saw_eof {
            return false;
        }
        if reset {
            peer.saw_reset = true;
            return true;
        }
        let n = inbound.arrived(now).min(max);
        if n > 0 {
            let start = peer.received.len();
            peer.received.resize(start + n, 0);
            inbound.read(now, &mut peer.received[start..]);
            // The test reads the peer's bytes itself; they need no further check.
            inbound.verify.drain(..n.min(inbound.verify.len()));
            return true;
        }
        if inbound.eof && inbound.unread == 0 {
            peer.saw_eof = true;
            return true;
        }
        false
    }

    pub(crate) fn readable(&self, link: usize, side: usize) -> bool {
        let l = &self.links[link];
        l.dirs[side].reset || l.dirs[1 - side].readable(self.now)
    }

    pub(crate) fn writable(&self, link: usize, side: usize) -> bool {
        let l = &self.links[link];
        l.dirs[0].reset
            || l.dirs[1].reset
            || matches!(l.ends[1 - side], End::Gone)
            || l.dirs[side].unread < self.faults.capacity
    }

    /// The earliest moment a byte in flight arrives.
    pub(crate) fn next_arrival(&self) -> Option<Instant> {
        self.links.iter().flat_map(|l| l.dirs.iter()).filter_map(|d| d.next_arrival(self.now)).min()
    }
}

impl Io for Net {
    fn try_send_to(
        &mut self,
        h: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        if self.rng.chance(self.faults.refuse_percent) {
            return Err(ErrorKind::WouldBlock.into());
        }
        self.dgram.send(&mut self.rng, self.faults.latency, self.now, h, data, addr)
    }

    fn try_recv_from(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        self.dgram.recv(self.now, h, buf)
    }

    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let (link, side) = self.locate(h)?;
        self.send(link, side, bufs)
    }

    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        let (link, side) = self.locate(h)?;
        self.recv(link, side, buf)
    }

    fn shutdown_write(&mut self, h: Handle) -> io::Result<()> {
        let (link, side) = self.locate(h)?;
        self.links[link].dirs[side].eof = true;
        Ok(())
    }

    fn sendfile_supported(&mut self, h: Handle) -> bool {
        self.faults.zero_copy && self.locate(h).is_ok()
    }

    /// Zero-copy as the kernel does it: the file's bytes go into the link like a send,
    /// with the same faults (partial sends, refusals, a full buffer, resets).
    fn try_sendfile(
        &mut self,
        h: Handle,
        file: &dyn crate::stream::SendfileSource,
        offset: u64,
        count: usize,
    ) -> io::Result<usize> {
        let (link, side) = self.locate(h)?;
        let mut buf = vec![0; count.min(self.faults.capacity)];
        let n = file.read_at(offset, &mut buf)?;
        if n == 0 {
            return Ok(0);
        }
        self.send(link, side, &[IoSlice::new(&buf[..n])])
    }

    fn close(&mut self, h: Handle) {
        *self.closes.entry(h).or_default() += 1;
        if self.dgram.close(h) {
            return;
        }
        if let Ok((link, side)) = self.locate(h) {
            let l = &mut self.links[link];
            l.ends[side] = End::Gone;
            // A FIN after whatever was in flight.
            l.dirs[side].eof = true;
        }
    }
}
