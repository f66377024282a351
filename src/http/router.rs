//! Routing: method + path → the endpoint that serves it, or the framework answer.
//!
//! Every resource is reachable with and without its id segment, as in the original; the
//! pairs the original only had by accident answer 405 instead of crashing, and a missing
//! id on a route that needs one answers `400 Missing <param>` (api.md B.8: path id first).

use hyper::Method;

use super::error::ApiError;

/// One served operation; `id` is the raw path segment (validated by the handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// POST /v1/account
    CreateAccount,
    /// GET /v1/account/<id>
    GetAccount(String),
    /// PATCH /v1/account
    UpdateAccount,
    /// DELETE /v1/account/<id>
    DeleteAccount(String),
    /// GET /v1/accounts
    ListAccounts,
    /// DELETE /v1/accounts
    DeleteAccounts,
    /// POST /v1/account/reset/apikey
    ResetApiKey,
    /// POST /v1/account/reset/secretkey
    ResetSecretKey,
    /// POST /v1/webhook/registration
    CreateRegistration,
    /// GET /v1/webhook/registration
    ListOwnRegistrations,
    /// PATCH /v1/webhook/registration/<id>
    UpdateRegistration(String),
    /// DELETE /v1/webhook/registration/<id>
    DeleteRegistration(String),
    /// GET /v1/webhook/registrations
    ListRegistrations,
    /// DELETE /v1/webhook/registrations
    DeleteRegistrations,
    /// POST /v1/webhook/subscription/<registration_id>
    Subscribe(String),
    /// GET /v1/webhook/subscription
    ListOwnSubscriptions,
    /// DELETE /v1/webhook/subscription/<id>
    DeleteSubscription(String),
    /// GET /v1/webhook/subscriptions
    ListSubscriptions,
    /// DELETE /v1/webhook/subscriptions
    DeleteSubscriptions,
    /// POST /v1/webhook/triggered/<registration_id>
    Trigger(String),
    /// GET /v1/webhook/triggered
    ListTriggered,
    /// GET /v1/webhook/triggered/<id>
    TriggerStatus(String),
    /// GET /v1/webhook/triggered/<id>/deliveries
    ListDeliveries(String),
    /// POST /v1/webhook/triggered/<id>/redeliver
    Redeliver(String),
    /// GET /v1/cluster
    Cluster,
    /// GET /health
    Health,
    /// GET /ready
    Ready,
    /// GET /metrics
    Metrics,
    /// GET /v1/openapi.json (no auth, no Content-Type gate)
    OpenApi,
}

impl Endpoint {
    /// The route template, for logs and metrics (never the raw path).
    pub fn template(&self) -> &'static str {
        match self {
            Endpoint::CreateAccount | Endpoint::UpdateAccount => "/v1/account",
            Endpoint::GetAccount(_) | Endpoint::DeleteAccount(_) => "/v1/account/{id}",
            Endpoint::ListAccounts | Endpoint::DeleteAccounts => "/v1/accounts",
            Endpoint::ResetApiKey => "/v1/account/reset/apikey",
            Endpoint::ResetSecretKey => "/v1/account/reset/secretkey",
            Endpoint::CreateRegistration | Endpoint::ListOwnRegistrations => {
                "/v1/webhook/registration"
            }
            Endpoint::UpdateRegistration(_) | Endpoint::DeleteRegistration(_) => {
                "/v1/webhook/registration/{id}"
            }
            Endpoint::ListRegistrations | Endpoint::DeleteRegistrations => {
                "/v1/webhook/registrations"
            }
            Endpoint::Subscribe(_) | Endpoint::DeleteSubscription(_) => {
                "/v1/webhook/subscription/{id}"
            }
            Endpoint::ListOwnSubscriptions => "/v1/webhook/subscription",
            Endpoint::ListSubscriptions | Endpoint::DeleteSubscriptions => {
                "/v1/webhook/subscriptions"
            }
            Endpoint::Trigger(_) | Endpoint::TriggerStatus(_) => "/v1/webhook/triggered/{id}",
            Endpoint::ListDeliveries(_) => "/v1/webhook/triggered/{id}/deliveries",
            Endpoint::Redeliver(_) => "/v1/webhook/triggered/{id}/redeliver",
            Endpoint::ListTriggered => "/v1/webhook/triggered",
            Endpoint::Cluster => "/v1/cluster",
            Endpoint::Health => "/health",
            Endpoint::Ready => "/ready",
            Endpoint::Metrics => "/metrics",
            Endpoint::OpenApi => "/v1/openapi.json",
        }
    }

    /// True for the `/v1` API endpoints (the Content-Type gate applies); false for the
    /// operations endpoints and the OpenAPI document.
    pub fn is_api(&self) -> bool {
        !matches!(
            self,
            Endpoint::Health | Endpoint::Ready | Endpoint::Metrics | Endpoint::OpenApi
        )
    }
}

