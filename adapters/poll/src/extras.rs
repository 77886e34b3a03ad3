//! The loop state added for servers in production (issue 7): connect options and
//! deadlines, foreign fds, signals. One field of [`Loop`](crate::Loop), so the loop's
//! own state stays as it was.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Instant;

use aioport::Handle;

use crate::ConnectOptions;
use crate::eyeballs::Race;
use crate::foreign::Watch;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Extras {
    /// Options of connects still in progress (absent: the defaults).
    pub(crate) connect: HashMap<Handle, ConnectOptions>,
    /// Connect timeouts still pending, unordered (few at a time).
    pub(crate) deadlines: Vec<(Instant, Handle)>,
    /// `add_reader` / `add_writer` callbacks by fd.
    pub(crate) foreign: HashMap<RawFd, Watch>,
    /// The signal source of `stop_on_signals`.
    pub(crate) signals: Option<signal_hook_mio::v1_0::Signals>,
    /// The last signal that stopped the loop.
    pub(crate) last_signal: Option<i32>,
    /// Addresses given to `create_connection_to_any`, for its connect request.
    pub(crate) addresses: HashMap<Handle, Vec<SocketAddr>>,
    /// Happy-eyeballs races in progress.
    pub(crate) races: HashMap<Handle, Race>,
    /// Numbers the attempts of races (their tokens).
    pub(crate) next_attempt: usize,
}

impl Extras {
    /// The earliest connect deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let timeouts = self.deadlines.iter().map(|&(t, _)| t);
        let staggers = self.races.values().filter_map(Race::next_start);
        timeouts.chain(staggers).min()
    }

    /// The connect of `h` has an outcome: its options and deadline are dropped (the
    /// loop deregisters the race's attempts first).
    pub(crate) fn connect_done(&mut self, h: Handle) {
        if !self.connect.is_empty() {
            self.connect.remove(&h);
        }
        self.addresses.remove(&h);
        if !self.deadlines.is_empty() {
            self.deadlines.retain(|&(_, d)| d != h);
        }
    }
}
