//! Bearer-token authentication and protocol-version checks for tonic:
//! [`TokenSet`] (hashes of the accepted tokens), the server's
//! [`AuthInterceptor`] and the client's [`ClientAuth`].
//!
//! Every call carries `authorization: Bearer <token>` and
//! `shoal-protocol: <version>`. The server keeps only SHA-256 hashes of its
//! tokens and compares hashes in constant time; no error message, log line or
//! `Debug` output ever contains a token.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::{PROTOCOL_VERSION, ProtoError};

/// The request header carrying the caller's [`PROTOCOL_VERSION`].
pub const PROTOCOL_HEADER: &str = "shoal-protocol";

/// The request header carrying `Bearer <token>`.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// The message of every authentication failure: it never says which of
/// "missing" or "wrong" applied, and never echoes what was sent.
const UNAUTHENTICATED: &str = "missing or invalid token";

/// The set of tokens a coordinator accepts, kept as SHA-256 hashes only.
///
/// An empty set is *open*: the server then requires no token (see
/// [`TokenSet::is_open`]). An empty configured token is stored like any other
/// but can never match, since an empty presented token is always refused.
#[derive(Clone, Default)]
pub struct TokenSet {
    hashes: Vec<[u8; 32]>,
}

impl TokenSet {
    /// Builds the set from plaintext tokens, keeping only their hashes.
    /// Surrounding whitespace is not part of a token (a header value cannot
    /// carry it).
    pub fn new(tokens: &[String]) -> Self {
        Self {
            hashes: tokens.iter().map(|t| sha256(t.trim().as_bytes())).collect(),
        }
    }

    /// True when no token is configured: every caller is accepted.
    pub fn is_open(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The number of configured tokens.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// True when no token is configured (same as [`TokenSet::is_open`]).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `presented` is one of the configured tokens.
    ///
    /// The comparison runs over hashes, in constant time for each configured
    /// token and without stopping at the first match, so timing reveals
    /// neither the token nor which one matched. An empty `presented` token is
    /// never accepted, and an open set accepts no token here: whether a token
    /// is needed at all is [`TokenSet::is_open`]'s answer.
    pub fn check(&self, presented: &str) -> bool {
        if presented.is_empty() {
            return false;
        }
        let hash = sha256(presented.as_bytes());
        let mut found = subtle::Choice::from(0u8);
        for known in &self.hashes {
            found |= known.ct_eq(&hash);
        }
        found.into()
    }

    /// Whether a request presenting `presented` (the token after `Bearer `,
    /// if any) may proceed: always for an open set, otherwise only with a
    /// configured token.
    pub fn admits(&self, presented: Option<&str>) -> bool {
        self.is_open() || presented.is_some_and(|t| self.check(t))
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("tokens", &format_args!("***"))
            .field("count", &self.hashes.len())
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token of an `authorization` header value: what follows `Bearer `
/// (the scheme is case-insensitive), trimmed. `None` for another scheme or an
/// unreadable value.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// Checks a peer's protocol version against [`PROTOCOL_VERSION`]; the error
/// is `FAILED_PRECONDITION` naming both versions. Use it for the
/// `protocol_version` fields of `Register` and `Submit` too (where 0 means
/// the field was not filled in, and is refused as well).
pub fn check_protocol_version(sent: u32) -> Result<(), Status> {
    if sent == PROTOCOL_VERSION {
        return Ok(());
    }
    let sent = if sent == 0 {
        "no protocol version".to_owned()
    } else {
        format!("v{sent}")
    };
    Err(Status::failed_precondition(format!(
        "this coordinator speaks shoal protocol v{PROTOCOL_VERSION}; the client sent {sent} \
         (use the same shoal version on the coordinator, workers and clients)"
    )))
}

/// The server side: refuses calls without a configured token
/// (`UNAUTHENTICATED`) and calls announcing another protocol version in the
/// `shoal-protocol` header (`FAILED_PRECONDITION`). A call without that
/// header is let through, so plain gRPC tools (grpcurl, health checks) work.
///
/// Authentication is checked first: an unauthenticated caller learns nothing
/// about the server.
///
/// ```no_run
/// # use shoal_proto::auth::{AuthInterceptor, TokenSet};
/// # fn f<S: shoal_proto::v1::coordinator_server::Coordinator>(svc: S) {
/// let auth = AuthInterceptor::new(TokenSet::new(&["s3cret".to_owned()]));
/// let service = shoal_proto::v1::coordinator_server::CoordinatorServer::with_interceptor(svc, auth);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    tokens: Arc<TokenSet>,
}

impl AuthInterceptor {
    /// An interceptor accepting the tokens of `tokens` (any caller when the
    /// set is open).
    pub fn new(tokens: TokenSet) -> Self {
        Self {
            tokens: Arc::new(tokens),
        }
    }

    /// The accepted tokens.
    pub fn tokens(&self) -> &TokenSet {
        &self.tokens
    }

    /// The check [`Interceptor::call`] performs, on a request's metadata.
    pub fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        if !self.tokens.is_open() {
            let presented = metadata
                .get(AUTHORIZATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token);
            if !self.tokens.admits(presented) {
                return Err(Status::unauthenticated(UNAUTHENTICATED));
            }
        }
        if let Some(value) = metadata.get(PROTOCOL_HEADER) {
            let sent = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "this coordinator speaks shoal protocol v{PROTOCOL_VERSION}; \
                         the client's `{PROTOCOL_HEADER}` header is not a version number"
                    ))
                })?;
            check_protocol_version(sent)?;
        }
        Ok(())
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

