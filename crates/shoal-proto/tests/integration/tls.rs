//! TLS round trips with a self-signed certificate made by rcgen, and the
//! errors for unusable TLS files.

use std::path::{Path, PathBuf};

use shoal_proto::auth::ClientAuth;
use shoal_proto::tls::{TlsError, client_config, server_config};
use shoal_proto::v1::coordinator_client::CoordinatorClient;
use shoal_proto::{ProtoError, endpoint, endpoint_with_ca};
use tonic::Code;

use crate::server::{COORDINATOR_ID, register_request, serve};

/// Writes a fresh self-signed certificate for localhost/127.0.0.1 and its
/// key into `dir`; returns (cert path, key path).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate certificate");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

#[tokio::test]
async fn tls_round_trip_with_token() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server");
    let addr = serve(&["tls-token"], Some(server_config(&cert, &key).unwrap())).await;

    // The server certificate is its own CA.
    let channel = endpoint_with_ca(&format!("https://127.0.0.1:{}", addr.port()), Some(&cert))
        .unwrap()
        .connect()
        .await
        .expect("TLS connect");
    let auth = ClientAuth::new(Some("tls-token".into())).unwrap();
    let mut client = CoordinatorClient::with_interceptor(channel.clone(), auth);
    let reply = client
        .register(register_request("tls-worker"))
        .await
        .expect("register");
    assert_eq!(
        reply.into_inner().coordinator_id,
        format!("{COORDINATOR_ID}/tls-worker")
    );

    // Authentication still applies over TLS.
    let mut anonymous =
        CoordinatorClient::with_interceptor(channel, ClientAuth::new(None).unwrap());
    let status = anonymous
        .register(register_request("tls-worker"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn tls_with_domain_override() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server");
    let addr = serve(&[], Some(server_config(&cert, &key).unwrap())).await;
    let tls = client_config(&cert, Some("localhost")).unwrap();
    let channel = endpoint(&format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connect with the certificate's DNS name");
    let mut client = CoordinatorClient::with_interceptor(channel, ClientAuth::new(None).unwrap());
    client
        .register(register_request("w"))
        .await
        .expect("register");
}

#[tokio::test]
async fn tls_refuses_a_server_signed_by_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server");
    let (other_ca, _) = self_signed(dir.path(), "other");
    let addr = serve(&[], Some(server_config(&cert, &key).unwrap())).await;
    let url = format!("https://127.0.0.1:{}", addr.port());
    let result = match endpoint_with_ca(&url, Some(&other_ca))
        .unwrap()
        .connect()
        .await
    {
        Err(e) => Err(e.to_string()),
        Ok(channel) => {
            let mut client =
                CoordinatorClient::with_interceptor(channel, ClientAuth::new(None).unwrap());
            client
                .register(register_request("w"))
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
        }
    };
    assert!(
        result.is_err(),
        "a certificate from an untrusted CA was accepted"
    );
}

#[tokio::test]
async fn plain_client_cannot_talk_to_a_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server");
    let addr = serve(&[], Some(server_config(&cert, &key).unwrap())).await;
    let result = match endpoint(&addr.to_string()).unwrap().connect().await {
        Err(_) => false,
        Ok(channel) => {
            let mut client =
                CoordinatorClient::with_interceptor(channel, ClientAuth::new(None).unwrap());
            client.register(register_request("w")).await.is_ok()
        }
    };
    assert!(!result, "a plain-text call to a TLS server succeeded");
}

#[test]
fn unusable_tls_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();

    let err = server_config(&missing, &key).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let err = server_config(&garbage, &key).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.pem"), "{err}");

    // A certificate where the key should be.
    let err = server_config(&cert, &cert).unwrap_err();
    assert!(err.to_string().contains("server.crt"), "{err}");
    assert!(err.to_string().contains("private key"), "{err}");

    let err = client_config(&key, None).unwrap_err();
    assert!(err.to_string().contains("server.key"), "{err}");
    assert!(err.to_string().contains("CA certificate"), "{err}");

    let err = endpoint_with_ca("https://127.0.0.1:1", Some(&garbage)).unwrap_err();
    assert!(
        matches!(err, ProtoError::Tls(TlsError::Pem { .. })),
        "{err:?}"
    );
}
