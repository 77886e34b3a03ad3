//! Child processes on tokio beyond the conformance suite: `wait_subprocess`, a program that
//! does not exist, and a loop dropped with a child still running (killed and reaped, no
//! zombie). Both runtimes; every wait is bounded.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, SubprocessProtocol};
use aioport_tokio::{Error, Loop, SubprocessOptions};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` on a current-thread runtime, then in a `LocalSet` of a multi-thread one.
fn on_both_runtimes<F: Future<Output = ()>>(f: impl Fn() -> F) {
    let ct = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    ct.block_on(f());
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    tokio::task::LocalSet::new().block_on(&mt, f());
}

/// The callbacks a child's protocol saw, by name.
type Calls = Rc<RefCell<Vec<&'static str>>>;

struct Record(Calls);
impl SubprocessProtocol for Record {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().push("connection_made");
        Ok(())
    }
    fn process_exited(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().push("process_exited");
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        self.0.borrow_mut().push("connection_lost");
        Ok(())
    }
}

/// True while a process `pid` exists (a zombie counts: it has not been reaped).
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn wait_subprocess_returns_the_exit_code_then_the_handle_is_gone() {
    on_both_runtimes(|| async {
        let mut lp = Loop::new();
        let calls = Calls::default();
        let opts = SubprocessOptions::default();
        let h = lp.subprocess_shell(Box::new(Record(calls.clone())), "exit 3", opts).await;
        let h = h.expect("spawn sh");
        assert_eq!(lp.wait_subprocess(h, LIMIT).await.expect("exits"), 3);
        lp.run_until_timeout(|| calls.borrow().contains(&"connection_lost"), LIMIT)
            .await
            .expect("the pipes close after the exit");
        assert_eq!(*calls.borrow(), ["connection_made", "process_exited", "connection_lost"]);
        match lp.wait_subprocess(h, LIMIT).await {
            Err(Error::NoSuchProcess(_)) => {}
            other => panic!("expected NoSuchProcess, got {other:?}"),
        }
        assert!(lp.is_empty(), "the transport and its pipes left the loop");
    });
}

#[test]
fn a_program_that_does_not_exist_is_a_spawn_error_without_callbacks() {
    on_both_runtimes(|| async {
        let mut lp = Loop::new();
        let calls = Calls::default();
        let r = lp
            .subprocess_exec(
                Box::new(Record(calls.clone())),
                "/nonexistent/aioport-no-such-program",
                [] as [&str; 0],
                SubprocessOptions::default(),
            )
            .await;
        match r {
            Err(Error::Spawn { error, .. }) => {
                assert_eq!(error.kind(), std::io::ErrorKind::NotFound)
            }
            other => panic!("expected Error::Spawn, got {other:?}"),
        }
        assert!(calls.borrow().is_empty(), "{:?}", calls.borrow());
        assert!(lp.is_empty());
    });
}

#[test]
fn a_loop_dropped_with_a_running_child_kills_and_reaps_it() {
    on_both_runtimes(|| async {
        let mut lp = Loop::new();
        let calls = Calls::default();
        let opts = SubprocessOptions::default();
        let h = lp.subprocess_shell(Box::new(Record(calls.clone())), "exec sleep 30", opts).await;
        let h = h.expect("spawn sleep");
        let pid = lp.with(|ctx| ctx.pid(h)).expect("live").expect("a pid");
        assert!(exists(pid), "the child runs");
        drop(lp);
        assert!(!exists(pid), "killed and reaped when the loop was dropped (no zombie)");
    });
}
