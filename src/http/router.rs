//! Routing: method + path → the route that serves it, or the framework's answer.
//!
//! The table itself belongs to the API (`api/routes.rs`); this module only matches it. A
//! template is a path whose `{id}` segment matches any one segment. Every resource is
//! reachable with and without its id segment, as in the original: a method that exists
//! only with the id answers `400 Missing <param>` without it (before the Content-Type
//! gate), any other unknown method on a known path answers 405 with the path's `Allow`.

use hyper::Method;

use super::error::ApiError;

/// The placeholder of a path id in a template.
const ID: &str = "{id}";

/// One served method and path.
#[derive(Debug)]
pub struct Route<E> {
    /// The method.
    pub method: Method,
    /// The path template (also the route's name in logs and metrics).
    pub template: &'static str,
    /// The id's name in `Missing <param>`, for a template ending in `{id}`.
    pub param: &'static str,
    /// Whether the Content-Type gate applies (the `/v1` API; not the operations
    /// endpoints nor the OpenAPI document).
    pub gated: bool,
    /// What serves it.
    pub endpoint: E,
}

/// A request's route and its path id.
pub struct Matched<'a, E> {
    /// The route.
    pub route: &'a Route<E>,
    /// The `{id}` segment, if the template has one.
    pub id: Option<String>,
}

/// Why a request matched no route.
#[derive(Debug)]
pub struct NoRoute {
    /// The answer to give.
    pub error: ApiError,
    /// Whether the Content-Type gate applies before that answer.
    pub gated: bool,
    /// Route template for logs and metrics.
    pub template: &'static str,
}

/// A routing table.
pub struct Routes<E> {
    /// Each route with its template split into segments once, not on every request.
    routes: Vec<(Vec<&'static str>, Route<E>)>,
}

/// The path segments after the leading `/`, with one trailing slash tolerated.
fn segments(path: &str) -> Vec<&str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/').collect()
}

/// The id if a template's `parts` match `segs` (`Some(None)` for a template without an id).
fn capture(parts: &[&str], segs: &[&str]) -> Option<Option<String>> {
    if parts.len() != segs.len() {
        return None;
    }
    let mut id = None;
    for (part, seg) in parts.iter().zip(segs) {
        if *part == ID {
            id = Some((*seg).to_string());
        } else if part != seg {
            return None;
        }
    }
    Some(id)
}

impl<E> Routes<E> {
    /// A table of `routes`.
    pub fn new(routes: Vec<Route<E>>) -> Self {
        let routes = routes
            .into_iter()
            .map(|route| (segments(route.template), route))
            .collect();
        Self { routes }
    }

    /// Resolves `method` + `path`.
    pub fn find(&self, method: &Method, path: &str) -> Result<Matched<'_, E>, NoRoute> {
        let segs = segments(path);
        let mut on_path = Vec::new();
        for (parts, route) in &self.routes {
            if let Some(id) = capture(parts, &segs) {
                if route.method == method {
                    return Ok(Matched { route, id });
                }
                on_path.push(route);
            }
        }
        // Routes that would match with one more segment: the path lacks their id.
        let mut with_id = segs.clone();
        with_id.push("");
        let needing_id: Vec<&Route<E>> = self
            .routes
            .iter()
            .filter(|(parts, _)| parts.last() == Some(&ID) && capture(parts, &with_id).is_some())
            .map(|(_, route)| route)
            .collect();
        let template = on_path.first().map_or("unknown", |r| r.template);
        if let Some(route) = needing_id.iter().find(|r| r.method == method) {
            return Err(NoRoute {
                error: ApiError::MissingPathId(route.param),
                gated: false,
                template,
            });
        }
        if on_path.is_empty() {
            return Err(NoRoute {
                error: ApiError::NotFound,
                gated: segs.first() == Some(&"v1"),
                template,
            });
        }
        let mut allow: Vec<&str> = on_path
            .iter()
            .chain(&needing_id)
            .map(|r| r.method.as_str())
            .collect();
        allow.sort_unstable();
        allow.dedup();
        Err(NoRoute {
            error: ApiError::MethodNotAllowed {
                allow: allow.join(", "),
            },
            gated: on_path.iter().any(|r| r.gated),
            template,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Routes<u8> {
        let r = |method, template, param, gated, endpoint| Route {
            method,
            template,
            param,
            gated,
            endpoint,
        };
        Routes::new(vec![
            r(Method::POST, "/v1/account", "", true, 1),
            r(Method::GET, "/v1/account/{id}", "account_id", true, 2),
            r(Method::DELETE, "/v1/account/{id}", "account_id", true, 3),
            r(Method::POST, "/v1/account/reset/apikey", "", true, 4),
            r(Method::GET, "/health", "", false, 5),
        ])
    }

    #[test]
    fn templates_match_with_their_id() {
        let t = table();
        let m = t.find(&Method::GET, "/v1/account/x/").unwrap();
        assert_eq!((m.route.endpoint, m.id.as_deref()), (2, Some("x")));
        let m = t.find(&Method::POST, "/v1/account/").unwrap();
        assert_eq!((m.route.endpoint, m.id), (1, None));
        assert_eq!(
            t.find(&Method::POST, "/v1/account/reset/apikey")
                .unwrap()
                .route
                .endpoint,
            4
        );
    }

    #[test]
    fn a_missing_id_is_400_before_the_gate() {
        let e = table().find(&Method::GET, "/v1/account").err().unwrap();
        assert!(!e.gated);
        assert_eq!(e.error.to_string(), "Missing account_id");
        assert_eq!(e.template, "/v1/account");
    }

    #[test]
    fn other_methods_are_405_with_the_paths_allow() {
        let t = table();
        let e = t.find(&Method::PUT, "/v1/account").err().unwrap();
        assert!(e.gated);
        assert!(
            matches!(&e.error, ApiError::MethodNotAllowed { allow } if allow == "DELETE, GET, POST")
        );
        let e = t.find(&Method::POST, "/v1/account/x").err().unwrap();
        assert!(matches!(&e.error, ApiError::MethodNotAllowed { allow } if allow == "DELETE, GET"));
        let e = t.find(&Method::POST, "/health").err().unwrap();
        assert!(!e.gated);
    }

    #[test]
    fn unknown_paths_are_404() {
        let t = table();
        assert!(t.find(&Method::GET, "/v1/nothing").err().unwrap().gated);
        assert!(!t.find(&Method::GET, "/nothing").err().unwrap().gated);
        assert!(matches!(
            t.find(&Method::GET, "/v1/account/a/b").err().unwrap().error,
            ApiError::NotFound
        ));
        assert!(matches!(
            t.find(&Method::GET, "/v1//account").err().unwrap().error,
            ApiError::NotFound
        ));
    }
}
