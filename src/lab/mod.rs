//! The lab: certificates for the DESIGN topology, made by our own generator.

pub mod certs;
