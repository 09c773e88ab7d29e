//! shoal's wire protocol: the gRPC client and server generated from
//! `proto/shoal/v1/shoal.proto`, the protocol version, bearer-token
//! authentication ([`auth`]), TLS configuration from PEM files ([`tls`]) and
//! coordinator addresses ([`endpoint`]).
//!
//! The `.proto` is compiled at build time by protox (pure Rust), so building
//! needs no `protoc`.

pub mod auth;
mod endpoint;
pub mod tls;

pub use endpoint::{endpoint, endpoint_with_ca};

/// The generated messages, client (`coordinator_client`) and server
/// (`coordinator_server`) of package `shoal.v1`.
pub mod v1 {
    tonic::include_proto!("shoal.v1");
}

/// The protocol version this build speaks. It travels in the
/// `shoal-protocol` request header (see [`auth::PROTOCOL_HEADER`]) and in the
/// `protocol_version` fields of `Register` and `Submit`; a peer speaking
/// another version is refused with `FAILED_PRECONDITION`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Errors of this crate's helpers (addresses, tokens, TLS files).
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A coordinator address that cannot be used.
    #[error("invalid coordinator address `{address}`: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A token that cannot travel in an HTTP header. The token itself is
    /// never part of the message.
    #[error("the token contains characters not allowed in a request header (visible ASCII only)")]
    InvalidToken,
    /// A TLS certificate or key file could not be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// tonic refused a configuration (e.g. TLS settings on an endpoint).
    #[error("invalid transport configuration for `{address}`")]
    Transport {
        /// The address being configured.
        address: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
}
