//! udplab's integration tests, one binary: simulation, CLI over loopback, impairment, netns.

mod arq_sim;
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
mod plot;
mod proxy_limits;
mod reliable;
mod reliable_flows;
mod reliable_peers;
mod reports;
mod reverse;
mod sim;
mod sockopts;
mod stats_numbers;
mod suite;
