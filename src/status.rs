//! `boo-reconciler status`: the running controller's `/status`, as tables
//! for people or as JSON.

use serde_json::Value;
use std::fmt::Write as _;

/// The status document as readable tables.
pub fn render(s: &Value) -> String {
    let mut out = String::new();
    let str_of = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "boo-reconciler {} on host {} — {} (up {}s, queue {})",
        str_of(&s["version"]),
        str_of(&s["host"]),
        match s["role"].as_str() {
            Some("standby") => format!("STANDBY: {}", str_of(&s["why"])),
            Some(r) => r.to_string(),
            None => "-".into(),
        },
        str_of(&s["uptime_secs"]),
        str_of(&s["queue_depth"]),
    );
    let _ = writeln!(out, "next pass: {}", str_of(&s["next_pass_at"]));
    if let Some(p) = s.get("last_host_pass").filter(|p| !p.is_null()) {
        let _ = writeln!(
            out,
            "last host pass: {} ({}), {} ms, {} action(s), {} error(s)",
            str_of(&p["started_at"]),
            str_of(&p["trigger"]),
            str_of(&p["duration_ms"]),
            p["results"].as_array().map_or(0, Vec::len),
            p["errors"].as_array().map_or(0, Vec::len),
        );
        for e in p["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  error: {}", str_of(e));
        }
        for e in p["warnings"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  warning: {}", str_of(e));
        }
    }
    table(
        &mut out,
        "WORKTREES AT RISK",
        &["TARGET", "SESSION", "REASONS"],
        s["at_risk"].as_array().into_iter().flatten().map(|w| {
            let reasons = w["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| str_of(&r["kind"]))
                .collect::<Vec<_>>()
                .join(", ");
            vec![str_of(&w["target"]), str_of(&w["session_id"]), reasons]
        }),
    );
    table(
        &mut out,
        "PENDING DRIFT",
        &["TARGET", "KIND", "STATE", "REASON"],
        s["pending_drift"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                vec![
                    str_of(&d["target"]),
                    str_of(&d["kind"]),
                    str_of(&d["state"]),
                    str_of(&d["reason"]),
                ]
            }),
    );
    table(
        &mut out,
        "BACKING OFF",
        &["TARGET", "FAILURES", "NEXT IN", "LAST ERROR"],
        s["backoff"].as_array().into_iter().flatten().map(|b| {
            vec![
                str_of(&b["target"]),
                str_of(&b["failures"]),
                format!("{}s", str_of(&b["next_attempt_in_secs"])),
                str_of(&b["last_error"]),
            ]
        }),
    );
    table(
        &mut out,
        "RECENT PASSES",
        &["STARTED", "TRIGGER", "SCOPE", "MS", "ACTIONS", "RESULT"],
        s["recent_passes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let scope = match (&p["scope"]["scope"], &p["scope"]["id"]) {
                    (Value::String(k), Value::String(id)) => format!("{k} {id}"),
                    (Value::String(k), _) => k.clone(),
                    _ => "-".into(),
                };
                vec![
                    str_of(&p["started_at"]),
                    str_of(&p["trigger"]),
                    scope,
                    str_of(&p["duration_ms"]),
                    str_of(&p["actions"]),
                    str_of(&p["result"]),
                ]
            }),
    );
    out
}

/// A titled table with aligned columns; "(none)" when empty.
fn table(out: &mut String, title: &str, head: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let padded: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        format!("  {}", padded.join("  "))
    };
    let _ = writeln!(
        out,
        "{}",
        line(head.iter().map(|h| h.to_string()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_section_with_aligned_rows() {
        let s = serde_json::json!({
            "version": "0.1.0", "host": "h1", "role": "leader", "uptime_secs": 5,
            "queue_depth": 0, "next_pass_at": "2026-11-24T06:00:00Z",
            "last_host_pass": {"started_at": "t", "trigger": "interval", "duration_ms": 3,
                "results": [], "errors": ["opencode: answered 500"], "warnings": []},
            "at_risk": [{"target": "worktree:/r/w1", "session_id": "s1",
                "reasons": [{"kind": "untracked"}, {"kind": "locked"}]}],
            "pending_drift": [], "backoff": [],
            "recent_passes": [{"started_at": "t", "trigger": "nudge",
                "scope": {"scope": "chat", "id": "c1"}, "duration_ms": 4, "actions": 2,
                "result": "converged"}]
        });
        let text = render(&s);
        assert!(text.contains("host h1 — leader"), "{text}");
        assert!(text.contains("error: opencode: answered 500"), "{text}");
        assert!(
            text.contains("worktree:/r/w1  s1       untracked, locked"),
            "{text}"
        );
        assert!(text.contains("PENDING DRIFT\n  (none)"), "{text}");
        assert!(text.contains("chat c1"), "{text}");
    }
}
