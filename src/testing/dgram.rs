//! Datagram endpoints of the in-memory network: addresses, per-endpoint inboxes, and the
//! seeded faults of a datagram network (loss, duplication, reordering, latency).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use super::rng::Rng;
use crate::Handle;
use crate::datagram::{DatagramAddr, RecvMeta};

/// Datagram faults, from [`SimConfig`](super::SimConfig).
#[derive(Debug, Clone, Default)]
pub(crate) struct DgramFaults {
    pub(crate) loss_percent: u8,
    pub(crate) dup_percent: u8,
    pub(crate) reorder_percent: u8,
}

/// One endpoint: its address, what it is connected to, and what waits to be read.
#[derive(Debug)]
pub(crate) struct DgramEnd {
    pub(crate) addr: DatagramAddr,
    pub(crate) remote: Option<DatagramAddr>,
    /// (arrival, payload, sender).
    inbox: VecDeque<(Instant, Vec<u8>, DatagramAddr)>,
    /// An ICMP error waiting for the next receive (connected sockets only, as Linux).
    pending_error: Option<ErrorKind>,
    pub(crate) closed: bool,
    /// Datagrams the socket accepted from this endpoint.
    pub(crate) accepted: u64,
}

/// All datagram endpoints of a simulation.
#[derive(Debug, Default)]
pub(crate) struct DgramNet {
    pub(crate) ends: BTreeMap<Handle, DgramEnd>,
    pub(crate) faults: DgramFaults,
    /// Datagrams the network dropped, for tests that account for every datagram.
    pub(crate) lost: u64,
}

impl DgramNet {
    pub(crate) fn add(&mut self, h: Handle, addr: DatagramAddr, remote: Option<DatagramAddr>) {
        let end = DgramEnd {
            addr,
            remote,
            inbox: VecDeque::new(),
            pending_error: None,
            closed: false,
            accepted: 0,
        };
        self.ends.insert(h, end);
    }

    fn target(&self, addr: &DatagramAddr) -> Option<Handle> {
        self.ends.iter().find(|(_, e)| !e.closed && e.addr == *addr).map(|(&h, _)| h)
    }

    pub(crate) fn send(
        &mut self,
        rng: &mut Rng,
        latency: Duration,
        now: Instant,
        h: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        let end = self.ends.get(&h).filter(|e| !e.closed).ok_or(ErrorKind::NotConnected)?;
        let (from, connected) = (end.addr.clone(), end.remote.is_some());
        let to = addr.or(end.remote.as_ref()).ok_or(ErrorKind::InvalidInput)?.clone();
        if let Some(e) = self.ends.get_mut(&h) {
            e.accepted += 1;
        }
        let Some(target) = self.target(&to) else {
            // Nobody listens: an ICMP port-unreachable, reported to connected sockets.
            if connected && let Some(e) = self.ends.get_mut(&h) {
                e.pending_error = Some(ErrorKind::ConnectionRefused);
            }
            self.lost += 1;
            return Ok(data.len());
        };
        if rng.chance(self.faults.loss_percent) {
            self.lost += 1;
            return Ok(data.len());
        }
        let copies = if rng.chance(self.faults.dup_percent) { 2 } else { 1 };
        let reorder = rng.chance(self.faults.reorder_percent);
        let inbox = &mut self.ends.get_mut(&target).expect("target exists").inbox;
        for _ in 0..copies {
            inbox.push_back((now + latency, data.to_vec(), from.clone()));
        }
        if reorder && inbox.len() >= 2 {
            let n = inbox.len();
            inbox.swap(n - 1, n - 2);
            // Keep arrival times ordered: the swapped pair arrive together.
            let t = inbox[n - 1].0.max(inbox[n - 2].0);
            inbox[n - 1].0 = t;
            inbox[n - 2].0 = t;
        }
        Ok(data.len())
    }

    pub(crate) fn recv(&mut self, now: Instant, h: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let end = self.ends.get_mut(&h).filter(|e| !e.closed).ok_or(ErrorKind::NotConnected)?;
        if let Some(kind) = end.pending_error.take() {
            return Err(kind.into());
        }
        match end.inbox.front() {
            Some((at, _, _)) if *at <= now => {}
            _ => return Err(ErrorKind::WouldBlock.into()),
        }
        let (_, data, from) = end.inbox.pop_front().expect("checked");
        let len = data.len().min(buf.len());
        buf[..len].copy_from_slice(&data[..len]);
        Ok(RecvMeta { len, addr: Some(from), truncated: len < data.len() })
    }

    pub(crate) fn readable(&self, now: Instant, h: Handle) -> bool {
        self.ends.get(&h).is_some_and(|e| {
            e.pending_error.is_some() || e.inbox.front().is_some_and(|(at, _, _)| *at <= now)
        })
    }

    pub(crate) fn next_arrival(&self, now: Instant) -> Option<Instant> {
        self.ends
            .values()
            .flat_map(|e| e.inbox.front())
            .map(|(at, _, _)| *at)
            .filter(|&t| t > now)
            .min()
    }

    pub(crate) fn close(&mut self, h: Handle) -> bool {
        match self.ends.get_mut(&h) {
            Some(e) => {
                e.closed = true;
                e.inbox.clear();
                true
            }
            None => false,
        }
    }
}
