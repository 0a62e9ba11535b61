//! The OpenAPI 3.1 document of every route (`gateway/openapi.json`), served at
//! `GET /openapi.json` without auth. `scripts/fuzz-api.sh` holds the gateway to
//! it with schemathesis; the tests below hold it to the code.

/// The document, as served.
pub(crate) const DOCUMENT: &str = include_str!("../openapi.json");

#[cfg(test)]
mod tests {
    use super::DOCUMENT;
    use crate::ApiError;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("gateway/openapi.json is JSON")
    }

    #[test]
    fn is_openapi_3_1() {
        let d = doc();
        assert!(d["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "openapi: {}", d["openapi"]);
        assert!(d["info"]["title"].is_string() && d["info"]["version"].is_string());
        assert!(d["paths"].as_object().is_some_and(|p| !p.is_empty()));
    }

    /// The route literals of `handlers.rs` (match arms and path prefixes),
    /// read from its source so that a new route cannot slip past the document.
    fn routes_in_code() -> Vec<String> {
        let src = include_str!("handlers.rs");
        let mut routes = Vec::new();
        for line in src.lines().map(str::trim) {
            // `"/healthz" => {` in dispatch, `(_, "/healthz") => "/healthz",` in route_name.
            for (i, _) in line.match_indices("\"/") {
                let rest = &line[i + 1..];
                let Some(end) = rest.find('"') else { continue };
                let lit = &rest[..end];
                let after = rest[end + 1..].trim_start();
                let is_arm = after.starts_with("=>") || after.starts_with(") =>");
                let is_prefix = line[..i].ends_with("starts_with(");
                if is_prefix {
                    routes.push(format!("{lit}*"));
                } else if is_arm || line.contains("=> \"/") {
                    routes.push(lit.to_string());
                }
            }
        }
        routes.sort();
        routes.dedup();
        routes
    }

    #[test]
    fn every_route_in_the_code_is_documented() {
        let d = doc();
        let paths = d["paths"].as_object().unwrap();
        let routes = routes_in_code();
        for must in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/services", "/v1/sql", "/v1/features/*"] {
            assert!(routes.contains(&must.to_string()), "the route scan missed {must}: {routes:?}");
        }
        for r in &routes {
            let documented = match r.strip_suffix('*') {
                Some(prefix) => paths.keys().any(|p| p.starts_with(prefix) && p.len() > prefix.len()),
                None => paths.contains_key(r.as_str()),
            };
            assert!(documented, "route {r} is served but not in gateway/openapi.json");
        }
        // And each route's metric label is one of the documented templates.
        for p in paths.keys() {
            let method = if paths[p].get("post").is_some() { hyper::Method::POST } else { hyper::Method::GET };
            let concrete = p.replace("{service}", "user_features");
            assert_eq!(crate::handlers::route_name(&method, &concrete), p.as_str(), "metric label of {p}");
        }
    }

    #[test]
    fn every_error_code_is_documented_with_its_status() {
        let d = doc();
        let text = DOCUMENT;
        let enum_codes: Vec<&str> = d["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
            ["enum"]
            .as_array()
            .expect("Error.code has an enum")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let all = ApiError::all();
        assert_eq!(enum_codes.len(), all.len(), "Error.code enum vs ApiError: {enum_codes:?}");
        for e in all {
            let (code, status) = (e.code(), e.status().as_u16().to_string());
            assert!(enum_codes.contains(&code), "code {code} is not in the Error schema");
            // Some operation documents this status with this code in its enum.
            let documented =
                d["paths"].as_object().unwrap().values().flat_map(|item| item.as_object().unwrap().values()).any(
                    |op| {
                        let r = &op["responses"][&status];
                        serde_json::to_string(r).unwrap().contains(&format!("\"{code}\""))
                    },
                );
            let connection_level = matches!(e, ApiError::TooManyConnections(_) | ApiError::MethodNotAllowed { .. });
            assert!(
                documented || (connection_level && text.contains(&format!("{status} `{code}`"))),
                "no response documents {status} {code}"
            );
            if e.retry_after().is_some() && documented {
                for item in d["paths"].as_object().unwrap().values() {
                    for op in item.as_object().unwrap().values() {
                        let r = &op["responses"][&status];
                        if serde_json::to_string(r).unwrap().contains(&format!("\"{code}\"")) {
                            assert!(r["headers"]["Retry-After"].is_object(), "{status} {code} without Retry-After");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn public_routes_need_no_auth_and_the_others_do() {
        let d = doc();
        assert_eq!(d["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        for (path, item) in d["paths"].as_object().unwrap() {
            for op in item.as_object().unwrap().values() {
                let public = ["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(&path.as_str());
                assert_eq!(op["security"] == serde_json::json!([]), public, "{path}");
                assert_eq!(op["responses"]["401"].is_object(), !public, "{path}");
            }
        }
    }
}
