//! The S3 credentials reach only the URLs the secret's scope covers, and no
//! query can read them back: the wall the SQL plane's session keeps even if
//! every check in front of it failed.
//!
//! Its own test binary (one process, one test) because it sets the `AWS_*`
//! environment that httpfs copies into instance settings when it loads. The
//! "S3 server" is a socket that records each request's target and
//! `Authorization` header and answers 404: what is checked is what DuckDB
//! sends, not what a server accepts.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const KEY_ID: &str = "AKIASCOPETEST0000001";
const SECRET: &str = "scope-test-secret-do-not-send-elsewhere";

/// Each request's target (`/bucket/key`) and its `Authorization` header, if any.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn recorder() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let target = line.split_whitespace().nth(1).unwrap_or_default().to_string();
            let mut auth = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((name, value)) = h.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") {
                        auth = Some(value.trim().to_string());
                    }
                }
            }
            log.lock().unwrap().push((target, auth));
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

#[test]
fn the_secret_signs_only_its_scope_and_no_setting_holds_the_credentials() {
    let (port, seen) = recorder();
    // Before any DuckDB instance exists, and the only test in this process.
    std::env::set_var("AWS_ACCESS_KEY_ID", KEY_ID);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));

    let conn = daeda_offline::session().unwrap();
    daeda_offline::s3::prepare_scoped(&conn, &["s3://bkt/approved/".to_string()]).unwrap();
    let query = conn.try_clone().unwrap();

    // No setting holds a credential (httpfs copied them from the environment when it loaded).
    let values: Vec<(String, String)> = query
        .prepare("SELECT name, coalesce(value, '') FROM duckdb_settings()")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (name, value) in &values {
        assert!(!value.contains(SECRET) && !value.contains(KEY_ID), "setting {name} holds a credential");
    }
    let setting = |name: &str| -> String {
        query.query_row(&format!("SELECT current_setting('{name}')"), [], |r| r.get(0)).unwrap()
    };
    assert_eq!(setting("s3_secret_access_key"), "");
    assert_eq!(setting("s3_access_key_id"), "");

    // Inside the scope a read is signed with the key; outside it, it is not
    // signed at all. (Requests outside every scope follow the instance
    // settings; they are pointed at the recorder so that it sees them.)
    query
        .execute_batch(&format!(
            "SET s3_endpoint = '127.0.0.1:{port}'; SET s3_use_ssl = false; SET s3_url_style = 'path';"
        ))
        .unwrap();
    for url in ["s3://bkt/approved/part.parquet", "s3://bkt/other/part.parquet", "s3://elsewhere/x.parquet"] {
        let _ = query.execute_batch(&format!("SELECT * FROM read_parquet('{url}')"));
    }
    let seen = seen.lock().unwrap().clone();
    let signed = |path: &str| -> Vec<Option<String>> {
        seen.iter().filter(|(target, _)| target.starts_with(path)).map(|(_, auth)| auth.clone()).collect()
    };
    let approved = signed("/bkt/approved/part.parquet");
    assert!(!approved.is_empty(), "no request for the approved object reached the endpoint: {seen:?}");
    assert!(approved.iter().all(|a| a.as_deref().is_some_and(|a| a.contains(KEY_ID))), "{approved:?}");
    for path in ["/bkt/other/part.parquet", "/elsewhere/x.parquet"] {
        let requests = signed(path);
        assert!(!requests.is_empty(), "no request for {path} reached the endpoint: {seen:?}");
        assert!(requests.iter().all(Option::is_none), "{path} was signed: {requests:?}");
    }
}
