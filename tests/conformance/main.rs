//! The conformance suite: one set of protocols and scenarios, run on every driver.
//!
//! * `driver.rs`: the scenario API, the [`Driver`](driver::Driver) trait a driver
//!   implements (listen, connect, run until, user code, reset, errors).
//! * `protocols.rs`: the protocols the scenarios use (echo with flow control, a pattern
//!   pusher that checks every byte, a recorder, a client, an asker that connects from a
//!   callback).
//! * `scenarios.rs`: the scenarios, generic over the driver.
//! * `relay.rs`: the relay scenarios, on `examples/proxy.rs`'s relay.
//! * `datagram.rs`: the datagram protocols and scenarios (UDP over IPv4 and IPv6, Unix
//!   datagram sockets), with their own `datagram_conformance!` list.
//! * `subprocess.rs`: the subprocess protocols and scenarios (children as portable
//!   [`Program`](driver::Program)s: real programs on the poll loop, scripted on the
//!   harness), with their own `subprocess_conformance!` list.
//! * `poll.rs`: the built-in poll loop (`aioport-poll`) on 127.0.0.1; `sim.rs`: the
//!   in-memory harness (`aioport::testing::Sim`, feature `testing`), in virtual time;
//!   `tokio.rs`: the tokio driver (`aioport-tokio`), current-thread and multi-thread;
//!   `smol.rs`: the smol driver (`aioport-smol`).
//! * `tls.rs` (feature `tls`): `Tls<D>`, any driver with TLS under every stream
//!   connection; the stream scenarios run on it unchanged.
//! * `start_tls.rs` (feature `tls`): `Ctx::start_tls` (STARTTLS) on plain connections of
//!   every driver, with its own `start_tls_conformance!` list.
//!
//! Adding a driver: implement `Driver` and add one `conformance!` line below. Every run is
//! bounded (30 s of real time on sockets, a step budget in the simulation).

#[macro_use]
mod datagram;
#[macro_use]
mod subprocess;
mod driver;
mod poll;
mod protocols;
mod relay;
mod scenarios;
mod sendfile;
#[cfg(feature = "testing")]
mod sim;
mod smol;
#[cfg(feature = "tls")]
mod start_tls;
#[cfg(feature = "tls")]
#[path = "../support/starttls.rs"]
mod starttls;
#[cfg(feature = "tls")]
mod tls;
mod tokio;

/// One `#[test]` per scenario for a driver, in a module named after it.
macro_rules! conformance {
    ($module:ident, $driver:ty) => {
        mod $module {
            use crate::driver::Driver;
            use crate::scenarios;

            fn run(scenario: fn(&mut $driver)) {
                scenario(&mut <$driver>::new());
            }

            #[test]
            fn echo() {
                run(scenarios::echo);
            }
            #[test]
            fn bulk_64_mib_byte_exact() {
                run(scenarios::bulk_64_mib_byte_exact);
            }
            #[test]
            fn half_close_client_first() {
                run(scenarios::half_close_client_first);
            }
            #[test]
            fn half_close_server_first() {
                run(scenarios::half_close_server_first);
            }
            #[test]
            fn peer_stops_reading() {
                run(scenarios::peer_stops_reading);
            }
            #[test]
            fn abort_with_queued_buffer() {
                run(scenarios::abort_with_queued_buffer);
            }
            #[test]
            fn peer_reset() {
                run(scenarios::peer_reset);
            }
            #[test]
            fn connect_refused() {
                run(scenarios::connect_refused);
            }
            #[test]
            fn server_close() {
                run(scenarios::server_close);
            }
            #[test]
            fn timers_in_deadline_order() {
                run(scenarios::timers_in_deadline_order);
            }
            #[test]
            fn concurrent_1000() {
                run(scenarios::concurrent_1000);
            }
            #[test]
            fn panicking_protocol_beside_healthy_ones() {
                run(scenarios::panicking_protocol_beside_healthy_ones);
            }
            #[test]
            fn relay_bulk_256_mib_byte_exact() {
                run(crate::relay::relay_bulk_256_mib_byte_exact);
            }
            #[test]
            fn relay_slow_reader_bounded() {
                run(crate::relay::relay_slow_reader_bounded);
            }
            #[test]
            fn relay_half_close_both_ways() {
                run(crate::relay::relay_half_close_both_ways);
            }
            #[test]
            fn relay_reset_aborts_other_side() {
                run(crate::relay::relay_reset_aborts_other_side);
            }
            #[test]
            fn relay_1000_short_lived() {
                run(crate::relay::relay_1000_short_lived);
            }
            #[test]
            fn unix_echo() {
                run(scenarios::unix_echo);
            }
            #[test]
            fn server_lifecycle() {
                run(scenarios::server_lifecycle);
            }
            #[test]
            fn sendfile_byte_exact() {
                run(crate::sendfile::sendfile_byte_exact);
            }
            #[test]
            fn sendfile_fallback_byte_exact() {
                run(crate::sendfile::sendfile_fallback_byte_exact);
            }
        }
    };
}

