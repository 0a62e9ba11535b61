//! Routes. Every failure is an [`ApiError`]; every service access goes through
//! [`auth::authorize`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use daeda_catalog::{Listing, ServiceDef};
use daeda_online::lookup::{self, EntityStatus, LookupRequest};
use daeda_online::render::{self, arrow};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::auth::{self, Plane, Principal};
use crate::{ApiError, State};

pub type Body = Full<Bytes>;

/// Serves one request: dispatch under the deadline, errors to their JSON, metrics.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    handle_on(state, req, false).await
}

/// As [`handle`]; `admin` when the request came to the admin address.
async fn handle_on(state: Arc<State>, req: Request<Incoming>, admin: bool) -> Response<Body> {
    let start = Instant::now();
    let route = route_name(req.method(), req.uri().path());
    let deadline = state.cfg.request_timeout;
    let result = match tokio::time::timeout(deadline, dispatch(&state, req, admin)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::Timeout(deadline.as_millis() as u64)),
    };
    let e = match result {
        Ok(resp) => {
            state.events.request(route, resp.status().as_u16(), start.elapsed(), None);
            return resp;
        }
        Err(e) => e,
    };
    state.events.request(route, e.status().as_u16(), start.elapsed(), Some(&e));
    let mut resp = respond(e.status(), "application/json", e.body().into());
    if let Some(secs) = e.retry_after() {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(m) = e.allow() {
        resp.headers_mut().insert(ALLOW, HeaderValue::from_str(m.as_str()).expect("a method is a header value"));
    }
    resp
}

/// A request on the admin address: `/metrics`, `/healthz` and `/readyz` only.
pub async fn handle_admin(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    if matches!(req.uri().path(), "/metrics" | "/healthz" | "/readyz") {
        return handle_on(state, req, true).await;
    }
    let e = ApiError::NotFound(format!(
        "the admin address serves /metrics, /healthz and /readyz, not {}",
        req.uri().path()
    ));
    respond(e.status(), "application/json", e.body().into())
}

/// Metric label of a request: the route template, never the raw path.
pub(crate) fn route_name(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (_, "/healthz") => "/healthz",
        (_, "/readyz") => "/readyz",
        (_, "/metrics") => "/metrics",
        (_, "/openapi.json") => "/openapi.json",
        (_, "/v1/services") => "/v1/services",
        (_, "/v1/sql") => "/v1/sql",
        (_, p) if p.starts_with("/v1/features/") => "/v1/features/{service}",
        _ => "other",
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_ok(v: &serde_json::Value) -> Response<Body> {
    respond(StatusCode::OK, "application/json", Bytes::from(serde_json::to_vec(v).expect("JSON values serialize")))
}

async fn dispatch(state: &State, req: Request<Incoming>, admin: bool) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let only = |m: Method| -> Result<(), ApiError> {
        if method == m {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed { path: path.clone(), allow: m })
        }
    };
    match path.as_str() {
        "/healthz" => {
            only(Method::GET)?;
            Ok(json_ok(&json!({"status": "ok"})))
        }
        "/readyz" => {
            only(Method::GET)?;
            readyz(state).await
        }
        "/metrics" if state.cfg.admin_listen.is_some() && !admin => {
            Err(ApiError::NotFound("/metrics is served on the admin address (admin_listen)".into()))
        }
        "/metrics" => {
            only(Method::GET)?;
            let served = state.served();
            let gauges = crate::metrics::Gauges {
                pool: state.store.pool_status(),
                connections_open: state.cfg.max_connections - state.slots.available_permits(),
                max_connections: state.cfg.max_connections,
                live: served.iter().map(|s| (s.as_str(), state.generations.get(s))).collect(),
                now: chrono::Utc::now(),
                sql: state.sql.as_ref().map(|p| crate::metrics::SqlGauges {
                    worker_up: p.worker.is_up(),
                    worker_restarts: p.worker.restarts(),
                    queries_running: state.cfg.sql_concurrency.max(1) - p.slots.available_permits(),
                }),
                cache: state.cache.as_ref().map(|c| (c.stats(), c.max_bytes())),
            };
            Ok(respond(StatusCode::OK, crate::metrics::CONTENT_TYPE, state.events.render_metrics(&gauges).into()))
        }
        "/openapi.json" => {
            only(Method::GET)?;
            Ok(respond(StatusCode::OK, "application/json", Bytes::from_static(crate::openapi::DOCUMENT.as_bytes())))
        }
        "/v1/services" => {
            only(Method::GET)?;
            let who = principal(state, &req)?;
            Ok(json_ok(&services(state, &who)))
        }
        "/v1/sql" => {
            only(Method::POST)?;
            sql(state, req).await
        }
        p if p.starts_with("/v1/features/") => {
            only(Method::POST)?;
            let service = p.trim_start_matches("/v1/features/").to_string();
            features(state, req, &service).await
        }
        _ => Err(ApiError::NotFound(format!("no route {path}"))),
    }
}

