//! One integration binary, one module per scenario (hickory's layout).

mod admin;
mod admin_netns;
mod binary;
mod configs;
mod faults;
mod federation;
mod fuzz_corpus;
mod hostile;
mod ipv6;
mod lab;
mod lab_binary;
mod legit;
mod load;
mod memory;
mod metrics;
mod observability;
mod peers;
mod policed;
mod restart;
mod security;
mod send;
mod support;
mod tls;
mod topology;
mod torture;
mod transports;
