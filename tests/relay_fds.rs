//! The relay of `examples/proxy.rs` on the poll loop: 1,000 short-lived connections
//! through it leave no file descriptor behind (counted in `/proc/self/fd`; this binary
//! has this one test, so nothing else opens descriptors meanwhile) and no transport.

#[allow(dead_code)]
#[path = "../examples/support/relay.rs"]
mod relay_impl;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};
use aioport_poll::{Loop, ServerOptions};
use relay_impl::{RelayStats, relay};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), data)?)
    }
}

/// Sends a message, closes once it came back, counts clean ends.
struct Client {
    got: usize,
    done: Rc<Cell<usize>>,
}

const MESSAGE: &[u8] = b"through the relay and back";

impl Protocol for Client {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), MESSAGE)?)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.got += data.len();
        if self.got == MESSAGE.len() {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        assert!(err.is_none(), "client lost with {err:?}");
        assert_eq!(self.got, MESSAGE.len());
        self.done.set(self.done.get() + 1);
        Ok(())
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

#[test]
fn a_thousand_short_lived_relays_leave_no_descriptor() {
    if !std::path::Path::new("/proc/self/fd").exists() {
        println!("SKIPPED (relay_fds: no /proc/self/fd on this system)");
        return;
    }
    let mut lp = Loop::new().expect("a loop");
    let echo =
        lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    let stats = Rc::new(RelayStats::default());
    let (to, s) = (Endpoint::Addr(echo.addr()), stats.clone());
    let proxy = lp
        .create_server("127.0.0.1:0", move || relay(to.clone(), &s), ServerOptions::default())
        .unwrap();
    let before = open_fds();
    let done = Rc::new(Cell::new(0));
    for batch in 1..=20 {
        for _ in 0..50 {
            let client = Client { got: 0, done: done.clone() };
            lp.create_connection(Endpoint::Addr(proxy.addr()), Box::new(client)).unwrap();
        }
        lp.run_until_timeout(|| done.get() == batch * 50, Duration::from_secs(30)).unwrap();
    }
    lp.run_until_timeout(|| stats.open.get() == 0, Duration::from_secs(30)).unwrap();
    for _ in 0..200 {
        if lp.is_empty() {
            break;
        }
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(stats.started.get(), 1000);
    assert_eq!(stats.aborted.get(), 0);
    assert!(lp.is_empty(), "{} transports left", lp.len());
    assert_eq!(open_fds(), before, "descriptors before and after 1,000 relays");
}
