//! Datagram transport rules (spec §12, DESIGN.md §5), each test citing its rule.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice};

use super::*;

/// A scripted datagram socket: `sends` answers each `try_send_to` (empty: accept), `recvs`
/// each `try_recv_from` (empty: WouldBlock).
#[derive(Default)]
struct DgIo {
    sends: VecDeque<io::Result<()>>,
    sent: Vec<(Vec<u8>, Option<DatagramAddr>)>,
    recvs: VecDeque<io::Result<(Vec<u8>, Option<DatagramAddr>)>>,
    closes: usize,
}

impl Io for DgIo {
    fn try_send(&mut self, _: Handle, _: &[IoSlice<'_>]) -> io::Result<usize> {
        unreachable!("a datagram transport never sends a stream")
    }
    fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> io::Result<usize> {
        unreachable!("a datagram transport never reads a stream")
    }
    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self, _: Handle) {
        self.closes += 1;
    }
    fn try_send_to(
        &mut self,
        _: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        self.sends.pop_front().unwrap_or(Ok(()))?;
        self.sent.push((data.to_vec(), addr.cloned()));
        Ok(data.len())
    }
    fn try_recv_from(&mut self, _: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let (data, addr) = self.recvs.pop_front().unwrap_or(Err(ErrorKind::WouldBlock.into()))?;
        let len = data.len().min(buf.len());
        buf[..len].copy_from_slice(&data[..len]);
        Ok(RecvMeta { len, addr, truncated: len < data.len() })
    }
}

