//! Test harness for fedgate's end-to-end suites: real sockets on 127.0.0.1:0, by role.
//!
//! - `upstream`: a real upstream server ([`TestUpstream`]) and body helpers;
//! - `gateway`: the gateway started from a real config file ([`TestGateway`]) or as the real
//!   binary ([`fedgate_bin`]), config snippets, plugins, health;
//! - `clients`: HTTP/1.1 and HTTP/2 clients and requests;
//! - `metrics`: reading and waiting on `/metrics`, `promtool`;
//! - `signers`: independently written signature and JWT clients;
//! - `raw` and [`h2raw`]: raw sockets, HTTP/1.1 and HTTP/2.
//!
//! Everything is re-exported at the crate root.

mod clients;
mod gateway;
pub mod h2raw;
mod metrics;
mod raw;
mod signers;
mod upstream;

pub use clients::*;
pub use gateway::*;
pub use metrics::*;
pub use raw::*;
pub use signers::*;
pub use upstream::*;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// The body of every request and response the harness builds and serves: boxed, in
/// `Bytes` chunks, failing with hyper's error.
pub type Body = BoxBody<Bytes, hyper::Error>;
