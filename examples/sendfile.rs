//! Serves a file to every client with `Ctx::sendfile` on the built-in poll loop
//! (`aioport-poll`): zero-copy `sendfile(2)` over TCP, or the flow-controlled
//! read-and-write fallback (asyncio's `loop.sendfile`, issue 16).
//!
//! ```text
//! cargo run --release --example sendfile                          # self-test: 1 GiB zero-copy, then by the fallback
//! cargo run --release --example sendfile -- --bytes 64M           # a smaller self-test
//! cargo run --release --example sendfile -- --serve FILE --port 25000   # serve FILE until SIGINT/SIGTERM
//! cargo run --release --example sendfile -- --bench --bytes 1G --runs 5 # zero-copy vs fallback vs asyncio
//! ```
//!
//! The self-test makes a sparse file (holes with a pattern block every MiB, so a lost,
//! repeated or misplaced piece changes the checksum), serves it once with
//! `fallback = false` (so it must be zero-copy) and once by the forced fallback, each to
//! a client on another thread that checksums what it receives, and exits 0 when both
//! checksums match the file's.
//!
//! `--bench` serves a file of real bytes the same way and times a client that reads it
//! to EOF, interleaving: aioport zero-copy, aioport fallback, asyncio's `loop.sendfile`
//! (native `os.sendfile`) and asyncio's fallback (`tools/asyncio_sendfile_server.py`
//! under `PYENV_VERSION=3.13.0 python3`, else `python3`). It prints the median of each
//! and the ratios.

use std::cell::RefCell;
use std::error::Error;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use aioport::stream::{SendfileError, SendfileFallback};
use aioport::{CallbackResult, Ctx, Protocol, StreamHandle};
use aioport_poll::{FileSource, Loop, ServerOptions, signal};

/// No transfer in the self-test or the benchmark may take longer.
const LIMIT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// Sends the file on `connection_made`, closes once `sendfile_completed` arrives.
struct Serve {
    path: Rc<PathBuf>,
    fallback: SendfileFallback,
    outcomes: Rc<RefCell<Vec<Result<u64, SendfileError>>>>,
}

impl Protocol for Serve {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let file = File::open(&*self.path)?;
        ctx.sendfile(ctx.stream(), Box::new(FileSource::new(file)), 0, None, self.fallback)?;
        Ok(())
    }

    fn sendfile_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        h: StreamHandle,
        outcome: Result<u64, SendfileError>,
    ) -> CallbackResult {
        self.outcomes.borrow_mut().push(outcome);
        ctx.close(h)?;
        Ok(())
    }
}

/// A server on 127.0.0.1 (`port` 0: any) serving `path`; each accepted connection takes
/// the next mode from `modes` (the last one repeats).
fn serve(
    lp: &mut Loop,
    path: &Path,
    port: u16,
    modes: Rc<RefCell<Vec<SendfileFallback>>>,
    outcomes: Rc<RefCell<Vec<Result<u64, SendfileError>>>>,
) -> Result<SocketAddr, Box<dyn Error>> {
    let path = Rc::new(path.to_path_buf());
    let factory = move || {
        let mut m = modes.borrow_mut();
        let fallback = if m.len() > 1 { m.remove(0) } else { m[0] };
        Box::new(Serve { path: path.clone(), fallback, outcomes: outcomes.clone() })
            as Box<dyn Protocol>
    };
    let server = lp.create_server(("127.0.0.1", port), factory, ServerOptions::default())?;
    Ok(server.addr())
}

// ---------------------------------------------------------------------------------------
// Files and checksums
// ---------------------------------------------------------------------------------------

/// A 64-bit checksum over a stream received in arbitrary pieces, eight bytes at a time.
#[derive(Debug, Clone, Copy)]
struct Checksum {
    h: u64,
    carry: [u8; 8],
    held: usize,
    len: u64,
}

impl Checksum {
    fn new() -> Self {
        Checksum { h: 0xcbf2_9ce4_8422_2325, carry: [0; 8], held: 0, len: 0 }
    }

    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.held > 0 {
            let n = (8 - self.held).min(data.len());
            self.carry[self.held..self.held + n].copy_from_slice(&data[..n]);
            self.held += n;
            data = &data[n..];
            if self.held < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.carry));
            self.held = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.held = rest.len();
    }

    fn finish(mut self) -> (u64, u64) {
        if self.held > 0 {
            self.carry[self.held..].fill(0);
            self.word(u64::from_le_bytes(self.carry) ^ self.held as u64);
        }
        (self.len, self.h)
    }
}

/// A pattern byte per position (different in every block).
fn pattern(i: u64) -> u8 {
    let x = (i >> 3).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> ((i & 7) * 8)) as u8
}

const MIB: u64 = 1 << 20;
const MARK: u64 = 4096;

