//! The route table: every method and path the node serves, each declared once with its
//! gates and its handler.
//!
//! A row is: method, path template (its `{id}` segment named for `Missing <param>`), the
//! Content-Type gate (every `/v1` route; not the operations endpoints nor the OpenAPI
//! document), and an [`Endpoint`]: the authentication gate and the handler.

use hyper::Method;

use super::{
    accounts, deliveries, keys, members, ops, registrations, subscriptions, triggers, Endpoint,
};
use crate::http::router::{Route, Routes};

/// One `/v1` row (Content-Type gated).
fn v1(method: Method, template: &'static str, param: &'static str, h: Endpoint) -> Route<Endpoint> {
    Route {
        method,
        template,
        param,
        gated: true,
        endpoint: h,
    }
}

/// One operations row (no Content-Type gate).
fn ops(template: &'static str, h: Endpoint) -> Route<Endpoint> {
    Route {
        method: Method::GET,
        template,
        param: "",
        gated: false,
        endpoint: h,
    }
}

/// The table (one row per line: it is read as a table).
#[rustfmt::skip]
pub fn table() -> Routes<Endpoint> {
    use Endpoint::{Admin, Caller, Credentials, Open};
    use Method as M;
    Routes::new(vec![
        v1(M::POST, "/v1/account", "", Open(|c| Box::pin(accounts::create(c)))),
        v1(M::GET, "/v1/account/{id}", "account_id", Credentials(|c, k| Box::pin(accounts::get(c, k)))),
        v1(M::PATCH, "/v1/account", "", Credentials(|c, k| Box::pin(accounts::update(c, k)))),
        v1(M::DELETE, "/v1/account/{id}", "account_id", Credentials(|c, k| Box::pin(accounts::delete(c, k)))),
        v1(M::GET, "/v1/accounts", "", Admin(|c, _| Box::pin(accounts::list(c)))),
        v1(M::DELETE, "/v1/accounts", "", Admin(|c, _| Box::pin(accounts::delete_all(c)))),
        v1(M::POST, "/v1/account/reset/apikey", "", Open(|c| Box::pin(keys::reset_api_key(c)))),
        v1(M::POST, "/v1/account/reset/secretkey", "", Credentials(|c, k| Box::pin(keys::reset_secret_key(c, k)))),
        v1(M::POST, "/v1/webhook/registration", "", Credentials(|c, k| Box::pin(registrations::create(c, k)))),
        v1(M::GET, "/v1/webhook/registration", "", Credentials(|c, k| Box::pin(registrations::list_own(c, k)))),
        v1(M::PATCH, "/v1/webhook/registration/{id}", "registration_id", Caller(|c, a| Box::pin(registrations::update(c, a)))),
        v1(M::DELETE, "/v1/webhook/registration/{id}", "registration_id", Caller(|c, a| Box::pin(registrations::delete(c, a)))),
        v1(M::GET, "/v1/webhook/registrations", "", Caller(|c, _| Box::pin(registrations::list(c)))),
        v1(M::DELETE, "/v1/webhook/registrations", "", Admin(|c, _| Box::pin(registrations::delete_all(c)))),
        // The original named this id `subscription_id`, although it is a registration's.
        v1(M::POST, "/v1/webhook/subscription/{id}", "subscription_id", Caller(|c, a| Box::pin(subscriptions::create(c, a)))),
        v1(M::GET, "/v1/webhook/subscription", "", Caller(|c, a| Box::pin(subscriptions::list_own(c, a)))),
        v1(M::DELETE, "/v1/webhook/subscription/{id}", "subscription_id", Caller(|c, a| Box::pin(subscriptions::delete(c, a)))),
        v1(M::GET, "/v1/webhook/subscriptions", "", Caller(|c, _| Box::pin(subscriptions::list(c)))),
        v1(M::DELETE, "/v1/webhook/subscriptions", "", Admin(|c, _| Box::pin(subscriptions::delete_all(c)))),
        v1(M::POST, "/v1/webhook/triggered/{id}", "registration_id", Caller(|c, a| Box::pin(triggers::create(c, a)))),
        v1(M::GET, "/v1/webhook/triggered", "", Caller(|c, _| Box::pin(triggers::list(c)))),
        v1(M::GET, "/v1/webhook/triggered/{id}", "registration_id", Caller(|c, a| Box::pin(triggers::status(c, a)))),
        v1(M::GET, "/v1/webhook/triggered/{id}/deliveries", "", Caller(|c, a| Box::pin(triggers::deliveries(c, a)))),
        v1(M::POST, "/v1/webhook/triggered/{id}/redeliver", "", Caller(|c, a| Box::pin(triggers::redeliver(c, a)))),
        v1(M::POST, "/v1/webhook/deliveries/recover", "", Credentials(|c, k| Box::pin(deliveries::recover(c, k)))),
        v1(M::GET, "/v1/cluster", "", Admin(|c, _| Box::pin(ops::cluster(c)))),
        v1(M::POST, "/v1/cluster/members", "", Admin(|c, _| Box::pin(members::admit(c)))),
        v1(M::DELETE, "/v1/cluster/members/{id}", "member_id", Admin(|c, _| Box::pin(members::remove(c)))),
        ops("/health", Open(|c| Box::pin(ops::health(c)))),
        ops("/ready", Open(|c| Box::pin(ops::ready(c)))),
        ops("/metrics", Open(|c| Box::pin(ops::metrics(c)))),
        ops("/v1/openapi.json", Open(|c| Box::pin(ops::openapi(c)))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ApiError;

    /// The route template serving `method` + `path`.
    fn ok(method: Method, path: &str) -> &'static str {
        table()
            .find(&method, path)
            .ok()
            .map(|m| m.route.template)
            .unwrap()
    }

    #[test]
    fn the_21_pairs_and_the_delivery_routes() {
        for (m, p, template) in [
            (Method::POST, "/v1/account", "/v1/account"),
            (Method::GET, "/v1/account/x", "/v1/account/{id}"),
            (Method::PATCH, "/v1/account/", "/v1/account"),
            (Method::DELETE, "/v1/account/x/", "/v1/account/{id}"),
            (Method::GET, "/v1/accounts", "/v1/accounts"),
            (Method::DELETE, "/v1/accounts/", "/v1/accounts"),
            (
                Method::POST,
                "/v1/account/reset/apikey",
                "/v1/account/reset/apikey",
            ),
            (
                Method::POST,
                "/v1/account/reset/secretkey",
                "/v1/account/reset/secretkey",
            ),
            (
                Method::POST,
                "/v1/webhook/registration",
                "/v1/webhook/registration",
            ),
            (
                Method::GET,
                "/v1/webhook/registration",
                "/v1/webhook/registration",
            ),
            (
                Method::PATCH,
                "/v1/webhook/registration/r",
                "/v1/webhook/registration/{id}",
            ),
            (
                Method::DELETE,
                "/v1/webhook/registration/r",
                "/v1/webhook/registration/{id}",
            ),
            (
                Method::GET,
                "/v1/webhook/registrations",
                "/v1/webhook/registrations",
            ),
            (
                Method::DELETE,
                "/v1/webhook/registrations",
                "/v1/webhook/registrations",
            ),
            (
                Method::POST,
                "/v1/webhook/subscription/r",
                "/v1/webhook/subscription/{id}",
            ),
            (
                Method::GET,
                "/v1/webhook/subscription",
                "/v1/webhook/subscription",
            ),
            (
                Method::DELETE,
                "/v1/webhook/subscription/s",
                "/v1/webhook/subscription/{id}",
            ),
            (
                Method::GET,
                "/v1/webhook/subscriptions",
                "/v1/webhook/subscriptions",
            ),
            (
                Method::DELETE,
                "/v1/webhook/subscriptions",
                "/v1/webhook/subscriptions",
            ),
            (
                Method::POST,
                "/v1/webhook/triggered/r",
                "/v1/webhook/triggered/{id}",
            ),
            (
                Method::GET,
                "/v1/webhook/triggered",
                "/v1/webhook/triggered",
            ),
            (
                Method::GET,
                "/v1/webhook/triggered/t",
                "/v1/webhook/triggered/{id}",
            ),
            (
                Method::GET,
                "/v1/webhook/triggered/t/deliveries",
                "/v1/webhook/triggered/{id}/deliveries",
            ),
            (
                Method::POST,
                "/v1/webhook/triggered/t/redeliver",
                "/v1/webhook/triggered/{id}/redeliver",
            ),
        ] {
            assert_eq!(ok(m.clone(), p), template, "{m} {p}");
        }
    }

    #[test]
    fn missing_ids_are_400_before_the_gate() {
        for (m, p, param) in [
            (Method::GET, "/v1/account", "account_id"),
            (Method::DELETE, "/v1/account/", "account_id"),
            (Method::PATCH, "/v1/webhook/registration", "registration_id"),
            (
                Method::DELETE,
                "/v1/webhook/registration",
                "registration_id",
            ),
            (Method::POST, "/v1/webhook/subscription", "subscription_id"),
            (
                Method::DELETE,
                "/v1/webhook/subscription",
                "subscription_id",
            ),
            (Method::POST, "/v1/webhook/triggered", "registration_id"),
        ] {
            let e = table().find(&m, p).err().unwrap();
            assert!(!e.gated);
            assert_eq!(e.error.to_string(), format!("Missing {param}"));
        }
    }

    #[test]
    fn accidental_pairs_are_405_with_the_originals_allow() {
        for (m, p, allow) in [
            (Method::POST, "/v1/account/x", "DELETE, GET"),
            (Method::PATCH, "/v1/account/x", "DELETE, GET"),
            (Method::PUT, "/v1/account", "DELETE, GET, PATCH, POST"),
            (Method::POST, "/v1/webhook/registration/x", "DELETE, PATCH"),
            (Method::GET, "/v1/webhook/registration/x", "DELETE, PATCH"),
            (
                Method::PUT,
                "/v1/webhook/registration",
                "DELETE, GET, PATCH, POST",
            ),
            (Method::GET, "/v1/webhook/subscription/x", "DELETE, POST"),
            (Method::PUT, "/v1/webhook/subscription", "DELETE, GET, POST"),
            (Method::PATCH, "/v1/accounts", "DELETE, GET"),
            (Method::DELETE, "/v1/webhook/triggered/x", "GET, POST"),
            (Method::POST, "/v1/webhook/triggered/x/deliveries", "GET"),
            (Method::GET, "/v1/webhook/triggered/x/redeliver", "POST"),
            (Method::DELETE, "/v1/webhook/triggered", "GET, POST"),
            (Method::GET, "/v1/account/reset/apikey", "POST"),
            (Method::POST, "/v1/cluster", "GET"),
        ] {
            let e = table().find(&m, p).err().unwrap();
            assert!(
                matches!(&e.error, ApiError::MethodNotAllowed { allow: a } if a == allow),
                "{m} {p}: {:?}",
                e.error
            );
            assert!(e.gated, "{m} {p}");
        }
    }

    #[test]
    fn the_operations_endpoints_and_the_openapi_document_are_ungated() {
        for p in [
            "/health",
            "/ready",
            "/metrics",
            "/v1/openapi.json",
            "/v1/openapi.json/",
        ] {
            let routes = table();
            let m = routes.find(&Method::GET, p).ok().unwrap();
            assert!(!m.route.gated, "{p}");
            let e = table().find(&Method::POST, p).err().unwrap();
            assert!(matches!(&e.error, ApiError::MethodNotAllowed { allow } if allow == "GET"));
            assert!(!e.gated, "{p}");
        }
        assert!(matches!(
            table()
                .find(&Method::GET, "/v1/openapi.yaml")
                .err()
                .unwrap()
                .error,
            ApiError::NotFound
        ));
    }
}
