//! An SDK `HttpClient` that runs every attempt through a Tower stack.
//!
//! The AWS SDK for Rust calls [`HttpClient::http_connector`] on EVERY attempt and then
//! [`HttpConnector::call`] with the signed request. [`LayeredHttpClient`] applies its layer at
//! that point, around the connector of an inner client (by default the SDK's own hyper 1 client).
//! Because `Layer::layer` runs per attempt, every layer used here must keep its state behind an
//! `Arc` shared by all the services it builds; the crate's layers do.
//!
//! Three facts of the AWS SDK for Rust shape the adapter:
//! - **Stalled-stream protection.** The SDK wraps upload bodies in a throughput monitor that fails
//!   the call if the transport does not poll the body for ~6 s. A request waiting in a limiter
//!   would trip it, so the adapter reads the whole (in-memory) body first and puts plain bytes
//!   back. That also makes the request cloneable for retries inside the stack.
//! - **Signed requests.** The stack sees requests after SigV4 signing: it never changes a header
//!   or the body, and a signature is only valid for 5 minutes after its `x-amz-date`. The adapter
//!   tells the stack by when an attempt must leave ([`SignatureDeadline`]); an attempt still
//!   waiting for admission then fails with [`LeftQueue`] (its place in line kept), which reaches
//!   the SDK as [`ErrorKind::ThrottlingError`], so the SDK re-signs and sends it again. The
//!   adapter also bounds the whole stack call, as a backstop.
//! - **Errors.** The SDK only understands [`ConnectorError`]. Admission refusals of the crate's
//!   limiters become `ConnectorError::other(e, Some(ThrottlingError))` (a wait too long, a full
//!   queue) or `Some(ClientError)` (a request larger than the whole quota, which can never pass).

use std::fmt;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use http_body_util::BodyExt;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::BoxError;
use crate::admit::LeftQueue;
use crate::budget::AdmissionError;

/// How long after its `x-amz-date` a SigV4 signature stays valid.
pub const SIGNATURE_VALIDITY: Duration = Duration::from_secs(300);

/// The default safety margin kept between the end of the stack call and the signature's expiry:
/// the request still has to travel and be checked by AWS.
pub const DEFAULT_SIGNATURE_MARGIN: Duration = Duration::from_secs(30);

/// The tower service at the bottom of the stack: the inner client's connector for this attempt.
#[derive(Clone, Debug)]
pub struct ConnectorService {
    connector: SharedHttpConnector,
}

impl ConnectorService {
    /// Wraps one connector.
    pub fn new(connector: SharedHttpConnector) -> Self {
        Self { connector }
    }
}

impl Service<HttpRequest> for ConnectorService {
    type Response = HttpResponse;
    type Error = ConnectorError;
    type Future = HttpConnectorFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        self.connector.call(request)
    }
}

/// An [`HttpClient`] that sends every attempt through the Tower layer `L`, around the connector of
/// an inner client.
///
/// `L` must produce a service of `HttpRequest -> HttpResponse` whose error converts to
/// [`BoxError`]. Clones of `L` and the services it builds must share their limiter state: the
/// layer is applied again for every attempt.
#[derive(Clone)]
pub struct LayeredHttpClient<L> {
    inner: SharedHttpClient,
    layer: L,
    signature_margin: Duration,
}

impl<L> fmt::Debug for LayeredHttpClient<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayeredHttpClient")
            .field("inner", &self.inner)
            .field("signature_margin", &self.signature_margin)
            .finish_non_exhaustive()
    }
}

impl<L> LayeredHttpClient<L> {
    /// Lays `layer` over the connectors of `inner`.
    pub fn new(inner: SharedHttpClient, layer: L) -> Self {
        Self {
            inner,
            layer,
            signature_margin: DEFAULT_SIGNATURE_MARGIN,
        }
    }

    /// Sets how long before the signature's expiry the stack call must have ended (default 30 s).
    pub fn signature_margin(mut self, margin: Duration) -> Self {
        self.signature_margin = margin;
        self
    }

    /// The layer.
    pub fn layer(&self) -> &L {
        &self.layer
    }
}

impl<L, S> HttpClient for LayeredHttpClient<L>
where
    L: Layer<ConnectorService, Service = S> + Send + Sync + 'static,
    S: Service<HttpRequest, Response = HttpResponse> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let connector = self.inner.http_connector(settings, components);
        let service = self
            .layer
            .layer(ConnectorService::new(connector))
            .map_err(Into::into);
        SharedHttpConnector::new(TowerConnector {
            service: BoxCloneSyncService::new(service),
            signature_margin: self.signature_margin,
        })
    }
}

/// One attempt's connector: the layered service, driven with `oneshot` since `call` takes `&self`.
struct TowerConnector {
    service: BoxCloneSyncService<HttpRequest, HttpResponse, BoxError>,
    signature_margin: Duration,
}

impl fmt::Debug for TowerConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerConnector").finish_non_exhaustive()
    }
}

