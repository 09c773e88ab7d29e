//! Coordinator addresses: `http://host:port`, `https://host:port` or a bare
//! `host:port` (plain HTTP/2), turned into a tonic [`Endpoint`].

use std::path::Path;

use tonic::codegen::http::Uri;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::{ProtoError, tls};

/// The tonic endpoint for a coordinator address.
///
/// Accepted forms: `http://host[:port]`, `https://host[:port]` and a bare
/// `host:port` (meaning `http://`). IPv6 hosts are written in brackets
/// (`[::1]:7420`). An `https://` address trusts the system's CA
/// certificates; for a private CA use [`endpoint_with_ca`]. Addresses with
/// a path, a query or credentials are refused.
pub fn endpoint(address: &str) -> Result<Endpoint, ProtoError> {
    endpoint_with_ca(address, None)
}

/// Like [`endpoint`], trusting the CA certificate(s) in `ca_pem` (instead of
/// the system's) for an `https://` address. Giving a CA for an `http://`
/// address is an error rather than a silently unencrypted connection.
pub fn endpoint_with_ca(address: &str, ca_pem: Option<&Path>) -> Result<Endpoint, ProtoError> {
    let (uri, https) = parse(address)?;
    let endpoint = Endpoint::from(uri);
    let tls = match (https, ca_pem) {
        (false, None) => return Ok(endpoint),
        (false, Some(_)) => {
            return Err(invalid(
                address,
                "a CA certificate was given but the address is not https://",
            ));
        }
        (true, Some(ca)) => tls::client_config(ca, None)?,
        (true, None) => ClientTlsConfig::new().with_enabled_roots(),
    };
    endpoint
        .tls_config(tls)
        .map_err(|source| ProtoError::Transport {
            address: address.to_owned(),
            source,
        })
}

/// Parses and checks an address; returns the URI and whether it is https.
fn parse(address: &str) -> Result<(Uri, bool), ProtoError> {
    let trimmed = address.trim();
    if trimmed.is_empty() {
        return Err(invalid(address, "the address is empty"));
    }
    let (url, https) = match trimmed.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => (trimmed.to_owned(), false),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => (trimmed.to_owned(), true),
        Some((scheme, _)) => {
            return Err(invalid(
                address,
                &format!("unsupported scheme `{scheme}` (use http:// or https://)"),
            ));
        }
        None => {
            if port_of(trimmed).is_none_or(str::is_empty) {
                return Err(invalid(
                    address,
                    "missing port (write host:port, http://host:port or https://host:port)",
                ));
            }
            (format!("http://{trimmed}"), false)
        }
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(address, &format!("not a valid URL ({e})")))?;
    let Some(authority) = uri.authority() else {
        return Err(invalid(address, "missing host"));
    };
    if authority.as_str().contains('@') {
        return Err(invalid(
            address,
            "credentials in the address are not supported (use a token)",
        ));
    }
    if authority.host().is_empty() {
        return Err(invalid(address, "missing host"));
    }
    if port_of(authority.as_str()).is_some_and(|port| port.parse::<u16>().is_err()) {
        return Err(invalid(address, "the port is not a number from 0 to 65535"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            address,
            "a coordinator address has no path or query (write scheme://host:port)",
        ));
    }
    Ok((uri, https))
}

/// The port part of `host:port` or `[v6]:port` (possibly empty), if any.
fn port_of(host_port: &str) -> Option<&str> {
    let after_host = match host_port.rfind(']') {
        Some(end) => &host_port[end + 1..],
        None => host_port,
    };
    after_host.rsplit_once(':').map(|(_, port)| port)
}

fn invalid(address: &str, reason: &str) -> ProtoError {
    ProtoError::InvalidAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri_of(address: &str) -> String {
        endpoint(address).unwrap().uri().to_string()
    }

    fn reason_of(address: &str) -> String {
        match endpoint(address) {
            Err(ProtoError::InvalidAddress { reason, .. }) => reason,
            other => panic!("{address}: expected InvalidAddress, got {other:?}"),
        }
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(uri_of("http://coord:7420"), "http://coord:7420/");
        assert_eq!(uri_of("HTTP://coord:7420/"), "http://coord:7420/");
        assert_eq!(uri_of("coord.example:7420"), "http://coord.example:7420/");
        assert_eq!(uri_of(" 127.0.0.1:80 "), "http://127.0.0.1:80/");
        assert_eq!(uri_of("[::1]:7420"), "http://[::1]:7420/");
        assert_eq!(uri_of("https://coord.example"), "https://coord.example/");
        assert_eq!(
            uri_of("https://coord.example:8443"),
            "https://coord.example:8443/"
        );
    }

    #[test]
    fn refused_forms_say_why() {
        assert!(reason_of("").contains("empty"));
        assert!(reason_of("ftp://coord:21").contains("unsupported scheme `ftp`"));
        assert!(reason_of("grpc://coord:7420").contains("unsupported scheme"));
        assert!(reason_of("coord").contains("missing port"));
        assert!(reason_of("coord:").contains("missing port"));
        assert!(reason_of("[::1]").contains("missing port"));
        assert!(reason_of("http://coord:7420/api").contains("no path"));
        assert!(reason_of("http://coord:7420/?x=1").contains("no path"));
        assert!(reason_of("http://user:pw@coord:7420").contains("credentials"));
        assert!(reason_of("http://").contains("not a valid URL"));
        assert!(reason_of("http://coord:notaport").contains("port is not a number"));
        assert!(reason_of("coord:70000").contains("port is not a number"));
    }

    #[test]
    fn ca_for_plain_http_is_refused() {
        let err =
            endpoint_with_ca("http://coord:7420", Some(Path::new("/nonexistent.pem"))).unwrap_err();
        assert!(err.to_string().contains("not https://"), "{err}");
    }

    #[test]
    fn missing_ca_file_is_named() {
        let err = endpoint_with_ca("https://coord:7420", Some(Path::new("/nonexistent/ca.pem")))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
