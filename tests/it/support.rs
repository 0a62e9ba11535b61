//! `TestEnv`: a throwaway redis-server on a free port, a temp dir holding a copy
//! of the example catalog and freshly generated offline data, and helpers to
//! run the real `daeda` binary against them.
//!
//! Ports are picked, then bound by redis-server: another test may take the port
//! in between. A start therefore only counts when the server that answers is
//! our own child (its `INFO server` `process_id` is the child's pid); when the
//! child exits instead (port taken), it is retried on another port. Every wait
//! on a child process has a deadline, so a stuck process fails a test instead
//! of hanging CI.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a redis-server gets to answer after it was spawned (an AOF restart
/// replays the file first; a loaded machine is slow).
const REDIS_START: Duration = Duration::from_secs(30);
/// Replies of the tests' own Redis connections.
const REDIS_REPLY: Duration = Duration::from_secs(60);
/// Attempts to start a server on a fresh port when the picked one was taken.
const PORT_ATTEMPTS: usize = 8;

/// Keeps SIGCHLD away from the calling test thread and the threads it starts.
///
/// The in-process gateway's `tokio::process` installs a SIGCHLD handler. The
/// kernel hands a child's SIGCHLD (exit, stop, continue) to the thread that
/// spawned it, else to any thread that does not block it, and a blocking
/// socket read with a timeout returns EINTR then whatever SA_RESTART says
/// (signal(7)): a test that stopped its own child saw its next Redis GET fail.
/// Every test that starts a server or an environment blocks SIGCHLD on its
/// thread, so the signal goes to libtest's main thread, which only waits on a
/// channel and retries. The main thread itself is left alone: were every thread
/// to block it, tokio would never hear of an orphan's exit.
pub fn quiet_sigchld() {
    if std::thread::current().name() == Some("main") {
        return;
    }
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::from(Signal::SIGCHLD)), None).unwrap();
}

/// A port the kernel just handed out and took back (bind 0, then drop).
fn ephemeral_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port for a cluster node. Redis refuses a cluster port above 55535 (its
/// bus port is port + 10000), which `bind(0)` may hand out, so cluster ports
/// are chosen explicitly: below the kernel's ephemeral range when there is
/// room (so `bind(0)` elsewhere never collides with port or bus port), and both
/// checked free.
fn cluster_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u32>().ok()))
        .unwrap_or(32768);
    let (lo, hi) = match ephemeral_low.saturating_sub(10_000) {
        hi if hi >= 12_000 => (10_000u32, hi),
        _ => (10_000, 55_536),
    };
    for _ in 0..1000 {
        let port = fastrand::u32(lo..hi);
        let (port, bus) = (port as u16, (port + 10_000) as u16);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return port;
        }
    }
    panic!("no free cluster port (and bus port) in {lo}..{hi}");
}

