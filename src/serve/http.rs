//! `convcg serve`: the [`Retriever`] behind HTTP (axum on tokio).
//!
//! * `POST /v1/retrieve`: a JSON request (see [`RetrieveBody`]), answered with
//!   `{model, items: [{pin_id, advertiser_id, score}], cold_start}`.
//! * `GET /healthz`, `GET /metrics` (Prometheus text format).
//! * `POST /admin/reload`, with `Authorization: Bearer $CONVCG_ADMIN_TOKEN`: opens the run
//!   directory given as `{"run_dir": ...}` (or the current one again) and swaps it in. SIGHUP
//!   reloads the current run directory.
//!
//! A reload opens the new run beside the old one and swaps a pointer: a request holds the
//! model it started with until it ends, so none fails or mixes two models. Every request body
//! is capped ([`MAX_BODY_BYTES`]), every list in it too, and `k` by `--max-k`; a bad request
//! gets a 4xx JSON error `{error: {kind, field, message}}`. The model runs on as many worker
//! threads as the run has, each answering the requests queued meanwhile in one pass
//! (`batching`); a full queue is a 503.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, oneshot};

use super::batching::{Job, Overloaded, QUEUE_LEN, Workers};
use super::engine::{Item, OpenOptions, Request, Retriever};
use super::metrics::ServeMetrics;
use convcg_data::{QueryRequest, Surface};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest `recent_pin_ids` or `exclude_pin_ids` list accepted.
pub const MAX_LIST_LEN: usize = 1000;
/// The environment variable holding the admin token; without it the admin endpoint is off.
pub const ADMIN_TOKEN_ENV: &str = "CONVCG_ADMIN_TOKEN";

/// How `convcg serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The address to listen on (port 0: any free port; the one taken is printed).
    pub addr: SocketAddr,
    /// The largest `k` a request may ask for.
    pub max_k: usize,
    /// Where the run's features come from.
    pub open: OpenOptions,
}

/// The body of `POST /v1/retrieve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveBody {
    /// The user (a user the run never saw is served cold).
    pub user_id: i64,
    /// `homefeed`, `related` or `search`.
    pub surface: Surface,
    /// The pin being viewed (related pins).
    pub context_pin_id: Option<i64>,
    /// The search query.
    pub query_id: Option<i64>,
    /// The user's recent engagements, oldest first, instead of those the run stored.
    pub recent_pin_ids: Option<Vec<i64>>,
    /// Pins to return (default 100).
    pub k: Option<usize>,
    /// Pins never to return.
    pub exclude_pin_ids: Option<Vec<i64>>,
}

/// The answer to `POST /v1/retrieve`.
#[derive(Serialize)]
struct RetrieveResponse<'a> {
    model: &'a str,
    items: &'a [Item],
    cold_start: ColdStartBody,
}

/// What of the request was served from out-of-vocabulary rows.
#[derive(Serialize)]
struct ColdStartBody {
    user: bool,
    context_pin: bool,
    unknown_recent_pins: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    run_dir: Option<PathBuf>,
}

/// The default `k`.
const DEFAULT_K: usize = 100;

struct Shared {
    current: RwLock<Arc<Retriever>>,
    options: ServeOptions,
    metrics: ServeMetrics,
    workers: Workers,
    reloading: Mutex<()>,
    token: Option<String>,
}

impl Shared {
    fn retriever(&self) -> Arc<Retriever> {
        match self.current.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Opens `run_dir` (or the current run's) and swaps it in; one reload at a time.
    async fn reload(self: &Arc<Self>, run_dir: Option<PathBuf>) -> Result<Arc<Retriever>> {
        let _one = self.reloading.lock().await;
        let dir = run_dir.unwrap_or_else(|| self.retriever().run_dir().to_owned());
        let opts = self.options.open.clone();
        let opened = tokio::task::spawn_blocking(move || Retriever::open(&dir, &opts))
            .await
            .context("the reload's worker stopped")?;
        let fresh = match opened {
            Ok(r) => Arc::new(r),
            Err(e) => {
                self.metrics.reload("failed");
                return Err(e);
            }
        };
        match self.current.write() {
            Ok(mut cur) => *cur = Arc::clone(&fresh),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&fresh),
        }
        self.metrics.reload("ok");
        self.metrics.set_model(&fresh);
        eprintln!(
            "serving {} ({} pins) from {}",
            fresh.version(),
            fresh.pin_embeddings().nrows(),
            fresh.run_dir().display()
        );
        Ok(fresh)
    }
}

/// A 4xx or 5xx answer: `{error: {kind, field, message}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    field: Option<String>,
    message: String,
}

