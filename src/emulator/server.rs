//! The HTTP side: accept loop, routing, body limits, the stats endpoint, graceful shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bedrock::models::ModelTable;

use super::config::EmulatorConfig;
use super::error::ApiError;
use super::ledger::Ledgers;
use super::model_id;
use super::ops::{self, Operation};
use super::validate::{MAX_BODY_BYTES, too_large};

/// Every response body.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A complete body.
pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

/// How long shutdown waits for open responses before cutting connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    pub(crate) table: ModelTable,
    pub(crate) ledgers: Ledgers,
    /// Permits for requests being validated or answered (taken once the body is complete).
    in_flight: Arc<Semaphore>,
    next_index: AtomicU64,
    other_requests: AtomicU64,
}

impl Shared {
    /// The shared state of a server with `config` and its model `table`
    /// ([`EmulatorConfig::table`]).
    pub(crate) fn new(config: EmulatorConfig, table: ModelTable) -> Self {
        let mut quotas = config.model_quotas.clone();
        for (model, q) in &config.mantle_quotas {
            quotas.insert(
                super::mantle::input_key(model),
                crate::budget::Quota::tokens(q.input),
            );
            quotas.insert(
                super::mantle::output_key(model),
                crate::budget::Quota::tokens(q.output),
            );
        }
        let ledgers = Ledgers::new(
            config.enforcement,
            config.window,
            config.default_quota,
            quotas,
        );
        let ledgers = match config.account_tokens_per_day {
            Some(limit) => ledgers.with_account_day(limit),
            None => ledgers,
        };
        Self {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            table,
            ledgers,
            next_index: AtomicU64::new(0),
            other_requests: AtomicU64::new(0),
        }
    }

    /// The index of a new inference request (fault schedule, per-request generator).
    pub(crate) fn next_index(&self) -> u64 {
        self.next_index.fetch_add(1, Ordering::Relaxed)
    }

    /// A request id for requests outside the inference sequence.
    fn other_request_id(&self) -> String {
        let n = self.other_requests.fetch_add(1, Ordering::Relaxed);
        ops::request_id(&mut ops::request_rng(!self.config.seed, n))
    }

    /// Refuses ids that break the operation's id pattern; with strict model checking, ids that
    /// nothing configures or recognizes; and unconfigured ids once [`MAX_MODELS`] ids have
    /// counters. Runs before any per-model state exists, so random ids cannot grow the stats.
    ///
    /// [`MAX_MODELS`]: super::ledger::MAX_MODELS
    pub(crate) fn check_model(&self, model_id: &str, op: Operation) -> Result<(), ApiError> {
        match op {
            Operation::Invoke | Operation::InvokeStream => {
                model_id::check_pattern(model_id, model_id::INVOKE_PATTERN)?;
            }
            Operation::Converse | Operation::ConverseStream => {
                model_id::check_pattern(model_id, model_id::CONVERSE_PATTERN)?;
            }
            // The emulator does not know CountTokens' own id pattern: it checks none; the
            // OpenAI-compatible body's `model` is checked by its route.
            Operation::CountTokens | Operation::OpenAi => {}
        }
        let configured =
            self.config.models.contains_key(model_id) || self.ledgers.has_quota(model_id);
        let known = configured
            || (!self.config.strict_models || self.table.knows(model_id))
                && self.ledgers.has_room_for(model_id);
        if known {
            Ok(())
        } else {
            Err(model_id::unknown_model(model_id))
        }
    }
}

/// Accepts connections until `shutdown` fires, then shuts down gracefully.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    loop {
        // A free connection slot first: at the limit, new connections wait in the backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let header_read_timeout = shared.config.header_read_timeout;
        let service = service_fn(move |req| handle(Arc::clone(&shared), req));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            // The first byte within the header-read timeout too: hyper's timeout starts only
            // once it reads an HTTP/1 head, after the protocol detection, so a client that
            // connects and sends nothing would otherwise hold its connection slot for ever.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_read_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let _ = watcher.watch(conn.into_owned()).await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let path = req.uri().path().to_owned();
    if path == "/_emulator/stats" && req.method() == Method::GET {
        return Ok(stats_response(&shared));
    }
    if path == "/_emulator/reset" && req.method() == Method::POST {
        shared.ledgers.reset();
        return Ok(stats_response(&shared));
    }
    if super::service_quotas::is_service_quotas(&req) {
        return Ok(super::service_quotas::handle(&shared, req).await);
    }
    if let Some(route) = super::openai::route(&path).filter(|_| req.method() == Method::POST) {
        let _permit = match Arc::clone(&shared.in_flight).acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("the in-flight semaphore is never closed"),
        };
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(e) => return Ok(e.into_response(&shared.other_request_id())),
        };
        return Ok(super::openai::serve(shared, route, body, start).await);
    }
    let route = path
        .strip_prefix("/model/")
        .and_then(|rest| rest.rsplit_once('/'))
        .and_then(|(id, op)| Some((id, Operation::from_segment(op)?)))
        .filter(|_| req.method() == Method::POST);
    let Some((raw_id, op)) = route else {
        return Ok(ApiError::unknown_operation().into_response(&shared.other_request_id()));
    };
    let model_id = match percent_decode_str(raw_id).decode_utf8() {
        Ok(id) => id.into_owned(),
        Err(_) => {
            return Ok(ApiError::validation(
                "1 validation error detected: Value at 'modelId' failed to satisfy constraint: \
                 Member must be a valid model identifier",
            )
            .into_response(&shared.other_request_id()));
        }
    };
    if let Err(e) = shared.check_model(&model_id, op) {
        return Ok(e.into_response(&shared.other_request_id()));
    }
    // The body first, bounded by time: a client that stalls mid-body is answered 408 and
    // holds no in-flight slot meanwhile, so stalled clients cannot keep complete requests out.
    let body = match tokio::time::timeout(shared.config.body_read_timeout, read_body(req)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Ok(e.into_response(&shared.other_request_id())),
        Err(_) => return Ok(ApiError::body_timeout().into_response(&shared.other_request_id())),
    };
    let _permit = match Arc::clone(&shared.in_flight).acquire_owned().await {
        Ok(permit) => permit,
        Err(_) => unreachable!("the in-flight semaphore is never closed"),
    };
    Ok(match op {
        Operation::CountTokens => {
            let id = shared.other_request_id();
            ops::count_tokens(&shared, &model_id, &body, &id)
        }
        _ => ops::inference(shared, op, model_id, body, start).await,
    })
}

/// Reads the body, refusing more than Bedrock's limit without buffering it.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let limit = usize::try_from(MAX_BODY_BYTES).unwrap_or(usize::MAX);
    // One buffer of the declared size, each frame copied in and dropped: the body is held
    // once, not as a list of frames plus a contiguous copy.
    let mut buf =
        BytesMut::with_capacity(declared.map_or(0, |n| usize::try_from(n).unwrap_or(0).min(limit)));
    let mut body = Limited::new(req.into_body(), limit);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
            Err(_) => return Err(ApiError::validation("The request body could not be read.")),
        }
    }
    Ok(buf.freeze())
}

fn stats_response(shared: &Shared) -> Response<Body> {
    let stats = shared.ledgers.snapshot();
    let body = serde_json::to_vec(&stats).unwrap_or_default();
    let mut res = Response::new(full(Bytes::from(body)));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
