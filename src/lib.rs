//! udplab: a UDP reliability and packet-loss test harness (library half of the `udplab` binary).
//!
//! Layering (see DESIGN.md): a sans-IO core (`wire`, `stats`, `pacing`, `impair`, `session`)
//! that takes time as an argument, a driver (`net`, `run`) that owns sockets, threads and
//! clocks, and report writers that only see the plain structs in `summary`.

pub mod arq;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod impair;
pub mod net;
pub mod pacing;
pub mod report;
pub mod run;
pub mod session;
pub mod stats;
pub mod suite;
pub mod summary;
pub mod time;
pub mod units;
pub mod wire;
