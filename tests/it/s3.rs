//! Offline data on S3: a real S3 API (moto in server mode, from the venv
//! `scripts/bootstrap.sh` makes) on a free port, with authentication on, and the
//! real `daeda` binary reading it with nothing but the standard `AWS_*`
//! environment.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{output, TestEnv};

const BUCKET: &str = "daeda-offline";
const LOCAL_GLOB: &str = "../data/user_features/*/*.parquet";

fn moto_python() -> PathBuf {
    let deps =
        std::env::var("DAEDA_DEPS").unwrap_or_else(|_| format!("{}/.cache/daeda", std::env::var("HOME").unwrap()));
    let py = std::path::Path::new(&deps).join("moto-venv/bin/python");
    assert!(py.is_file(), "{} is missing: run scripts/bootstrap.sh", py.display());
    py
}

fn s3ctl() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/s3ctl.py")
}

/// A moto S3 server with one bucket and one valid access key; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
    key_id: String,
    secret: String,
}

impl Moto {
    /// With `auth`, moto checks every request's signature after the setup's
    /// three IAM calls. Its check (5.1) wrongly refuses an escaped `=` or `/`
    /// in a path or query, i.e. hive partitions and DuckDB's listings (globs),
    /// so with `auth` the tests read single objects with flat names.
    fn start(auth: bool) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(moto_python());
        cmd.args(["-m", "moto.server", "-p", &port.to_string()]);
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        } else {
            cmd.env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let mut moto =
            Moto { child, endpoint: format!("http://127.0.0.1:{port}"), key_id: String::new(), secret: String::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(moto.child.try_wait().unwrap().is_none(), "moto_server exited (port {port} taken?)");
            assert!(Instant::now() < deadline, "moto_server did not listen on {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = output(Command::new(moto_python()).arg(s3ctl()).args(["setup", &moto.endpoint, BUCKET]));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut parts = text.split_whitespace();
        moto.key_id = parts.next().unwrap().to_string();
        moto.secret = parts.next().unwrap().to_string();
        moto
    }

    fn upload(&self, dir: &std::path::Path, prefix: &str) {
        let out = output(Command::new(moto_python()).arg(s3ctl()).args([
            "upload",
            &self.endpoint,
            &self.key_id,
            &self.secret,
            BUCKET,
            prefix,
            dir.to_str().unwrap(),
        ]));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// `args` run by daeda with the standard AWS environment and `secret`.
    fn daeda(&self, env: &TestEnv, secret: &str, args: &[&str]) -> std::process::Output {
        let mut c = env.command(args);
        c.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL_S3");
        output(&mut c)
    }

    fn json(&self, env: &TestEnv, args: &[&str]) -> serde_json::Value {
        let out = self.daeda(env, &self.secret, args);
        assert!(
            out.status.success(),
            "daeda {args:?}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every online row of `service`'s `generation`, by key suffix (the entity).
fn rows(env: &TestEnv, service: &str, generation: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let prefix = format!("daeda:row:{service}:{generation}:");
    let mut c = env.redis.conn();
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
    keys.into_iter().map(|k| (k[prefix.len()..].to_string(), env.redis.get(&k).unwrap())).collect()
}

#[test]
fn s3_parquet_materializes_like_local_files_and_the_skew_check_sees_a_changed_object() {
    let env = TestEnv::new(200);
    let moto = Moto::start(false);
    moto.upload(&env.data().join("user_features"), "features/user_features");

    env.materialize(&["--service", "user_features"]);
    let local = rows(&env, "user_features", &env.redis.current("user_features").unwrap());
    assert!(local.len() >= 100, "{}", local.len());

    env.edit("user_features", LOCAL_GLOB, &format!("s3://{BUCKET}/features/user_features/*/*.parquet"));
    let summary = moto.json(
        &env,
        &["materialize", "--online", "--json", "--as-of", crate::support::FIXED_AS_OF, "--service", "user_features"],
    );
    let generation = env.redis.current("user_features").unwrap();
    assert_eq!(rows(&env, "user_features", &generation), local, "{summary}");

    // The run names each object it read, with size and last-modified.
    let snapshot: serde_json::Value =
        serde_json::from_str(&env.redis.meta("user_features", &generation, "source_snapshot").unwrap()).unwrap();
    let files = snapshot["files"].as_array().unwrap();
    assert!(!files.is_empty());
    for f in files {
        assert!(f["path"].as_str().unwrap().starts_with(&format!("s3://{BUCKET}/features/user_features/ds=")), "{f}");
        assert!(f["size"].as_u64().unwrap() > 0 && f["mtime"].is_string(), "{f}");
    }

    let check = |moto: &Moto| {
        let out = moto.daeda(&env, &moto.secret, &["skew", "check", "--service", "user_features", "--all", "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let (code, report) = check(&moto);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["mismatched"], 0);
    assert_eq!(report["warnings"].as_array().map(Vec::len), Some(0), "{report}");

    // The same bytes written again: a new last-modified (S3 keeps seconds).
    std::thread::sleep(Duration::from_millis(1100));
    let changed = files[0]["path"].as_str().unwrap().to_string();
    let partition = changed.rsplit('/').nth(1).unwrap();
    moto.upload(&env.data().join("user_features").join(partition), &format!("features/user_features/{partition}"));
    let (code, report) = check(&moto);
    assert_eq!(code, Some(0), "{report}");
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains(&changed) && warnings.contains("changed since"), "{report}");

    // A glob in a bucket that does not exist: S3 says which.
    env.edit("user_features", &format!("s3://{BUCKET}/"), "s3://no-such-bucket-here/");
    let out = moto.daeda(&env, &moto.secret, &["materialize", "--online", "--service", "user_features"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("s3://no-such-bucket-here/") && stderr.contains("the bucket does not exist"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(env.redis.current("user_features"), Some(generation));
}

#[test]
fn wrong_credentials_and_a_missing_bucket_are_one_sentence_and_nothing_flips() {
    let env = TestEnv::new(100);
    let moto = Moto::start(true);
    // Flat keys (no hive `=`), see `Moto::start`; approved for this test.
    env.edit("pii_features", "allowed: false", "allowed: true");
    moto.upload(&env.data().join("pii_features"), "features/pii_features");
    env.materialize(&["--service", "pii_features"]);
    let before = env.redis.current("pii_features").unwrap();

    let file = std::fs::read_dir(env.data().join("pii_features")).unwrap().next().unwrap().unwrap().file_name();
    let file = file.to_str().unwrap();
    env.edit("pii_features", "../data/pii_features/*.parquet", &format!("s3://{BUCKET}/features/pii_features/{file}"));
    // The right secret reads (so the refusal below is about the secret alone).
    moto.json(
        &env,
        &["materialize", "--online", "--json", "--as-of", crate::support::FIXED_AS_OF, "--service", "pii_features"],
    );
    let before = {
        let now = env.redis.current("pii_features").unwrap();
        assert_ne!(now, before);
        now
    };
    let wrong = "Wr0ngSecretThatMustNeverBePrinted";
    let out = moto.daeda(&env, wrong, &["materialize", "--online", "--service", "pii_features"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("access denied"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains(wrong) && !stdout.contains(wrong), "{stderr}");
    assert_eq!(env.redis.current("pii_features").as_deref(), Some(before.as_str()));
    // Nor in the run records.
    let runs = env.daeda(&["runs", "list", "--json"]);
    assert!(!String::from_utf8_lossy(&runs.stdout).contains(wrong));
    for entry in walk(&env.dir.path().join("runs")) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        assert!(!text.contains(wrong) && !text.contains(&moto.secret), "{}", entry.display());
    }

    env.edit("pii_features", &format!("s3://{BUCKET}/"), "s3://no-such-bucket-here/");
    let out = moto.daeda(&env, &moto.secret, &["materialize", "--online", "--service", "pii_features"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no-such-bucket-here") && stderr.contains("the object or its bucket does not exist"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(env.redis.current("pii_features").as_deref(), Some(before.as_str()));
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_ducklake_whose_data_path_is_on_s3_materializes_like_the_local_lake() {
    let env = TestEnv::new(100);
    let moto = Moto::start(false);
    moto.upload(&env.data().join("item_features/files"), "lake/item_features");
    env.materialize(&["--service", "item_features"]);
    let local = rows(&env, "item_features", &env.redis.current("item_features").unwrap());
    assert!(!local.is_empty());

    env.edit(
        "item_features",
        "data_path: ../data/item_features/files",
        &format!("data_path: s3://{BUCKET}/lake/item_features/"),
    );
    // The store's address from daeda.toml's [s3] this time, credentials from the environment.
    let toml = env.dir.path().join("daeda.toml");
    std::fs::write(
        &toml,
        format!("[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nurl_style = \"path\"\n", moto.endpoint),
    )
    .unwrap();
    let materialize = || {
        let mut c = env.command(&[
            "materialize",
            "--online",
            "--as-of",
            crate::support::FIXED_AS_OF,
            "--service",
            "item_features",
        ]);
        c.env("AWS_ACCESS_KEY_ID", &moto.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &moto.secret)
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION");
        c
    };
    let out = output(&mut materialize());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A bad setting is a usage error naming it, before anything is read.
    let out = output(materialize().env("DAEDA_S3_URL_STYLE", "sideways"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("s3.url_style") && stderr.contains("sideways"), "{stderr}");
    std::fs::remove_file(&toml).unwrap();
    let generation = env.redis.current("item_features").unwrap();
    assert_eq!(rows(&env, "item_features", &generation), local);
    let out = moto.daeda(&env, &moto.secret, &["skew", "check", "--service", "item_features", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A service on S3 is not exposed over SQL (yet); the SQL plane keeps serving
/// the local ones instead of failing to start.
#[tokio::test(flavor = "multi_thread")]
async fn the_sql_plane_serves_local_services_beside_one_on_s3() {
    use crate::http::{self, bearer, mint, send};
    let env = TestEnv::new(50);
    env.edit("user_features", LOCAL_GLOB, &format!("s3://{BUCKET}/features/user_features/*/*.parquet"));
    let gw = http::start_with_sql(&env, http::config(&env), true).await;
    let token = bearer(&mint(&["*"], &[daeda_gateway::Plane::Sql]));
    let body = |sql: &str| serde_json::json!({ "sql": sql }).to_string();
    let r = send(
        gw.addr,
        "POST",
        "/v1/sql",
        &[("authorization", &token)],
        &body("SELECT count(*) AS n FROM item_features"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &token)], &body("SELECT count(*) FROM user_features"))
        .await;
    assert_ne!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    gw.stop().await;
}
