//! Entry point of the `udplab` binary.
fn main() {}
