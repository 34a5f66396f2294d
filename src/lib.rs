//! udplab: a UDP reliability and packet-loss test harness (library half of the `udplab` binary).
//!
//! Layering (see DESIGN.md): a sans-IO core (`wire`, `stats`, `pacing`, `impair`, `session`)
//! that takes time as an argument, a driver (`net`, `run`) that owns sockets, threads and
//! clocks, and report writers that only see the plain structs in `summary`.

pub mod impair;
pub mod summary;
pub mod time;
