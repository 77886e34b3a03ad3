//! Datagram protocols and scenarios (asyncio-spec §12), generic over the driver: echo over
//! IPv4, IPv6 and Unix datagram sockets, 10,000 datagrams none lost, ICMP errors that are
//! not fatal, the connected-address rule, close and abort.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::rc::Rc;

use aioport::{CallbackResult, ConnectionError, Ctx, DatagramAddr, DatagramProtocol, WriteError};

use crate::driver::{Bind, Bound, Driver, Family};

/// At most this many datagrams in flight per client.
const WINDOW: usize = 64;

/// What one datagram protocol saw.
#[derive(Debug, Default)]
pub struct DgSeen {
    /// Callback names in delivery order ("made", "datagram", "error", "pause", "resume",
    /// "lost").
    pub events: Vec<&'static str>,
    /// Datagrams received (payloads), when kept.
    pub datagrams: Vec<Vec<u8>>,
    pub received: usize,
    pub senders: Vec<Option<DatagramAddr>>,
    pub errors: Vec<ConnectionError>,
    pub lost: Option<Option<ConnectionError>>,
    /// A check in a callback failed.
    pub wrong: Option<String>,
}

pub type DgShared = Rc<RefCell<DgSeen>>;

fn dg_shared() -> DgShared {
    Rc::new(RefCell::new(DgSeen::default()))
}

impl DgSeen {
    fn lose(&mut self, err: Option<ConnectionError>) {
        assert!(self.lost.is_none(), "connection_lost delivered twice");
        self.events.push("lost");
        self.lost = Some(err);
    }
}

/// Echoes every datagram to its sender and records what it saw (payloads only if `keep`).
pub struct DgEcho {
    seen: DgShared,
    keep: bool,
}

impl DatagramProtocol for DgEcho {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().events.push("made");
        Ok(())
    }
    fn datagram_received(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> CallbackResult {
        {
            let mut s = self.seen.borrow_mut();
            s.received += 1;
            if self.keep {
                s.events.push("datagram");
                s.datagrams.push(data.to_vec());
                s.senders.push(addr.cloned());
            }
        }
        ctx.sendto(ctx.datagram(), data, addr)?;
        Ok(())
    }
    fn error_received(&mut self, _: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("error");
        s.errors.push(err);
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lose(err);
        Ok(())
    }
}

/// The payload of datagram `i` of `len` bytes: its number, then bytes derived from it, so
/// any mix-up or corruption shows.
fn payload(i: usize, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|k| (i.wrapping_mul(31) + k * 7) as u8).collect();
    let tag = (i as u32).to_be_bytes();
    let n = tag.len().min(len);
    p[..n].copy_from_slice(&tag[..n]);
    p
}

/// Sends `sizes.len()` datagrams, datagram `i` being `payload(i, sizes[i])`, keeping at most
/// `window` unanswered; checks every reply against what was sent; closes once every reply
/// arrived.
pub struct DgClient {
    seen: DgShared,
    sizes: Vec<usize>,
    window: usize,
    next: usize,
    /// Replies still expected, by payload.
    outstanding: std::collections::HashMap<Vec<u8>, usize>,
}

impl DgClient {
    fn new(seen: &DgShared, sizes: Vec<usize>, window: usize) -> Self {
        DgClient {
            seen: seen.clone(),
            sizes,
            window,
            next: 0,
            outstanding: std::collections::HashMap::new(),
        }
    }

    fn fill(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        while self.next < self.sizes.len() && self.outstanding.values().sum::<usize>() < self.window
        {
            let p = payload(self.next, self.sizes[self.next]);
            ctx.sendto(ctx.datagram(), &p, None)?;
            *self.outstanding.entry(p).or_default() += 1;
            self.next += 1;
        }
        Ok(())
    }
}

impl DatagramProtocol for DgClient {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().events.push("made");
        self.fill(ctx)
    }
    fn datagram_received(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        _: Option<&DatagramAddr>,
    ) -> CallbackResult {
        match self.outstanding.get_mut(data) {
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    self.outstanding.remove(data);
                }
            }
            None => {
                let head: Vec<u8> = data.iter().take(8).copied().collect();
                self.seen.borrow_mut().wrong.get_or_insert(format!(
                    "a reply of {} bytes starting {head:?} matches no datagram in flight",
                    data.len()
                ));
            }
        }
        self.seen.borrow_mut().received += 1;
        self.fill(ctx)?;
        if self.next == self.sizes.len() && self.outstanding.is_empty() {
            ctx.close(ctx.datagram())?;
        }
        Ok(())
    }
    fn error_received(&mut self, _: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("error");
        s.errors.push(err);
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lose(err);
        Ok(())
    }
}