/// The client side: adds `authorization: Bearer <token>` (when a token is
/// configured) and `shoal-protocol: <PROTOCOL_VERSION>` to every call.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use shoal_proto::auth::ClientAuth;
/// use shoal_proto::v1::coordinator_client::CoordinatorClient;
/// let channel = shoal_proto::endpoint("127.0.0.1:7420")?.connect().await?;
/// let auth = ClientAuth::new(Some("s3cret".to_owned()))?;
/// let mut client = CoordinatorClient::with_interceptor(channel, auth);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientAuth {
    /// The ready `Bearer <token>` header value, marked sensitive so HTTP/2
    /// header compression never indexes it.
    authorization: Option<MetadataValue<Ascii>>,
    protocol: MetadataValue<Ascii>,
}

impl ClientAuth {
    /// Authenticates with `token`, or sends no `authorization` header when
    /// `None`. Fails when the token cannot travel in a header (anything but
    /// visible ASCII); the error does not contain the token.
    pub fn new(token: Option<String>) -> Result<Self, ProtoError> {
        let authorization = match token {
            None => None,
            Some(token) => {
                let token = token.trim();
                if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ProtoError::InvalidToken);
                }
                let mut value = MetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| ProtoError::InvalidToken)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self {
            authorization,
            protocol: MetadataValue::from(PROTOCOL_VERSION),
        })
    }

    /// Whether a token is sent.
    pub fn has_token(&self) -> bool {
        self.authorization.is_some()
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.authorization.is_some() {
            "Some(***)"
        } else {
            "None"
        };
        f.debug_struct("ClientAuth")
            .field("token", &format_args!("{token}"))
            .field("protocol", &PROTOCOL_VERSION)
            .finish()
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        if let Some(value) = &self.authorization {
            metadata.insert(AUTHORIZATION_HEADER, value.clone());
        }
        metadata.insert(PROTOCOL_HEADER, self.protocol.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(tokens: &[&str]) -> TokenSet {
        TokenSet::new(&tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn token_set_accepts_only_configured_tokens() {
        let tokens = set(&["alpha", "beta"]);
        assert!(!tokens.is_open());
        assert_eq!(tokens.len(), 2);
        assert!(tokens.check("alpha"));
        assert!(tokens.check("beta"));
        assert!(!tokens.check("gamma"));
        assert!(!tokens.check("alph"));
        assert!(!tokens.check("alphaa"));
        assert!(!tokens.check("ALPHA"));
        assert!(!tokens.check(""));
    }

    #[test]
    fn empty_token_set_is_open_but_checks_nothing() {
        let tokens = TokenSet::new(&[]);
        assert!(tokens.is_open());
        assert!(!tokens.check("anything"));
        assert!(tokens.admits(None));
        assert!(tokens.admits(Some("anything")));
    }

    #[test]
    fn empty_configured_token_never_matches() {
        let tokens = set(&[""]);
        assert!(!tokens.is_open());
        assert!(!tokens.check(""));
        assert!(!tokens.admits(None));
        assert!(!tokens.admits(Some("")));
    }

    #[test]
    fn token_set_stores_no_plaintext() {
        let tokens = set(&["very-secret-token"]);
        let debug = format!("{tokens:?}");
        assert!(!debug.contains("very-secret-token"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
        // The stored form is the hash, not the bytes of the token.
        assert_eq!(tokens.hashes, vec![sha256(b"very-secret-token")]);
    }

    #[test]
    fn bearer_token_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer   "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn client_auth_debug_hides_the_token() {
        let auth = ClientAuth::new(Some("very-secret-token".to_owned())).unwrap();
        let debug = format!("{auth:?}");
        assert!(!debug.contains("very-secret-token"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }

    #[test]
    fn client_auth_refuses_header_unsafe_tokens_without_echoing_them() {
        for bad in ["with space", "new\nline", "ünïcode", ""] {
            let err = ClientAuth::new(Some(bad.to_owned())).unwrap_err();
            assert!(matches!(err, ProtoError::InvalidToken), "{bad:?}");
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
    }

    #[test]
    fn client_auth_headers_pass_the_server_check() {
        let server = AuthInterceptor::new(set(&["tok"]));
        let mut client = ClientAuth::new(Some("tok".to_owned())).unwrap();
        let request = client.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get(PROTOCOL_HEADER).unwrap(),
            &PROTOCOL_VERSION.to_string()
        );
        assert!(server.check(request.metadata()).is_ok());

        let mut anonymous = ClientAuth::new(None).unwrap();
        let request = anonymous.call(Request::new(())).unwrap();
        assert!(request.metadata().get(AUTHORIZATION_HEADER).is_none());
        let status = server.check(request.metadata()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn protocol_version_check_names_both_versions() {
        assert!(check_protocol_version(PROTOCOL_VERSION).is_ok());
        let status = check_protocol_version(2).unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("protocol v1"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("sent v2"), "{}", status.message());
        let status = check_protocol_version(0).unwrap_err();
        assert!(status.message().contains("no protocol version"));
    }
}
