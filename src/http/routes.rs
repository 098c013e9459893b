//! The routes, once: the router, the 404 and 405 answers, the nudge metric
//! labels, the client of a running daemon ([`crate::client`]) and the
//! documentation (checked against this table by test
//! `every_route_is_documented_where_it_is_listed`) all read [`ROUTES`].

use crate::model::ScopeKind;

/// The method a route answers (`GET` routes answer `HEAD` too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
        }
    }

    /// The `Allow` header of a 405 on a route of this verb.
    pub fn allow(self) -> &'static str {
        match self {
            Verb::Get => "GET, HEAD",
            Verb::Post => "POST",
        }
    }
}

/// What serves a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// A nudge of one chat or session, with its `nudges_total` label and
    /// whether it answers with the close hook's legacy keys too.
    NudgeId {
        of: ScopeKind,
        label: &'static str,
        legacy: bool,
    },
    /// A nudge of the whole host.
    NudgeHost,
    Status,
    Healthz,
    Readyz,
    Metrics,
}

/// One route.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub verb: Verb,
    /// As the documentation writes it (`{chatId}`).
    pub path: &'static str,
    /// As the router matches it (`{id}`).
    pub pattern: &'static str,
    pub handler: Handler,
    pub doc: &'static str,
}

impl Route {
    /// `POST /reconcile/{chatId}`.
    pub fn line(&self) -> String {
        format!("{} {}", self.verb.as_str(), self.path)
    }

    /// The path with `id` in the place of its `{id}` (`/reconcile/c1`);
    /// a route without an id is its pattern.
    pub fn with_id(&self, id: &str) -> String {
        self.pattern.replace("{id}", id)
    }

    /// The path with its id left empty (`/reconcile/`), and what the id
    /// names; `None` for a route without an id.
    pub fn empty_id(&self) -> Option<(String, ScopeKind)> {
        let Handler::NudgeId { of, .. } = self.handler else {
            return None;
        };
        Some((self.with_id(""), of))
    }

    /// The scope a nudge on this route covers, where this is the scope's
    /// own route (not the close hook's alias of it).
    fn nudges(&self) -> Option<ScopeKind> {
        match self.handler {
            Handler::NudgeId {
                of, legacy: false, ..
            } => Some(of),
            Handler::NudgeHost => Some(ScopeKind::Host),
            _ => None,
        }
    }
}

const CHAT: ScopeKind = ScopeKind::Chat;
const SESSION: ScopeKind = ScopeKind::Session;

/// Every route, in the order the documentation lists them.
pub const ROUTES: &[Route] = &[
    Route {
        verb: Verb::Post,
        path: "/reconcile/{chatId}",
        pattern: "/reconcile/{id}",
        handler: Handler::NudgeId {
            of: CHAT,
            label: "chat",
            legacy: false,
        },
        doc: "reconciles one chat (and its session's worktree if it was the last live chat)",
    },
    Route {
        verb: Verb::Post,
        path: "/sessions/{sessionId}/reconcile",
        pattern: "/sessions/{id}/reconcile",
        handler: Handler::NudgeId {
            of: SESSION,
            label: "session",
            legacy: false,
        },
        doc: "reconciles every chat of a session, and its worktree",
    },
    Route {
        verb: Verb::Post,
        path: "/reconcile",
        pattern: "/reconcile",
        handler: Handler::NudgeHost,
        doc: "a full pass of the host",
    },
    Route {
        verb: Verb::Post,
        path: "/api/chats/{chatId}/close",
        pattern: "/api/chats/{id}/close",
        handler: Handler::NudgeId {
            of: CHAT,
            label: "chat_close",
            legacy: true,
        },
        doc:
            "the orchestrator's close hook: `POST /reconcile/{chatId}` with its legacy answer keys",
    },
    Route {
        verb: Verb::Post,
        path: "/api/sessions/{sessionId}/close",
        pattern: "/api/sessions/{id}/close",
        handler: Handler::NudgeId {
            of: SESSION,
            label: "session_close",
            legacy: true,
        },
        doc: "the same for a session",
    },
    Route {
        verb: Verb::Get,
        path: "/status",
        pattern: "/status",
        handler: Handler::Status,
        doc: "the status dump",
    },
    Route {
        verb: Verb::Get,
        path: "/healthz",
        pattern: "/healthz",
        handler: Handler::Healthz,
        doc: "200 `{\"ok\":true}` while the process answers (never needs the token)",
    },
    Route {
        verb: Verb::Get,
        path: "/readyz",
        pattern: "/readyz",
        handler: Handler::Readyz,
        doc: "200 `{\"ready\":true}`, or 503 `{\"ready\":false,\"error\":…}`",
    },
    Route {
        verb: Verb::Get,
        path: "/metrics",
        pattern: "/metrics",
        handler: Handler::Metrics,
        doc: "Prometheus text format 0.0.4",
    },
];

