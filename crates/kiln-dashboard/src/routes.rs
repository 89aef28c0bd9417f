//! The HTTP routes.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream};
use kiln_graph::Key;
use kiln_protocol::messages::WorkerId;
use serde_json::{Value as Json_, json};
use tokio::sync::{oneshot, watch};

use crate::{DashboardOptions, Feed, MAX_BODY_BYTES, Request, Snapshot, pages};

/// How long a page waits for the scheduler's answer before saying it is busy.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct App {
    feed: Feed,
    /// The latest snapshot serialized once for every live page.
    payloads: watch::Receiver<Option<Arc<str>>>,
    options: Arc<DashboardOptions>,
}

pub(crate) fn router(feed: Feed, options: DashboardOptions) -> Router {
    let (tx, payloads) = watch::channel(None);
    let mut snapshots = feed.snapshots.clone();
    // One serialization per snapshot, shared by all live pages.
    tokio::spawn(async move {
        while snapshots.changed().await.is_ok() {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                match serde_json::to_string(&*snapshot) {
                    Ok(text) => {
                        tx.send_replace(Some(Arc::from(text)));
                    }
                    Err(e) => tracing::warn!("cannot serialize a dashboard snapshot: {e}"),
                }
            }
        }
    });
    let app = App { feed, payloads, options: Arc::new(options) };
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::temporary("/status") }))
        .route("/status", get(|| async { Html(pages::STATUS_HTML) }))
        .route("/events", get(events))
        .route("/static/{file}", get(asset))
        .route("/graph", get(|| async { Html(pages::GRAPH_HTML) }))
        .route("/json/graph.json", get(graph_json))
        .route("/workers", get(workers_page))
        .route("/info/worker/{id}", get(worker_page))
        .route("/info/task/{*key}", get(task_page))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/json/counts.json", get(counts))
        .route("/json/identity.json", get(identity))
        .route("/json/snapshot.json", get(snapshot_json))
        .route("/api/v1/get_workers", get(get_workers))
        .route("/api/v1/retire_workers", post(retire_workers))
        .route("/api/v1/adaptive_target", get(adaptive_target))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404: no such page on the kiln dashboard\n") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// An error page or API error.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

