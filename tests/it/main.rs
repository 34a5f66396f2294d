//! udplab's integration tests, one binary: simulation, CLI over loopback, impairment, netns.

mod cli;
mod common;
mod impair;
mod netns;
mod sim;
mod stats_numbers;
