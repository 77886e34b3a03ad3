//! Happy eyeballs (RFC 8305, asyncio's `happy_eyeballs_delay`): when a connect has several
//! addresses and [`ConnectOptions::happy_eyeballs_delay`](crate::ConnectOptions::happy_eyeballs_delay)
//! is set, the addresses are interleaved by family and attempts start one `delay` apart
//! (or at once when the previous attempt failed); the first to connect wins and the
//! others are closed.
//!
//! Attempts live here, outside the socket table, under their own tokens; the winner's
//! socket enters the table under the transport's handle and completes the connect the
//! usual way ([`Loop::finish_connect`]).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aioport::{Handle, StreamHandle};
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::Loop;
use crate::sockets::{RACE_BITS, Sock};

/// One connect attempt of a race.
struct Attempt {
    number: usize,
    socket: TcpStream,
}

/// A happy-eyeballs race for one transport.
pub(crate) struct Race {
    delay: Duration,
    /// Addresses not tried yet, in the order they will be.
    rest: VecDeque<SocketAddr>,
    /// When the next attempt starts if none has won by then.
    next_at: Option<Instant>,
    attempts: Vec<Attempt>,
    last_error: Option<io::Error>,
}

impl Race {
    pub(crate) fn next_start(&self) -> Option<Instant> {
        self.next_at.filter(|_| !self.rest.is_empty())
    }
}

/// RFC 8305 §4: alternate address families, starting with the first address's.
fn interleave(addrs: Vec<SocketAddr>) -> VecDeque<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (mut same, mut other): (VecDeque<_>, VecDeque<_>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = VecDeque::with_capacity(same.len() + other.len());
    loop {
        match (same.pop_front(), other.pop_front()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

impl Loop {
    pub(crate) fn eyeballs_delay(&self, h: Handle) -> Option<Duration> {
        self.extras.connect.get(&h)?.eyeballs_delay()
    }

    /// Starts a race over `addrs` for `h`.
    pub(crate) fn start_racing(&mut self, h: StreamHandle, addrs: Vec<SocketAddr>, now: Instant) {
        let delay = self.eyeballs_delay(h.handle()).unwrap_or_default();
        let race = Race {
            delay,
            rest: interleave(addrs),
            next_at: None,
            attempts: Vec::new(),
            last_error: None,
        };
        self.extras.races.insert(h.handle(), race);
        self.start_attempt(h, now);
    }

    /// Starts the next address's attempt (skipping addresses that fail at once); fails the
    /// connect when nothing is left in flight.
    fn start_attempt(&mut self, h: StreamHandle, now: Instant) {
        loop {
            let Some(race) = self.extras.races.get_mut(&h.handle()) else { return };
            let Some(addr) = race.rest.pop_front() else {
                race.next_at = None;
                if race.attempts.is_empty() {
                    let e = race.last_error.take().unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "no address left to try")
                    });
                    self.connect_failed(h, e.into(), now);
                }
                return;
            };
            let number = self.extras.next_attempt;
            self.extras.next_attempt = (number + 1) & ((1 << 32) - 1);
            let opened = self.open_tcp(h.handle(), addr).and_then(|mut socket| {
                self.poll.registry().register(
                    &mut socket,
                    Token(RACE_BITS | number),
                    Interest::WRITABLE,
                )?;
                Ok(socket)
            });
            let Some(race) = self.extras.races.get_mut(&h.handle()) else { return };
            match opened {
                Ok(socket) => {
                    race.attempts.push(Attempt { number, socket });
                    race.next_at = Some(now + race.delay);
                    return;
                }
                Err(e) => race.last_error = Some(e),
            }
        }
    }

    /// Starts the attempts whose stagger delay has passed.
    pub(crate) fn stagger_races(&mut self, now: Instant) {
        let due: Vec<Handle> = self
            .extras
            .races
            .iter()
            .filter(|(_, r)| r.next_start().is_some_and(|t| t <= now))
            .map(|(&h, _)| h)
            .collect();
        for h in due {
            self.start_attempt(StreamHandle::from_handle(h), now);
        }
    }

    /// An attempt's socket is writable: connected (it wins) or failed.
    pub(crate) fn on_racer(&mut self, t: usize, now: Instant) {
        let number = t & !RACE_BITS;
        let Some((&h, race)) = self
            .extras
            .races
            .iter_mut()
            .find(|(_, r)| r.attempts.iter().any(|a| a.number == number))
        else {
            return;
        };
        let i = race.attempts.iter().position(|a| a.number == number).unwrap_or_default();
        let outcome = match race.attempts[i].socket.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match race.attempts[i].socket.peer_addr() {
                Ok(_) => Ok(()),
                // A spurious wake-up: still connecting.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Err(e),
            },
        };
        let mut attempt = race.attempts.swap_remove(i);
        let _ = self.poll.registry().deregister(&mut attempt.socket);
        let h = StreamHandle::from_handle(h);
        match outcome {
            Ok(()) => {
                self.close_race(h.handle());
                match self.io.insert(h.handle(), Sock::Tcp(attempt.socket), Some(Vec::new())) {
                    Ok(()) => self.finish_connect(h, now),
                    Err(e) => self.connect_failed(h, e.into(), now),
                }
            }
            Err(e) => {
                race.last_error = Some(e);
                // A failed attempt starts the next one at once (RFC 8305 §5).
                self.start_attempt(h, now);
            }
        }
    }

    /// Closes the attempts still in flight for `h` (the losers).
    fn close_race(&mut self, h: Handle) {
        if let Some(race) = self.extras.races.remove(&h) {
            for mut a in race.attempts {
                let _ = self.poll.registry().deregister(&mut a.socket);
            }
        }
    }

    /// The connect of `h` has an outcome (see [`Extras::connect_done`](crate::extras::Extras::connect_done)).
    pub(crate) fn connect_done(&mut self, h: Handle) {
        if !self.extras.races.is_empty() {
            self.close_race(h);
        }
        self.extras.connect_done(h);
    }
}

#[cfg(test)]
mod tests {
    use super::interleave;

    #[test]
    fn families_alternate_starting_with_the_first() {
        let a: Vec<std::net::SocketAddr> =
            ["[::1]:1", "[::2]:1", "[::3]:1", "127.0.0.1:1", "127.0.0.2:1"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        let got: Vec<String> = interleave(a).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["[::1]:1", "127.0.0.1:1", "[::2]:1", "127.0.0.2:1", "[::3]:1"]);
    }
}
