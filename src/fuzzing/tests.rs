//! Transcript tests for the bugs the fuzz targets found, named after them.

use std::cell::Cell;
use std::io::{self, ErrorKind, IoSlice};
use std::rc::Rc;

use crate::testing::{Event, Scripted};
use crate::{
    CallbackResult, ConnectionError, Ctx, DriverError, Endpoint, Handle, Io, Protocol, Registry,
};

/// Crosses high water, then (limits raised) drains below low before any callback: a
/// whole pause → resume episode is owed. In the owed `pause_writing` it crosses high
/// water again (limits lowered back).
struct RepauseInPauseWriting {
    repaused: bool,
    resumed_while_paused: Rc<Cell<bool>>,
}

impl Protocol for RepauseInPauseWriting {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        ctx.set_write_buffer_limits(h, Some(4), Some(1))?;
        ctx.write_slice(h, b"0123456789")?; // the socket refuses it all: 10 > 4, paused
        ctx.set_write_buffer_limits(h, Some(100), Some(50))?; // 10 <= 50: resumed
        Ok(())
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if !std::mem::replace(&mut self.repaused, true) {
            ctx.set_write_buffer_limits(ctx.stream(), Some(4), Some(1))?; // 10 > 4: paused
        }
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if ctx.is_writing_paused(ctx.stream())? {
            self.resumed_while_paused.set(true);
        }
        Ok(())
    }
}

/// Found by `limits` (fuzz/regressions/limits/repause_after_owed_pause). DESIGN.md §4:
/// dispatch delivers pause/resume until the protocol's view agrees with the state. After
/// the owed `pause_writing` the transport is paused again, so the view (paused) agrees and
/// nothing more is owed; `FlowControl` used to deliver `resume_writing` — while
/// `is_writing_paused()` was true — then `pause_writing` again.
#[test]
fn flow_episode_owed_then_repaused_owes_nothing_more() {
    let flag = Rc::new(Cell::new(false));
    let p = RepauseInPauseWriting { repaused: false, resumed_while_paused: flag.clone() };
    let mut s = Scripted::new_with(super::base_instant(), p, |s| {
        s.send_refuses_all();
    });
    let events = s.events();
    assert!(s.is_writing_paused());
    assert!(!flag.get(), "resume_writing was delivered while is_writing_paused() was true");
    assert_eq!(events, [Event::Made, Event::Pause]);
}

/// A socket table that only counts closes.
#[derive(Default)]
struct Closes(u32);

impl Io for Closes {
    fn try_send(&mut self, _: Handle, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(ErrorKind::WouldBlock.into())
    }
    fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> io::Result<usize> {
        Err(ErrorKind::WouldBlock.into())
    }
    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self, _: Handle) {
        self.0 += 1;
    }
}

struct Quiet;
impl Protocol for Quiet {}

/// Found by `registry_ops` (fuzz/regressions/registry_ops/handle_error_while_connecting):
/// `handle_error` on a transport still waiting for its connect outcome used to close its
/// socket but leave it in the loop, so a driver following the contract (forget a transport
/// once `Io::close` is called) leaked it and the requester never heard back. An error
/// before the connect outcome is now the connect failing.
#[test]
fn handle_error_while_connecting_is_the_connect_failing() {
    let now = super::base_instant();
    let mut reg = Registry::new(now);
    let mut io = Closes::default();
    let h = reg.connect(Box::new(Quiet), Endpoint::Unix("/fuzz".into()));
    assert!(reg.poll_request().is_some());
    let err = ConnectionError::from(ErrorKind::ConnectionRefused);
    assert_eq!(reg.handle_error(h.handle(), err, now, &mut io), Ok(()));
    assert_eq!(io.0, 0, "as handle_connect_failed: the driver closes its own socket");
    assert!(reg.is_empty(), "the transport is gone");
    assert_eq!(reg.on_writable(h.handle(), now, &mut io), Err(DriverError::StaleHandle));
}

/// The `datagram_ops` format: version, header (bit 0: connected), then ops from
/// `DATAGRAM_OPS`; an unknown opcode is stepped over with its operand.
#[test]
fn datagram_ops_decodes_the_documented_format() {
    let input = [1, 1, 0x40, 4, 0x80, 10, 0x40, 0x4F, 7, 0x83, 3, 0, 0x06];
    assert_eq!(
        super::describe_datagram(&input),
        [
            "connected: true",
            "grant [04]",
            "sendto_none [0a, 40]",
            "peer_send [03, 00]",
            "readable []"
        ]
    );
    super::datagram_ops(&input);
}

/// Found by `start_tls_pair`
/// (fuzz/regressions/start_tls_pair/resumed_handshake_output_held_after_resume_writing):
/// the client's raw transport pauses whenever anything is queued (`high = 0`, set before
/// its `start_tls` and inherited by the engine). On a resumed TLS 1.3 handshake the
/// client completes while paused: its Finished and the app's first bytes wait in the
/// engine. `resume_writing` then handed nothing over — `hand_over` decided on the
/// `blocked` flag the previous call left (paused) — and nothing else would come: the
/// server waited for the Finished forever, with no error. The first run of the input
/// fills the client's session cache, the second resumes.
#[cfg(feature = "tls")]
#[test]
fn tls_output_made_while_paused_goes_out_at_resume_writing() {
    const INPUT: &[u8] = &[
        0x01, 0x05, 0x00, 0x02, 0x03, 0x10, 0x01, 0x88, 0x88, 0x88, 0x00, 0x02, 0x03, 0x10, 0x01,
        0x88, 0x88, 0x88, 0x00, 0xa3, 0x00, 0x00, 0x28, 0xd0, 0x05, 0x47, 0x64, 0x40, 0x00, 0x28,
        0x81, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x01, 0xa3, 0x00, 0x00, 0x28,
        0xd0, 0x05, 0x47, 0x64, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x40, 0x00, 0x28, 0x81, 0x00, 0x01, 0x81, 0x01,
        0x01, 0x47, 0x64, 0x40, 0x00, 0x2c,
    ];
    for _ in 0..3 {
        super::start_tls_pair(INPUT);
    }
}