impl ApiError {
    fn bad(kind: &'static str, field: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {"kind": self.kind, "field": self.field, "message": self.message}
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// The body of a request, or the error its rejection deserves.
fn body_bytes(body: std::result::Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        ApiError {
            status,
            kind: if status == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "unreadable_body"
            },
            field: None,
            message: if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the request body is over {MAX_BODY_BYTES} bytes")
            } else {
                e.body_text()
            },
        }
    })
}

/// `T` from a JSON body; an error names the field (`recent_pin_ids[2]`) where there is one.
fn parse_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad("malformed_json", None, format!("not JSON: {inner}"));
        }
        let path = e.path().to_string();
        let message = inner.to_string();
        // A missing field has the object as its path: name the field from the message.
        let field = if path == "." {
            message.split('`').nth(1).map(str::to_owned)
        } else {
            Some(path)
        };
        ApiError {
            field,
            ..ApiError::bad("invalid_field", None, message)
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad("malformed_json", None, format!("not JSON: {e}")))?;
    Ok(value)
}

fn check_len(field: &str, list: &Option<Vec<i64>>) -> Result<(), ApiError> {
    match list {
        Some(l) if l.len() > MAX_LIST_LEN => Err(ApiError::bad(
            "invalid_field",
            Some(field),
            format!("at most {MAX_LIST_LEN} ids, got {}", l.len()),
        )),
        _ => Ok(()),
    }
}

impl RetrieveBody {
    fn into_request(self, max_k: usize) -> Result<Request, ApiError> {
        let k = self.k.unwrap_or(DEFAULT_K);
        if k == 0 || k > max_k {
            return Err(ApiError::bad(
                "invalid_field",
                Some("k"),
                format!("k must be in 1..={max_k}, got {k}"),
            ));
        }
        check_len("recent_pin_ids", &self.recent_pin_ids)?;
        check_len("exclude_pin_ids", &self.exclude_pin_ids)?;
        Ok(Request {
            query: QueryRequest {
                user_id: self.user_id,
                surface: self.surface,
                context_pin_id: self.context_pin_id,
                query_id: self.query_id,
                recent_pin_ids: self.recent_pin_ids,
            },
            k,
            exclude_pin_ids: self.exclude_pin_ids.unwrap_or_default(),
        })
    }
}

async fn retrieve(
    State(shared): State<Arc<Shared>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let t0 = Instant::now();
    let answer = answer_retrieve(&shared, body).await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            shared.metrics.error(e.kind);
            e.into_response()
        }
    };
    shared
        .metrics
        .request("retrieve", response.status().as_u16(), t0.elapsed());
    response
}

async fn answer_retrieve(
    shared: &Arc<Shared>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body)?;
    let request = parse_json::<RetrieveBody>(&bytes)?.into_request(shared.options.max_k)?;
    let retriever = shared.retriever();
    let internal = |message: String| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "internal",
        field: None,
        message,
    };
    let (reply, answer) = oneshot::channel();
    let job = Job {
        retriever: Arc::clone(&retriever),
        request,
        reply,
    };
    shared.workers.submit(job).map_err(|Overloaded| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "overloaded",
        field: None,
        message: format!("{QUEUE_LEN} requests are already waiting: retry later"),
    })?;
    let answer = answer
        .await
        .map_err(|_| internal("the worker stopped".to_owned()))?
        .map_err(|e| internal(format!("{e:#}")))?;
    Ok(axum::Json(RetrieveResponse {
        model: retriever.version(),
        items: &answer.items,
        cold_start: ColdStartBody {
            user: answer.cold.user,
            context_pin: answer.cold.context_pin,
            unknown_recent_pins: answer.cold.unknown_recent_pins,
        },
    })
    .into_response())
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let r = shared.retriever();
    let body = serde_json::json!({"status": "ok", "model": r.version()});
    shared
        .metrics
        .request("healthz", 200, std::time::Duration::ZERO);
    axum::Json(body).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match shared.metrics.encode() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            field: None,
            message: e.to_string(),
        }
        .into_response(),
    }
}

