//! The lab: certificates for the DESIGN topology, the topology table, simulated peers and
//! the public provider's PIC provisioning, and `run`: all of it in one process (`sipedge lab`).

pub mod certs;
pub mod embedded;
pub mod peer;
pub mod pic;
pub mod run;
pub mod topology;