/// Prints why a scenario cannot run on this driver (CI lists these).
fn skipped<D: Driver>(scenario: &str, why: &str) {
    println!("SKIPPED ({} {scenario}: {why})", D::NAME);
}

fn echo_server<D: Driver>(
    d: &mut D,
    scenario: &str,
    bind: Bind,
    recv_buffer: Option<usize>,
) -> Option<(Bound, DgShared)> {
    let seen = dg_shared();
    let echo = DgEcho { seen: seen.clone(), keep: false };
    match d.datagram_endpoint(Box::new(echo), bind, None, recv_buffer) {
        Ok(b) => Some((b, seen)),
        Err(why) => {
            skipped::<D>(scenario, &why);
            None
        }
    }
}

fn client_bind(family: Family) -> Bind {
    match family {
        Family::Unix => Bind::Autobind,
        f => Bind::Loopback(f),
    }
}

fn assert_no_errors<D: Driver>(d: &mut D) {
    let errors = d.take_errors();
    assert!(errors.is_empty(), "{}: unexpected loop errors: {errors:?}", D::NAME);
}

/// Echoes 200 datagrams of mixed sizes (empty ones included) from a connected client; every
/// reply is a datagram that was sent, whole; the client closes when all are back, then the
/// server is closed: both see `connection_lost(None)` last.
fn echo_over<D: Driver>(d: &mut D, family: Family, scenario: &str) {
    let Some((server, server_seen)) = echo_server(d, scenario, Bind::Loopback(family), None) else {
        return;
    };
    let sizes: Vec<usize> = (0..200).map(|i| [0, 1, 64, 512, 1400, 8000][i % 6]).collect();
    let seen = dg_shared();
    let client = DgClient::new(&seen, sizes, 16);
    let c = d
        .datagram_endpoint(Box::new(client), client_bind(family), Some(server.addr.clone()), None)
        .unwrap_or_else(|why| panic!("{}: the client endpoint: {why}", D::NAME));
    d.run_until("every echo, then the client's close", || seen.borrow().lost.is_some());
    d.with(|ctx| ctx.close(server.handle)).expect("close the server");
    d.run_until("the server's connection_lost", || server_seen.borrow().lost.is_some());
    let s = seen.borrow();
    assert_eq!(s.wrong, None);
    assert_eq!(s.received, 200, "every datagram came back once");
    assert!(s.errors.is_empty(), "no error_received: {:?}", s.errors);
    assert_eq!(s.events.first(), Some(&"made"));
    assert_eq!(s.lost, Some(None), "the client's close is connection_lost(None)");
    assert_eq!(server_seen.borrow().received, 200);
    assert_eq!(server_seen.borrow().lost, Some(None));
    assert_eq!(d.transports(), 0, "both endpoints removed after connection_lost");
    let _ = c;
    assert_no_errors(d);
}

pub fn echo_ipv4<D: Driver>(d: &mut D) {
    echo_over(d, Family::V4, "echo_ipv4");
}

pub fn echo_ipv6<D: Driver>(d: &mut D) {
    echo_over(d, Family::V6, "echo_ipv6");
}

pub fn echo_unix<D: Driver>(d: &mut D) {
    echo_over(d, Family::Unix, "echo_unix");
}

/// 10,000 datagrams of 512 bytes, at most 64 in flight, both sockets with `SO_RCVBUF` of
/// 1 MiB: on loopback every one comes back, byte-exact — any loss is a failure.
pub fn ten_thousand_none_lost<D: Driver>(d: &mut D) {
    const N: usize = 10_000;
    let rcvbuf = Some(1 << 20);
    let scenario = "ten_thousand_none_lost";
    let Some((server, server_seen)) = echo_server(d, scenario, Bind::Loopback(Family::V4), rcvbuf)
    else {
        return;
    };
    let seen = dg_shared();
    let client = DgClient::new(&seen, vec![512; N], WINDOW);
    let bind = Bind::Loopback(Family::V4);
    d.datagram_endpoint(Box::new(client), bind, Some(server.addr.clone()), rcvbuf)
        .unwrap_or_else(|why| panic!("{}: the client endpoint: {why}", D::NAME));
    d.run_until("10,000 echoes", || seen.borrow().lost.is_some() || seen.borrow().wrong.is_some());
    let s = seen.borrow();
    assert_eq!(s.wrong, None);
    assert_eq!(s.received, N, "no datagram lost");
    assert_eq!(server_seen.borrow().received, N);
    assert!(s.errors.is_empty(), "no error_received: {:?}", s.errors);
    d.with(|ctx| ctx.close(server.handle)).expect("close the server");
    assert_no_errors(d);
}