async fn ask<T>(app: &App, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, Failure> {
    let (tx, rx) = oneshot::channel();
    let gone = || Failure(StatusCode::SERVICE_UNAVAILABLE, "the scheduler is not answering (stopping?)".into());
    tokio::time::timeout(ANSWER_TIMEOUT, app.feed.requests.send(make(tx)))
        .await
        .map_err(|_| gone())?
        .map_err(|_| gone())?;
    tokio::time::timeout(ANSWER_TIMEOUT, rx).await.map_err(|_| gone())?.map_err(|_| gone())
}

async fn fresh(app: &App) -> Result<Arc<Snapshot>, Failure> {
    ask(app, Request::Snapshot).await
}

/// Counts a live page while its stream is open.
struct Watching(Arc<AtomicUsize>);

impl Watching {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Watching(count.clone())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let guard = Watching::new(&app.feed.watchers);
    let mut payloads = app.payloads.clone();
    // The current payload (if any) goes out at once; then each new one.
    payloads.mark_changed();
    let stream = stream::unfold((payloads, guard), |(mut payloads, guard)| async move {
        loop {
            payloads.changed().await.ok()?;
            let payload = payloads.borrow_and_update().clone();
            if let Some(text) = payload {
                return Some((Ok(Event::default().event("snapshot").data(&*text)), (payloads, guard)));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn asset(Path(file): Path<String>) -> Response {
    match pages::asset(&file) {
        Some((mime, body)) => {
            ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "404: no such file\n").into_response(),
    }
}

async fn snapshot_json(State(app): State<App>) -> Result<Response, Failure> {
    let s = fresh(&app).await?;
    Ok(Json(&*s).into_response())
}

async fn metrics(State(app): State<App>) -> Result<Response, Failure> {
    let s = fresh(&app).await?;
    let text = crate::render_metrics(&s, &app.options.namespace);
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

async fn counts(State(app): State<App>) -> Result<Json<Json_>, Failure> {
    let s = fresh(&app).await?;
    let a = &s.aggregates;
    let count = |state: kiln_scheduler::TaskState| {
        a.counts[kiln_scheduler::TaskState::ALL.iter().position(|x| *x == state).unwrap_or(0)]
    };
    use kiln_scheduler::TaskState::*;
    let cores: u64 = a.workers.iter().map(|w| w.nthreads as u64).sum();
    let idle = s.loads.iter().filter(|l| l.processing == 0).count();
    let saturated =
        s.loads.iter().filter(|l| a.workers.iter().any(|w| w.id == l.id && l.processing > w.nthreads as usize)).count();
    let mut hosts: Vec<&str> =
        a.workers.iter().map(|w| w.address.rsplit_once(':').map_or(&*w.address, |(h, _)| h)).collect();
    hosts.sort_unstable();
    hosts.dedup();
    Ok(Json(json!({
        "bytes": s.loads.iter().map(|l| l.nbytes).sum::<u64>(),
        "clients": s.clients,
        "cores": cores,
        "erred": count(Erred),
        "hosts": hosts.len(),
        "idle": idle,
        "memory": count(Memory),
        "processing": count(Processing),
        "queued": count(Queued),
        "released": count(Released),
        "saturated": saturated,
        "tasks": s.tasks,
        "unrunnable": count(NoWorker),
        "waiting": count(Waiting),
        "workers": a.workers.len(),
    })))
}

fn worker_json(s: &Snapshot, w: &kiln_scheduler::aggregate::WorkerStats) -> Json_ {
    let load = s.loads.iter().find(|l| l.id == w.id);
    json!({
        "id": w.id,
        "name": w.name,
        "address": w.address,
        "nthreads": w.nthreads,
        "memory_limit": w.memory_limit,
        "memory": { "managed": w.managed, "unmanaged": w.unmanaged(), "spilled": w.spilled, "process": w.process },
        "cpu": w.cpu_percent,
        "network": {
            "read_bytes": w.network_read_bytes,
            "write_bytes": w.network_written_bytes,
            "read_bps": w.network_read_bps,
            "write_bps": w.network_written_bps,
        },
        "processing": load.map_or(0, |l| l.processing),
        "held": load.map_or(0, |l| l.held),
        "occupancy": load.map_or(0.0, |l| l.occupancy_s),
        "status": if w.retiring { "closing_gracefully" } else if w.paused { "paused" } else { "running" },
        "last_seen": w.last_seen_us as f64 / 1e6,
    })
}

async fn identity(State(app): State<App>) -> Result<Json<Json_>, Failure> {
    let s = fresh(&app).await?;
    let workers: serde_json::Map<String, Json_> =
        s.aggregates.workers.iter().map(|w| (w.address.clone(), worker_json(&s, w))).collect();
    Ok(Json(json!({
        "type": "Scheduler",
        "id": s.identity.id,
        "address": s.identity.address,
        "dashboard": s.identity.dashboard,
        "version": s.identity.version,
        "started": s.identity.started_us as f64 / 1e6,
        "workers": workers,
    })))
}

async fn get_workers(State(app): State<App>) -> Result<Json<Json_>, Failure> {
    let s = fresh(&app).await?;
    let workers: Vec<Json_> = s.aggregates.workers.iter().map(|w| worker_json(&s, w)).collect();
    Ok(Json(json!({ "num_workers": workers.len(), "workers": workers })))
}

async fn adaptive_target(State(app): State<App>) -> Result<Json<Json_>, Failure> {
    let n = ask(&app, Request::AdaptiveTarget).await?;
    Ok(Json(json!({ "workers": n })))
}

async fn retire_workers(
    State(app): State<App>,
    body: Result<Json<Json_>, JsonRejection>,
) -> Result<Json<Json_>, Failure> {
    let Json(body) = body.map_err(|e| Failure(e.status(), format!("malformed request: {}", e.body_text())))?;
    let bad = |m: &str| Failure(StatusCode::BAD_REQUEST, m.to_string());
    let list = body
        .get("workers")
        .and_then(Json_::as_array)
        .ok_or_else(|| bad("expected {\"workers\": [id, address or name, ...]}"))?;
    if list.is_empty() {
        return Err(bad("no workers named"));
    }
    let s = fresh(&app).await?;
    let mut ids = Vec::new();
    let mut unknown = Vec::new();
    for item in list {
        let found = match item {
            Json_::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map(WorkerId::new),
            Json_::String(text) => s
                .aggregates
                .workers
                .iter()
                .find(|w| w.address == *text || w.name == *text || w.id.to_string() == *text)
                .map(|w| w.id),
            _ => None,
        };
        match found {
            Some(id) => ids.push(id),
            None => unknown.push(item.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("unknown workers: {}", unknown.join(", "))));
    }
    let missing = ask(&app, |reply| Request::Retire(ids.clone(), reply)).await?;
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|w| w.to_string()).collect();
        return Err(Failure(StatusCode::NOT_FOUND, format!("unknown workers: {}", names.join(", "))));
    }
    let retired: serde_json::Map<String, Json_> = ids
        .iter()
        .filter_map(|id| s.aggregates.workers.iter().find(|w| w.id == *id))
        .map(|w| (w.address.clone(), json!({ "id": w.id, "name": w.name })))
        .collect();
    Ok(Json(json!({ "retiring": retired })))
}

/// The graph for `/graph`: nodes (key, prefix, state) and edges, or only the count above the
/// cap, so the page can say why it draws nothing.
async fn graph_json(State(app): State<App>) -> Result<Json<Json_>, Failure> {
    let cap = crate::GRAPH_CAP;
    Ok(Json(match ask(&app, |reply| Request::Graph { cap, reply }).await? {
        Ok(view) => json!({ "cap": cap, "tasks": view.nodes.len(), "nodes": view.nodes, "edges": view.edges }),
        Err(tasks) => json!({ "cap": cap, "tasks": tasks, "too_large": true }),
    }))
}

async fn workers_page(State(app): State<App>) -> Result<Html<String>, Failure> {
    let s = fresh(&app).await?;
    Ok(Html(pages::workers(&s)))
}

async fn worker_page(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u32>().map(WorkerId::new) else {
        return (StatusCode::NOT_FOUND, Html(pages::not_found(&format!("no worker {id:?}: ids are numbers"))))
            .into_response();
    };
    let s = match fresh(&app).await {
        Ok(s) => s,
        Err(f) => return f.into_response(),
    };
    let Some(w) = s.aggregates.workers.iter().find(|w| w.id == id) else {
        return (StatusCode::NOT_FOUND, Html(pages::not_found(&format!("no worker {id}")))).into_response();
    };
    let tasks = match ask(&app, |reply| Request::WorkerTasks { worker: id, limit: 200, reply }).await {
        Ok(t) => t.unwrap_or_default(),
        Err(f) => return f.into_response(),
    };
    Html(pages::worker(&s, w, &tasks)).into_response()
}

async fn task_page(State(app): State<App>, Path(text): Path<String>) -> Response {
    let Some(key) = parse_key(&text) else {
        return (StatusCode::BAD_REQUEST, Html(pages::not_found(&format!("{text:?} is not a key")))).into_response();
    };
    match ask(&app, |reply| Request::TaskInfo(key.clone(), reply)).await {
        Ok(Some(info)) => Html(pages::task(&info)).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Html(pages::not_found(&format!("no task {key}")))).into_response(),
        Err(f) => f.into_response(),
    }
}

/// A key as users write it: `name`, `'name'` or `('name', 0, 1)` (the form the pages print).
pub(crate) fn parse_key(text: &str) -> Option<Key> {
    let text = text.trim();
    if text.is_empty() || text.len() > 4096 {
        return None;
    }
    let unquote = |s: &str| -> Option<String> {
        let s = s.trim();
        let inner = s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')).unwrap_or(s);
        (!inner.is_empty() && !inner.contains('\'')).then(|| inner.to_string())
    };
    match text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        Some(inner) => {
            let mut parts = inner.split(',');
            let name = unquote(parts.next()?)?;
            let mut index = Vec::new();
            for part in parts {
                let part = part.trim();
                if part.is_empty() {
                    continue;
                }
                index.push(part.parse::<u32>().ok()?);
            }
            Some(Key::with_index(name, index))
        }
        None => Some(Key::new(unquote(text)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_the_pages_print_them() {
        let k = Key::with_index("sum-ab", [2, 0]);
        assert_eq!(parse_key(&k.to_string()), Some(k));
        assert_eq!(parse_key("x"), Some(Key::new("x")));
        assert_eq!(parse_key("'x'"), Some(Key::new("x")));
        assert_eq!(parse_key("('x', a)"), None);
        assert_eq!(parse_key("()"), None);
        assert_eq!(parse_key(""), None);
    }
}
