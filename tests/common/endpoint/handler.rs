//! How the endpoint server answers: the recorded state, the scripted POST answers and the
//! path prefixes that select misbehaviour (see [`super::EndpointServer`]).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{PostAnswer, RecordedGet, RecordedPost};

/// The answers programmed for the POSTs to one path: `queue` first, then `then` forever.
pub(super) struct PostScript {
    pub(super) queue: VecDeque<PostAnswer>,
    pub(super) then: PostAnswer,
}

#[derive(Default)]
pub(super) struct EndpointState {
    pub(super) gets: Vec<RecordedGet>,
    pub(super) posts: Vec<RecordedPost>,
    /// Per path (exactly as received), how POSTs are answered; GETs are never affected.
    pub(super) scripts: HashMap<String, PostScript>,
}

/// Strips `<prefix><number>/` from `path`, returning the number and the rest.
fn strip_numbered<'a>(path: &'a str, prefix: &str) -> Option<(u64, &'a str)> {
    let rest = path.strip_prefix(prefix)?;
    let (num, rest) = rest.split_once('/').unwrap_or((rest, ""));
    Some((num.parse().ok()?, rest))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn endpoint_response(code: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Bytes::new()
    } else {
        body.into()
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap()
}

pub(super) async fn endpoint_handle(
    state: Arc<Mutex<EndpointState>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let close = path.starts_with("/conn-close/");
    let query = parse_query(req.uri().query().unwrap_or(""));
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut scripted: Option<PostAnswer> = None;
    {
        let mut st = state.lock().unwrap();
        if method == hyper::Method::POST {
            scripted = st.scripts.get_mut(&path).map(|script| {
                let then = script.then.clone();
                script.queue.pop_front().unwrap_or(then)
            });
            st.posts.push(RecordedPost {
                path: path.clone(),
                headers: headers.clone(),
                body: body.clone(),
                at: Instant::now(),
                answered: scripted
                    .as_ref()
                    .map_or_else(|| unscripted_post_status(&path), |a| a.status),
            });
        } else if method == hyper::Method::GET {
            st.gets.push(RecordedGet {
                path: path.clone(),
                query: query.clone(),
            });
        }
    }
    if let Some(answer) = scripted {
        if !answer.hold.is_zero() {
            tokio::time::sleep(answer.hold).await;
        }
        let body = answer.body.unwrap_or_else(|| "{}".into());
        let mut response = endpoint_response(answer.status, body);
        if let Some(value) = answer.retry_after {
            let value = hyper::header::HeaderValue::from_str(&value).unwrap();
            response.headers_mut().insert("retry-after", value);
        }
        return Ok(response);
    }
    // `/slow/<ms>/rest`: wait, then behave like `/rest`.
    let path = match strip_numbered(&path, "/slow/") {
        Some((ms, rest)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("/{rest}")
        }
        None => path,
    };
    if close {
        let rest = path.trim_start_matches("/conn-close");
        let mut response = answer(rest, &method, &query);
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        return Ok(response);
    }
    Ok(answer(&path, &method, &query))
}

/// What [`answer`] gives an unscripted POST to `path` (through `/slow/<ms>/`).
fn unscripted_post_status(path: &str) -> u16 {
    let path = match strip_numbered(path, "/slow/") {
        Some((_, rest)) => format!("/{rest}"),
        None => path.to_string(),
    };
    match strip_numbered(&path, "/status/").or_else(|| strip_numbered(&path, "/redirect/")) {
        Some((code, _)) => StatusCode::from_u16(code as u16).map_or(200, |s| s.as_u16()),
        None => 200,
    }
}

fn answer(path: &str, method: &hyper::Method, query: &[(String, String)]) -> Response<Full<Bytes>> {
    if let Some((code, _)) = strip_numbered(path, "/status/") {
        return endpoint_response(code as u16, "{}");
    }
    if let Some((code, rest)) = strip_numbered(path, "/redirect/") {
        if *method != hyper::Method::POST {
            return answer(&format!("/{rest}"), method, query);
        }
        let mut response = endpoint_response(code as u16, "{}");
        let location = hyper::header::HeaderValue::from_str(&format!("/{rest}")).unwrap();
        response.headers_mut().insert("location", location);
        return response;
    }
    if *method != hyper::Method::GET {
        return endpoint_response(200, "{}");
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if let Some(value) = param("echo") {
        let value = if path.starts_with("/bad-echo/") {
            format!("{value}-wrong")
        } else {
            value
        };
        return endpoint_response(200, json!({ "echo": value }).to_string());
    }
    if param("api_key").is_some() || param("secret_key").is_some() {
        if let Some((code, _)) = strip_numbered(path, "/reset-status/") {
            return endpoint_response(code as u16, "not json");
        }
        return endpoint_response(200, "{}");
    }
    endpoint_response(200, "{}")
}