/// A socket connected to a port nobody is bound to: the ICMP port-unreachable comes back
/// as `error_received(ConnectionRefused)`, not fatal (spec §12.62). The transport stays
/// open; once a server binds that port, the same transport's next datagram is answered.
pub fn connected_to_closed_port<D: Driver>(d: &mut D) {
    let closed = d.unused_datagram_addr(Family::V4);
    let seen = dg_shared();
    let probe = Probe { seen: seen.clone() };
    let c = d
        .datagram_endpoint(Box::new(probe), Bind::Loopback(Family::V4), Some(closed.clone()), None)
        .unwrap_or_else(|why| panic!("{}: the client endpoint: {why}", D::NAME));
    d.with(|ctx| ctx.sendto(c.handle, b"anyone?", None)).expect("sendto");
    d.run_until("error_received", || !seen.borrow().errors.is_empty());
    {
        let s = seen.borrow();
        assert_eq!(s.errors[0].io_kind(), Some(ErrorKind::ConnectionRefused), "{:?}", s.errors);
        assert_eq!(s.lost, None, "an ICMP error is not fatal");
    }
    assert!(!d.with(|ctx| ctx.is_closing(c.handle)).expect("still open"));

    let Some((server, server_seen)) =
        echo_server(d, "connected_to_closed_port", Bind::At(closed), None)
    else {
        return;
    };
    d.with(|ctx| ctx.sendto(c.handle, b"now?", None)).expect("sendto after the error");
    d.run_until("the reply", || !seen.borrow().datagrams.is_empty());
    assert_eq!(seen.borrow().datagrams, vec![b"now?".to_vec()]);
    assert_eq!(server_seen.borrow().received, 1);
    d.with(|ctx| {
        ctx.close(c.handle)?;
        ctx.close(server.handle)
    })
    .expect("close both");
    d.run_until("both closed", || seen.borrow().lost.is_some());
    assert_eq!(seen.borrow().lost, Some(None));
    assert_no_errors(d);
}

/// Records datagrams and errors; sends nothing by itself.
struct Probe {
    seen: DgShared,
}

impl DatagramProtocol for Probe {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().events.push("made");
        Ok(())
    }
    fn datagram_received(
        &mut self,
        _: &mut Ctx<'_>,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("datagram");
        s.received += 1;
        s.datagrams.push(data.to_vec());
        s.senders.push(addr.cloned());
        Ok(())
    }
    fn error_received(&mut self, _: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("error");
        s.errors.push(err);
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lose(err);
        Ok(())
    }
}

fn probe<D: Driver>(d: &mut D, bind: Bind, remote: Option<DatagramAddr>) -> (Bound, DgShared) {
    let seen = dg_shared();
    let b = d
        .datagram_endpoint(Box::new(Probe { seen: seen.clone() }), bind, remote, None)
        .unwrap_or_else(|why| panic!("{}: a probe endpoint: {why}", D::NAME));
    (b, seen)
}

/// spec §12.59.2: a connected transport takes `None` or its peer's address, and refuses
/// any other with a typed error (asyncio's `ValueError`); an unconnected one requires an
/// address. Refused datagrams are not sent; accepted ones arrive.
pub fn sendto_address_rules<D: Driver>(d: &mut D) {
    let (server, server_seen) = probe(d, Bind::Loopback(Family::V4), None);
    let elsewhere = d.unused_datagram_addr(Family::V4);
    let (client, _) = probe(d, Bind::Loopback(Family::V4), Some(server.addr.clone()));
    let (loose, _) = probe(d, Bind::Loopback(Family::V4), None);
    d.with(|ctx| {
        let h = client.handle;
        assert!(matches!(
            ctx.sendto(h, b"wrong", Some(&elsewhere)),
            Err(WriteError::AddressMismatch { .. })
        ));
        ctx.sendto(h, b"none", None).expect("None is the peer");
        ctx.sendto(h, b"peer", Some(&server.addr)).expect("the peer's own address");
        assert!(matches!(ctx.sendto(loose.handle, b"x", None), Err(WriteError::AddressRequired)));
        ctx.sendto(loose.handle, b"loose", Some(&server.addr)).expect("an explicit address");
    });
    d.run_until("three datagrams", || server_seen.borrow().received == 3);
    let mut got = server_seen.borrow().datagrams.clone();
    got.sort();
    assert_eq!(got, vec![b"loose".to_vec(), b"none".to_vec(), b"peer".to_vec()]);
    let senders = server_seen.borrow().senders.clone();
    assert!(senders.contains(&Some(client.addr.clone())), "{senders:?}");
    assert!(senders.contains(&Some(loose.addr.clone())), "{senders:?}");
    d.with(|ctx| {
        for h in [client.handle, loose.handle, server.handle] {
            ctx.close(h).expect("close");
        }
    });
    d.run_until("every endpoint closed", || server_seen.borrow().lost.is_some());
    assert_no_errors(d);
}

