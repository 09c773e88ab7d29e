//! Integration tests of shoal-proto: a real tonic server on 127.0.0.1 with
//! the auth interceptor, over plain HTTP/2 and over TLS.

mod auth;
mod server;
mod tls;