/// A sparse file of `len` bytes: holes, with `MARK` pattern bytes at every MiB and at
/// the end. Returns the checksum of its contents, computed without reading it back.
fn sparse_file(path: &Path, len: u64) -> Result<(u64, u64), Box<dyn Error>> {
    let file = File::create(path)?;
    file.set_len(len)?;
    let mut sum = Checksum::new();
    let zeros = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < len {
        let block = (len - at).min(MIB);
        let mark = MARK.min(block);
        let bytes: Vec<u8> = (at..at + mark).map(pattern).collect();
        file.write_all_at(&bytes, at)?;
        sum.update(&bytes);
        sum.update(&zeros[..(block - mark) as usize]);
        at += block;
    }
    file.sync_data().ok();
    Ok(sum.finish())
}

/// A file of `len` real (non-sparse) pattern bytes, for the benchmark.
fn dense_file(path: &Path, len: u64) -> Result<(), Box<dyn Error>> {
    let mut file = File::create(path)?;
    let mut block = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(MIB) as usize;
        for (i, b) in block[..n].iter_mut().enumerate() {
            *b = pattern(at + i as u64);
        }
        file.write_all(&block[..n])?;
        at += n as u64;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Clients (plain blocking sockets on their own threads: an independent peer)
// ---------------------------------------------------------------------------------------

/// Reads from `addr` to EOF on a new thread; `checksum` hashes what arrives. Returns
/// (bytes, checksum, seconds from connect to EOF).
fn client(
    addr: SocketAddr,
    checksum: bool,
) -> thread::JoinHandle<std::io::Result<(u64, u64, f64)>> {
    thread::spawn(move || {
        (|| {
            let t0 = Instant::now();
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(LIMIT))?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut sum = Checksum::new();
            let mut n = 0u64;
            loop {
                let k = s.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                n += k as u64;
                if checksum {
                    sum.update(&buf[..k]);
                }
            }
            Ok((n, sum.finish().1, t0.elapsed().as_secs_f64()))
        })()
    })
}

/// One client of the aioport server: runs `lp` until the server's protocol heard
/// `sendfile_completed` (and closed), then joins the client, which reads to EOF.
fn run_client(
    lp: &mut Loop,
    addr: SocketAddr,
    checksum: bool,
    outcomes: &Rc<RefCell<Vec<Result<u64, SendfileError>>>>,
) -> Result<(u64, u64, f64), Box<dyn Error>> {
    let before = outcomes.borrow().len();
    let t = client(addr, checksum);
    lp.run_until_timeout(|| outcomes.borrow().len() > before, LIMIT)?;
    Ok(t.join().map_err(|_| "client thread panicked")??)
}

// ---------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------

fn self_test(bytes: u64) -> Result<(), Box<dyn Error>> {
    let path = std::env::temp_dir().join(format!("aioport-sendfile-{}", std::process::id()));
    let _cleanup = Remove(path.clone());
    let (len, want) = sparse_file(&path, bytes)?;
    let mut lp = Loop::new()?;
    let modes = Rc::new(RefCell::new(vec![SendfileFallback::Deny, SendfileFallback::Force]));
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let addr = serve(&mut lp, &path, 0, modes, outcomes.clone())?;
    for name in ["zero-copy", "fallback"] {
        let (n, sum, secs) = run_client(&mut lp, addr, true, &outcomes)?;
        println!(
            "sendfile: {name}: {n} bytes in {secs:.2} s ({:.0} MiB/s), checksum {sum:016x}",
            n as f64 / MIB as f64 / secs
        );
        if (n, sum) != (len, want) {
            return Err(
                format!("{name}: got {n} bytes / {sum:016x}, want {len} / {want:016x}").into()
            );
        }
    }
    let outcomes = outcomes.borrow();
    if *outcomes != [Ok(len), Ok(len)] {
        return Err(format!("sendfile_completed: {outcomes:?}").into());
    }
    println!("sendfile: ok ({len} bytes twice, byte-exact)");
    Ok(())
}

fn serve_forever(path: &Path, port: u16) -> Result<(), Box<dyn Error>> {
    let mut lp = Loop::new()?;
    let modes = Rc::new(RefCell::new(vec![SendfileFallback::Allow]));
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let addr = serve(&mut lp, path, port, modes, outcomes)?;
    eprintln!("sendfile: serving {} on {addr} until SIGINT/SIGTERM", path.display());
    lp.stop_on_signals(&[signal::SIGINT, signal::SIGTERM])?;
    lp.run_forever()?;
    Ok(())
}

/// asyncio's server process; killed on drop.
struct Asyncio {
    child: Child,
    addr: SocketAddr,
}

