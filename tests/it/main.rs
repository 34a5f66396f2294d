//! udplab's integration tests, one binary: simulation, CLI over loopback, impairment, netns.

mod auth;
mod bidir;
mod cli;
mod common;
mod dualstack;
mod gates;
mod hostile;
mod impair;
mod msrv;
mod multicast;
mod netns;
mod netns_marking;
mod proxy_limits;
mod reports;
mod reverse;
mod sim;
mod sockopts;
mod stats_numbers;
