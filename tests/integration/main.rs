//! One integration binary, one module per scenario (hickory's layout).

mod admin;
mod binary;
mod configs;
mod federation;
mod fuzz_corpus;
mod ipv6;
mod lab;
mod metrics;
mod peers;
mod support;
mod tls;
mod torture;
mod transports;