/// `close()` sends what was accepted before it, then `connection_lost(None)`, last;
/// `sendto` after `close()` is refused (spec §5 decision: refused on connected and
/// unconnected transports alike).
pub fn close_flushes_then_lost<D: Driver>(d: &mut D) {
    let (server, server_seen) = probe(d, Bind::Loopback(Family::V4), None);
    let (client, client_seen) = probe(d, Bind::Loopback(Family::V4), Some(server.addr.clone()));
    d.with(|ctx| {
        for i in 0..20 {
            ctx.sendto(client.handle, &payload(i, 300), None).expect("sendto");
        }
        ctx.close(client.handle).expect("close");
        assert!(matches!(ctx.sendto(client.handle, b"late", None), Err(WriteError::Closing)));
    });
    d.run_until("20 datagrams and the client's loss", || {
        server_seen.borrow().received == 20 && client_seen.borrow().lost.is_some()
    });
    let got = server_seen.borrow().datagrams.clone();
    let mut want: Vec<Vec<u8>> = (0..20).map(|i| payload(i, 300)).collect();
    let mut sorted = got.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "every datagram sent before close arrived, whole");
    let c = client_seen.borrow();
    assert_eq!(c.lost, Some(None));
    assert_eq!(c.events.last(), Some(&"lost"));
    assert_eq!(c.events.iter().filter(|e| **e == "lost").count(), 1);
    drop(c);
    d.with(|ctx| ctx.close(server.handle)).expect("close the server");
    d.run_until("the server closed", || server_seen.borrow().lost.is_some());
    assert_eq!(d.transports(), 0);
    assert_no_errors(d);
}

/// `abort()` drops what is queued and ends with `connection_lost(None)`; the handle is
/// then gone; the peer got at most what was sent before the abort.
pub fn abort_drops<D: Driver>(d: &mut D) {
    let (server, server_seen) = probe(d, Bind::Loopback(Family::V4), None);
    let (client, client_seen) = probe(d, Bind::Loopback(Family::V4), Some(server.addr.clone()));
    let sent = d.with(|ctx| {
        for i in 0..20 {
            ctx.sendto(client.handle, &payload(i, 300), None).expect("sendto");
        }
        let queued = ctx.write_buffer_size(client.handle).expect("size");
        ctx.abort(client.handle).expect("abort");
        assert!(ctx.sendto(client.handle, b"late", None).is_err(), "sendto after abort");
        queued
    });
    d.run_until("the client's loss", || client_seen.borrow().lost.is_some());
    assert_eq!(client_seen.borrow().lost, Some(None));
    assert_eq!(client_seen.borrow().events, vec!["made", "lost"]);
    assert!(d.with(|ctx| ctx.is_closing(client.handle)).is_err(), "the handle is stale");
    // Datagrams still queued at the abort (size/308 of them) never left.
    let left = sent / (300 + aioport::datagram::DATAGRAM_OVERHEAD);
    d.with(|ctx| ctx.close(server.handle)).expect("close the server");
    d.run_until("the server closed", || server_seen.borrow().lost.is_some());
    assert!(server_seen.borrow().received <= 20 - left);
    assert_eq!(d.transports(), 0);
    assert_no_errors(d);
}

/// One `#[test]` per datagram scenario for a driver, in a module named after it.
macro_rules! datagram_conformance {
    ($module:ident, $driver:ty) => {
        mod $module {
            use crate::datagram;
            use crate::driver::Driver;

            fn run(scenario: fn(&mut $driver)) {
                scenario(&mut <$driver>::new());
            }

            #[test]
            fn datagram_echo_ipv4() {
                run(datagram::echo_ipv4);
            }
            #[test]
            fn datagram_echo_ipv6() {
                run(datagram::echo_ipv6);
            }
            #[test]
            fn datagram_echo_unix() {
                run(datagram::echo_unix);
            }
            #[test]
            fn datagram_ten_thousand_none_lost() {
                run(datagram::ten_thousand_none_lost);
            }
            #[test]
            fn datagram_connected_to_closed_port() {
                run(datagram::connected_to_closed_port);
            }
            #[test]
            fn datagram_sendto_address_rules() {
                run(datagram::sendto_address_rules);
            }
            #[test]
            fn datagram_close_flushes_then_lost() {
                run(datagram::close_flushes_then_lost);
            }
            #[test]
            fn datagram_abort_drops() {
                run(datagram::abort_drops);
            }
        }
    };
}
