//! The lab: certificates for the DESIGN topology, the topology table, simulated peers and
//! the public provider's PIC provisioning, run-time `faults`, and `run`: all of it in one
//! process (`sipedge lab`).

pub mod certs;
pub mod embedded;
pub mod faults;
pub mod peer;
pub mod pic;
pub mod run;
pub mod topology;
