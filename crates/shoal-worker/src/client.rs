//! The worker's connection to the coordinator: the authenticated gRPC
//! client, per-call timeouts, and how failures are described in logs
//! (never with the token).

use std::error::Error as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shoal_proto::auth::ClientAuth;
use shoal_proto::v1::coordinator_client::CoordinatorClient;
use shoal_proto::{ProtoError, endpoint_with_ca};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The coordinator client: every call carries the token and protocol
/// version ([`ClientAuth`]). Cheap to clone.
pub type Client = CoordinatorClient<InterceptedService<Channel, ClientAuth>>;

/// Largest message accepted from the coordinator (a blob travels in one).
const MAX_DECODE: usize = 1 << 30;

/// A client for the coordinator at `server`, trusting `ca` for `https://`.
/// Connects lazily (and reconnects by itself), so an unreachable
/// coordinator shows up as failing calls, not as an error here.
pub fn connect(
    server: &str,
    token: Option<String>,
    ca: Option<&Path>,
) -> Result<Client, ProtoError> {
    let auth = ClientAuth::new(token)?;
    let channel = endpoint_with_ca(server, ca)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(CoordinatorClient::with_interceptor(channel, auth).max_decoding_message_size(MAX_DECODE))
}

/// A request with a deadline.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Whether the failure means the coordinator could not be reached (or did
/// not answer in time), rather than that it answered no.
pub fn is_unreachable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    ) || (status.code() == Code::Unknown && status.source().is_some())
}

/// Whether the coordinator does not know this worker (it restarted): the
/// worker registers again.
pub fn is_unknown_worker(status: &Status) -> bool {
    status.code() == Code::NotFound
}

/// The status's message followed by its causes (`a: b: c`), without
/// repeats.
pub fn detail(status: &Status) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !status.message().is_empty() {
        parts.push(status.message().to_owned());
    }
    let mut source = status.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    if parts.is_empty() {
        format!("{:?}", status.code())
    } else {
        parts.join(": ")
    }
}

/// What went wrong with a call to the coordinator at `server`, in words:
/// unreachable, token refused, protocol mismatch, or the coordinator's own
/// answer. `has_token` tells a missing token from a wrong one.
pub fn describe(status: &Status, server: &str, has_token: bool) -> String {
    match status.code() {
        Code::Unauthenticated if has_token => format!(
            "the coordinator refused this worker's token ({})",
            status.message()
        ),
        Code::Unauthenticated => {
            "the coordinator requires a token and this worker has none (give it one)".to_owned()
        }
        Code::FailedPrecondition => format!("protocol mismatch: {}", status.message()),
        _ if is_unreachable(status) => {
            format!(
                "cannot reach the coordinator at {server}: {}",
                detail(status)
            )
        }
        code => format!(
            "the coordinator at {server} answered {code:?}: {}",
            detail(status)
        ),
    }
}

/// Logs a kind of call's failures once per outage: the first failure at
/// warn, the rest at debug, and the recovery at info.
#[derive(Debug)]
pub struct OutageLog {
    what: &'static str,
    down: AtomicBool,
}

impl OutageLog {
    /// A log for calls of kind `what` (e.g. "heartbeat").
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            down: AtomicBool::new(false),
        }
    }

    /// Records a failure described by `description`.
    pub fn failed(&self, description: &str) {
        if self.down.swap(true, Ordering::Relaxed) {
            tracing::debug!("{} failed again: {description}", self.what);
        } else {
            tracing::warn!(
                "{} failed: {description}; retrying until it succeeds",
                self.what
            );
        }
    }

    /// Records a success; logs the end of an outage.
    pub fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("{} works again", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_the_cause_without_the_token() {
        let server = "http://coord:7420";
        let refused = Status::unauthenticated("missing or invalid token");
        let text = describe(&refused, server, true);
        assert!(text.contains("refused this worker's token"), "{text}");
        assert!(describe(&refused, server, false).contains("has none"));

        let mismatch = Status::failed_precondition("this coordinator speaks shoal protocol v2");
        let text = describe(&mismatch, server, true);
        assert!(
            text.starts_with("protocol mismatch: this coordinator speaks"),
            "{text}"
        );

        let down = Status::unavailable("tcp connect error");
        let text = describe(&down, server, true);
        assert_eq!(
            text,
            "cannot reach the coordinator at http://coord:7420: tcp connect error"
        );

        let other = Status::internal("database is locked");
        let text = describe(&other, server, true);
        assert!(
            text.contains("answered Internal: database is locked"),
            "{text}"
        );
    }

    #[test]
    fn classification() {
        assert!(is_unreachable(&Status::unavailable("x")));
        assert!(is_unreachable(&Status::deadline_exceeded("x")));
        assert!(!is_unreachable(&Status::unknown("x")));
        assert!(!is_unreachable(&Status::not_found("x")));
        assert!(is_unknown_worker(&Status::not_found("unknown worker")));
        assert!(!is_unknown_worker(&Status::unavailable("x")));
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_is_described_as_such() {
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let server = format!("http://127.0.0.1:{port}");
        let mut client = connect(&server, Some("s3cret-token".into()), None).unwrap();
        let status = client
            .heartbeat(request(
                shoal_proto::v1::HeartbeatRequest::default(),
                Duration::from_secs(5),
            ))
            .await
            .unwrap_err();
        assert!(is_unreachable(&status), "{status:?}");
        let text = describe(&status, &server, true);
        assert!(
            text.starts_with(&format!("cannot reach the coordinator at {server}")),
            "{text}"
        );
        assert!(!text.contains("s3cret-token"), "{text}");
    }
}
