//! `Ctx::start_tls` on every driver (feature `tls`): a STARTTLS connection — a plaintext
//! prelude, the line `STARTTLS\r\n`, then TLS — with the first side paused for writing
//! at its switch and its TLS records queued behind its plaintext, then an echo over TLS
//! and a clean TLS shutdown. The protocol is `tests/support/starttls.rs`, shared with the
//! harness test `tls_start.rs`.

use std::cell::RefCell;
use std::rc::Rc;

use crate::driver::Driver;
use crate::protocols::{Client, Echo, shared};
use crate::starttls::{MARKER, TlsSide, UpgradeShared, Upgrader};

/// The first side writes until it pauses; more than the kernel buffers (the send buffer
/// autotunes up to 4 MiB), so it pauses on every driver.
const MAX_PRELUDE: usize = 16 << 20;
const MESSAGE: usize = 100_000;

/// The client writes its prelude and switches first.
pub fn start_tls_client_first<D: Driver>(d: &mut D) {
    run(d, true);
}

/// The server writes its prelude and switches first.
pub fn start_tls_server_first<D: Driver>(d: &mut D) {
    run(d, false);
}

fn run<D: Driver>(d: &mut D, client_first: bool) {
    let (client_tls, server_tls) = crate::tls::configs();
    let server_app = shared();
    let server_seen: Rc<RefCell<Option<UpgradeShared>>> = Rc::default();
    let (app, seen) = (server_app.clone(), server_seen.clone());
    let mut server_tls = Some(server_tls);
    let l = d.listen(Box::new(move || {
        let tls = TlsSide::Server(server_tls.take().expect("one connection"));
        let (p, s) = Upgrader::new(tls, !client_first, MAX_PRELUDE, Echo::boxed(Some(app.clone())));
        *seen.borrow_mut() = Some(s);
        Box::new(p)
    }));
    let client_app = shared();
    let message: Vec<u8> = (0..MESSAGE).map(|i| (i % 253) as u8).collect();
    let app = Client { seen: client_app.clone(), message: message.clone(), expect: MESSAGE };
    let (client, client_seen) =
        Upgrader::new(TlsSide::Client(client_tls), client_first, MAX_PRELUDE, Box::new(app));
    d.connect(&l.endpoint, Box::new(client)).expect("connect");
    d.run_until("the echo over TLS after STARTTLS, and both closes", || {
        client_app.borrow().is_lost() && server_app.borrow().is_lost()
    });
    let server_seen = server_seen.borrow().clone().expect("the server accepted");
    let (first, second) =
        if client_first { (&client_seen, &server_seen) } else { (&server_seen, &client_seen) };
    let name = D::NAME;
    assert_eq!(first.borrow().paused_at_switch, Some(true), "{name}: first side paused");
    assert_eq!(second.borrow().paused_at_switch, Some(false), "{name}");
    let prelude = first.borrow().prelude_written;
    assert!(prelude < MAX_PRELUDE, "{name}: the first side paused before the whole prelude");
    assert_eq!(second.borrow().line_at, Some(prelude), "{name}: the line after the prelude");
    assert_eq!(second.borrow().plaintext_read, prelude + MARKER.len(), "{name}");
    assert_eq!(second.borrow().wrong_at, None, "{name}: the prelude, byte for byte");
    for seen in [&client_seen, &server_seen] {
        let s = seen.borrow();
        assert!(s.lost_before_switch.is_none(), "{name}: the old protocol heard nothing more");
        let session = s.session.as_ref().expect("switched");
        assert!(session.error().is_none(), "{name}: {:?}", session.error());
        assert!(session.info().is_some(), "{name}: the handshake completed");
        assert_eq!(session.raw(), s.raw, "{name}: the engine took the raw transport over");
    }
    let c = client_app.borrow();
    assert!(c.data == message, "{name}: the echo over TLS is the message");
    assert!(matches!(c.lost, Some(None)), "{name}: client lost with {:?}", c.lost);
    let s = server_app.borrow();
    assert_eq!(s.received, MESSAGE, "{name}");
    assert!(matches!(s.lost, Some(None)), "{name}: server lost with {:?}", s.lost);
    assert_eq!(d.transports(), 0, "{name}: every transport removed after connection_lost");
    let errors = d.take_errors();
    assert!(errors.is_empty(), "{name}: unexpected loop errors: {errors:?}");
}
