//! SIP messages: zero-copy framing, parsed views of the headers a proxy touches, edits
//! by splicing, and the few messages the edge writes itself.

pub mod build;
pub mod fixtures;
pub mod framing;
pub mod header;
pub mod message;
pub mod ms_headers;
pub mod splice;
pub mod uri;
pub mod via;

pub use header::HeaderName;
pub use message::{Message, Method, ParseError};
pub use uri::{NameAddr, Uri};
pub use via::Via;
