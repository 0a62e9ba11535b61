//! Runtime settings: daeda.toml, then the environment, then flags; typos in
//! the file are errors, not silently ignored.

use std::path::PathBuf;

use crate::support::{output, TestEnv, FIXED_AS_OF};

/// One value per layer for each setting, all different, so that what a run
/// did shows which layer it took each setting from: the catalog by the
/// services it ran, Redis by the database the rows landed in, the run root by
/// where the MetadataStore appeared.
struct Layer {
    catalog: PathBuf,
    services: &'static [&'static str],
    db: u8,
    run_root: PathBuf,
}

fn layer(env: &TestEnv, name: &str, services: &'static [&'static str], db: u8) -> Layer {
    // Beside `feature_services`, so the definitions' `../data` paths still resolve.
    let catalog = env.dir.path().join(format!("catalog-{name}"));
    std::fs::create_dir_all(&catalog).unwrap();
    for s in services {
        std::fs::copy(env.yaml(s), catalog.join(format!("{s}.yaml"))).unwrap();
    }
    Layer { catalog, services, db, run_root: env.dir.path().join(format!("runs-{name}")) }
}

fn redis_url(env: &TestEnv, db: u8) -> String {
    format!("redis://127.0.0.1:{}/{db}", env.redis.port)
}

fn dbsize(env: &TestEnv, db: u8) -> u64 {
    let mut c = env.redis.conn();
    let _: () = redis::cmd("SELECT").arg(db).query(&mut c).unwrap();
    redis::cmd("DBSIZE").query(&mut c).unwrap()
}

/// Runs `materialize --all` with `cmd`'s layers and checks that every setting
/// came from `want`.
fn runs_with(env: &TestEnv, mut cmd: std::process::Command, want: &Layer, all: &[&Layer]) {
    let out = output(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ran: Vec<&str> = json["runs"].as_array().unwrap().iter().map(|r| r["service"].as_str().unwrap()).collect();
    assert_eq!(ran, want.services, "the catalog came from the wrong layer");
    for l in all {
        let landed = dbsize(env, l.db) > 0;
        assert_eq!(
            landed,
            l.db == want.db,
            "redis_url: database {} {}",
            l.db,
            if landed { "was written" } else { "is empty" }
        );
        let recorded = l.run_root.exists();
        assert_eq!(
            recorded,
            l.run_root == want.run_root,
            "run_root: {} {}",
            l.run_root.display(),
            if recorded { "was created" } else { "is missing" }
        );
    }
    // The next step starts clean.
    let mut c = env.redis.conn();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    std::fs::remove_dir_all(&want.run_root).unwrap();
}

#[test]
fn toml_then_environment_then_flags_and_unknown_keys_are_errors() {
    let env = TestEnv::new(50);
    let file = layer(&env, "file", &["user_features"], 1);
    let environment = layer(&env, "env", &["item_features", "user_features"], 2);
    let flags = layer(&env, "flag", &["user_features", "user_item_reranker"], 3);
    let all = [&file, &environment, &flags];
    let toml = env.dir.path().join("daeda.toml");
    std::fs::write(
        &toml,
        format!(
            "catalog = {:?}\nredis_url = {:?}\nrun_root = {:?}\n",
            file.catalog,
            redis_url(&env, file.db),
            file.run_root
        ),
    )
    .unwrap();
    let base = || {
        let mut c = env.command(&["materialize", "--online", "--all", "--json", "--as-of", FIXED_AS_OF]);
        c.env_remove("DAEDA_CATALOG").env_remove("DAEDA_REDIS_URL").env_remove("DAEDA_RUN_ROOT");
        c
    };

    // The file alone.
    runs_with(&env, base(), &file, &all);

    // The environment wins over the file.
    let with_env = || {
        let mut c = base();
        c.env("DAEDA_CATALOG", &environment.catalog)
            .env("DAEDA_REDIS_URL", redis_url(&env, environment.db))
            .env("DAEDA_RUN_ROOT", &environment.run_root);
        c
    };
    runs_with(&env, with_env(), &environment, &all);

    // The flags win over both.
    let mut c = with_env();
    c.arg("--catalog")
        .arg(&flags.catalog)
        .args(["--redis", &redis_url(&env, flags.db)])
        .arg("--run-root")
        .arg(&flags.run_root);
    runs_with(&env, c, &flags, &all);

    // A typo in the file is an error naming the file and the key.
    std::fs::write(&toml, "redis_ulr = \"redis://x\"\n").unwrap();
    let out = output(&mut env.command(&["validate"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("daeda.toml") && stderr.contains("redis_ulr"), "{stderr}");
}