conformance!(on_poll, crate::poll::Poll);
#[cfg(feature = "testing")]
conformance!(on_sim, crate::sim::Sim);
conformance!(on_tokio_ct, crate::tokio::TokioCt);
conformance!(on_tokio_mt, crate::tokio::TokioMt);
conformance!(on_smol, crate::smol::Smol);
#[cfg(feature = "tls")]
conformance!(tls_on_poll, crate::tls::Tls<crate::poll::Poll>);
#[cfg(all(feature = "tls", feature = "testing"))]
conformance!(tls_on_sim, crate::tls::Tls<crate::sim::Sim>);
#[cfg(feature = "tls")]
conformance!(tls_on_tokio_ct, crate::tls::Tls<crate::tokio::TokioCt>);
#[cfg(feature = "tls")]
conformance!(tls_on_tokio_mt, crate::tls::Tls<crate::tokio::TokioMt>);
#[cfg(feature = "tls")]
conformance!(tls_on_smol, crate::tls::Tls<crate::smol::Smol>);

/// The `start_tls` scenarios for a driver (feature `tls`): plain connections that
/// upgrade themselves.
#[cfg(feature = "tls")]
macro_rules! start_tls_conformance {
    ($module:ident, $driver:ty) => {
        mod $module {
            use crate::driver::Driver;
            use crate::start_tls;

            #[test]
            fn start_tls_client_first() {
                start_tls::start_tls_client_first(&mut <$driver>::new());
            }
            #[test]
            fn start_tls_server_first() {
                start_tls::start_tls_server_first(&mut <$driver>::new());
            }
        }
    };
}

#[cfg(feature = "tls")]
start_tls_conformance!(start_tls_on_poll, crate::poll::Poll);
#[cfg(all(feature = "tls", feature = "testing"))]
start_tls_conformance!(start_tls_on_sim, crate::sim::Sim);
#[cfg(feature = "tls")]
start_tls_conformance!(start_tls_on_tokio_ct, crate::tokio::TokioCt);
#[cfg(feature = "tls")]
start_tls_conformance!(start_tls_on_tokio_mt, crate::tokio::TokioMt);
#[cfg(feature = "tls")]
start_tls_conformance!(start_tls_on_smol, crate::smol::Smol);

datagram_conformance!(datagram_on_poll, crate::poll::Poll);
datagram_conformance!(datagram_on_tokio_ct, crate::tokio::TokioCt);
datagram_conformance!(datagram_on_tokio_mt, crate::tokio::TokioMt);
datagram_conformance!(datagram_on_smol, crate::smol::Smol);
#[cfg(feature = "testing")]
datagram_conformance!(datagram_on_sim, crate::sim::Sim);

subprocess_conformance!(subprocess_on_poll, crate::poll::Poll);
subprocess_conformance!(subprocess_on_tokio_ct, crate::tokio::TokioCt);
subprocess_conformance!(subprocess_on_tokio_mt, crate::tokio::TokioMt);
subprocess_conformance!(subprocess_on_smol, crate::smol::Smol);
#[cfg(feature = "testing")]
subprocess_conformance!(subprocess_on_sim, crate::sim::Sim);
