//! The README's layout table is the map of the layers: each module may use
//! the modules of its row and of the rows above, never one below. This
//! reads every source file's `crate::` paths against that table, so that
//! the map and the code cannot drift apart unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const README: &str = include_str!("../README.md");

/// Each top-level module named in the layout table, with its row.
fn layers() -> BTreeMap<String, usize> {
    let section = README
        .split("\n## Layout\n")
        .nth(1)
        .expect("the README has a Layout section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rank = BTreeMap::new();
    let rows = section
        .lines()
        .filter(|l| l.starts_with("| `src/") || l.starts_with("| `benches/"));
    for (row, line) in rows.enumerate() {
        let first = line.split('|').nth(1).unwrap_or_default();
        for name in first.split('`').filter_map(|c| c.strip_prefix("src/")) {
            let name = name.trim_end_matches('/').trim_end_matches(".rs");
            rank.insert(name.to_string(), row);
        }
    }
    rank
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code as built outside tests: test-only files left out.
fn code_outside_tests(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return String::new();
    }
    without_tests(&std::fs::read_to_string(path).unwrap())
}

/// `text` without its comments and `#[cfg(test)]` items.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // The item it gates: a whole inline module up to its closing
            // brace at column 0, or one line.
            if let Some(item) = lines.next() {
                if item.trim_end().ends_with('{') && item.trim_start().starts_with("mod ") {
                    lines.by_ref().find(|l| *l == "}");
                }
            }
            continue;
        }
        if !line.trim_start().starts_with("//") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The top-level modules `code` names through `crate::`.
fn uses(code: &str) -> Vec<String> {
    code.match_indices("crate::")
        .filter(|(i, _)| {
            // `boo_reconciler::` or `my_crate::` is not this crate's path.
            code[..*i]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// The top-level module a file under `src/` belongs to.
fn top_module(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn every_module_uses_only_the_layers_above_it() {
    let rank = layers();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    // An exported macro is named at the crate's root: it belongs to the
    // module that defines it.
    let mut rank = rank;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, _) in text.match_indices("#[macro_export]\nmacro_rules! ") {
            let rest = &text[i + "#[macro_export]\nmacro_rules! ".len()..];
            let name: String = rest.chars().take_while(|c| *c != ' ').collect();
            let top = top_module(file.strip_prefix(&src).unwrap());
            rank.insert(name, rank[&top]);
        }
    }
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = top_module(rel);
        if top == "lib" || top == "layers_tests" {
            continue;
        }
        let Some(&mine) = rank.get(&top) else {
            wrong.push(format!(
                "src/{top} is not in the README's layout table: add a row that says what it owns"
            ));
            continue;
        };
        for used in uses(&code_outside_tests(file)) {
            match rank.get(&used) {
                None => wrong.push(format!(
                    "{} uses crate::{used}, which the README's layout table does not name",
                    rel.display()
                )),
                Some(&theirs) if theirs > mine => wrong.push(format!(
                    "{} uses crate::{used}, a layer below it in the README's layout table",
                    rel.display()
                )),
                Some(_) => {}
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn http_reaches_the_store_only_through_the_service() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for file in files {
        let code = code_outside_tests(&file);
        assert!(
            !uses(&code).iter().any(|m| m == "store"),
            "{} names crate::store: ask the service",
            file.display()
        );
    }
}

#[test]
fn the_layer_check_sees_a_use_from_below() {
    // What the check reads, on a made-up file: a comment and a test
    // module are not uses; a path in code is, and so is a grouped `use`.
    let code = "//! see [`crate::act`]\nuse crate::plan::Action;\nfn f() { crate::store::x(); }\n\
                #[cfg(test)]\nmod tests {\n    use crate::http;\n}\n";
    assert_eq!(uses(&without_tests(code)), ["plan", "store"]);
    assert!(uses("let x = boo_reconciler::act::y;").is_empty());
    let rank = layers();
    assert!(rank["model"] < rank["plan"] && rank["plan"] < rank["act"]);
    assert!(rank["act"] < rank["controller"] && rank["service"] < rank["http"]);
}
