//! The privileged helper's protocol, its checks, an in-process executor and
//! a client.
//!
//! `banger-root` runs [`Executor::execute`] for each request it accepts. A
//! daemon running as root can run the same operations itself through
//! [`NetBackend::Local`], and one running as a user sends them to
//! `banger-root` through [`NetBackend::Helper`].

mod backend;
mod client;
mod executor;
mod protocol;
mod validate;

pub use backend::{NetBackend, NetError};
pub use client::{ClientError, DEFAULT_CALL_TIMEOUT, HelperClient};
pub use executor::{ExecuteError, Executor};
pub use protocol::{
    DEFAULT_CONFIG_PATH, DEFAULT_SOCKET_PATH, DeleteTapResult, DisableNatResult, ErrorInfo,
    MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, Operation, Request, Response, RouteDnsResult,
    SweepNatResult,
};
pub use validate::{HelperConfig, MAX_OP_ID_LEN, RequestError, parse_request, validate_request};
