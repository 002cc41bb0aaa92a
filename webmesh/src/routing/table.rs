use std::collections::HashMap;
use std::sync::Arc;

use super::{Route, RouteKind};
use crate::handler::BoxedHandler;
use crate::Error;

/// The parameters a path matched, by name, in pattern order.
pub(crate) type PathParams = Arc<[(String, String)]>;

/// One kind of routes of a running server (calls, subscriptions or
/// publications), matched with `matchit`: static segments win over
/// parameters, which win over catch-alls.
pub(crate) struct RouteTable {
    router: matchit::Router<BoxedHandler>,
    patterns: Vec<String>,
}

impl RouteTable {
    /// Builds the table of `kind` from `routes`, failing on two routes that
    /// conflict, naming both.
    pub(crate) fn build<'a>(kind: RouteKind, routes: impl IntoIterator<Item = &'a Route>) -> Result<Self, Error> {
        let mut router = matchit::Router::new();
        let mut origins: HashMap<String, &str> = HashMap::new();
        let mut patterns = Vec::new();
        for route in routes.into_iter().filter(|r| r.kind == kind) {
            let pattern = &route.path;
            if !pattern.starts_with('/') {
                return Err(Error::Config(format!("path `{pattern}` of {} must start with `/`", route.origin)));
            }
            router.insert(pattern.as_str(), route.handler.clone()).map_err(|e| match e {
                matchit::InsertError::Conflict { with } => {
                    let existing = origins.get(&with).copied().unwrap_or("another handler");
                    // Calls are the common case: they go unnamed.
                    let kind = if kind == RouteKind::Call { String::new() } else { format!("{kind} ") };
                    let what = if &with == pattern {
                        format!("two {kind}handlers on `{pattern}`")
                    } else {
                        format!("{kind}path `{pattern}` conflicts with `{with}`")
                    };
                    Error::Config(format!("{what}: {existing} and {}", route.origin))
                }
                other => Error::Config(format!("invalid path `{pattern}` of {}: {other}", route.origin)),
            })?;
            origins.insert(pattern.clone(), &route.origin);
            patterns.push(pattern.clone());
        }
        Ok(Self { router, patterns })
    }

    /// The handler for `path`, with the parameters it matched.
    pub(crate) fn at(&self, path: &str) -> Option<(&BoxedHandler, PathParams)> {
        let matched = self.router.at(path).ok()?;
        let params = matched.params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Some((matched.value, params))
    }

    pub(crate) fn patterns(&self) -> &[String] {
        &self.patterns
    }
}
