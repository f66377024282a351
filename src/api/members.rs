//! `/v1/cluster/members`: admitting a node into a replicated cluster, and removing one
//! (admin).

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::{ApiResult, Call};
use crate::cluster::Member;
use crate::http::request::invalid_field;
use crate::http::{response, ApiError};
use crate::service::{Admitted, MemberList};

/// Longest node id accepted.
const MAX_ID_BYTES: usize = 64;

/// POST /v1/cluster/members — admin: admits the node `{"id", "cluster_addr", "http_addr"}`
/// (started with `cluster.join = true`); its share of the groups then moves to it. 201 with
/// the member list; 200 when it was a member already, with the same addresses.
pub async fn admit(mut c: Call) -> ApiResult {
    let body = c.req.json_object().await?;
    let member = Member {
        id: node_id(&body)?,
        cluster_addr: address(&body, "cluster_addr")?,
        http_addr: address(&body, "http_addr")?,
    };
    let (status, list) = match c.api.service.admit_member(member).await? {
        Admitted::New(list) => (StatusCode::CREATED, list),
        Admitted::Already(list) => (StatusCode::OK, list),
    };
    Ok(response::json(status, &json!({ "members": views(&list) })))
}

/// DELETE /v1/cluster/members/<id> — admin: starts removing member `id`. 202 with the
/// member list (the member `draining`); the groups move their replicas off it, and it is
/// `removed` once it holds none (`GET /v1/cluster`). Then its process can be stopped and
/// its data deleted.
pub async fn remove(c: Call) -> ApiResult {
    let id = c.raw_id.clone().unwrap_or_default();
    let list = c.api.service.drain_member(&id).await?;
    Ok(response::json(
        StatusCode::ACCEPTED,
        &json!({ "members": views(&list) }),
    ))
}

fn views(list: &MemberList) -> Vec<Value> {
    list.members
        .iter()
        .map(|m| {
            json!({
                "id": m.member.id,
                "cluster_addr": m.member.cluster_addr,
                "http_addr": m.member.http_addr,
                "state": m.state.name(),
            })
        })
        .collect()
}

fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match body.get(name) {
        None => Err(ApiError::BadRequest(format!("Missing {name} field"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid_field(name)),
    }
}

/// A node id as `cluster.node_id` takes it: not empty, no `@`, printable.
fn node_id(body: &Map<String, Value>) -> Result<String, ApiError> {
    let id = field(body, "id")?;
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && !id.contains('@')
        && id.chars().all(|c| c.is_ascii_graphic());
    match valid {
        true => Ok(id.to_string()),
        false => Err(invalid_field("id")),
    }
}

/// `host:port`, the port a number from 1.
fn address(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    let addr = field(body, name)?;
    let valid = addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host.chars().all(|c| c.is_ascii_graphic())
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    match valid {
        true => Ok(addr.to_string()),
        false => Err(invalid_field(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn ids_and_addresses_are_checked() {
        assert_eq!(node_id(&body(json!({"id": "node4"}))).unwrap(), "node4");
        for bad in [
            json!({"id": ""}),
            json!({"id": "a@b"}),
            json!({"id": 4}),
            json!({"id": "a b"}),
        ] {
            assert!(node_id(&body(bad)).is_err());
        }
        let missing = node_id(&body(json!({}))).unwrap_err();
        assert_eq!(missing.to_string(), "Missing id field");
        assert!(address(&body(json!({"a": "127.0.0.4:7081"})), "a").is_ok());
        assert!(address(&body(json!({"a": "host.example:8081"})), "a").is_ok());
        for bad in ["127.0.0.4", ":7081", "h:0", "h:99999", "h :1"] {
            assert!(address(&body(json!({ "a": bad })), "a").is_err(), "{bad}");
        }
    }
}