/// Waits for `child` at most `limit`; past it, kills the child and panics.
pub fn wait_timeout(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `wait_with_output` with a deadline: stdout and stderr (when piped) are read
/// on threads while waiting.
pub fn output_timeout(mut child: Child, limit: Duration, what: &str) -> Output {
    fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let status = wait_timeout(&mut child, limit, what);
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Runs `cmd` to the end, capturing stdout and stderr (killed past [`DAEDA_LIMIT`]).
pub fn output(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    output_timeout(child, DAEDA_LIMIT, &what)
}

/// Polls `f` until it returns Some, or panics with `what` after `limit`.
pub fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    /// Everything but the port.
    args: Vec<String>,
    /// A Sentinel's config file (Sentinel rewrites it): runs `--sentinel`.
    sentinel_conf: Option<PathBuf>,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server; with `aof`, data survives a kill and restart.
    pub fn start(dir: &Path, aof: bool) -> Redis {
        let args = ["--appendonly", if aof { "yes" } else { "no" }, "--appendfsync", "always"];
        Redis::start_on(dir, &args, &mut ephemeral_port)
    }

    /// Starts a server with extra `args` (e.g. `--replicaof`, `--requirepass`).
    pub fn start_with(dir: &Path, args: &[&str]) -> Redis {
        Redis::start_on(dir, args, &mut ephemeral_port)
    }

    /// Starts a Sentinel from `conf` (its text; written to `dir`).
    pub fn start_sentinel(dir: &Path, conf: &str) -> Redis {
        let path = dir.join("sentinel.conf");
        std::fs::write(&path, conf).unwrap();
        Redis::start_inner(dir, &[], &mut ephemeral_port, Some(path))
    }

    /// Starts a server with `args` on a port from `pick`, on another one when
    /// that port turns out to be taken.
    fn start_on(dir: &Path, args: &[&str], pick: &mut dyn FnMut() -> u16) -> Redis {
        Redis::start_inner(dir, args, pick, None)
    }

    fn start_inner(dir: &Path, args: &[&str], pick: &mut dyn FnMut() -> u16, sentinel_conf: Option<PathBuf>) -> Redis {
        quiet_sigchld();
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut r = Redis {
                port: pick(),
                dir: dir.to_path_buf(),
                args: args.iter().map(|a| a.to_string()).collect(),
                sentinel_conf: sentinel_conf.clone(),
                child: None,
            };
            match r.spawn() {
                Ok(()) => return r,
                Err(e) => failures.push(e),
            }
        }
        panic!("redis-server did not start in {PORT_ATTEMPTS} attempts:\n{}", failures.join("\n"));
    }

    /// Spawns the server on `self.port` and waits until it, and not some other
    /// process on that port, answers.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        if let Some(conf) = &self.sentinel_conf {
            cmd.arg(conf).arg("--sentinel");
        }
        let mut child = cmd
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/bootstrap.sh)");
        let pid = child.id();
        let deadline = Instant::now() + REDIS_START;
        let mut last;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(3).collect();
                return Err(format!("port {}: redis-server exited ({status}): {}", self.port, tail.join(" | ")));
            }
            match self.ours(pid) {
                Ok(true) => break,
                Ok(false) => last = "another process answers on this port".into(),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("port {}: not ready after {REDIS_START:?}: {last}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// True when the server on our port is process `pid` and serves commands.
    fn ours(&self, pid: u32) -> Result<bool, String> {
        let mut c = self.client().get_connection_with_timeout(Duration::from_secs(1)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut c).map_err(|e| e.to_string())?;
        let answering =
            info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|v| v.trim().parse::<u32>().ok());
        if answering != Some(pid) {
            return Ok(false);
        }
        // An AOF restart answers LOADING until the file is replayed.
        redis::cmd("PING").query::<String>(&mut c).map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// With `--requirepass` among the args, the URL carries the password.
    pub fn url(&self) -> String {
        match self.args.iter().position(|a| a == "--requirepass").and_then(|i| self.args.get(i + 1)) {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    pub fn conn(&self) -> redis::Connection {
        // A signal can interrupt the connect (EINTR) on a thread that did not
        // call `quiet_sigchld`. Connecting again is the answer.
        let connect = || self.client().get_connection_with_timeout(Duration::from_secs(10));
        let c = connect().or_else(|_| connect()).or_else(|_| connect()).unwrap();
        c.set_read_timeout(Some(REDIS_REPLY)).unwrap();
        c
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the server.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap().success();
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// SIGKILL, like an OOM kill or a crashed node.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            wait_timeout(&mut c, Duration::from_secs(30), "a killed redis-server");
        }
    }

    /// Kills the server and starts it again on the same port (clients keep
    /// their URL), from its AOF when it has one.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn() {
            panic!("redis-server did not restart on its port: {e}");
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    pub fn dbsize(&self) -> u64 {
        self.read(&redis::cmd("DBSIZE"))
    }

    /// Runs a read-only command, again on a new connection if a signal
    /// interrupted it anyway (see [`quiet_sigchld`]: a test run with one
    /// thread runs on `main`, which is left unmasked). The interrupted
    /// command's reply may still be in flight, so its connection is dropped.
    pub fn read<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        for _ in 0..4 {
            match cmd.query(&mut self.conn()) {
                Err(e) if e.kind() == redis::ErrorKind::Io && e.to_string().contains("os error 4") => continue,
                r => return r.unwrap(),
            }
        }
        cmd.query(&mut self.conn()).unwrap()
    }

    pub fn count(&self, pattern: &str) -> usize {
        let mut c = self.conn();
        let iter: redis::Iter<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(5000)
            .clone()
            .iter(&mut c)
            .unwrap();
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

/// The day the fixed fixtures' newest rows belong to, and the as-of the tests
/// materialize them at. Against the real clock every such row is stale (older
/// than any ttl); [`TestEnv::fresh`] makes data that is not.
pub const FIXED_BASE_DATE: &str = "2026-06-28";
pub const FIXED_AS_OF: &str = "2026-06-28T12:00:00Z";

/// How long one `daeda` command of a test may take before it is killed.
pub const DAEDA_LIMIT: Duration = Duration::from_secs(600);

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub redis: Redis,
    /// The `--as-of` that [`TestEnv::materialize`] passes (None: now).
    as_of: Option<&'static str>,
}

impl TestEnv {
    /// Example catalog + data for `users` users (the demo's other sizes scale
    /// down), dated [`FIXED_BASE_DATE`].
    pub fn new(users: u64) -> TestEnv {
        Self::with_redis(users, false)
    }

    pub fn with_redis(users: u64, aof: bool) -> TestEnv {
        Self::build(users, aof, FIXED_BASE_DATE.to_string(), Some(FIXED_AS_OF))
    }

    /// Data whose newest rows are from yesterday by the real clock (base date
    /// today, UTC), materialized as of now: lookups see status `ok` and values.
    pub fn fresh(users: u64) -> TestEnv {
        Self::build(users, false, chrono::Utc::now().date_naive().to_string(), None)
    }

    fn build(users: u64, aof: bool, base_date: String, as_of: Option<&'static str>) -> TestEnv {
        quiet_sigchld();
        let dir = tempfile::tempdir().unwrap();
        let redis_dir = dir.path().join("redis");
        std::fs::create_dir_all(&redis_dir).unwrap();
        let env = TestEnv { redis: Redis::start(&redis_dir, aof), dir, as_of };
        let catalog = env.catalog();
        std::fs::create_dir_all(&catalog).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("feature_services");
        // The definitions only: tests that edit them must not trip over the
        // shipped registry.lock.json; the registry tests write their own.
        for e in std::fs::read_dir(repo).unwrap() {
            let p = e.unwrap().path();
            if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                std::fs::copy(&p, catalog.join(p.file_name().unwrap())).unwrap();
            }
        }
        // Generate elsewhere, then move: the DuckLake catalog then records a data
        // path that no longer exists, as when a lake is copied or mounted elsewhere.
        let staging = env.dir.path().join("staging");
        let out = env.daeda(&[
            "demo",
            "generate",
            "--out",
            staging.to_str().unwrap(),
            "--users",
            &users.to_string(),
            "--items",
            "500",
            "--base-date",
            &base_date,
        ]);
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

    /// Runs daeda to the end (killed past [`DAEDA_LIMIT`]).
    pub fn daeda(&self, args: &[&str]) -> Output {
        output(&mut self.command(args))
    }

    /// Runs daeda expecting `code`; returns stdout, and stderr.
    pub fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.daeda(args);
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert_eq!(out.status.code(), Some(code), "daeda {args:?}\nstdout: {stdout}\nstderr: {stderr}");
        (stdout, stderr)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let (stdout, _) = self.expect(0, args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// `materialize --online --json` (as of [`FIXED_AS_OF`] for the fixed
    /// fixtures, now for fresh ones, unless `extra` says), expecting success.
    pub fn materialize(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["materialize", "--online", "--json"];
        if let (false, Some(at)) = (extra.contains(&"--as-of"), self.as_of) {
            args.extend(["--as-of", at]);
        }
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// Every row of `service`'s `generation`, by entity key, as Redis holds it.
    pub fn generation_rows(&self, service: &str, generation: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        let prefix = format!("daeda:row:{service}:{generation}:");
        let mut c = self.redis.conn();
        let keys: Vec<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(5000)
            .clone()
            .iter::<String>(&mut c)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        keys.into_iter().map(|k| (k[prefix.len()..].to_string(), self.redis.get(&k).unwrap())).collect()
    }

    /// A DuckDB session for computing expected values from the same files.
    pub fn duckdb(&self) -> duckdb::Connection {
        duckdb::Connection::open_in_memory().unwrap()
    }
}

/// A child process killed and reaped when dropped, so a test that panics
/// halfway leaves no `daeda serve` or redis-server running behind it.
pub struct Killed(Option<Child>);

impl Killed {
    pub fn new(child: Child) -> Killed {
        Killed(Some(child))
    }

    /// The child, no longer killed on drop (to wait for its output).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("only drop takes it otherwise")
    }
}

impl std::ops::Deref for Killed {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("only into_inner and drop take it")
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("only into_inner and drop take it")
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `daeda serve` as a process, on a free loopback port with this env's Redis,
/// [`crate::http::SECRET`] as its JWT secret and plain (uncoloured) logs, plus
/// `extra_env`; stderr as `stderr` says. Returns once the port accepts
/// connections (at most 30 s, or panics).
pub fn serve(env: &TestEnv, extra_env: &[(&str, &str)], stderr: Stdio) -> (Killed, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", ephemeral_port()).parse().unwrap();
    let mut cmd = env.command(&["serve", "--listen", &addr.to_string()]);
    cmd.env("DAEDA_JWT_SECRET", crate::http::SECRET).env("NO_COLOR", "1").stderr(stderr);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = Killed::new(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "daeda serve did not start on {addr} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

/// Sends `sig` (as `kill` spells it: `-TERM`, `-HUP`) to `child`.
pub fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// A three-primary Redis Cluster, for the cluster tests. Its ports are chosen
/// by [`cluster_port`], not `bind(0)`: see there.
pub struct Cluster {
    /// The primaries first, then their replicas (as `redis-cli --cluster create` assigns them).
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        Cluster::start_with_replicas(dir, 0)
    }

    /// Three primaries with `replicas` replicas each.
    pub fn start_with_replicas(dir: &Path, replicas: usize) -> Cluster {
        let mut nodes = Vec::new();
        for i in 0..3 * (1 + replicas) {
            let node_dir = dir.join(format!("cluster-{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let conf = node_dir.join("nodes.conf");
            let args = [
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--cluster-config-file",
                conf.to_str().unwrap(),
            ];
            nodes.push(Redis::start_on(&node_dir, &args, &mut cluster_port));
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let child = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = output_timeout(child, Duration::from_secs(60), "redis-cli --cluster create");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for n in &nodes {
            poll(Duration::from_secs(30), "the cluster did not become ok", || {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut n.conn()).unwrap();
                let known: usize = info
                    .lines()
                    .find_map(|l| l.strip_prefix("cluster_known_nodes:"))
                    .and_then(|v| v.trim().parse().ok())?;
                (info.contains("cluster_state:ok") && known == nodes.len()).then_some(())
            });
        }
        if replicas > 0 {
            for n in &nodes {
                poll(Duration::from_secs(30), "the replicas did not sync", || {
                    let info: String = redis::cmd("INFO").arg("replication").query(&mut n.conn()).unwrap();
                    (info.contains("role:master") || info.contains("master_link_status:up")).then_some(())
                });
            }
            // Every node lists each slot range's replicas (clients read the
            // topology from any of them).
            for n in &nodes {
                poll(Duration::from_secs(30), "CLUSTER SLOTS does not list the replicas", || {
                    let ranges: Vec<Vec<redis::Value>> =
                        redis::cmd("CLUSTER").arg("SLOTS").query(&mut n.conn()).unwrap();
                    ranges.iter().all(|r| r.len() >= 3 + replicas).then_some(())
                });
            }
        }
        Cluster { nodes }
    }

    /// The index of the node replicating node `primary`.
    pub fn replica_of(&self, primary: usize) -> usize {
        let id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut self.nodes[primary].conn()).unwrap();
        self.nodes
            .iter()
            .position(|n| {
                let info: String = redis::cmd("CLUSTER").arg("NODES").query(&mut n.conn()).unwrap();
                info.lines().any(|l| l.contains("myself") && l.contains(&format!("slave {id}")))
            })
            .expect("the primary has a replica")
    }

    /// True when node `i` is a primary now.
    pub fn is_primary(&self, i: usize) -> bool {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut self.nodes[i].conn()).unwrap();
        matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master")
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

/// The harness itself: a start never attaches to a server that is not its own.
#[test]
fn a_redis_start_on_a_taken_port_moves_to_another_port_and_never_attaches_to_the_other_server() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = Redis::start(&a_dir, false);
    // The first port offered to b is a's, as when another test took it between
    // bind(0) and redis-server's bind.
    let mut offers = vec![a.port];
    let b = Redis::start_on(&b_dir, &["--appendonly", "no"], &mut || offers.pop().unwrap_or_else(ephemeral_port));
    assert_ne!(b.port, a.port);
    let pid = |r: &Redis| -> u32 {
        let info: String = redis::cmd("INFO").arg("server").query(&mut r.conn()).unwrap();
        info.lines().find_map(|l| l.strip_prefix("process_id:")).unwrap().trim().parse().unwrap()
    };
    assert_eq!(pid(&b), b.child.as_ref().unwrap().id());
    assert_eq!(pid(&a), a.child.as_ref().unwrap().id());

    // Cluster ports leave room for the bus port (port + 10000) under 65536,
    // and Redis's own limit (55535).
    for _ in 0..100 {
        let p = cluster_port();
        assert!(p <= 55_535, "{p}");
    }
}
