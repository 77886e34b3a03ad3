//! A UDP echo server and its clients on the built-in poll loop, in one run: each client is
//! a connected datagram endpoint that sends numbered datagrams of mixed sizes (an empty one
//! included), keeps a window of them in flight, and checks every reply against what it
//! sent. Exits 0 when every reply came back, byte for byte.
//!
//! ```text
//! cargo run --example udp_echo                            # 4 clients × 2,000 datagrams, IPv4
//! cargo run --example udp_echo -- --clients 8 --count 10000
//! ```
//!
//! UDP may lose datagrams; on loopback, with a window well below the receive buffer (32
//! datagrams of at most 1,400 bytes against `SO_RCVBUF` of 1 MiB), it does not, so this
//! demo treats a missing reply as a failure after a timeout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioport::{CallbackResult, ConnectionError, Ctx, DatagramAddr, DatagramProtocol};
use aioport_poll::{DatagramOptions, Loop};

/// Echoes each datagram to its sender.
struct EchoServer {
    echoed: Rc<RefCell<u64>>,
}

impl DatagramProtocol for EchoServer {
    fn datagram_received(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> CallbackResult {
        ctx.sendto(ctx.datagram(), data, addr)?;
        *self.echoed.borrow_mut() += 1;
        Ok(())
    }
    fn error_received(&mut self, _: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        eprintln!("server: error_received: {err}");
        Ok(())
    }
}

/// What one client found.
#[derive(Default)]
struct Report {
    replies: u64,
    wrong: Option<String>,
    errors: Vec<ConnectionError>,
    done: bool,
}

/// Sends `count` datagrams, at most `window` unanswered; checks each reply.
struct Client {
    id: u32,
    count: u32,
    window: usize,
    next: u32,
    /// Datagrams in flight, by sequence number.
    in_flight: HashMap<u32, usize>,
    report: Rc<RefCell<Report>>,
}

/// Datagram `seq` of client `id`: the two numbers, then bytes derived from them; sizes
/// cycle through empty, tiny, typical and near-MTU.
fn datagram(id: u32, seq: u32) -> Vec<u8> {
    let len = [0, 8, 64, 512, 1_400][(seq % 5) as usize];
    let mut d: Vec<u8> =
        (0..len).map(|i| (i as u32 ^ seq.wrapping_mul(2_654_435_761)) as u8).collect();
    if len >= 8 {
        d[..4].copy_from_slice(&id.to_be_bytes());
        d[4..8].copy_from_slice(&seq.to_be_bytes());
    }
    d
}

impl Client {
    fn fill(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        while self.next < self.count && self.in_flight.len() < self.window {
            let d = datagram(self.id, self.next);
            ctx.sendto(ctx.datagram(), &d, None)?;
            self.in_flight.insert(self.next, d.len());
            self.next += 1;
        }
        Ok(())
    }

    /// Which datagram in flight `data` is: by its header, or — for datagrams too short
    /// to carry one — by size.
    fn identify(&self, data: &[u8]) -> Option<u32> {
        if data.len() >= 8 {
            let seq = u32::from_be_bytes(data[4..8].try_into().ok()?);
            return self.in_flight.contains_key(&seq).then_some(seq);
        }
        let mut short: Vec<u32> =
            self.in_flight.iter().filter(|&(_, &len)| len == data.len()).map(|(&s, _)| s).collect();
        short.sort_unstable();
        short.first().copied()
    }
}

impl DatagramProtocol for Client {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.fill(ctx)
    }
    fn datagram_received(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        _: Option<&DatagramAddr>,
    ) -> CallbackResult {
        match self.identify(data) {
            Some(seq) if datagram(self.id, seq) == data => {
                self.in_flight.remove(&seq);
                self.report.borrow_mut().replies += 1;
            }
            _ => {
                self.report.borrow_mut().wrong.get_or_insert(format!(
                    "client {}: a reply of {} bytes matches no datagram in flight",
                    self.id,
                    data.len()
                ));
            }
        }
        self.fill(ctx)?;
        if self.next == self.count && self.in_flight.is_empty() {
            ctx.close(ctx.datagram())?;
        }
        Ok(())
    }
    fn error_received(&mut self, _: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        self.report.borrow_mut().errors.push(err);
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        self.report.borrow_mut().done = true;
        Ok(())
    }
}

fn arg(args: &[String], name: &str, default: u32) -> Result<u32, Box<dyn Error>> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args.get(i + 1).ok_or(format!("{name} needs a value"))?.parse()?),
        None => Ok(default),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let clients = arg(&args, "--clients", 4)?;
    let count = arg(&args, "--count", 2_000)?;

    let mut lp = Loop::new()?;
    let echoed = Rc::new(RefCell::new(0));
    let opts = DatagramOptions::default().recv_buffer_size(1 << 20);
    let local = DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = lp.create_datagram_endpoint(
        Box::new(EchoServer { echoed: echoed.clone() }),
        Some(local.clone()),
        None,
        opts,
    )?;
    println!("udp echo server on {:?}", server.local_addr());

    let start = Instant::now();
    let reports: Vec<Rc<RefCell<Report>>> = (0..clients)
        .map(|id| {
            let report = Rc::new(RefCell::new(Report::default()));
            let client = Client {
                id,
                count,
                window: 32,
                next: 0,
                in_flight: HashMap::new(),
                report: report.clone(),
            };
            let remote = Some(server.local_addr().clone());
            lp.create_datagram_endpoint(Box::new(client), Some(local.clone()), remote, opts)
                .map(|_| report)
        })
        .collect::<Result<_, _>>()?;
    let all_done = || reports.iter().all(|r| r.borrow().done || r.borrow().wrong.is_some());
    // On a timeout the report below says which client misses which replies.
    let mut failed = match lp.run_until_timeout(all_done, Duration::from_secs(30)) {
        Ok(()) => false,
        Err(aioport_poll::Error::TimedOut) => {
            eprintln!("timed out after 30 s waiting for replies");
            true
        }
        Err(e) => return Err(e.into()),
    };
    let elapsed = start.elapsed();

    for (id, r) in reports.iter().enumerate() {
        let r = r.borrow();
        if let Some(w) = &r.wrong {
            eprintln!("{w}");
            failed = true;
        }
        if r.replies != u64::from(count) || !r.errors.is_empty() {
            eprintln!("client {id}: {} of {count} replies; errors {:?}", r.replies, r.errors);
            failed = true;
        }
    }
    let total = u64::from(clients) * u64::from(count);
    println!(
        "{clients} clients × {count} datagrams: {total} echoed and verified in {:.0} ms \
         ({:.0} round trips/s); server echoed {}",
        elapsed.as_secs_f64() * 1e3,
        total as f64 / elapsed.as_secs_f64(),
        echoed.borrow()
    );
    if failed {
        return Err("some replies were missing or wrong".into());
    }
    Ok(())
}