impl HttpConnector for TowerConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let service = self.service.clone();
        let margin = self.signature_margin;
        HttpConnectorFuture::new(send(service, request, margin))
    }
}

/// The instant (tokio's clock) by which an attempt must leave the stack for its signature to
/// be still valid when it reaches AWS: the admission layer's generic
/// [`LeaveBy`](crate::admit::LeaveBy), set as a request extension by [`LayeredHttpClient`] on
/// SigV4-signed requests and read by the protocol's plan (an attempt still waiting then leaves
/// the queue and keeps its place for the re-signed attempt). The `sdk` name of that value.
pub use crate::admit::LeaveBy as SignatureDeadline;

async fn send(
    service: BoxCloneSyncService<HttpRequest, HttpResponse, BoxError>,
    mut request: HttpRequest,
    margin: Duration,
) -> Result<HttpResponse, ConnectorError> {
    buffer_body(&mut request).await?;
    let Some(deadline) = signature_deadline(&request, margin) else {
        return service.oneshot(request).await.map_err(into_connector_error);
    };
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    request.add_extension(SignatureDeadline(tokio::time::Instant::now() + left));
    // The admission layer leaves its queue at the deadline; this bound is the backstop for the
    // rest of the stack (a retry's backoff, a slow send), half the margin later so that it
    // never races the admission layer's own exit.
    let left = left + margin / 2;
    let call = service.oneshot(request);
    match tokio::time::timeout(left, call).await {
        Ok(result) => result.map_err(into_connector_error),
        Err(_) => Err(ConnectorError::other(
            Box::new(SignatureExpiring { waited: left }),
            Some(ErrorKind::ThrottlingError),
        )),
    }
}

/// The stack could not finish before the request's signature would expire; the SDK should back
/// off and send a freshly signed attempt.
#[derive(Debug)]
pub struct SignatureExpiring {
    waited: Duration,
}

impl fmt::Display for SignatureExpiring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request waited {:?} in the throttle stack and its SigV4 signature is about to expire; \
             the SDK should retry with a fresh signature (or raise the wait bounds)",
            self.waited
        )
    }
}

impl std::error::Error for SignatureExpiring {}

/// Reads the request body to its end and puts plain bytes back.
///
/// The body must be READ, not just looked at: stalled-stream protection wraps it in a reader that
/// reports progress to a throughput check running beside the connector future, and
/// `map_preserve_contents` keeps `SdkBody::bytes()` answering `Some`, so a body that looks
/// in-memory may still be a monitor that has seen nothing. Collecting it drives the monitor to
/// "upload complete" at once; an in-memory body comes back as the same `Bytes`, without a copy.
async fn buffer_body(request: &mut HttpRequest) -> Result<(), ConnectorError> {
    let body = request.take_body();
    let bytes = body
        .collect()
        .await
        .map_err(ConnectorError::user)?
        .to_bytes();
    *request.body_mut() = SdkBody::from(bytes);
    Ok(())
}

/// The time left before the request's SigV4 signature expires, minus `margin`; `None` when the
/// request is not SigV4-signed: a bearer-authenticated request (`Authorization: Bearer`, a
/// Bedrock API key) has no 5-minute window, so it may wait in line for as long as its caller
/// lets it, and is never re-signed or cut.
pub fn signature_deadline(request: &HttpRequest, margin: Duration) -> Option<SystemTime> {
    let bearer = request.headers().get("authorization").is_some_and(|v| {
        v.trim_start()
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "))
    });
    if bearer {
        return None;
    }
    let date = request.headers().get("x-amz-date")?;
    let signed_at = parse_amz_date(date)?;
    Some(signed_at + SIGNATURE_VALIDITY.saturating_sub(margin))
}

/// Parses the SigV4 basic ISO 8601 form `YYYYMMDDTHHMMSSZ`.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num =
        |range: std::ops::Range<usize>| -> Option<i64> { value.get(range)?.parse::<i64>().ok() };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs)
        .ok()
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

/// Maps an error of the stack to what the SDK understands.
pub fn into_connector_error(error: BoxError) -> ConnectorError {
    let error = match error.downcast::<ConnectorError>() {
        Ok(connector) => return *connector,
        Err(other) => other,
    };
    let error = match error.downcast::<LeftQueue>() {
        Ok(left) => return ConnectorError::other(left, Some(ErrorKind::ThrottlingError)),
        Err(other) => other,
    };
    match error.downcast::<AdmissionError>() {
        Ok(admission) => {
            let kind = match *admission {
                AdmissionError::CostAboveLimit { .. } => ErrorKind::ClientError,
                _ => ErrorKind::ThrottlingError,
            };
            ConnectorError::other(admission, Some(kind))
        }
        Err(other) => ConnectorError::other(other, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_amz_date() {
        let t = parse_amz_date("20261126T035100Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_665_060
        );
        assert!(parse_amz_date("2026-11-26T03:51:00Z").is_none());
        assert!(parse_amz_date("20261326T035100Z").is_none());
        assert!(parse_amz_date("").is_none());
    }
}
