//! One integration binary, one module per scenario (hickory's layout).

mod admin;
mod binary;
mod configs;
mod federation;
mod lab;
mod load;
mod metrics;
mod peers;
mod support;
mod tls;
mod transports;
