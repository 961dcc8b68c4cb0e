//! Which provider runs each model: a table of exact ids and `prefix*` patterns, the most
//! specific match winning, and the emulator for everything else.

use std::{collections::BTreeMap, sync::Arc};

use invokd_core::provider::Provider;

/// The provider of models no route names.
pub const DEFAULT_PROVIDER: &str = "emulator";

/// The provider name of models that workers run (docs/workers.md): the gateway's own
/// dispatcher never claims their jobs.
pub const WORKERS_PROVIDER: &str = "workers";

/// One line of the table: a model id, or a pattern ending in `*` that matches every id with
/// that prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pattern: String,
    pub provider: String,
}

/// A routing table that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("route {0:?} is not PATTERN=PROVIDER")]
    Syntax(String),
    #[error("route {0:?}: `*` may only end a pattern")]
    Wildcard(String),
    #[error(
        "route {pattern:?} names provider {provider:?}, which is not configured (known: {known})"
    )]
    UnknownProvider {
        pattern: String,
        provider: String,
        known: String,
    },
}

impl Route {
    /// Parses a comma-separated table, e.g. `fal-ai/*=fal,fal-ai/flux/schnell=emulator`.
    pub fn parse_table(s: &str) -> Result<Vec<Route>, RouteError> {
        s.split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| {
                let (pattern, provider) = r
                    .split_once('=')
                    .map(|(p, v)| (p.trim(), v.trim()))
                    .filter(|(p, v)| !p.is_empty() && !v.is_empty())
                    .ok_or_else(|| RouteError::Syntax(r.to_owned()))?;
                if pattern.trim_end_matches('*').contains('*') {
                    return Err(RouteError::Wildcard(r.to_owned()));
                }
                Ok(Route {
                    pattern: pattern.to_owned(),
                    provider: provider.to_owned(),
                })
            })
            .collect()
    }

    /// How well it matches `model`: `None` if not at all; exact ids beat any pattern, longer
    /// prefixes beat shorter ones.
    fn specificity(&self, model: &str) -> Option<usize> {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix).then_some(prefix.len()),
            None => (self.pattern == model).then_some(usize::MAX),
        }
    }
}

/// The configured providers and the table that picks one per model.
pub struct Providers {
    routes: Vec<Route>,
    by_name: BTreeMap<String, Arc<dyn Provider>>,
}

impl Providers {
    /// `by_name` must hold the emulator; every route must name a provider in it.
    pub fn new(
        routes: Vec<Route>,
        by_name: BTreeMap<String, Arc<dyn Provider>>,
    ) -> Result<Self, RouteError> {
        for r in &routes {
            if r.provider != WORKERS_PROVIDER && !by_name.contains_key(&r.provider) {
                return Err(RouteError::UnknownProvider {
                    pattern: r.pattern.clone(),
                    provider: r.provider.clone(),
                    known: by_name
                        .keys()
                        .map(String::as_str)
                        .chain([WORKERS_PROVIDER])
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(Self { routes, by_name })
    }

    /// The name of the provider that runs `model`.
    pub fn name_for(&self, model: &str) -> &str {
        self.routes
            .iter()
            .filter_map(|r| r.specificity(model).map(|s| (s, r)))
            .max_by_key(|(s, _)| *s)
            .map_or(DEFAULT_PROVIDER, |(_, r)| r.provider.as_str())
    }

    /// Whether workers run `model`.
    pub fn is_workers(&self, model: &str) -> bool {
        self.name_for(model) == WORKERS_PROVIDER
    }

    /// The provider that runs `model`, if it is configured.
    pub fn for_model(&self, model: &str) -> Option<&Arc<dyn Provider>> {
        self.by_name.get(self.name_for(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_route_wins() {
        let routes =
            Route::parse_table("fal-ai/*=fal, fal-ai/flux/schnell=emulator,fal-ai/flux/*=x")
                .unwrap();
        let mut by_name: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        let emu: Arc<dyn Provider> = Arc::new(invokd_providers::Emulator::new(Default::default()));
        for n in ["emulator", "fal", "x"] {
            by_name.insert(n.into(), emu.clone());
        }
        let p = Providers::new(routes, by_name).unwrap();
        assert_eq!(p.name_for("fal-ai/flux/schnell"), "emulator");
        assert_eq!(p.name_for("fal-ai/flux/dev"), "x");
        assert_eq!(p.name_for("fal-ai/fast-sdxl"), "fal");
        assert_eq!(p.name_for("other/model"), "emulator");
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(matches!(
            Route::parse_table("fal-ai/*"),
            Err(RouteError::Syntax(_))
        ));
        assert!(matches!(
            Route::parse_table("a*b=fal"),
            Err(RouteError::Wildcard(_))
        ));
        let routes = Route::parse_table("fal-ai/*=fal").unwrap();
        assert!(matches!(
            Providers::new(routes, BTreeMap::new()),
            Err(RouteError::UnknownProvider { .. })
        ));
    }
}