/// Every route as `METHOD /path`, comma-separated: what a 404 lists.
pub fn listing() -> String {
    ROUTES
        .iter()
        .map(Route::line)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The route that takes an id, matched with the id left empty.
pub fn empty_id_route(path: &str) -> Option<ScopeKind> {
    ROUTES
        .iter()
        .filter_map(Route::empty_id)
        .find(|(empty, _)| empty == path)
        .map(|(_, of)| of)
}

/// The verb of the route at `path`; `POST` for any other path, as the
/// nudges are what a wrong method is most often sent to.
pub fn verb_of(path: &str) -> Verb {
    ROUTES
        .iter()
        .find(|r| r.pattern == path)
        .map_or(Verb::Post, |r| r.verb)
}

/// The route that nudges a scope of `kind`: the scope's own, not the close
/// hook's alias of it.
pub fn nudge_route(kind: ScopeKind) -> &'static Route {
    ROUTES
        .iter()
        .find(|r| r.nudges() == Some(kind))
        .expect("ROUTES has a nudge route of every scope (test every_scope_has_its_nudge_route)")
}

/// The route `handler` serves; the first, where it serves several.
pub fn route_of(handler: Handler) -> &'static Route {
    ROUTES
        .iter()
        .find(|r| r.handler == handler)
        .expect("every handler serves a route of ROUTES")
}

/// The `nudges_total` label of every nudge route.
pub fn nudge_labels() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().filter_map(|r| match r.handler {
        Handler::NudgeId { label, .. } => Some(label),
        Handler::NudgeHost => Some("host"),
        _ => None,
    })
}

/// The module documentation's table row of `route`.
pub fn doc_row(route: &Route) -> String {
    format!("| `{}` | {} |", route.line(), route.doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_where_it_is_listed() {
        let module_doc = include_str!("mod.rs");
        let readme = include_str!("../../README.md").replace('\n', " ");
        for r in ROUTES {
            let row = format!("//! {}", doc_row(r));
            assert!(module_doc.contains(&row), "src/http/mod.rs lacks {row}");
            let line = format!("`{}`", r.line());
            assert!(readme.contains(&line), "README.md lacks {line}");
        }
    }

    #[test]
    fn the_404_lists_every_route_in_order() {
        assert_eq!(
            listing(),
            "POST /reconcile/{chatId}, POST /sessions/{sessionId}/reconcile, POST /reconcile, \
             POST /api/chats/{chatId}/close, POST /api/sessions/{sessionId}/close, \
             GET /status, GET /healthz, GET /readyz, GET /metrics"
        );
    }

    #[test]
    fn a_wrong_method_is_told_the_route_s_own() {
        assert_eq!(verb_of("/status").allow(), "GET, HEAD");
        assert_eq!(verb_of("/metrics").allow(), "GET, HEAD");
        assert_eq!(verb_of("/reconcile").allow(), "POST");
        assert_eq!(verb_of("/reconcile/c1").allow(), "POST");
    }

    #[test]
    fn every_scope_has_its_nudge_route() {
        for kind in [ScopeKind::Host, ScopeKind::Chat, ScopeKind::Session] {
            let route = nudge_route(kind);
            assert_eq!(route.verb, Verb::Post, "{}", route.line());
            assert!(route.pattern.contains("{id}") == (kind != ScopeKind::Host));
        }
        assert_eq!(nudge_route(ScopeKind::Chat).with_id("c1"), "/reconcile/c1");
        assert_eq!(route_of(Handler::Status).line(), "GET /status");
    }

    #[test]
    fn every_nudge_route_has_its_series_from_start_up() {
        let mut labels: Vec<_> = nudge_labels().collect();
        let mut series = crate::metrics::NUDGE_ROUTES.to_vec();
        labels.sort_unstable();
        series.sort_unstable();
        assert_eq!(labels, series);
    }
}
