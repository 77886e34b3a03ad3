//! Datagram endpoints in the loop: dispatch, `Ctx::sendto`, non-fatal errors, swaps.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::datagram::RecvMeta;
use crate::*;

#[derive(Default)]
struct Udp {
    inbox: VecDeque<io::Result<(Vec<u8>, DatagramAddr)>>,
    sent: Vec<(Vec<u8>, Option<DatagramAddr>)>,
    refuse: bool,
    closed: bool,
}

impl Io for Udp {
    fn try_send(&mut self, _: Handle, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(ErrorKind::Unsupported.into())
    }
    fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> io::Result<usize> {
        Err(ErrorKind::Unsupported.into())
    }
    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self, _: Handle) {
        self.closed = true;
    }
    fn try_send_to(
        &mut self,
        _: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        if self.refuse {
            return Err(ErrorKind::WouldBlock.into());
        }
        self.sent.push((data.to_vec(), addr.cloned()));
        Ok(data.len())
    }
    fn try_recv_from(&mut self, _: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let (data, addr) = self.inbox.pop_front().unwrap_or(Err(ErrorKind::WouldBlock.into()))?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(RecvMeta { len: data.len(), addr: Some(addr), truncated: false })
    }
}

type Log = Rc<RefCell<Vec<String>>>;

/// Echoes datagrams (or fails on "fail"), logging every callback.
struct Echo(Log);

impl DatagramProtocol for Echo {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().push("made".into());
        Ok(())
    }
    fn datagram_received(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> CallbackResult {
        self.0.borrow_mut().push(format!("datagram {:?}", String::from_utf8_lossy(data)));
        if data == b"fail" {
            return Err(ProtocolError::msg("bad datagram"));
        }
        ctx.sendto(ctx.datagram(), data, addr)?;
        Ok(())
    }
    fn error_received(&mut self, _: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        self.0.borrow_mut().push(format!("error {:?}", err.io_kind()));
        Ok(())
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().push("pause".into());
        Ok(())
    }
    fn resume_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().push("resume".into());
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.0.borrow_mut().push(format!("lost {err:?}"));
        Ok(())
    }
}

fn peer() -> DatagramAddr {
    DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 4000)))
}

fn setup() -> (Registry, Udp, DatagramHandle, Log, Instant) {
    #[allow(clippy::disallowed_methods)] // test base time
    let now = Instant::now();
    let mut reg = Registry::new(now);
    let log = Log::default();
    let h = reg.insert_datagram(Box::new(Echo(log.clone())), None, Extra::default());
    let mut io = Udp::default();
    reg.dispatch(now, &mut io);
    (reg, io, h, log, now)
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.borrow_mut())
}

#[test]
fn datagrams_are_echoed_through_the_loop() {
    let (mut reg, mut io, h, log, now) = setup();
    io.inbox.push_back(Ok((b"ping".to_vec(), peer())));
    io.inbox.push_back(Ok((Vec::new(), peer())));
    reg.on_readable(h.handle(), now, &mut io).unwrap();
    reg.on_readable(h.handle(), now, &mut io).unwrap();
    assert_eq!(take(&log), ["made", "datagram \"ping\"", "datagram \"\""]);
    assert_eq!(io.sent, [(b"ping".to_vec(), Some(peer())), (Vec::new(), Some(peer()))]);
}

#[test]
fn callback_errors_are_reported_and_the_endpoint_continues() {
    // asyncio lets datagram_received exceptions escape to the loop; the transport stays.
    let (mut reg, mut io, h, log, now) = setup();
    io.inbox.push_back(Ok((b"fail".to_vec(), peer())));
    io.inbox.push_back(Err(ErrorKind::ConnectionRefused.into()));
    io.inbox.push_back(Ok((b"after".to_vec(), peer())));
    for _ in 0..3 {
        reg.on_readable(h.handle(), now, &mut io).unwrap();
    }
    assert!(matches!(
        reg.poll_error(),
        Some(LoopError::CallbackFailed { callback: "datagram_received", .. })
    ));
    assert_eq!(
        take(&log),
        ["made", "datagram \"fail\"", "error Some(ConnectionRefused)", "datagram \"after\""]
    );
    assert!(!io.closed);
}

#[test]
fn flow_control_close_and_stale_handles() {
    let (mut reg, mut io, h, log, now) = setup();
    io.refuse = true;
    reg.enter(now, &mut io, |ctx| {
        ctx.set_write_buffer_limits(h, Some(20), None).unwrap();
        ctx.sendto(h, b"0123456789", Some(&peer())).unwrap(); // 18
        assert!(!ctx.is_writing_paused(h).unwrap());
        ctx.sendto(h, b"x", Some(&peer())).unwrap(); // 27
        assert_eq!(ctx.write_buffer_size(h), Ok(27));
        assert_eq!(ctx.sendto(h, b"x", None), Err(WriteError::AddressRequired));
        ctx.close(h).unwrap();
        assert_eq!(ctx.sendto(h, b"late", Some(&peer())), Err(WriteError::Closing));
    });
    assert_eq!(reg.interest(h.handle()), Ok(Interest { read: false, write: true }));
    io.refuse = false;
    reg.on_writable(h.handle(), now, &mut io).unwrap();
    assert_eq!(io.sent.len(), 2);
    assert_eq!(take(&log), ["made", "pause", "resume", "lost None"]);
    assert!(io.closed);
    reg.enter(now, &mut io, |ctx| {
        assert_eq!(ctx.sendto(h, b"x", Some(&peer())), Err(WriteError::Handle(HandleError::Stale)));
        assert_eq!(ctx.close(h), Err(HandleError::Stale));
    });
}

#[test]
fn typed_handles_keep_streams_and_datagrams_apart() {
    let (mut reg, mut io, h, _log, now) = setup();
    let forged = StreamHandle::from_handle(h.handle());
    reg.enter(now, &mut io, |ctx| {
        assert_eq!(
            ctx.write_slice(forged, b"x"),
            Err(WriteError::Handle(HandleError::WrongKind {
                expected: "stream",
                found: "datagram endpoint"
            }))
        );
        assert_eq!(ctx.is_reading(h), Ok(true));
        ctx.pause_reading(h).unwrap();
        assert_eq!(ctx.is_reading(h), Ok(false));
    });
    assert!(reg.transport(h.handle()).is_err());
    assert!(reg.datagram(h.handle()).is_ok());
}

#[test]
fn swapping_a_datagram_protocol_announces_a_pause() {
    let (mut reg, mut io, h, log, now) = setup();
    io.refuse = true;
    reg.enter(now, &mut io, |ctx| {
        ctx.set_write_buffer_limits(h, Some(0), None).unwrap();
        ctx.sendto(h, b"x", Some(&peer())).unwrap();
    });
    assert_eq!(take(&log), ["made", "pause"]);
    let new_log = Log::default();
    let nl = new_log.clone();
    reg.enter(now, &mut io, |ctx| ctx.set_datagram_protocol(h, Box::new(Echo(nl)))).unwrap();
    assert_eq!(take(&new_log), ["pause"], "gh-109051: the new protocol hears the pause first");
    assert!(take(&log).is_empty(), "the old protocol hears nothing more");
}