impl Asyncio {
    fn start(path: &Path, fallback: bool) -> Result<Asyncio, Box<dyn Error>> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/asyncio_sendfile_server.py");
        let mut tries = vec![("3.13.0", "python3"), ("", "python3")];
        let mut last = String::new();
        for (version, python) in tries.drain(..) {
            let mut cmd = Command::new(python);
            if !version.is_empty() {
                cmd.env("PYENV_VERSION", version);
            }
            cmd.arg(&script).arg(path).stdin(Stdio::piped()).stdout(Stdio::piped());
            if fallback {
                cmd.arg("--fallback");
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let mut line = String::new();
            BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
            match line.trim().parse::<u16>() {
                Ok(port) => {
                    return Ok(Asyncio { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) });
                }
                Err(_) => {
                    last = format!("python printed {line:?}");
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        Err(format!("asyncio server did not start: {last}").into())
    }
}

impl Drop for Asyncio {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of a thread or process, from `/proc/.../stat`.
fn cpu_seconds(stat: &str) -> f64 {
    let Ok(text) = std::fs::read_to_string(stat) else { return f64::NAN };
    // After the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> =
        text.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn join(
    t: thread::JoinHandle<std::io::Result<(u64, u64, f64)>>,
) -> Result<(u64, u64, f64), Box<dyn Error>> {
    Ok(t.join().map_err(|_| "client thread panicked")??)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(bytes: u64, runs: usize) -> Result<(), Box<dyn Error>> {
    let path = std::env::temp_dir().join(format!("aioport-sendfile-bench-{}", std::process::id()));
    let _cleanup = Remove(path.clone());
    dense_file(&path, bytes)?;
    // Warm the page cache.
    std::io::copy(&mut File::open(&path)?, &mut std::io::sink())?;
    let mut lp = Loop::new()?;
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let modes = Rc::new(RefCell::new(vec![SendfileFallback::Deny]));
    let zero_copy = serve(&mut lp, &path, 0, modes, outcomes.clone())?;
    let modes = Rc::new(RefCell::new(vec![SendfileFallback::Force]));
    let fallback = serve(&mut lp, &path, 0, modes, outcomes.clone())?;
    let asyncio = match (Asyncio::start(&path, false), Asyncio::start(&path, true)) {
        (Ok(a), Ok(b)) => Some((a, b)),
        (Err(e), _) | (_, Err(e)) => {
            println!("SKIPPED (asyncio in the sendfile benchmark: {e})");
            None
        }
    };
    let names = ["aioport zero-copy", "aioport fallback", "asyncio sendfile", "asyncio fallback"];
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    // The sender's CPU time: the loop thread for aioport, the whole server process
    // (event loop and executor threads) for asyncio.
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let stat_of = |i: usize| match (i, &asyncio) {
        (0 | 1, _) => "/proc/thread-self/stat".to_owned(),
        (2, Some((a, _))) => format!("/proc/{}/stat", a.child.id()),
        (3, Some((_, b))) => format!("/proc/{}/stat", b.child.id()),
        _ => String::new(),
    };
    for run in 0..runs + 1 {
        for (i, name) in names.iter().enumerate() {
            let cpu0 = cpu_seconds(&stat_of(i));
            let (n, _, s) = match (i, &asyncio) {
                (0, _) => run_client(&mut lp, zero_copy, false, &outcomes)?,
                (1, _) => run_client(&mut lp, fallback, false, &outcomes)?,
                (2, Some((a, _))) => join(client(a.addr, false))?,
                (3, Some((_, b))) => join(client(b.addr, false))?,
                _ => continue,
            };
            if n != bytes {
                return Err(format!("{name}: {n} bytes, want {bytes}").into());
            }
            // The first round warms up.
            if run > 0 {
                secs[i].push(s);
                cpu[i].push(cpu_seconds(&stat_of(i)) - cpu0);
            }
        }
    }
    println!(
        "sendfile benchmark: {} MiB file, {runs} runs each, medians (loopback, one client on \
         another thread; sender CPU = user + system of the sending loop's thread, or of the \
         asyncio process)",
        bytes / MIB
    );
    let mut med = Vec::new();
    for ((name, s), c) in names.iter().zip(&mut secs).zip(&mut cpu) {
        if s.is_empty() {
            continue;
        }
        let (m, mc) = (median(s), median(c));
        med.push((m, mc));
        println!(
            "  {name:<18} {:>8.1} ms  {:>7.0} MiB/s  sender CPU {:>7.1} ms",
            m * 1e3,
            bytes as f64 / MIB as f64 / m,
            mc * 1e3
        );
    }
    let (base, base_cpu) = med[0];
    println!("  ratios to aioport zero-copy (wall time, sender CPU):");
    for (name, (m, mc)) in names.iter().zip(&med) {
        println!("    {name:<18} {:.2}  {:.2}", m / base, mc / base_cpu);
    }
    if outcomes.borrow().iter().any(Result::is_err) {
        return Err(format!("a sendfile failed: {:?}", outcomes.borrow()).into());
    }
    Ok(())
}

/// Removes a file on drop.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().map(|n| n * mult).map_err(|e| format!("bad size {s:?}: {e}"))
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut bytes = 1 << 30;
    let mut runs = 5;
    let mut serve_path = None;
    let mut port = 0;
    let mut do_bench = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--bytes" => bytes = parse_size(&value()?)?,
            "--runs" => runs = value()?.parse::<usize>()?.max(1),
            "--serve" => serve_path = Some(PathBuf::from(value()?)),
            "--port" => port = value()?.parse()?,
            "--bench" => do_bench = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if let Some(path) = serve_path {
        serve_forever(&path, port)
    } else if do_bench {
        bench(bytes, runs)
    } else {
        self_test(bytes)
    }
}
