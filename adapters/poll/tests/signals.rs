//! `Loop::stop_on_signals`: SIGTERM and SIGINT stop a running loop cleanly, so the
//! process finishes its `main` and exits with status 0. Each case runs in a child process
//! (this binary, re-executed), which the test signals with `kill`.

mod child;

use std::io::{Read, Write};
use std::net::TcpStream;

use aioport::{CallbackResult, Ctx, Protocol};
use aioport_poll::{Loop, ServerOptions, signal};
use rustix::process::Signal;
use rustix::process::kill_process;

use child::ChildProcess;

const ROLE: &str = "AIOPORT_SIGNAL_CHILD";

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
}

/// The child: an echo server that runs until a signal, then closes it and returns.
fn serve_until_signalled() {
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    lp.stop_on_signals(&[signal::SIGINT, signal::SIGTERM]).unwrap();
    println!("ready {}", srv.addr().port());
    // Bounded: a lost signal fails the child (non-zero exit) instead of hanging it.
    lp.run_until_timeout(|| false, child::LIMIT).expect("stopped by a signal in time");
    srv.close(&mut lp);
    println!("stopped-by {}", lp.last_signal().unwrap());
}

fn stops_cleanly_on(test: &str, sig: Signal, number: i32) {
    let c = ChildProcess::spawn(test, ROLE, "serve");
    let port: u16 = c.expect("ready ").parse().unwrap();
    // It serves before the signal.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(child::LIMIT)).unwrap();
    s.write_all(b"hi").unwrap();
    let mut got = [0u8; 2];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");
    kill_process(c.pid(), sig).unwrap();
    assert_eq!(c.expect("stopped-by "), number.to_string());
    let status = c.wait();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigterm_stops_the_loop_and_the_process_exits_0() {
    if child::role(ROLE).is_some() {
        return serve_until_signalled();
    }
    stops_cleanly_on(
        "sigterm_stops_the_loop_and_the_process_exits_0",
        Signal::TERM,
        signal::SIGTERM,
    );
}

#[test]
fn sigint_stops_the_loop_and_the_process_exits_0() {
    if child::role(ROLE).is_some() {
        return serve_until_signalled();
    }
    stops_cleanly_on("sigint_stops_the_loop_and_the_process_exits_0", Signal::INT, signal::SIGINT);
}

#[test]
fn signals_that_cannot_be_caught_are_an_error() {
    let mut lp = Loop::new().unwrap();
    assert!(lp.stop_on_signals(&[9]).is_err(), "SIGKILL cannot be caught");
}
