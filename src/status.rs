//! What a running controller answers, for people: `boo-reconciler status`
//! renders its `/status` as tables, and `once` beside a daemon renders the
//! daemon's answer to its nudge.

use serde_json::Value;
use std::fmt::Write as _;

/// What the settings of `/status` let the controller do: observe only, or
/// act with each actuator that is on.
fn acting(config: &Value) -> String {
    if config["loop"]["dry_run"].as_bool() == Some(true) {
        return "no: observe only (loop.dry_run), every pass plans and reports".into();
    }
    let off: Vec<&str> = ["processes", "worktrees", "opencode"]
        .into_iter()
        .filter(|s| config[*s]["enabled"].as_bool() == Some(false))
        .collect();
    if off.is_empty() {
        "yes".into()
    } else {
        let off: Vec<String> = off.iter().map(|s| format!("{s}.enabled")).collect();
        format!("yes, but not on what {} = false holds back", off.join(", "))
    }
}

/// The status document as readable tables.
pub fn render(s: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "boo-reconciler {} on host {} — {} (up {}s, queue {})",
        text(&s["version"]),
        text(&s["host"]),
        match s["role"].as_str() {
            Some("standby") => format!("STANDBY: {}", text(&s["why"])),
            Some("unsure") => format!("UNSURE (not acting): {}", text(&s["why"])),
            Some(r) => r.to_string(),
            None => "-".into(),
        },
        text(&s["uptime_secs"]),
        text(&s["queue_depth"]),
    );
    let _ = writeln!(out, "next pass: {}", text(&s["next_pass_at"]));
    let _ = writeln!(out, "acting: {}", acting(&s["config"]));
    if let Some(t) = s.get("trash").filter(|t| !t.is_null()) {
        let _ = writeln!(
            out,
            "trash {}: {} entr(ies), about {} bytes, oldest retired {}, {} being reclaimed",
            text(&t["path"]),
            text(&t["entries"]),
            text(&t["bytes"]),
            t["oldest_retired_at"].as_str().unwrap_or("-"),
            text(&t["reclaiming"]),
        );
        for e in t["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  error: {} cannot be reclaimed ({} failure(s), next attempt in {}s): {}",
                text(&e["path"]),
                text(&e["failures"]),
                text(&e["next_attempt_in_s"]),
                text(&e["error"]),
            );
        }
    }
    if let Some(p) = s.get("last_host_pass").filter(|p| !p.is_null()) {
        let (count, what) = if p["dry_run"].as_bool() == Some(true) {
            (&p["planned"], "action(s) planned, none taken (dry run)")
        } else {
            (&p["results"], "action(s)")
        };
        let _ = writeln!(
            out,
            "last host pass: {} ({}), {} ms, {} {what}, {} error(s)",
            text(&p["started_at"]),
            text(&p["trigger"]),
            text(&p["duration_ms"]),
            count.as_array().map_or(0, Vec::len),
            p["errors"].as_array().map_or(0, Vec::len),
        );
        for e in p["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  error: {}", text(e));
        }
        for e in p["warnings"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  warning: {}", text(e));
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
                .map(|r| text(&r["kind"]))
                .collect::<Vec<_>>()
                .join(", ");
            vec![text(&w["target"]), text(&w["session_id"]), reasons]
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
                    text(&d["target"]),
                    text(&d["kind"]),
                    text(&d["state"]),
                    text(&d["reason"]),
                ]
            }),
    );
    table(
        &mut out,
        "BACKING OFF",
        &["TARGET", "FAILURES", "NEXT IN", "LAST ERROR"],
        s["backoff"].as_array().into_iter().flatten().map(|b| {
            vec![
                text(&b["target"]),
                text(&b["failures"]),
                format!("{}s", text(&b["next_attempt_in_secs"])),
                text(&b["last_error"]),
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
                    text(&p["started_at"]),
                    text(&p["trigger"]),
                    scope,
                    text(&p["duration_ms"]),
                    text(&p["actions"]),
                    text(&p["result"]),
                ]
            }),
    );
    out
}