/// Whether the client asked for an Arrow IPC stream instead of JSON.
fn wants_arrow(req: &Request<Incoming>) -> bool {
    req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains(arrow::CONTENT_TYPE))
}

fn principal(state: &State, req: &Request<Incoming>) -> Result<Principal, ApiError> {
    let header = req.headers().get(AUTHORIZATION).map(|h| h.to_str().unwrap_or(""));
    state.verifier.verify(header)
}

/// Ready when Redis answers, the catalog is loaded, and every (`ready_when =
/// all`) or some (`any`) service whose serving is allowed has a live
/// generation whose fingerprint matches its loaded definition; each served
/// service's state is in `serving`. Pointers are read from Redis now, not from
/// the cache: a Redis that came back empty is not ready at once.
async fn readyz(state: &State) -> Result<Response<Body>, ApiError> {
    // The SQL plane is auxiliary: its state is reported, never a reason to
    // take the online plane out of rotation.
    let sql = state.sql.as_ref().map(
        |p| json!({"worker": if p.worker.is_up() { "up" } else { "restarting" }, "restarts": p.worker.restarts()}),
    );
    state.store.ping().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    state.generations.refresh().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let catalog = state.catalog();
    let mut serving = serde_json::Map::new();
    let (mut ready, mut total) = (0usize, 0usize);
    for def in catalog.services().filter(|s| s.serving.allowed) {
        total += 1;
        let detail = match state.generations.get(&def.name) {
            None => json!({"ready": false, "reason": "no live generation; materialize it"}),
            Some(m) if m.fingerprint != def.fingerprint() => json!({
                "ready": false,
                "generation": m.generation,
                "reason": format!(
                    "the live generation has schema fingerprint {}, the loaded definition {}; materialize it, or reload the catalog (SIGHUP)",
                    m.fingerprint,
                    def.fingerprint()
                ),
            }),
            Some(m) => {
                ready += 1;
                json!({"ready": true, "generation": m.generation, "version": m.version})
            }
        };
        serving.insert(def.name.clone(), detail);
    }
    let is_ready = match state.cfg.ready_when {
        crate::ReadyWhen::All => ready == total,
        crate::ReadyWhen::Any => ready > 0 || total == 0,
    };
    let body = json!({
        "status": if is_ready { "ready" } else { "not_ready" },
        "redis": "ok",
        "catalog": "loaded",
        "ready_when": match state.cfg.ready_when { crate::ReadyWhen::All => "all", crate::ReadyWhen::Any => "any" },
        "services": catalog.services().count(),
        "serving": serving,
        "sql": sql,
        "quack": state.quack.get().map(|q| json!({"worker": if q.is_up() { "up" } else { "restarting" }, "restarts": q.restarts(), "sessions": q.sessions()})),
    });
    let status = if is_ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok(respond(status, "application/json", Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"))))
}

/// The services this token may read, with their schema and live generation.
fn services(state: &State, who: &Principal) -> serde_json::Value {
    let catalog = state.catalog();
    let list: Vec<_> = catalog
        .services()
        .filter(|s| auth::authorize(who, s, Plane::Online).is_ok() || auth::authorize(who, s, Plane::Sql).is_ok())
        .map(|s| {
            let live = state.generations.get(&s.name);
            let mut m = s.listing_json(Listing::Client);
            m.insert("locked_version".into(), json!(catalog.locked_version(&s.name)));
            m.insert("generation".into(), json!(live.as_ref().map(|m| m.generation.clone())));
            m.insert("row_count".into(), json!(live.as_ref().map(|m| m.row_count)));
            m.insert("materialized_at".into(), json!(live.as_ref().map(|m| m.materialized_at.clone())));
            serde_json::Value::Object(m)
        })
        .collect();
    json!({"services": list})
}

async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = state.cfg.max_body_bytes;
    if let Some(len) =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::TooLarge(limit));
        }
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError::TooLarge(limit)),
        Err(e) => Err(ApiError::BadRequest(format!("could not read the body: {e}"))),
    }
}

