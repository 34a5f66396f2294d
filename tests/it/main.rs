//! udplab's integration tests, one binary: simulation, CLI over loopback, impairment, netns.

mod cli;
mod common;
mod gates;
mod impair;
mod netns;
mod sim;
