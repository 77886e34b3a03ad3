//! Stopping the loop on a signal: [`Loop::stop_on_signals`](crate::Loop::stop_on_signals), and the
//! signal numbers it is usually given.
//!
//! The handler is signal-hook's (async-signal-safe: it writes to a self-pipe that the loop
//! watches like any fd), so this crate keeps `#![forbid(unsafe_code)]`.

use mio::Interest;
use signal_hook_mio::v1_0::Signals;

use crate::Loop;
use crate::sockets::SIGNALS;

pub use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

impl Loop {
    /// Makes the running `run_forever` / `run_until` return cleanly when one of `signals`
    /// arrives (typically [`SIGINT`] and [`SIGTERM`]): the current iteration completes,
    /// then the run returns `Ok`, so `main` can close servers and exit with status 0.
    /// [`last_signal`](Self::last_signal) tells which signal it was. Calling it again adds
    /// signals.
    ///
    /// The handlers stay installed for the life of the process (signal-hook does not
    /// restore the default action), so the signal no longer terminates the process by
    /// itself.
    ///
    /// ```no_run
    /// use aioport_poll::{Loop, signal};
    /// let mut lp = Loop::new()?;
    /// lp.stop_on_signals(&[signal::SIGINT, signal::SIGTERM])?;
    /// lp.run_forever()?; // returns after Ctrl-C or `kill`
    /// eprintln!("stopped by signal {:?}", lp.last_signal());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A signal that cannot be caught (`SIGKILL`, `SIGSTOP`, or one signal-hook forbids,
    /// such as `SIGSEGV`), or the self-pipe could not be created or registered.
    pub fn stop_on_signals(&mut self, signals: &[i32]) -> std::io::Result<()> {
        // signal-hook panics on these; an error is what a caller can handle.
        if let Some(sig) = signals.iter().find(|s| signal_hook::consts::FORBIDDEN.contains(s)) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "signal {sig} cannot be caught (SIGKILL, SIGSTOP, SIGILL, SIGFPE, SIGSEGV)"
                ),
            ));
        }
        if let Some(s) = &self.extras.signals {
            for &sig in signals {
                s.add_signal(sig)?;
            }
            return Ok(());
        }
        let mut s = Signals::new(signals)?;
        self.poll.registry().register(&mut s, SIGNALS, Interest::READABLE)?;
        self.extras.signals = Some(s);
        Ok(())
    }

    /// The signal that last stopped the loop through
    /// [`stop_on_signals`](Self::stop_on_signals).
    pub fn last_signal(&self) -> Option<i32> {
        self.extras.last_signal
    }

    /// The signal pipe is readable: note the signals and stop.
    pub(crate) fn on_signal(&mut self) {
        let Some(s) = self.extras.signals.as_mut() else { return };
        let mut any = false;
        for sig in s.pending() {
            self.extras.last_signal = Some(sig);
            any = true;
        }
        if any {
            self.handle.stop();
        }
    }
}
