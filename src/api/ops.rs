//! Operations endpoints outside `/v1`, and the OpenAPI document: no Content-Type gate, no auth.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{ApiResult, Call};
use crate::cluster::Cluster;
use crate::http::response;
use crate::store::StorageState;

/// GET /health — the process is up, and whether its storage takes writes (`"failed"`: the
/// node is about to exit so that its supervisor restarts it). Never touches the disk.
pub async fn health(c: Call) -> ApiResult {
    let storage = match c.api.service.storage_state() {
        StorageState::Ok => "ok",
        StorageState::Failed(_) => "failed",
    };
    Ok(response::json(
        StatusCode::OK,
        &json!({ "status": "ok", "storage": storage }),
    ))
}

/// GET /ready — storage takes writes and answers reads, and every shard owner is reachable.
pub async fn ready(c: Call) -> ApiResult {
    let api = &c.api;
    // A failed storage is not read: sled calls may block on a broken disk.
    let storage = match api.service.storage_state() {
        StorageState::Failed(_) => "failed",
        StorageState::Ok if api.service.is_ready().await => "ok",
        StorageState::Ok => "unavailable",
    };
    let cluster = api.service.cluster();
    let ready = storage == "ok" && cluster.all_up();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(response::json(
        status,
        &json!({
            "status": if ready { "ready" } else { "not ready" },
            "node": api.node_id,
            "storage": storage,
            "peers": peers(cluster),
        }),
    ))
}

/// The peers and their states.
fn peers(cluster: &Cluster) -> Vec<Value> {
    cluster
        .peers()
        .iter()
        .map(|p| {
            json!({
                "id": p.member.id,
                "http_addr": p.member.http_addr,
                "cluster_addr": p.member.cluster_addr,
                "state": p.state().name(),
                "reason": p.state().reason(),
            })
        })
        .collect()
}

/// GET /v1/cluster (admin) — members, their states and the shard map.
pub async fn cluster(c: Call) -> ApiResult {
    let cluster = c.api.service.cluster();
    let map = cluster.map();
    let owners: Vec<&str> = (0..map.shards())
        .map(|s| map.owner(s).unwrap_or(""))
        .collect();
    let mut members = vec![json!({
        "id": cluster.node_id(),
        "state": "self",
        "shards": owners.iter().filter(|o| **o == cluster.node_id()).count(),
    })];
    for mut peer in peers(cluster) {
        let id = peer["id"].as_str().unwrap_or_default().to_string();
        peer["shards"] = json!(owners.iter().filter(|o| **o == id).count());
        members.push(peer);
    }
    let replication = match c.api.service.replication_status().await {
        Some(groups) => {
            let moves: Vec<Value> = groups
                .iter()
                .filter(|g| !g.target.is_empty() && sorted(&g.voters) != sorted(&g.target))
                .map(|g| json!({ "group": g.group, "voters": g.voters, "target": g.target }))
                .collect();
            json!({
                "factor": groups
                    .iter()
                    .filter(|g| g.group != "meta")
                    .map(|g| g.target.len())
                    .max()
                    .unwrap_or(1),
                "members": c.api.service.member_views(&groups),
                "moves": moves,
                "groups": groups,
            })
        }
        None => json!({ "factor": 1 }),
    };
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "node": cluster.node_id(),
            "shards": map.shards(),
            "digest": format!("{:016x}", map.digest()),
            "members": members,
            "shard_map": owners,
            "replication": replication,
        }),
    ))
}

fn sorted(ids: &[String]) -> Vec<&String> {
    let mut ids: Vec<&String> = ids.iter().collect();
    ids.sort();
    ids
}

/// GET /metrics — Prometheus text.
pub async fn metrics(c: Call) -> ApiResult {
    let api = &c.api;
    let mut text = api.metrics.render();
    text.push_str(&api.service.metrics());
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// The OpenAPI 3 description of the API, as shipped in `openapi/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi/openapi.json");

/// GET /v1/openapi.json — the API's OpenAPI document.
pub async fn openapi(_: Call) -> ApiResult {
    let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI_JSON.as_bytes())));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_operation_is_routed_as_documented() {
        use crate::http::ApiError;
        use hyper::Method;

        let routes = super::super::table();
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut operations = 0;
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                operations += 1;
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let concrete = path.replace("{id}", "45712a61-a1b3-41a4-aa89-9593b909ae3d");
                let missing_id = operation["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t == "missing-id");
                match routes.find(&m, &concrete) {
                    Ok(matched) => {
                        assert!(!missing_id, "{method} {path} is tagged missing-id");
                        assert_eq!(matched.route.template, path, "{method} {path}");
                    }
                    Err(miss) => {
                        assert!(missing_id, "{method} {path} is not routed");
                        assert!(
                            matches!(miss.error, ApiError::MissingPathId(_)),
                            "{method} {path}"
                        );
                    }
                }
            }
        }
        // The 21 `/v1` pairs of the original, the 3 delivery-visibility routes, bulk recovery,
        // the 8 pairs that answer `400 Missing <param>`, /health, /ready, /metrics,
        // /v1/cluster, the two /v1/cluster/members routes and the document itself.
        assert_eq!(operations, 40);
    }
}
