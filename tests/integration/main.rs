//! One integration binary, one module per scenario (hickory's layout).

mod admin;
mod binary;
mod configs;
mod federation;
mod hostile;
mod lab;
mod legit;
mod metrics;
mod peers;
mod restart;
mod security;
mod support;
mod tls;
mod transports;
