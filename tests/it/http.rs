//! A minimal HTTP client over a real socket (hyper's client connection), and an
//! in-process gateway on 127.0.0.1:0 for the tests.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::support::TestEnv;

pub const SECRET: &str = "test-secret-please-change";

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

/// The gateway's `/metrics` text.
pub async fn metrics(addr: SocketAddr) -> String {
    String::from_utf8_lossy(&send(addr, "GET", "/metrics", &[], "").await.body).into_owned()
}

/// The value of `series` (its name with labels, as printed) in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// Polls `series` until it is at least `at_least` (10 s at most, or panics).
pub async fn wait_metric(addr: SocketAddr, series: &str, at_least: f64) {
    let bound = std::time::Duration::from_secs(10);
    let deadline = std::time::Instant::now() + bound;
    loop {
        let v = metric(&metrics(addr).await, series);
        if v >= at_least {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{series} is {v}, not {at_least}, after {bound:?}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Sends one request on a fresh connection.
pub async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    send_on(TokioIo::new(stream), method, path, headers, body).await
}

pub async fn send_on<S>(io: TokioIo<S>, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let status = resp.status();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply { status, content_type, headers, body }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn mint(services: &[&str], planes: &[daeda_gateway::Plane]) -> String {
    mint_for("tester", services, planes)
}

pub fn mint_for(sub: &str, services: &[&str], planes: &[daeda_gateway::Plane]) -> String {
    daeda_gateway::auth::mint(daeda_gateway::auth::MintRequest {
        secret: SECRET,
        sub,
        services: services.iter().map(|s| s.to_string()).collect(),
        planes: planes.to_vec(),
        ttl_secs: 600,
        issuer: None,
        audience: None,
    })
    .unwrap()
}

/// A gateway serving `env`'s catalog and Redis, in process.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

pub fn config(_env: &TestEnv) -> daeda_gateway::GatewayConfig {
    let mut cfg = daeda_gateway::GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        daeda_gateway::AuthSettings { secret: Some(SECRET.into()), ..Default::default() },
    );
    cfg.max_batch = 100;
    cfg.max_body_bytes = 64 * 1024;
    cfg.refresh = std::time::Duration::from_millis(100);
    cfg
}

pub async fn start(env: &TestEnv, cfg: daeda_gateway::GatewayConfig) -> Running {
    start_with_sql(env, cfg, false).await
}

/// With `sql`, the gateway also serves POST /v1/sql from a DuckDB session.
pub async fn start_with_sql(env: &TestEnv, cfg: daeda_gateway::GatewayConfig, sql: bool) -> Running {
    start_at(env, cfg, sql, &env.redis.url(), 16).await
}

/// A gateway whose online store is at `url` (a Sentinel set, a cluster, a
/// password-protected server), with `pool_size` connections.
pub async fn start_at(
    env: &TestEnv,
    cfg: daeda_gateway::GatewayConfig,
    sql: bool,
    url: &str,
    pool_size: usize,
) -> Running {
    let settings = daeda_online::StoreSettings {
        pool_size,
        timeout: std::time::Duration::from_millis(500),
        read_from_replicas: false,
    };
    start_with_store(env, cfg, sql, daeda_online::OnlineStore::connect(url, &settings).unwrap()).await
}

/// A gateway on `store`.
pub async fn start_with_store(
    env: &TestEnv,
    cfg: daeda_gateway::GatewayConfig,
    sql: bool,
    store: daeda_online::OnlineStore,
) -> Running {
    let catalog = daeda_catalog::Catalog::load(env.catalog()).unwrap();
    let engine = sql.then(|| daeda_gateway::sql::WorkerCommand {
        program: env!("CARGO_BIN_EXE_daeda").into(),
        args: vec!["--catalog".into(), env.catalog().into_os_string(), "sql-worker".into()],
    });
    let gw = daeda_gateway::Gateway::bind_with_sql(cfg, catalog, store, engine).await.unwrap();
    let addr = gw.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gw.run(async move {
        let _ = rx.await;
    }));
    if sql {
        // The worker builds its session in the background; wait until it is up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while send(addr, "GET", "/readyz", &[], "").await.json()["sql"]["worker"] != "up" {
            assert!(std::time::Instant::now() < deadline, "the SQL worker did not come up");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Running { addr, stop: Some(tx), task: Some(task) }
}

/// A TLS client trusting exactly `cert_pem`.
pub fn tls_connector(cert_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