async fn features(state: &State, req: Request<Incoming>, service: &str) -> Result<Response<Body>, ApiError> {
    let who = principal(state, &req)?;
    let catalog = state.catalog();
    let def: &Arc<ServiceDef> = catalog.get(service).map_err(|e| ApiError::NotFound(e.to_string()))?;
    auth::authorize(&who, def, Plane::Online)?;
    let wants_arrow = wants_arrow(&req);
    let body = read_body(state, req).await?;
    let lookup_req: LookupRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not a lookup request: {e}")))?;

    let mut meta = state
        .generations
        .live(service)
        .await?
        .ok_or_else(|| lookup::LookupError::NoLiveGeneration(service.to_string()))?;
    let t = Instant::now();
    let schema = state.schema_for(def, &meta)?;
    let mut fetched = lookup::fetch(
        &state.store,
        state.cache.as_deref(),
        def,
        schema.clone(),
        &meta,
        &lookup_req,
        state.cfg.max_batch,
    )
    .await?;
    state.events.lookup_fetched(t.elapsed());
    // Missing rows may mean the generation we read was just retired: re-read
    // the pointer, and if it moved (or names the same id under another run,
    // issued again after Redis lost its data), answer from the new generation
    // instead. No pointer at all (Redis restarted empty) is no live
    // generation, not a 200 of missing rows from a generation that is gone.
    if fetched.status.contains(&EntityStatus::Missing) {
        match state.generations.reload(service).await? {
            None => return Err(lookup::LookupError::NoLiveGeneration(service.to_string()).into()),
            Some(now) if now.generation != meta.generation || now.run_id != meta.run_id => {
                meta = now;
                let schema = state.schema_for(def, &meta)?;
                fetched = lookup::fetch(
                    &state.store,
                    state.cache.as_deref(),
                    def,
                    schema,
                    &meta,
                    &lookup_req,
                    state.cfg.max_batch,
                )
                .await?;
            }
            Some(_) => {}
        }
    }
    state.events.entities_served(
        fetched.count(EntityStatus::Ok),
        fetched.count(EntityStatus::Missing),
        fetched.count(EntityStatus::Stale),
    );
    if wants_arrow {
        let bytes = arrow::encode(def, &lookup_req, &fetched)?;
        return Ok(respond(StatusCode::OK, arrow::CONTENT_TYPE, bytes.into()));
    }
    let body = render::json::body(def, &meta, &lookup_req, &fetched);
    Ok(respond(StatusCode::OK, "application/json", body.into()))
}

/// How long a token's SQL is refused after one of its queries had to be
/// killed with its worker.
pub(crate) const SQL_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

