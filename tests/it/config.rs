//! Runtime settings: daeda.toml, then the environment, then flags; typos in
//! the file are errors, not silently ignored.

use crate::support::TestEnv;

#[test]
fn toml_then_environment_then_flags_and_unknown_keys_are_errors() {
    let env = TestEnv::new(50);
    let toml = env.dir.path().join("daeda.toml");

    // The file alone names the catalog and Redis (the test harness's env is removed).
    std::fs::write(&toml, format!("catalog = {:?}\nredis_url = {:?}\nrun_root = {:?}\n", env.catalog(), env.redis.url(), env.dir.path().join("runs"))).unwrap();
    let out = env.command(&["materialize", "--online", "--service", "user_features", "--json"])
        .env_remove("DAEDA_CATALOG").env_remove("DAEDA_REDIS_URL").env_remove("DAEDA_RUN_ROOT")
        .output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The environment wins over the file, the flag over both.
    std::fs::write(&toml, format!("catalog = \"/nowhere\"\nredis_url = {:?}\n", env.redis.url())).unwrap();
    let out = env.command(&["validate"]).output().unwrap();
    assert!(out.status.success(), "DAEDA_CATALOG wins: {}", String::from_utf8_lossy(&out.stderr));
    let out = env.command(&["validate", "--catalog", "/also/nowhere"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/also/nowhere"));

    // A typo in the file is an error naming the file and the key.
    std::fs::write(&toml, "redis_ulr = \"redis://x\"\n").unwrap();
    let out = env.command(&["validate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("daeda.toml") && stderr.contains("redis_ulr"), "{stderr}");
}
