//! Guard checkers shared by the error tests. Each takes a closure building the request
//! *without* the part under test, so the same check runs against every route.

use crate::common::*;

/// `api-key` is checked before `username`, so no headers at all, or only
/// `username`, both give `Missing API key header value`.
pub async fn assert_missing_auth_headers(make: impl Fn() -> Req, who: &impl AsCreds) {
    make().send().await.expect_error(401, MISSING_API_KEY);
    make()
        .username(who.username())
        .send()
        .await
        .expect_error(401, MISSING_API_KEY);
    make()
        .api_key(who.api_key())
        .send()
        .await
        .expect_error(401, MISSING_USERNAME);
}

/// A known username, key that does not verify (an empty key is present but invalid).
pub async fn assert_wrong_key(make: impl Fn() -> Req, username: &str) {
    make()
        .key(username, &random_hex40())
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
    make()
        .key(username, "")
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
}

/// No account with that username (the lookup is case-sensitive).
pub async fn assert_unknown_username(make: impl Fn() -> Req, who: &impl AsCreds) {
    make()
        .key(&format!("nobody-{}", unknown_id()), who.api_key())
        .send()
        .await
        .expect_error(401, UNKNOWN_USERNAME);
    make()
        .key(&who.username().to_uppercase(), who.api_key())
        .send()
        .await
        .expect_error(401, UNKNOWN_USERNAME);
}

/// The Content-Type gate: anything but `application/json...` (case-insensitive, at position 0) is a plain-text
/// 415, before auth. `make` builds a request that would otherwise succeed with `ok_status`;
/// that accepted variant is sent last, so it may change state.
pub async fn assert_content_type_gate(make: impl Fn() -> Req, ok_status: u16) {
    make()
        .no_content_type()
        .send()
        .await
        .expect_unsupported_media_type();
    for ct in [
        "",
        "text/plain",
        "text/plain; application/json",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        make()
            .content_type(ct)
            .send()
            .await
            .expect_unsupported_media_type();
    }
    make()
        .content_type("APPLICATION/JSON; charset=utf-8")
        .send()
        .await
        .expect(ok_status);
}

/// The gate also comes before auth: no auth headers and a bad content type → 415, not 401.
pub async fn assert_content_type_before_auth(make: impl Fn() -> Req) {
    make()
        .content_type("text/plain")
        .send()
        .await
        .expect_unsupported_media_type();
    make()
        .no_content_type()
        .send()
        .await
        .expect_unsupported_media_type();
}

/// Query strings that must all give 400 `Invalid limit or start parameter` (plain
/// digits only, 0 <= start <= 999999999999999, 1 <= limit <= 100).
pub const BAD_PAGING: &[&str] = &[
    "start=-1&limit=10",
    "start=1000000000000000&limit=10",
    "start=9999999999999991&limit=10",
    "start=99999999999999999999999999&limit=10",
    "start=0&limit=0",
    "start=0&limit=101",
    "start=0&limit=-1",
    "start=0&limit=abc",
    "start=abc&limit=10",
    "start=0&limit=1.0",
    "start=0&limit=",
    "start=&limit=10",
    "start=0&limit=%2B1",
    "start=0",
    "limit=10",
    "",
];

/// Every bad paging query → 400. `make(query)` builds the authenticated request.
pub async fn assert_bad_paging(make: impl Fn(&str) -> Req) {
    for query in BAD_PAGING {
        let r = make(query).send().await;
        assert_eq!(r.status, 400, "paging `{query}` should be refused: {r}");
        r.expect_error(400, INVALID_PAGING);
    }
}

/// Bodies that are not JSON, and JSON that is not an object.
pub async fn assert_bad_json_bodies(make: impl Fn() -> Req) {
    for raw in ["{", "not json", "{\"a\": }", "{\"a\": 1,}", ""] {
        let r = make().body(raw).send().await;
        assert_eq!(r.status, 400, "body {raw:?} should be refused: {r}");
        r.expect_error(400, "Invalid JSON body");
    }
    for raw in ["[]", "[{\"a\": 1}]", "\"text\"", "1", "null", "true"] {
        let r = make().body(raw).send().await;
        assert_eq!(r.status, 400, "body {raw:?} should be refused: {r}");
        r.expect_error(400, "JSON body must be an object");
    }
}
