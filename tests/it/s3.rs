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
        self.upload_to(BUCKET, dir, prefix);
    }

    fn upload_to(&self, bucket: &str, dir: &std::path::Path, prefix: &str) {
        let out = output(Command::new(moto_python()).arg(s3ctl()).args([
            "upload",
            &self.endpoint,
            &self.key_id,
            &self.secret,
            bucket,
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

#[test]
fn s3_parquet_materializes_like_local_files_and_the_skew_check_sees_a_changed_object() {
    let env = TestEnv::new(200);
    let moto = Moto::start(false);
    moto.upload(&env.data().join("user_features"), "features/user_features");

    env.materialize(&["--service", "user_features"]);
    let local = env.generation_rows("user_features", &env.redis.current("user_features").unwrap());
    assert!(local.len() >= 100, "{}", local.len());

    env.edit("user_features", LOCAL_GLOB, &format!("s3://{BUCKET}/features/user_features/*/*.parquet"));
    let summary = moto.json(
        &env,
        &["materialize", "--online", "--json", "--as-of", crate::support::FIXED_AS_OF, "--service", "user_features"],
    );
    let generation = env.redis.current("user_features").unwrap();
    assert_eq!(env.generation_rows("user_features", &generation), local, "{summary}");

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
    let local = env.generation_rows("item_features", &env.redis.current("item_features").unwrap());
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
    assert_eq!(env.generation_rows("item_features", &generation), local);
    let out = moto.daeda(&env, &moto.secret, &["skew", "check", "--service", "item_features", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A service on S3 whose store cannot be reached when the SQL worker starts is
/// left out (with a warning); the SQL plane serves the local ones instead of
/// failing to start.
#[tokio::test(flavor = "multi_thread")]
async fn the_sql_plane_serves_local_services_when_the_store_is_unreachable() {
    use crate::http::{bearer, mint, send};
    let env = TestEnv::new(50);
    env.edit("user_features", LOCAL_GLOB, &format!("s3://{BUCKET}/features/user_features/*/*.parquet"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let (mut child, addr) = crate::support::serve(&env, &aws_env(&endpoint, "k", "s"), Stdio::null());
    let token = bearer(&mint(&["*"], &[daeda_gateway::Plane::Sql]));
    let r = sql_when_ready(addr, &token, "SELECT count(*) AS n FROM item_features").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r =
        send(addr, "POST", "/v1/sql", &[("authorization", &token)], &sql_body("SELECT count(*) FROM user_features"))
            .await;
    assert_ne!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let _ = child.kill();
    let _ = child.wait();
}

fn aws_env<'a>(endpoint: &'a str, key_id: &'a str, secret: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", key_id),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint),
    ]
}

fn sql_body(sql: &str) -> String {
    serde_json::json!({ "sql": sql }).to_string()
}

/// `sql` over `POST /v1/sql` once the SQL worker answers (it builds its
/// session in the background: 503 until then; at most 60 s).
async fn sql_when_ready(addr: std::net::SocketAddr, token: &str, sql: &str) -> crate::http::Reply {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = crate::http::send(addr, "POST", "/v1/sql", &[("authorization", token)], &sql_body(sql)).await;
        if r.status != 503 || Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The local file names under `dir`, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// user_features and item_features moved to S3; pii_features (not approved)
/// uploaded beside them, in a sibling prefix of the same bucket.
fn move_to_s3(env: &TestEnv, moto: &Moto) {
    moto.upload(&env.data().join("user_features"), "features/user_features");
    moto.upload(&env.data().join("pii_features"), "features/pii_features");
    moto.upload(&env.data().join("item_features/files"), "lake/item_features");
    env.edit("user_features", LOCAL_GLOB, &format!("s3://{BUCKET}/features/user_features/*/*.parquet"));
    env.edit(
        "item_features",
        "data_path: ../data/item_features/files",
        &format!("data_path: s3://{BUCKET}/lake/item_features/"),
    );
}

/// Wall 3 alone: with no policy in front, a query on the locked session can
/// open exactly the objects listed when it was built. Each escape is first
/// tried on a plain session with the same secret, so the test shows what the
/// lock stops (and fails if it stops nothing).
#[test]
fn the_locked_session_opens_only_the_listed_objects_on_s3() {
    let env = TestEnv::new(50);
    let moto = Moto::start(false);
    move_to_s3(&env, &moto);
    let out = output(Command::new(moto_python()).arg(s3ctl()).args([
        "bucket",
        &moto.endpoint,
        &moto.key_id,
        &moto.secret,
        "daeda-elsewhere",
    ]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pii_dir = env.data().join("pii_features");
    moto.upload_to("daeda-elsewhere", &pii_dir, "copy");
    // Shadowing this process's S3 settings: no other test of this binary opens S3 in-process.
    daeda_offline::s3::configure(daeda_offline::s3::S3Settings {
        key_id: Some(moto.key_id.clone()),
        secret: Some(moto.secret.clone()),
        region: Some("us-east-1".into()),
        endpoint: Some(moto.endpoint.trim_start_matches("http://").into()),
        url_style: Some("path".into()),
        use_ssl: Some(false),
        session_token: None,
    });

    let catalog = daeda_catalog::Catalog::load(env.catalog()).unwrap();
    let private = env.dir.path().join("session");
    std::fs::create_dir_all(&private).unwrap();
    let limits = daeda_sql_plane::SessionLimits { memory_limit: "512MB".into(), threads: 1 };
    let session = daeda_sql_plane::Session::open(&catalog, &private, &limits).unwrap();
    let ours = session.query_connection().unwrap();
    let plain = daeda_offline::session::session().unwrap();
    daeda_offline::s3::prepare(&plain).unwrap();

    // The services read, with the same rows as the local files.
    let count = |c: &duckdb::Connection, sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let local = format!("read_parquet('{}/user_features/*/*.parquet')", env.data().display());
    assert_eq!(
        count(&ours, "SELECT count(*) FROM user_features"),
        count(&plain, &format!("SELECT count(*) FROM {local}"))
    );
    assert!(count(&ours, "SELECT count(*) FROM item_features") > 0);

    let partition = names(&env.data().join("user_features"))[0].clone();
    let listed = format!(
        "s3://{BUCKET}/features/user_features/{partition}/{}",
        names(&env.data().join("user_features").join(&partition))[0]
    );
    assert!(count(&ours, &format!("SELECT count(*) FROM read_parquet('{listed}')")) > 0);
    let pii = names(&pii_dir)[0].clone();
    let sibling = format!("s3://{BUCKET}/features/pii_features/{pii}");
    let host = moto.endpoint.trim_start_matches("http://");
    // (the escape, whether a plain session reads it from moto)
    let escapes = [
        (format!("s3://{BUCKET}/features/user_features/../pii_features/{pii}"), true),
        (format!("{listed}/../../../pii_features/{pii}"), true),
        (format!("s3://{BUCKET}/features/pii_features/./{pii}"), true),
        (format!("s3://{BUCKET}/**/*.parquet"), true),
        (format!("s3://{BUCKET}/features/*/*.parquet"), true),
        (sibling.clone(), true),
        (format!("s3a://{BUCKET}/features/pii_features/{pii}"), true),
        (format!("s3://daeda-elsewhere/copy/{pii}"), true),
        (format!("s3://{BUCKET}/features/user_features/%2e%2e/pii_features/{pii}"), false),
        (format!("s3://{BUCKET}/features/user_features/%2E%2E/pii_features/{pii}"), false),
        (format!("s3://{BUCKET}//features/pii_features/{pii}"), false),
        (format!("s3://{BUCKET}/features/user_features//{partition}/x.parquet"), false),
        (format!("http://{host}/{BUCKET}/features/pii_features/{pii}"), false),
        (format!("{listed}?s3_region=us-east-1"), true),
    ];
    for (url, plain_reads) in &escapes {
        let sql = format!("SELECT count(*) FROM read_parquet('{url}')");
        let p = plain.query_row(&sql, [], |r| r.get::<_, i64>(0));
        assert_eq!(p.is_ok(), *plain_reads, "plain session, {url}: {p:?}");
        let err = ours.query_row(&sql, [], |r| r.get::<_, i64>(0)).unwrap_err().to_string();
        assert!(err.contains("Cannot access file"), "{url}: {err}");
    }
    // Listing is refused too, and the secret is valid only for the services' prefixes.
    for sql in [
        format!("SELECT count(*) FROM glob('s3://{BUCKET}/*')"),
        format!("SELECT count(*) FROM read_blob('{sibling}')"),
    ] {
        assert!(plain.query_row(&sql, [], |r| r.get::<_, i64>(0)).is_ok(), "{sql}");
        let err = ours.query_row(&sql, [], |r| r.get::<_, i64>(0)).unwrap_err().to_string();
        assert!(err.contains("Cannot access file"), "{sql}: {err}");
    }
    let scope: String = ours.query_row("SELECT scope::VARCHAR FROM duckdb_secrets()", [], |r| r.get(0)).unwrap();
    assert_eq!(scope, format!("['s3://{BUCKET}/features/user_features/', 's3://{BUCKET}/lake/item_features/']"));
    let secrets: String = ours.query_row("SELECT secret_string FROM duckdb_secrets()", [], |r| r.get(0)).unwrap();
    assert!(!secrets.contains(&moto.secret), "{secrets}");
    assert!(ours
        .query_row("SELECT count(*) FROM duckdb_secrets(redact := false)", [], |r| r.get::<_, i64>(0))
        .is_err());
    // The key lives in the secret alone: no setting of the session holds it.
    let leaked: i64 = ours
        .query_row(
            &format!(
                "SELECT count(*) FROM duckdb_settings() WHERE contains(coalesce(value, ''), {})",
                daeda_sql_wire::quote::literal(&moto.secret)
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leaked, 0);
    // `lock_configuration` does not refuse CREATE SECRET (instance-wide: it
    // could point an approved prefix at another endpoint for every query);
    // the check after each query sees it, and the worker is replaced.
    assert!(session.verify_intact());
    ours.execute_batch(&format!(
        "CREATE SECRET evil (TYPE s3, KEY_ID 'k', SECRET 's', ENDPOINT '127.0.0.1:9', SCOPE ['s3://{BUCKET}/features/user_features/'])"
    ))
    .unwrap();
    assert!(!session.verify_intact(), "a secret created in the locked session went unnoticed");
    assert!(session.damaged());
}

/// The column `name` of a `POST /v1/sql` JSON answer.
fn column(r: &crate::http::Reply, name: &str) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["columns"][name].clone()
}

/// `sql` on a local DuckDB session with DuckLake loaded: `(BIGINT, VARCHAR)` rows as two JSON columns.
fn local_columns(sql: &str, setup: &str) -> (serde_json::Value, serde_json::Value) {
    let conn = daeda_offline::session().unwrap();
    daeda_offline::load_ducklake(&conn).unwrap();
    conn.execute_batch(setup).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let rows: Vec<(i64, Option<String>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    (rows.iter().map(|r| r.0).collect::<Vec<_>>().into(), rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>().into())
}

/// Issue 12's "done means": the example services' data on S3, materialized,
/// looked up, queried over SQL (the same rows as the offline files; the
/// unapproved service in a sibling prefix refused) and skew-checked.
#[tokio::test(flavor = "multi_thread")]
async fn example_services_on_s3_materialize_serve_lookups_and_sql_and_pass_the_skew_check() {
    use crate::http::{bearer, mint, send};
    let env = TestEnv::fresh(60);
    let moto = Moto::start(false);
    move_to_s3(&env, &moto);
    env.edit(
        "pii_features",
        "../data/pii_features/*.parquet",
        &format!("s3://{BUCKET}/features/pii_features/*.parquet"),
    );
    moto.json(&env, &["materialize", "--online", "--json", "--all"]);
    for service in ["user_features", "item_features"] {
        let out = moto.daeda(&env, &moto.secret, &["skew", "check", "--service", service, "--all", "--json"]);
        let says = format!("{} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{service}: {says}");
    }

    let quack_port = crate::quack::free_port();
    let quack_listen = format!("127.0.0.1:{quack_port}");
    let mut vars = aws_env(&moto.endpoint, &moto.key_id, &moto.secret);
    vars.push(("DAEDA_QUACK_LISTEN", &quack_listen));
    let (mut child, addr) = crate::support::serve(&env, &vars, Stdio::inherit());
    let online = bearer(&mint(&["*"], &[daeda_gateway::Plane::Online]));
    for (service, body) in [
        ("user_features", r#"{"entities": {"user_id": [1, 2]}}"#),
        ("item_features", r#"{"entities": {"item_id": [1, 2]}}"#),
    ] {
        let r = send(addr, "POST", &format!("/v1/features/{service}"), &[("authorization", &online)], body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["status"], serde_json::json!(["ok", "ok"]), "{service}: {}", r.json());
    }

    let token = bearer(&mint(&["*"], &[daeda_gateway::Plane::Sql]));
    let q = "SELECT user_id, country FROM user_features ORDER BY user_id, event_ts";
    let r = sql_when_ready(addr, &token, q).await;
    let (ids, countries) = local_columns(
        &q.replace("user_features", &format!("'{}/user_features/*/*.parquet'", env.data().display())),
        "",
    );
    assert!(ids.as_array().unwrap().len() >= 120, "{ids}");
    assert_eq!((column(&r, "user_id"), column(&r, "country")), (ids, countries));

    let q = "SELECT item_id, category FROM item_features ORDER BY item_id, event_ts, category";
    let r = send(addr, "POST", "/v1/sql", &[("authorization", &token)], &sql_body(q)).await;
    let lake = env.data().join("item_features");
    let attach = daeda_offline::sql::attach_ducklake(&lake.join("metadata.ducklake"), &lake.join("files"), "l", None);
    let (ids, categories) = local_columns(&q.replace("item_features", "l.item_features"), &attach);
    assert!(!ids.as_array().unwrap().is_empty());
    assert_eq!((column(&r, "item_id"), column(&r, "category")), (ids, categories));

    // Quack reads the same S3 objects through the same locked session.
    let sql_token = mint(&["*"], &[daeda_gateway::Plane::Sql]);
    crate::quack::wait_serving(quack_port, &sql_token).await;
    let q = "SELECT count(*) AS n FROM user_features";
    let n = column(&send(addr, "POST", "/v1/sql", &[("authorization", &token)], &sql_body(q)).await, "n");
    let quack =
        tokio::task::spawn_blocking(move || crate::quack::client(quack_port, &sql_token, false, &[q])).await.unwrap();
    assert_eq!(quack[0]["rows"], serde_json::json!([[n[0].to_string()]]), "{quack}");

    // Not approved, in the sibling prefix: refused by the policy, and never listed by the session.
    let r = send(addr, "POST", "/v1/sql", &[("authorization", &token)], &sql_body("SELECT * FROM pii_features")).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "policy_denied".into()), "{}", String::from_utf8_lossy(&r.body));
    let _ = child.kill();
    let _ = child.wait();
}
