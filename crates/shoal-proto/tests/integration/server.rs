//! A minimal Coordinator for the tests: `Register` answers, every other RPC
//! is `UNIMPLEMENTED`. Served on 127.0.0.1:0 behind the real interceptor.

use std::net::SocketAddr;

use shoal_proto::PROTOCOL_VERSION;
use shoal_proto::auth::{AuthInterceptor, TokenSet, check_protocol_version};
use shoal_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use shoal_proto::v1::*;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// The coordinator id the test server answers with.
pub const COORDINATOR_ID: &str = "test-coordinator";

struct TestCoordinator;

#[tonic::async_trait]
impl Coordinator for TestCoordinator {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let request = request.into_inner();
        check_protocol_version(request.protocol_version)?;
        Ok(Response::new(RegisterReply {
            protocol_version: PROTOCOL_VERSION,
            lease_timeout_ms: 30_000,
            heartbeat_interval_ms: 10_000,
            coordinator_id: format!("{COORDINATOR_ID}/{}", request.worker_id),
            display_name: request.name,
        }))
    }

    async fn lease(&self, _: Request<LeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        Err(Status::unimplemented("lease"))
    }

    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        Err(Status::unimplemented("heartbeat"))
    }

    async fn report(&self, _: Request<ReportRequest>) -> Result<Response<ReportReply>, Status> {
        Err(Status::unimplemented("report"))
    }

    async fn get_run(&self, _: Request<GetRunRequest>) -> Result<Response<RunSpec>, Status> {
        Err(Status::unimplemented("get_run"))
    }

    type FetchBlobsStream = tokio_stream::Empty<Result<Blob, Status>>;

    async fn fetch_blobs(
        &self,
        _: Request<FetchBlobsRequest>,
    ) -> Result<Response<Self::FetchBlobsStream>, Status> {
        Err(Status::unimplemented("fetch_blobs"))
    }

    async fn missing_blobs(
        &self,
        _: Request<MissingBlobsRequest>,
    ) -> Result<Response<MissingBlobsReply>, Status> {
        Err(Status::unimplemented("missing_blobs"))
    }

    async fn upload_blobs(
        &self,
        _: Request<Streaming<Blob>>,
    ) -> Result<Response<UploadBlobsReply>, Status> {
        Err(Status::unimplemented("upload_blobs"))
    }

    async fn submit(&self, _: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        Err(Status::unimplemented("submit"))
    }

    type WatchStream = tokio_stream::Empty<Result<RunEvent, Status>>;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }

    async fn cancel(&self, _: Request<CancelRequest>) -> Result<Response<CancelReply>, Status> {
        Err(Status::unimplemented("cancel"))
    }
}

/// Serves the test coordinator on a fresh 127.0.0.1 port (with TLS when
/// given) and returns its address. The server lives as long as the test's
/// runtime.
pub async fn serve(tokens: &[&str], tls: Option<ServerTlsConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    let auth = AuthInterceptor::new(TokenSet::new(&tokens));
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).expect("tls config");
    }
    let router = builder.add_service(CoordinatorServer::with_interceptor(TestCoordinator, auth));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

/// A Register request of the current protocol version.
pub fn register_request(worker_id: &str) -> RegisterRequest {
    RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_id: worker_id.to_owned(),
        name: "test-host".to_owned(),
        slots: 2,
        labels: Default::default(),
    }
}
