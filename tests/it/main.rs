//! udplab's integration tests, one binary: simulation, CLI over loopback, impairment, netns.

mod cli;
mod common;
mod netns;
mod sim;
