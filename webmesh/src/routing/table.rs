use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::registration::registered;
use super::{Route, Router};
use crate::handler::BoxedHandler;
use crate::Error;

/// The routes of a running server, built once at start-up.
pub(crate) struct RouteTable {
    routes: HashMap<String, Route>,
}

impl RouteTable {
    /// Builds the table from the registered handlers (if `include_registered`)
    /// and `router`, failing on a path served twice.
    pub(crate) fn build(include_registered: bool, router: Router) -> Result<Self, Error> {
        let declared = registered().filter(|_| include_registered).map(|r| Route {
            path: r.path.to_owned(),
            handler: (r.make)(),
            origin: r.origin(),
        });
        let mut routes = HashMap::new();
        for route in declared.chain(router.routes) {
            if !route.path.starts_with('/') {
                return Err(Error::Config(format!("path `{}` of {} must start with `/`", route.path, route.origin)));
            }
            match routes.entry(route.path.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert(route);
                }
                Entry::Occupied(existing) => {
                    return Err(Error::Config(format!(
                        "two handlers on `{}`: {} and {}",
                        route.path,
                        existing.get().origin,
                        route.origin
                    )));
                }
            }
        }
        Ok(Self { routes })
    }

    pub(crate) fn get(&self, path: &str) -> Option<&BoxedHandler> {
        self.routes.get(path).map(|r| &r.handler)
    }

    pub(crate) fn paths(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }
}