fn addr(port: u16) -> DatagramAddr {
    DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn endpoint(remote: Option<DatagramAddr>) -> (DatagramTransport, DgIo) {
    let mut t = DatagramTransport::new(Handle::from_raw(1, 0), remote, Extra::default());
    assert_eq!(t.next_callback(), Some(DatagramCallback::ConnectionMade));
    (t, DgIo::default())
}

fn callbacks(t: &mut DatagramTransport) -> Vec<DatagramCallback> {
    std::iter::from_fn(|| t.next_callback()).take(16).collect()
}

fn would_block() -> io::Result<()> {
    Err(ErrorKind::WouldBlock.into())
}

#[test]
fn connected_sendto_takes_none_or_the_peer_and_refuses_others() {
    // spec §12.59.2: ValueError('Invalid address: must be None or ...').
    let (mut t, mut io) = endpoint(Some(addr(9)));
    t.sendto(b"a", None, &mut io).unwrap();
    t.sendto(b"b", Some(&addr(9)), &mut io).unwrap();
    let err = t.sendto(b"c", Some(&addr(10)), &mut io).unwrap_err();
    assert!(matches!(err, WriteError::AddressMismatch { .. }), "{err}");
    assert_eq!(io.sent, [(b"a".to_vec(), None), (b"b".to_vec(), None)], "sent to the peer");
}

#[test]
fn unconnected_sendto_requires_an_address() {
    let (mut t, mut io) = endpoint(None);
    assert_eq!(t.sendto(b"x", None, &mut io), Err(WriteError::AddressRequired));
    t.sendto(b"x", Some(&addr(7)), &mut io).unwrap();
    assert_eq!(io.sent, [(b"x".to_vec(), Some(addr(7)))]);
}

#[test]
fn gh_113812_empty_datagrams_are_sent_and_queued() {
    let (mut t, mut io) = endpoint(Some(addr(9)));
    t.sendto(b"", None, &mut io).unwrap();
    assert_eq!(io.sent, [(Vec::new(), None)]);
    io.sends.push_back(would_block());
    t.sendto(b"", None, &mut io).unwrap();
    assert_eq!(t.write_buffer_size(), DATAGRAM_OVERHEAD, "an empty datagram counts 8");
    t.on_writable(&mut io).unwrap();
    assert_eq!(io.sent.len(), 2);
}

#[test]
fn gh_135444_len_plus_8_on_enqueue_and_dequeue() {
    // spec §12.61: a 4-byte payload counts 12; nothing leaks after draining.
    let (mut t, mut io) = endpoint(Some(addr(9)));
    io.sends.extend([would_block()]);
    t.sendto(b"abcd", None, &mut io).unwrap();
    t.sendto(b"ef", None, &mut io).unwrap();
    assert_eq!(t.write_buffer_size(), 12 + 10);
    t.on_writable(&mut io).unwrap();
    assert_eq!(t.write_buffer_size(), 0);
    assert_eq!(io.sent, [(b"abcd".to_vec(), None), (b"ef".to_vec(), None)], "whole, in order");
}

#[test]
fn watermarks_count_the_overhead() {
    // spec §12.61 (H): high=10: b'ab' buffered → 10 = high → no pause; + b'c' → 19 → pause.
    let (mut t, mut io) = endpoint(Some(addr(9)));
    t.set_write_buffer_limits(Some(10), Some(0)).unwrap();
    io.sends.push_back(would_block());
    t.sendto(b"ab", None, &mut io).unwrap();
    assert!(!t.is_writing_paused());
    t.sendto(b"c", None, &mut io).unwrap();
    assert!(t.is_writing_paused());
    assert_eq!(callbacks(&mut t), [DatagramCallback::PauseWriting]);
    t.on_writable(&mut io).unwrap();
    assert_eq!(callbacks(&mut t), [DatagramCallback::ResumeWriting]);
}

#[test]
fn send_error_goes_to_error_received_and_the_endpoint_stays_usable() {
    // spec §12.59.5: OSError → error_received; datagram dropped; not fatal (uvloop#601).
    let (mut t, mut io) = endpoint(Some(addr(9)));
    io.sends.push_back(Err(ErrorKind::ConnectionRefused.into()));
    t.sendto(b"lost", None, &mut io).unwrap();
    assert_eq!(
        callbacks(&mut t),
        [DatagramCallback::ErrorReceived(ErrorKind::ConnectionRefused.into())]
    );
    assert!(!t.is_closing());
    t.sendto(b"next", None, &mut io).unwrap();
    assert_eq!(io.sent, [(b"next".to_vec(), None)]);
    assert_eq!(t.write_buffer_size(), 0);
}

#[test]
fn flush_error_drops_that_datagram_and_keeps_the_rest() {
    // spec §12.60: the failed datagram is lost, the rest stay queued, the writer stays.
    let (mut t, mut io) = endpoint(None);
    io.sends.push_back(would_block());
    for (i, d) in [&b"one"[..], b"two", b"three"].into_iter().enumerate() {
        t.sendto(d, Some(&addr(i as u16)), &mut io).unwrap();
    }
    io.sends.push_back(Err(ErrorKind::PermissionDenied.into()));
    t.on_writable(&mut io).unwrap();
    assert_eq!(t.write_buffer_size(), 3 + 5 + 2 * DATAGRAM_OVERHEAD);
    assert!(t.interest().write);
    io.sends.push_back(would_block());
    t.on_writable(&mut io).unwrap();
    assert_eq!(io.sent, [], "WouldBlock keeps the head queued");
    t.on_writable(&mut io).unwrap();
    assert_eq!(io.sent, [(b"two".to_vec(), Some(addr(1))), (b"three".to_vec(), Some(addr(2)))]);
    assert_eq!(
        callbacks(&mut t),
        [DatagramCallback::ErrorReceived(ErrorKind::PermissionDenied.into())]
    );
}

#[test]
fn receive_errors_and_truncation_are_reported_not_fatal() {
    // spec §12.62: OSError on receive (ICMP port unreachable) → error_received.
    let (mut t, mut io) = endpoint(None);
    let mut buf = [0u8; 4];
    io.recvs.push_back(Err(ErrorKind::ConnectionRefused.into()));
    io.recvs.push_back(Ok((b"too long".to_vec(), Some(addr(5)))));
    io.recvs.push_back(Ok((b"ok".to_vec(), Some(addr(5)))));
    io.recvs.push_back(Ok((Vec::new(), Some(addr(6)))));
    assert_eq!(t.read(&mut buf, &mut io), Ok(DatagramRead::Error));
    assert_eq!(
        t.read(&mut buf, &mut io),
        Ok(DatagramRead::Error),
        "truncated: never delivered cut"
    );
    assert_eq!(t.read(&mut buf, &mut io), Ok(DatagramRead::Datagram(2, Some(addr(5)))));
    assert_eq!(
        t.read(&mut buf, &mut io),
        Ok(DatagramRead::Datagram(0, Some(addr(6)))),
        "empty datagrams too"
    );
    assert_eq!(t.read(&mut buf, &mut io), Ok(DatagramRead::Idle));
    let cbs = callbacks(&mut t);
    assert_eq!(cbs[0], DatagramCallback::ErrorReceived(ErrorKind::ConnectionRefused.into()));
    assert!(
        matches!(&cbs[1], DatagramCallback::ErrorReceived(e) if e.io_kind() == Some(ErrorKind::InvalidData) && e.to_string().contains("truncated"))
    );
    assert!(!t.is_closing());
}

#[test]
fn close_flushes_then_loses_abort_drops() {
    let (mut t, mut io) = endpoint(Some(addr(9)));
    io.sends.push_back(would_block());
    t.sendto(b"queued", None, &mut io).unwrap();
    t.close(&mut io);
    assert!(t.is_closing());
    assert_eq!(io.closes, 0, "close waits for the queue");
    assert_eq!(t.sendto(b"late", None, &mut io), Err(WriteError::Closing));
    t.on_writable(&mut io).unwrap();
    assert_eq!(io.sent, [(b"queued".to_vec(), None)]);
    assert_eq!(io.closes, 1);
    assert_eq!(callbacks(&mut t), [DatagramCallback::ConnectionLost(None)]);

    let (mut t, mut io) = endpoint(None);
    io.sends.push_back(would_block());
    t.sendto(b"dropped", Some(&addr(1)), &mut io).unwrap();
    t.abort(&mut io);
    assert_eq!(t.write_buffer_size(), 0);
    assert!(io.sent.is_empty());
    assert_eq!(callbacks(&mut t), [DatagramCallback::ConnectionLost(None)]);
}

#[test]
fn sends_after_close_are_refused_connected_or_not() {
    // DESIGN.md §5: CPython's unconnected transport still sends after close; aioport not.
    for remote in [Some(addr(9)), None] {
        let (mut t, mut io) = endpoint(remote);
        t.close(&mut io);
        assert_eq!(t.sendto(b"x", Some(&addr(9)), &mut io), Err(WriteError::Closing));
        assert!(io.sent.is_empty());
    }
}

#[test]
fn paused_reading_holds_datagrams_until_resumed() {
    let (mut t, mut io) = endpoint(None);
    t.pause_reading();
    assert!(!t.interest().read);
    assert_eq!(t.read(&mut [0u8; 8], &mut io), Ok(DatagramRead::Idle));
    t.handle_datagram(b"held", Some(addr(3))).unwrap();
    assert_eq!(callbacks(&mut t), []);
    t.resume_reading();
    assert_eq!(
        callbacks(&mut t),
        [DatagramCallback::DatagramReceived(b"held".to_vec(), Some(addr(3)))]
    );
}

#[test]
fn driver_calls_after_close_are_errors() {
    let (mut t, mut io) = endpoint(None);
    t.abort(&mut io);
    assert_eq!(t.on_writable(&mut io), Err(DriverError::Closed));
    assert_eq!(t.read(&mut [0u8; 4], &mut io), Err(DriverError::Closed));
    assert_eq!(t.handle_datagram(b"x", None), Err(DriverError::Closed));
    assert_eq!(io.closes, 1);
}

#[test]
fn hard_limit_counts_the_overhead() {
    let (mut t, mut io) = endpoint(Some(addr(9)));
    t.set_write_buffer_hard_limit(Some(19));
    io.sends.push_back(would_block());
    t.sendto(b"0123", None, &mut io).unwrap();
    assert_eq!(
        t.sendto(b"", None, &mut io),
        Err(WriteError::BufferFull { buffered: 12, len: 8, limit: 19 })
    );
}
