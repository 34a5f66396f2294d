//! udplab's integration tests, one binary: simulation, CLI over loopback, impairment, netns.

mod arq_sim;
mod auth;
mod cli;
mod common;
mod dualstack;
mod gates;
mod hostile;
mod impair;
mod msrv;
mod netns;
mod proxy_limits;
mod reliable;
mod reliable_peers;
mod reports;
mod sim;
mod stats_numbers;
