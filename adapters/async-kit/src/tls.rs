//! What the tokio and smol drivers' TLS entry points share (feature `tls`): the protocol
//! factory of a TLS server, and the wait for a client's handshake outcome.

use std::cell::RefCell;
use std::rc::Rc;

use aioport::tls::{TlsError, TlsServer, TlsSession};
use aioport::{CallbackResult, Ctx, Protocol, ProtocolError, Registry, StreamHandle};

/// The factory of a TLS listener: a [`TlsServer`] engine under each accepted connection,
/// serving the app protocol `factory` builds from the session once the handshake
/// completed. A connection whose engine rustls refused to create is aborted and the error
/// hook told.
pub fn server_factory(
    tls: TlsServer,
    factory: impl FnMut(&TlsSession) -> Box<dyn Protocol> + 'static,
) -> impl FnMut() -> Box<dyn Protocol> + 'static {
    let factory = Rc::new(RefCell::new(factory));
    move || -> Box<dyn Protocol> {
        let factory = factory.clone();
        match tls.engine_with(move |session| (factory.borrow_mut())(session)) {
            Ok(engine) => Box::new(engine),
            Err(error) => Box::new(Refuse(Some(error))),
        }
    }
}

/// Where a client's handshake stands, for a driver's `create_tls_connection` wait: `None`
/// while it runs; the app's transport once it completed (the app saw `connection_made`,
/// and a failure right after it is the app's `connection_lost`, not the connect's); the
/// error when it failed — or [`TlsError::ConnectionLost`] when the raw transport is gone
/// without a recorded failure (the engine panicked; the error hook was told).
pub fn handshake_outcome(
    session: &TlsSession,
    registry: &Registry,
) -> Option<Result<StreamHandle, TlsError>> {
    if let Some(app) = session.app() {
        return Some(Ok(app));
    }
    if let Some(error) = session.error() {
        return Some(Err(error));
    }
    let gone = session.raw().is_some_and(|raw| registry.interest(raw.handle()).is_err());
    gone.then_some(Err(TlsError::ConnectionLost(None)))
}

/// The protocol of an accepted connection whose TLS engine rustls refused to create (an
/// inconsistent configuration): the connection is aborted and the error hook told.
struct Refuse(Option<TlsError>);

impl Protocol for Refuse {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        ctx.abort(ctx.stream())?;
        match self.0.take() {
            Some(error) => Err(ProtocolError::from(error)),
            None => Ok(()),
        }
    }
}
