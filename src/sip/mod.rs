//! SIP message helpers. (The lead merges this into the real `sip` module.)

pub mod ms_headers;