/// `POST /v1/sql`: plane `sql`, then the policy over the services the token may
/// read on it (on the policy's own threads), then the worker process runs the
/// statement as the policy printed it, after DuckDB's parse agrees.
async fn sql(state: &State, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let who = principal(state, &req)?;
    if !who.planes.contains(&Plane::Sql) {
        return Err(ApiError::Forbidden("the token does not grant the sql plane".into()));
    }
    let wants_arrow = wants_arrow(&req);
    let body = read_body(state, req).await?;
    let request: SqlRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not {{\"sql\": \"...\"}}: {e}")))?;
    let plane =
        state.sql.as_ref().ok_or_else(|| ApiError::NotFound("the SQL plane is not enabled on this gateway".into()))?;
    if let Some(left) = plane.cooling(&who.sub) {
        return Err(ApiError::SqlCooldown(left.as_secs().max(1) as u32));
    }
    let granted = state.sql_grants(&who);
    let decision = plane.policy.check(&request.sql, granted.clone()).await?;
    let approved = decision.map_err(|d| {
        state.events.sql_denied("http", &who.sub, &d.reason);
        ApiError::PolicyDenied(d.reason)
    })?;
    // The worker's deadline, its cancel grace and its kill grace all fit
    // inside the request's own deadline, so a 504 is always this plane's.
    let grace = Duration::from_millis(500);
    let budget = state.cfg.request_timeout.saturating_sub(grace * 2 + Duration::from_millis(100));
    let timeout = state.cfg.sql_timeout.min(budget);
    let asked = Instant::now();
    let slot = tokio::time::timeout(timeout, plane.slots.clone().acquire_owned())
        .await
        .map_err(|_| ApiError::SqlUnavailable("the SQL plane is busy; retry shortly".into()))?
        .map_err(|_| ApiError::SqlUnavailable("the SQL plane is stopping".into()))?;
    // Waiting for a slot spends the query's own time.
    let timeout = timeout.saturating_sub(asked.elapsed());
    let query = daeda_sql_wire::Query {
        sql: approved.sql,
        grants: granted,
        relations: approved.relations.into_iter().collect(),
        max_rows: state.cfg.sql_max_rows,
        max_bytes: state.cfg.sql_max_bytes,
        timeout_ms: timeout.as_millis() as u64,
    };
    // Its own task, holding the slot: if the client hangs up, the query still
    // counts against the concurrency limit until it ends, is cancelled, or its
    // worker is killed.
    let worker = plane.worker.clone();
    let reply = tokio::spawn(async move {
        let reply = worker.run(query, grace).await;
        drop(slot);
        reply
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the SQL task failed: {e}")))?;
    let reply = match reply {
        Ok(reply) => reply,
        Err(e @ crate::sql::WorkerError::Killed) => {
            tracing::warn!(sub = %who.sub, cooldown_secs = SQL_COOLDOWN.as_secs(), "{e}");
            plane.cool_down(&who.sub);
            return Err(ApiError::Timeout(timeout.as_millis() as u64));
        }
        Err(e) => return Err(e.into()),
    };
    if let daeda_sql_wire::Reply::Disagreement(m) = &reply {
        state.events.sql_disagreement(&who.sub, m);
    }
    let (ipc, truncated) = crate::error::sql_rows(reply, timeout)?;
    tracing::debug!(sub = %who.sub, "sql query ran");
    let mut resp = if wants_arrow {
        respond(StatusCode::OK, arrow::CONTENT_TYPE, ipc.into())
    } else {
        // Decoding and rendering take CPU in proportion to the result: never
        // on the async threads the online lookups run on.
        let max_bytes = state.cfg.sql_max_bytes;
        let json = plane
            .render
            .run(move || {
                let output = render::sql::SqlOutput::from_ipc(&ipc, truncated)?;
                Ok::<_, ApiError>(render::sql::to_json(&output, max_bytes)?)
            })
            .await??;
        respond(StatusCode::OK, "application/json", json.into())
    };
    if truncated {
        resp.headers_mut().insert("x-daeda-truncated", HeaderValue::from_static("true"));
    }
    Ok(resp)
}