async fn reload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    match answer_reload(&shared, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            shared.metrics.error(e.kind);
            e.into_response()
        }
    }
}

async fn answer_reload(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Some(token) = &shared.token else {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            kind: "admin_disabled",
            field: None,
            message: format!(
                "the admin endpoint is off: start the server with {ADMIN_TOKEN_ENV} set"
            ),
        });
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(token.as_str()) {
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthorized",
            field: Some("authorization".to_owned()),
            message: "a reload needs the header `Authorization: Bearer <token>`".to_owned(),
        });
    }
    let bytes = body_bytes(body)?;
    let run_dir = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_json::<ReloadBody>(&bytes)?.run_dir
    };
    let fresh = shared.reload(run_dir).await.map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        kind: "reload_failed",
        field: Some("run_dir".to_owned()),
        message: format!("{e:#}"),
    })?;
    let body =
        serde_json::json!({"model": fresh.version(), "pins": fresh.pin_embeddings().nrows()});
    Ok(axum::Json(body).into_response())
}

async fn not_found() -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found",
        field: None,
        message:
            "no such endpoint: POST /v1/retrieve, GET /healthz, GET /metrics, POST /admin/reload"
                .to_owned(),
    }
    .into_response()
}

async fn wrong_method() -> Response {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        kind: "method_not_allowed",
        field: None,
        message: "this endpoint takes another method: POST /v1/retrieve, GET /healthz, GET /metrics, POST /admin/reload".to_owned(),
    }
    .into_response()
}

/// Opens the run in `run_dir` and serves it until SIGINT or SIGTERM (in-flight requests end
/// first). Prints `listening on http://ADDR` on stdout once the port is bound.
///
/// # Errors
/// If the run cannot be opened, the address cannot be bound, or the server fails.
pub fn serve(run_dir: &std::path::Path, options: ServeOptions) -> Result<()> {
    let retriever = Arc::new(Retriever::open(run_dir, &options.open)?);
    let threads = retriever.config().resolved_threads().max(1);
    let metrics = ServeMetrics::new();
    metrics.set_model(&retriever);
    eprintln!(
        "serving {} ({} pins of width {}, {} index) from {}",
        retriever.version(),
        retriever.pin_embeddings().nrows(),
        retriever.pin_embeddings().ncols(),
        retriever.index().name(),
        run_dir.display()
    );
    let shared = Arc::new(Shared {
        current: RwLock::new(retriever),
        metrics,
        workers: Workers::start(threads).context("cannot start the worker threads")?,
        reloading: Mutex::new(()),
        token: std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty()),
        options,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_server(shared))
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/retrieve", post(retrieve).fallback(wrong_method))
        .route("/healthz", get(healthz).fallback(wrong_method))
        .route("/metrics", get(metrics).fallback(wrong_method))
        .route("/admin/reload", post(reload).fallback(wrong_method))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

async fn run_server(shared: Arc<Shared>) -> Result<()> {
    let addr = shared.options.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    println!("listening on http://{bound}");
    use std::io::Write;
    std::io::stdout().flush()?;
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(Arc::clone(&shared)));
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(stop_signal())
        .await
        .context("the server failed")?;
    eprintln!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("stopping: finishing the requests in flight");
}

#[cfg(unix)]
async fn reload_on_sighup(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        eprintln!("warning: cannot listen for SIGHUP; reload through POST /admin/reload");
        return;
    };
    while hup.recv().await.is_some() {
        if let Err(e) = shared.reload(None).await {
            eprintln!("reload on SIGHUP failed, still serving the previous model: {e:#}");
        }
    }
}

/// The socket address of `--addr`.
///
/// # Errors
/// If it is not `HOST:PORT` with an IP address.
pub fn parse_addr(text: &str) -> Result<SocketAddr> {
    text.parse()
        .with_context(|| format!("--addr {text:?} is not IP:PORT (for example 127.0.0.1:8080)"))
}
