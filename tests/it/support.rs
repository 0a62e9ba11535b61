//! `TestEnv`: a throwaway redis-server on a free port, a temp dir holding a copy
//! of the example catalog and freshly generated offline data, and helpers to
//! run the real `daeda` binary against them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server; with `aof`, data survives a kill and restart.
    pub fn start(dir: &Path, aof: bool) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Redis { port, dir: dir.to_path_buf(), aof, child: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", if self.aof { "yes" } else { "no" }, "--appendfsync", "always"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("redis-server must be installed (scripts/bootstrap.sh)"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.client().get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }

    /// SIGKILL, like an OOM kill or a crashed node.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    pub fn dbsize(&self) -> u64 {
        redis::cmd("DBSIZE").query(&mut self.conn()).unwrap()
    }

    pub fn count(&self, pattern: &str) -> usize {
        let mut c = self.conn();
        let iter: redis::Iter<String> = redis::cmd("SCAN").cursor_arg(0).arg("MATCH").arg(pattern).arg("COUNT").arg(5000).clone().iter(&mut c).unwrap();
        iter.count()
    }

    pub fn current(&self, service: &str) -> Option<String> {
        redis::cmd("GET").arg(format!("daeda:{{svc:{service}}}:current")).query(&mut self.conn()).unwrap()
    }

    pub fn meta(&self, service: &str, generation: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(format!("daeda:{{svc:{service}}}:gen:{generation}"))
            .arg(field)
            .query(&mut self.conn())
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub redis: Redis,
}

impl TestEnv {
    /// Example catalog + data for `users` users (the demo's other sizes scale down).
    pub fn new(users: u64) -> TestEnv {
        Self::with_redis(users, false)
    }

    pub fn with_redis(users: u64, aof: bool) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let redis_dir = dir.path().join("redis");
        std::fs::create_dir_all(&redis_dir).unwrap();
        let env = TestEnv { redis: Redis::start(&redis_dir, aof), dir };
        let catalog = env.catalog();
        std::fs::create_dir_all(&catalog).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("feature_services");
        for e in std::fs::read_dir(repo).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, catalog.join(p.file_name().unwrap())).unwrap();
        }
        // Generate elsewhere, then move: the DuckLake catalog then records a data
        // path that no longer exists, as when a lake is copied or mounted elsewhere.
        let staging = env.dir.path().join("staging");
        let out = env.daeda(&["demo", "generate", "--out", staging.to_str().unwrap(), "--users", &users.to_string(), "--items", "500", "--base-date", "2026-06-28"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::rename(&staging, env.data()).unwrap();
        env
    }

    pub fn catalog(&self) -> PathBuf {
        self.dir.path().join("feature_services")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn yaml(&self, service: &str) -> PathBuf {
        self.catalog().join(format!("{service}.yaml"))
    }

    /// Rewrites one line of a service's definition.
    pub fn edit(&self, service: &str, from: &str, to: &str) {
        let p = self.yaml(service);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from:?} not in {}", p.display());
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_daeda"));
        c.args(args)
            .env("DAEDA_REDIS_URL", self.redis.url())
            .env("DAEDA_CATALOG", self.catalog())
            .env("DAEDA_RUN_ROOT", self.dir.path().join("runs"))
            .env_remove("DAEDA_CONFIG")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    pub fn daeda(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs daeda expecting `code`; returns stdout, and stderr.
    pub fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.daeda(args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert_eq!(out.status.code(), Some(code), "daeda {args:?}\nstdout: {stdout}\nstderr: {stderr}");
        (stdout, stderr)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let (stdout, _) = self.expect(0, args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// `materialize --online --json` (as of 2026-06-28T12:00Z unless `extra` says), expecting success.
    pub fn materialize(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["materialize", "--online", "--json"];
        if !extra.contains(&"--as-of") {
            args.extend(["--as-of", "2026-06-28T12:00:00Z"]);
        }
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// A DuckDB session for computing expected values from the same files.
    pub fn duckdb(&self) -> duckdb::Connection {
        duckdb::Connection::open_in_memory().unwrap()
    }
}

/// A three-primary Redis Cluster on free ports, for the cluster tests.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        let mut nodes = Vec::new();
        for i in 0..3 {
            let node_dir = dir.join(format!("cluster-{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(node_dir.join("nodes.conf"))
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let r = Redis { port, dir: node_dir, aof: false, child: Some(child) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while r.client().get_connection().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)).is_err() {
                assert!(Instant::now() < deadline, "cluster node did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            nodes.push(r);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut n.conn()).unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Cluster { nodes }
    }

    /// A seed list, which daeda reads as a cluster.
    pub fn url(&self) -> String {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// Keys matching `pattern` on every node.
    pub fn count(&self, pattern: &str) -> usize {
        self.nodes.iter().map(|n| n.count(pattern)).sum()
    }
}
