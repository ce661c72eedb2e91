//! The lab: certificates for the DESIGN topology, the topology table, simulated peers and
//! the public provider's PIC provisioning.

pub mod certs;
pub mod peer;
pub mod pic;
pub mod topology;