/// Why a request matched no endpoint.
#[derive(Debug)]
pub struct NoEndpoint {
    /// The answer to give.
    pub error: ApiError,
    /// Whether the Content-Type gate applies before that answer (every `/v1` path does,
    /// except a missing path id, which api.md B.8 checks first).
    pub gated: bool,
    /// Route template for logs and metrics.
    pub template: &'static str,
}

/// The path segments after the leading `/`, with one trailing slash tolerated.
fn segments(path: &str) -> Vec<&str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/').collect()
}

/// Resources reachable with an optional trailing id.
#[derive(Clone, Copy)]
enum Resource {
    Account,
    Registration,
    Subscription,
    Triggered,
}

impl Resource {
    fn template(self, with_id: bool) -> &'static str {
        match (self, with_id) {
            (Resource::Account, false) => "/v1/account",
            (Resource::Account, true) => "/v1/account/{id}",
            (Resource::Registration, false) => "/v1/webhook/registration",
            (Resource::Registration, true) => "/v1/webhook/registration/{id}",
            (Resource::Subscription, false) => "/v1/webhook/subscription",
            (Resource::Subscription, true) => "/v1/webhook/subscription/{id}",
            (Resource::Triggered, false) => "/v1/webhook/triggered",
            (Resource::Triggered, true) => "/v1/webhook/triggered/{id}",
        }
    }

    /// The methods a path of this resource accepts, with or without its id.
    fn allow(self, with_id: bool) -> &'static str {
        match (self, with_id) {
            (Resource::Account, false) => "DELETE, GET, PATCH, POST",
            (Resource::Account, true) => "DELETE, GET",
            (Resource::Registration, false) => "DELETE, GET, PATCH, POST",
            (Resource::Registration, true) => "DELETE, PATCH",
            (Resource::Subscription, false) => "DELETE, GET, POST",
            (Resource::Subscription, true) => "DELETE, POST",
            (Resource::Triggered, _) => "GET, POST",
        }
    }

    /// The name in `Missing <param>` (the subscription POST reports `subscription_id`, as
    /// the original did, although it takes a registration id).
    fn param(self) -> &'static str {
        match self {
            Resource::Account => "account_id",
            Resource::Registration => "registration_id",
            Resource::Subscription => "subscription_id",
            Resource::Triggered => "registration_id",
        }
    }
}

const ALLOW_COLLECTION: &str = "DELETE, GET";
const ALLOW_POST: &str = "POST";
const ALLOW_GET: &str = "GET";

