//! Child processes on the built-in poll loop: data through `cat` and `tr` with stdin
//! back-pressure, and exit statuses.
//!
//! ```text
//! cargo run --release --example subprocess                # 64 MiB through cat, then tr, exit codes
//! cargo run --release --example subprocess -- --mib 256
//! ```
//!
//! The protocol writes stdin in 256 KiB chunks while the pipe transport is not paused
//! (`pause_writing` stops it, `resume_writing` continues), so at most about one chunk
//! above high water is ever buffered however fast it produces; it checks every byte that
//! comes back. The same bytes are then pushed through `cat` by plain blocking std code
//! (a writer thread and a reading thread), as a baseline measured in the same run. Exits 0
//! when every byte came back in order and every exit status is as expected.

use std::cell::RefCell;
use std::error::Error;
use std::io::{Read, Write};
use std::process::{Command, Stdio as StdStdio};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use aioport::{CallbackResult, ConnectionError, Ctx, SubprocessProtocol};
use aioport_poll::{Loop, SubprocessOptions};
use bytes::Bytes;

const CHUNK: usize = 256 * 1024;
const LIMIT: Duration = Duration::from_secs(120);

/// The byte at `i` of the stream (cheap, not periodic over a chunk).
fn byte(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

#[derive(Default)]
struct Report {
    received: usize,
    mismatch: Option<usize>,
    pauses: u32,
    resumes: u32,
    returncode: Option<i32>,
    done: bool,
}

/// Streams `total` bytes into the child's stdin under flow control and checks what comes
/// back on stdout against `expect`.
struct Pump {
    total: usize,
    sent: usize,
    paused: bool,
    chunk: Bytes,
    /// What stdout must carry, repeating every `CHUNK` bytes.
    expect: Vec<u8>,
    report: Rc<RefCell<Report>>,
}

impl Pump {
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let Some(stdin) = ctx.stdin(ctx.subprocess())? else { return Ok(()) };
        while !self.paused && self.sent < self.total {
            let n = CHUNK.min(self.total - self.sent);
            // Chunks are whole multiples of the pattern's position, so one chunk serves all.
            ctx.write(stdin, self.chunk.slice(..n))?;
            self.sent += n;
            self.paused = ctx.is_writing_paused(stdin)?;
        }
        if self.sent == self.total {
            ctx.write_eof(stdin)?;
        }
        Ok(())
    }
}

impl SubprocessProtocol for Pump {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.paused = true;
        self.report.borrow_mut().pauses += 1;
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.paused = false;
        self.report.borrow_mut().resumes += 1;
        self.pump(ctx)
    }
    fn pipe_data_received(&mut self, _: &mut Ctx<'_>, fd: u32, data: &[u8]) -> CallbackResult {
        let mut r = self.report.borrow_mut();
        if fd == 1 && r.mismatch.is_none() {
            // Compared a pattern run at a time (memcmp), not byte by byte.
            let mut rest = data;
            while !rest.is_empty() {
                let at = r.received % CHUNK;
                let n = rest.len().min(CHUNK - at);
                if rest[..n] != self.expect[at..at + n] {
                    r.mismatch = Some(r.received);
                    break;
                }
                r.received += n;
                rest = &rest[n..];
            }
        }
        Ok(())
    }
    fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.report.borrow_mut().returncode = ctx.returncode(ctx.subprocess())?;
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        self.report.borrow_mut().done = true;
        Ok(())
    }
}

fn upper(i: usize) -> u8 {
    byte(i).to_ascii_uppercase()
}

/// Runs `program args` over `total` bytes; returns the report and the elapsed time.
fn run(
    lp: &mut Loop,
    program: &str,
    args: &[&str],
    total: usize,
    expect: fn(usize) -> u8,
) -> Result<(Report, Duration), Box<dyn Error>> {
    let report = Rc::new(RefCell::new(Report::default()));
    let chunk: Vec<u8> = (0..CHUNK).map(byte).collect();
    let expect = (0..CHUNK).map(expect).collect();
    let pump =
        Pump { total, sent: 0, paused: false, chunk: chunk.into(), expect, report: report.clone() };
    let t0 = Instant::now();
    lp.subprocess_exec(Box::new(pump), program, args, SubprocessOptions::default())?;
    lp.run_until_timeout(|| report.borrow().done, LIMIT)?;
    let elapsed = t0.elapsed();
    let r = std::mem::take(&mut *report.borrow_mut());
    Ok((r, elapsed))
}

/// The same bytes through `cat` with blocking std pipes: a writer thread, this thread reads.
fn baseline(total: usize) -> Result<Duration, Box<dyn Error>> {
    let chunk: Vec<u8> = (0..CHUNK).map(byte).collect();
    let t0 = Instant::now();
    let mut child =
        Command::new("cat").stdin(StdStdio::piped()).stdout(StdStdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = thread::spawn(move || -> std::io::Result<()> {
        let mut sent = 0;
        while sent < total {
            let n = CHUNK.min(total - sent);
            stdin.write_all(&chunk[..n])?;
            sent += n;
        }
        Ok(())
    });
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut buf = vec![0; CHUNK];
    let mut got = 0;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    writer.join().map_err(|_| "writer panicked")??;
    child.wait()?;
    if got != total {
        return Err(format!("baseline: {got} of {total} bytes").into());
    }
    Ok(t0.elapsed())
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut mib = 64usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib" => mib = args.next().ok_or("--mib N")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let total = mib * 1024 * 1024;
    let mut lp = Loop::new()?;

    let (r, t) = run(&mut lp, "cat", &[], total, byte)?;
    if r.received != total || r.mismatch.is_some() || r.returncode != Some(0) {
        return Err(format!(
            "cat: {} of {total} bytes, mismatch at {:?}, returncode {:?}",
            r.received, r.mismatch, r.returncode
        )
        .into());
    }
    println!(
        "cat: {mib} MiB byte-exact in {:.0} ms ({:.0} MiB/s), stdin paused {} and resumed {} times, returncode 0",
        t.as_secs_f64() * 1e3,
        mib_per_s(total, t),
        r.pauses,
        r.resumes
    );
    let base = baseline(total)?;
    println!(
        "baseline (blocking std pipes, two threads): {:.0} ms ({:.0} MiB/s); aioport-poll / baseline time = {:.2}",
        base.as_secs_f64() * 1e3,
        mib_per_s(total, base),
        t.as_secs_f64() / base.as_secs_f64()
    );

    let small = 4 * 1024 * 1024;
    let (r, _) = run(&mut lp, "tr", &["a-z", "A-Z"], small, upper)?;
    if r.received != small || r.mismatch.is_some() || r.returncode != Some(0) {
        return Err(format!("tr: {} bytes, mismatch at {:?}", r.received, r.mismatch).into());
    }
    println!("tr a-z A-Z: 4 MiB upper-cased byte-exact");

    for code in [0, 3] {
        let (r, _) =
            run(&mut lp, "sh", &["-c", &format!("cat >/dev/null; exit {code}")], 1024, byte)?;
        if r.returncode != Some(code) {
            return Err(format!("exit {code}: returncode {:?}", r.returncode).into());
        }
        println!("sh -c 'exit {code}': returncode {code}");
    }
    Ok(())
}