/// A JSON value as a cell: strings bare, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A nudge's answer as readable lines: one per action with its outcome.
pub fn render_answer(base: &str, answer: &Value) -> String {
    let mut out = String::new();
    let actions = answer["actions"].as_array().map_or(&[][..], Vec::as_slice);
    let _ = writeln!(
        out,
        "reconciled by the running controller at {base} ({} {}) in {} ms: {}, {} action(s)",
        text(&answer["scope"]),
        text(
            answer
                .get("chat_id")
                .or(answer.get("session_id"))
                .unwrap_or(&Value::Null)
        ),
        text(&answer["duration_ms"]),
        text(&answer["result"]),
        actions.len(),
    );
    for a in actions {
        let message = a["message"].as_str().filter(|m| !m.is_empty());
        let _ = writeln!(
            out,
            "  {:<8} {} {} — {}{}",
            text(&a["outcome"]),
            text(&a["kind"]),
            text(&a["target"]),
            text(&a["reason"]),
            message.map(|m| format!(" ({m})")).unwrap_or_default(),
        );
    }
    for k in answer["at_risk"].as_array().into_iter().flatten() {
        let reasons: Vec<String> = k["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| text(&r["kind"]))
            .collect();
        let _ = writeln!(
            out,
            "  kept at risk: {} ({})",
            text(&k["target"]),
            reasons.join(", ")
        );
    }
    for e in answer["errors"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  error: {}", text(e));
    }
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

    #[test]
    fn observe_only_and_switched_off_actuators_are_shown() {
        let mut s = serde_json::json!({
            "config": {"loop": {"dry_run": true}, "processes": {"enabled": true}},
            "last_host_pass": {"dry_run": true, "planned": [{}, {}], "results": [],
                "errors": [], "warnings": []}
        });
        let text = render(&s);
        assert!(
            text.contains("acting: no: observe only (loop.dry_run)"),
            "{text}"
        );
        assert!(
            text.contains("2 action(s) planned, none taken (dry run)"),
            "{text}"
        );
        s["config"] = serde_json::json!({"loop": {"dry_run": false},
            "processes": {"enabled": false}, "worktrees": {"enabled": true},
            "opencode": {"enabled": false}});
        let text = render(&s);
        assert!(
            text.contains("acting: yes, but not on what processes.enabled, opencode.enabled = false holds back"),
            "{text}"
        );
    }

    #[test]
    fn the_trash_shows_what_waits_and_what_cannot_be_reclaimed() {
        let s = serde_json::json!({
            "version": "0.1.0", "host": "h1", "role": "leader", "uptime_secs": 5,
            "queue_depth": 0, "next_pass_at": null,
            "trash": {"path": "/r/.boo-trash", "entries": 2, "bytes": 4096,
                "oldest_retired_at": "2026-11-24T06:00:00Z", "reclaiming": 1,
                "errors": [{"path": "/r/.boo-trash/w1.1", "error": "mount point inside",
                    "failures": 2, "next_attempt_in_s": 9}]},
            "at_risk": [], "pending_drift": [], "backoff": [], "recent_passes": []
        });
        let text = render(&s);
        assert!(
            text.contains("trash /r/.boo-trash: 2 entr(ies), about 4096 bytes, oldest retired 2026-11-24T06:00:00Z, 1 being reclaimed"),
            "{text}"
        );
        assert!(
            text.contains("error: /r/.boo-trash/w1.1 cannot be reclaimed (2 failure(s), next attempt in 9s): mount point inside"),
            "{text}"
        );
    }

    #[test]
    fn an_answer_renders_each_action_and_what_was_kept() {
        let a = serde_json::json!({
            "scope": "chat", "chat_id": "c1", "duration_ms": 12, "result": "at_risk",
            "actions": [{"outcome": "done", "kind": "terminate_process",
                "target": "process:42", "reason": "chat archived", "message": ""}],
            "at_risk": [{"target": "worktree:/r/w", "reasons": [{"kind": "untracked"}]}],
            "errors": ["x"]
        });
        let s = render_answer("http://127.0.0.1:7878", &a);
        assert!(
            s.contains("(chat c1) in 12 ms: at_risk, 1 action(s)"),
            "{s}"
        );
        assert!(
            s.contains("done     terminate_process process:42 — chat archived\n"),
            "{s}"
        );
        assert!(s.contains("kept at risk: worktree:/r/w (untracked)"), "{s}");
        assert!(s.contains("error: x"), "{s}");
    }
}
