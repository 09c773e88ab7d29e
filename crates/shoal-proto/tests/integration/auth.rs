//! Token and protocol-version checks through a real server.

use shoal_proto::auth::{ClientAuth, PROTOCOL_HEADER};
use shoal_proto::v1::coordinator_client::CoordinatorClient;
use shoal_proto::v1::{CancelRequest, RegisterRequest};
use shoal_proto::{PROTOCOL_VERSION, endpoint};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::server::{COORDINATOR_ID, register_request, serve};

async fn channel(addr: std::net::SocketAddr) -> Channel {
    endpoint(&addr.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

async fn register_with(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    request: RegisterRequest,
) -> Result<String, Status> {
    let auth = ClientAuth::new(token.map(str::to_owned)).expect("client auth");
    let mut client = CoordinatorClient::with_interceptor(channel(addr).await, auth);
    client
        .register(request)
        .await
        .map(|reply| reply.into_inner().coordinator_id)
}

#[tokio::test]
async fn right_token_gets_through() {
    let addr = serve(&["first-token", "second-token"], None).await;
    for token in ["first-token", "second-token"] {
        let id = register_with(addr, Some(token), register_request("w1"))
            .await
            .expect("register with a configured token");
        assert_eq!(id, format!("{COORDINATOR_ID}/w1"));
    }
}

#[tokio::test]
async fn wrong_token_is_unauthenticated_and_not_echoed() {
    let addr = serve(&["right-token"], None).await;
    let status = register_with(addr, Some("wrong-token-xyz"), register_request("w1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "missing or invalid token");
    assert!(!format!("{status:?}").contains("wrong-token-xyz"));
}

#[tokio::test]
async fn missing_token_is_unauthenticated() {
    let addr = serve(&["right-token"], None).await;
    let status = register_with(addr, None, register_request("w1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn other_authorization_schemes_are_unauthenticated() {
    let addr = serve(&["right-token"], None).await;
    let mut client =
        CoordinatorClient::with_interceptor(channel(addr).await, |mut request: Request<()>| {
            request.metadata_mut().insert(
                "authorization",
                MetadataValue::from_static("Basic right-token"),
            );
            Ok(request)
        });
    let status = client.register(register_request("w1")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn open_server_needs_no_token() {
    let addr = serve(&[], None).await;
    let id = register_with(addr, None, register_request("w2"))
        .await
        .expect("register");
    assert_eq!(id, format!("{COORDINATOR_ID}/w2"));
    // A token sent to an open server is simply not needed.
    register_with(addr, Some("whatever"), register_request("w2"))
        .await
        .expect("register with an unneeded token");
}

#[tokio::test]
async fn other_protocol_header_is_failed_precondition() {
    let addr = serve(&["tok"], None).await;
    let mut client =
        CoordinatorClient::with_interceptor(channel(addr).await, |mut request: Request<()>| {
            let metadata = request.metadata_mut();
            metadata.insert("authorization", MetadataValue::from_static("Bearer tok"));
            metadata.insert(PROTOCOL_HEADER, MetadataValue::from(PROTOCOL_VERSION + 1));
            Ok(request)
        });
    let status = client.register(register_request("w1")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("this coordinator speaks shoal protocol v1; the client sent v2"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn unreadable_protocol_header_is_failed_precondition() {
    let addr = serve(&[], None).await;
    let mut client =
        CoordinatorClient::with_interceptor(channel(addr).await, |mut request: Request<()>| {
            request
                .metadata_mut()
                .insert(PROTOCOL_HEADER, MetadataValue::from_static("one"));
            Ok(request)
        });
    let status = client.register(register_request("w1")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("not a version number"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn wrong_token_is_reported_before_wrong_protocol() {
    let addr = serve(&["tok"], None).await;
    let mut client =
        CoordinatorClient::with_interceptor(channel(addr).await, |mut request: Request<()>| {
            let metadata = request.metadata_mut();
            metadata.insert("authorization", MetadataValue::from_static("Bearer nope"));
            metadata.insert(PROTOCOL_HEADER, MetadataValue::from_static("9"));
            Ok(request)
        });
    let status = client.register(register_request("w1")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn protocol_version_in_the_message_is_checked_by_the_handler() {
    let addr = serve(&["tok"], None).await;
    let mut request = register_request("w1");
    request.protocol_version = 7;
    let status = register_with(addr, Some("tok"), request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("the client sent v7"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn interceptor_guards_every_rpc() {
    let addr = serve(&["tok"], None).await;
    let mut anonymous =
        CoordinatorClient::with_interceptor(channel(addr).await, ClientAuth::new(None).unwrap());
    let status = anonymous
        .cancel(CancelRequest { run_id: "r".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let mut authed = CoordinatorClient::with_interceptor(
        channel(addr).await,
        ClientAuth::new(Some("tok".into())).unwrap(),
    );
    let status = authed
        .cancel(CancelRequest { run_id: "r".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}