/// Resolves `method` + `path` to an endpoint.
pub fn route(method: &Method, path: &str) -> Result<Endpoint, NoEndpoint> {
    let segs = segments(path);
    let not_found = |gated| NoEndpoint {
        error: ApiError::NotFound,
        gated,
        template: "unknown",
    };
    let not_allowed = |allow, template| NoEndpoint {
        error: ApiError::MethodNotAllowed { allow },
        gated: true,
        template,
    };
    let (resource, id) = match segs.as_slice() {
        ["health"] | ["ready"] | ["metrics"] => {
            if method != Method::GET {
                return Err(NoEndpoint {
                    error: ApiError::MethodNotAllowed { allow: ALLOW_GET },
                    gated: false,
                    template: "ops",
                });
            }
            return Ok(match segs[0] {
                "health" => Endpoint::Health,
                "ready" => Endpoint::Ready,
                _ => Endpoint::Metrics,
            });
        }
        ["v1", "cluster"] => {
            return if method == Method::GET {
                Ok(Endpoint::Cluster)
            } else {
                Err(not_allowed(ALLOW_GET, "/v1/cluster"))
            };
        }
        ["v1", "openapi.json"] => {
            // Like the operations endpoints: no Content-Type gate, even for a wrong method.
            return if method == Method::GET {
                Ok(Endpoint::OpenApi)
            } else {
                Err(NoEndpoint {
                    error: ApiError::MethodNotAllowed { allow: ALLOW_GET },
                    gated: false,
                    template: "/v1/openapi.json",
                })
            };
        }
        ["v1", "accounts"] => {
            return match *method {
                Method::GET => Ok(Endpoint::ListAccounts),
                Method::DELETE => Ok(Endpoint::DeleteAccounts),
                _ => Err(not_allowed(ALLOW_COLLECTION, "/v1/accounts")),
            }
        }
        ["v1", "account", "reset", which @ ("apikey" | "secretkey")] => {
            let (endpoint, template) = if *which == "apikey" {
                (Endpoint::ResetApiKey, "/v1/account/reset/apikey")
            } else {
                (Endpoint::ResetSecretKey, "/v1/account/reset/secretkey")
            };
            return if method == Method::POST {
                Ok(endpoint)
            } else {
                Err(not_allowed(ALLOW_POST, template))
            };
        }
        ["v1", "webhook", collection @ ("registrations" | "subscriptions")] => {
            let regs = *collection == "registrations";
            return match (method.clone(), regs) {
                (Method::GET, true) => Ok(Endpoint::ListRegistrations),
                (Method::DELETE, true) => Ok(Endpoint::DeleteRegistrations),
                (Method::GET, false) => Ok(Endpoint::ListSubscriptions),
                (Method::DELETE, false) => Ok(Endpoint::DeleteSubscriptions),
                (_, true) => Err(not_allowed(ALLOW_COLLECTION, "/v1/webhook/registrations")),
                (_, false) => Err(not_allowed(ALLOW_COLLECTION, "/v1/webhook/subscriptions")),
            };
        }
        ["v1", "account"] => (Resource::Account, None),
        ["v1", "account", id] => (Resource::Account, Some(*id)),
        ["v1", "webhook", "registration"] => (Resource::Registration, None),
        ["v1", "webhook", "registration", id] => (Resource::Registration, Some(*id)),
        ["v1", "webhook", "subscription"] => (Resource::Subscription, None),
        ["v1", "webhook", "subscription", id] => (Resource::Subscription, Some(*id)),
        ["v1", "webhook", "triggered"] => (Resource::Triggered, None),
        ["v1", "webhook", "triggered", id] => (Resource::Triggered, Some(*id)),
        ["v1", "webhook", "triggered", id, "deliveries"] => {
            return if method == Method::GET {
                Ok(Endpoint::ListDeliveries(id.to_string()))
            } else {
                Err(not_allowed(
                    ALLOW_GET,
                    "/v1/webhook/triggered/{id}/deliveries",
                ))
            };
        }
        ["v1", "webhook", "triggered", id, "redeliver"] => {
            return if method == Method::POST {
                Ok(Endpoint::Redeliver(id.to_string()))
            } else {
                Err(not_allowed(
                    ALLOW_POST,
                    "/v1/webhook/triggered/{id}/redeliver",
                ))
            };
        }
        ["v1", ..] => return Err(not_found(true)),
        _ => return Err(not_found(false)),
    };
    let id = id.map(str::to_string);
    let template = resource.template(id.is_some());
    let allow = resource.allow(id.is_some());
    let missing = || NoEndpoint {
        error: ApiError::MissingPathId(resource.param()),
        gated: false,
        template,
    };
    use Resource as R;
    match (resource, method.clone(), id) {
        (R::Account, Method::POST, None) => Ok(Endpoint::CreateAccount),
        (R::Account, Method::PATCH, None) => Ok(Endpoint::UpdateAccount),
        (R::Account, Method::GET, Some(id)) => Ok(Endpoint::GetAccount(id)),
        (R::Account, Method::DELETE, Some(id)) => Ok(Endpoint::DeleteAccount(id)),
        (R::Account, Method::GET | Method::DELETE, None) => Err(missing()),
        (R::Account, _, _) => Err(not_allowed(allow, template)),

        (R::Registration, Method::POST, None) => Ok(Endpoint::CreateRegistration),
        (R::Registration, Method::GET, None) => Ok(Endpoint::ListOwnRegistrations),
        (R::Registration, Method::PATCH, Some(id)) => Ok(Endpoint::UpdateRegistration(id)),
        (R::Registration, Method::DELETE, Some(id)) => Ok(Endpoint::DeleteRegistration(id)),
        (R::Registration, Method::PATCH | Method::DELETE, None) => Err(missing()),
        (R::Registration, _, _) => Err(not_allowed(allow, template)),

        (R::Subscription, Method::POST, Some(id)) => Ok(Endpoint::Subscribe(id)),
        (R::Subscription, Method::GET, None) => Ok(Endpoint::ListOwnSubscriptions),
        (R::Subscription, Method::DELETE, Some(id)) => Ok(Endpoint::DeleteSubscription(id)),
        (R::Subscription, Method::POST | Method::DELETE, None) => Err(missing()),
        (R::Subscription, _, _) => Err(not_allowed(allow, template)),

        (R::Triggered, Method::POST, Some(id)) => Ok(Endpoint::Trigger(id)),
        (R::Triggered, Method::GET, Some(id)) => Ok(Endpoint::TriggerStatus(id)),
        (R::Triggered, Method::GET, None) => Ok(Endpoint::ListTriggered),
        (R::Triggered, Method::POST, None) => Err(missing()),
        (R::Triggered, _, _) => Err(not_allowed(allow, template)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: Method, path: &str) -> Endpoint {
        route(&method, path).unwrap()
    }

    fn err(method: Method, path: &str) -> NoEndpoint {
        route(&method, path).unwrap_err()
    }

    #[test]
    fn the_21_pairs() {
        assert_eq!(ok(Method::POST, "/v1/account"), Endpoint::CreateAccount);
        assert_eq!(
            ok(Method::GET, "/v1/account/x"),
            Endpoint::GetAccount("x".into())
        );
        assert_eq!(ok(Method::PATCH, "/v1/account/"), Endpoint::UpdateAccount);
        assert_eq!(
            ok(Method::DELETE, "/v1/account/x/"),
            Endpoint::DeleteAccount("x".into())
        );
        assert_eq!(ok(Method::GET, "/v1/accounts"), Endpoint::ListAccounts);
        assert_eq!(
            ok(Method::DELETE, "/v1/accounts/"),
            Endpoint::DeleteAccounts
        );
        assert_eq!(
            ok(Method::POST, "/v1/account/reset/apikey"),
            Endpoint::ResetApiKey
        );
        assert_eq!(
            ok(Method::POST, "/v1/account/reset/secretkey"),
            Endpoint::ResetSecretKey
        );
        assert_eq!(
            ok(Method::POST, "/v1/webhook/registration"),
            Endpoint::CreateRegistration
        );
        assert_eq!(
            ok(Method::GET, "/v1/webhook/registration"),
            Endpoint::ListOwnRegistrations
        );
        assert_eq!(
            ok(Method::PATCH, "/v1/webhook/registration/r"),
            Endpoint::UpdateRegistration("r".into())
        );
        assert_eq!(
            ok(Method::DELETE, "/v1/webhook/registration/r"),
            Endpoint::DeleteRegistration("r".into())
        );
        assert_eq!(
            ok(Method::GET, "/v1/webhook/registrations"),
            Endpoint::ListRegistrations
        );
        assert_eq!(
            ok(Method::DELETE, "/v1/webhook/registrations"),
            Endpoint::DeleteRegistrations
        );
        assert_eq!(
            ok(Method::POST, "/v1/webhook/subscription/r"),
            Endpoint::Subscribe("r".into())
        );
        assert_eq!(
            ok(Method::GET, "/v1/webhook/subscription"),
            Endpoint::ListOwnSubscriptions
        );
        assert_eq!(
            ok(Method::DELETE, "/v1/webhook/subscription/s"),
            Endpoint::DeleteSubscription("s".into())
        );
        assert_eq!(
            ok(Method::GET, "/v1/webhook/subscriptions"),
            Endpoint::ListSubscriptions
        );
        assert_eq!(
            ok(Method::DELETE, "/v1/webhook/subscriptions"),
            Endpoint::DeleteSubscriptions
        );
        assert_eq!(
            ok(Method::POST, "/v1/webhook/triggered/r"),
            Endpoint::Trigger("r".into())
        );
        assert_eq!(
            ok(Method::GET, "/v1/webhook/triggered"),
            Endpoint::ListTriggered
        );
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
            let e = err(m, p);
            assert!(!e.gated);
            assert_eq!(e.error.to_string(), format!("Missing {param}"));
        }
    }

    #[test]
    fn accidental_pairs_are_405() {
        for (m, p) in [
            (Method::POST, "/v1/account/x"),
            (Method::PATCH, "/v1/account/x"),
            (Method::PUT, "/v1/account"),
            (Method::POST, "/v1/webhook/registration/x"),
            (Method::GET, "/v1/webhook/registration/x"),
            (Method::GET, "/v1/webhook/subscription/x"),
            (Method::PATCH, "/v1/accounts"),
            (Method::DELETE, "/v1/webhook/triggered/x"),
            (Method::POST, "/v1/webhook/triggered/x/deliveries"),
            (Method::GET, "/v1/webhook/triggered/x/redeliver"),
            (Method::DELETE, "/v1/webhook/triggered"),
            (Method::GET, "/v1/account/reset/apikey"),
        ] {
            let e = err(m.clone(), p);
            assert!(
                matches!(e.error, ApiError::MethodNotAllowed { .. }),
                "{m} {p}"
            );
            assert!(e.gated);
        }
    }

    #[test]
    fn the_openapi_document_is_served_ungated() {
        let e = ok(Method::GET, "/v1/openapi.json");
        assert_eq!(e, Endpoint::OpenApi);
        assert!(!e.is_api());
        assert_eq!(e.template(), "/v1/openapi.json");
        assert_eq!(ok(Method::GET, "/v1/openapi.json/"), Endpoint::OpenApi);
        let e = err(Method::POST, "/v1/openapi.json");
        assert!(matches!(
            e.error,
            ApiError::MethodNotAllowed { allow: "GET" }
        ));
        assert!(!e.gated);
        assert!(matches!(
            err(Method::GET, "/v1/openapi.yaml").error,
            ApiError::NotFound
        ));
    }

    #[test]
    fn unknown_paths_are_404() {
        assert!(err(Method::GET, "/v1/nothing").gated);
        assert!(!err(Method::GET, "/nothing").gated);
        assert!(matches!(
            err(Method::GET, "/v1/account/a/b").error,
            ApiError::NotFound
        ));
        assert!(matches!(
            err(Method::GET, "/v1//account").error,
            ApiError::NotFound
        ));
    }
}
