//! What an archive records for its restore beyond the stash shape: lines
//! in the body of the archive commit's message, which `git stash apply`
//! never reads.
//!
//! ```text
//! unborn "refs/heads/<branch>"
//! nested <n> "<path>"
//! nested <n> "<path>" clean
//! mode <octal> file "<path>"
//! mode <octal> dir "<path>"
//! ```
//!
//! `unborn`: HEAD named that branch and it had no commit (the archive's
//! `H` is an empty stand-in). `nested`: the nested repository or
//! submodule whose commits were fetched to `<ref>-nested/<n>`, at `path`
//! (relative to the worktree); `clean` when its working files are its
//! HEAD's and so are not in `U`. `mode`: the permission bits of a file
//! or directory of the worktree (`""`: the worktree's own directory)
//! that git would not give back: git stores only `644` or `755` for a
//! file and nothing for a directory, so only the others are recorded
//! (a `600` secret, a `700` directory). Paths are any bytes: each is written
//! C-quoted, `\ooo` for every byte outside printable ASCII, so that a
//! record is always one line of ASCII. Everything else the message holds
//! that a user could choose (the worktree's id and path) is quoted the
//! same way when it needs to be, so no line of the message can pass for a
//! record that the archive did not write.

/// The records of one archive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// `refs/heads/<branch>` an unborn HEAD named.
    pub unborn: Option<String>,
    pub nested: Vec<NestedRecord>,
    pub modes: Vec<ModeRecord>,
}

/// The permission bits of one file or directory, which git does not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeRecord {
    /// Relative to the worktree; empty for the worktree's directory.
    pub path: Vec<u8>,
    /// `0o777` at most: no set-id or sticky bit is ever recorded.
    pub mode: u32,
    pub dir: bool,
}

/// Where one nested repository's kept commits belong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedRecord {
    /// The `<n>` of `<ref>-nested/<n>`.
    pub n: usize,
    /// Relative to the worktree.
    pub path: Vec<u8>,
    /// Its working files are its HEAD's (not in `U`).
    pub clean: bool,
}

/// `bytes` between double quotes, escaped so that the result is printable
/// ASCII.
pub fn quote(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s.push('"');
    s
}

/// `bytes` as they are when they need no quoting, else [`quote`]d.
pub fn quote_if_needed(bytes: &[u8]) -> String {
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| (0x20..=0x7e).contains(b) && *b != b'"' && *b != b'\\');
    if plain {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        quote(bytes)
    }
}

/// The bytes a [`quote`]d string at the start of `s` stands for, and what
/// follows it; `None` for anything [`quote`] would not have written.
pub fn unquote(s: &str) -> Option<(Vec<u8>, &str)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((out, &s[i + 1..])),
            b'\\' => {
                let (byte, len) = match b.get(i + 1)? {
                    b'"' => (b'"', 2),
                    b'\\' => (b'\\', 2),
                    b'n' => (b'\n', 2),
                    b't' => (b'\t', 2),
                    b'0'..=b'3' => {
                        let digits = b.get(i + 1..i + 4)?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return None;
                        }
                        let v = digits
                            .iter()
                            .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                        (v as u8, 4)
                    }
                    _ => return None,
                };
                out.push(byte);
                i += len;
            }
            c @ 0x20..=0x7e => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    None
}

/// The lines [`parse`] reads back, each ending with a newline.
pub fn lines(r: &Records) -> String {
    let mut s = String::new();
    if let Some(b) = &r.unborn {
        s.push_str(&format!("unborn {}\n", quote(b.as_bytes())));
    }
    for n in &r.nested {
        s.push_str(&format!(
            "nested {} {}{}\n",
            n.n,
            quote(&n.path),
            if n.clean { " clean" } else { "" }
        ));
    }
    for m in &r.modes {
        s.push_str(&format!(
            "mode {:03o} {} {}\n",
            m.mode,
            if m.dir { "dir" } else { "file" },
            quote(&m.path)
        ));
    }
    s
}

/// A `mode` record's value: octal, permission bits only.
fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777)
}

/// The records in an archive commit's `message`. An archive made before
/// records were written has none; a line that does not parse whole is not
/// a record.
pub fn parse(message: &[u8]) -> Records {
    let mut r = Records::default();
    let text = String::from_utf8_lossy(message);
    // The subject is `WIP on …`: never a record.
    for line in text.lines().skip(1) {
        if let Some(rest) = line.strip_prefix("unborn ") {
            if let Some((b, "")) = unquote(rest) {
                if let Ok(b) = String::from_utf8(b) {
                    if b.starts_with("refs/heads/") {
                        r.unborn = Some(b);
                    }
                }
            }
        } else if let Some(rest) = line.strip_prefix("nested ") {
            let Some((n, rest)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(n) = n.parse::<usize>() else { continue };
            let (path, clean) = match unquote(rest) {
                Some((p, "")) => (p, false),
                Some((p, " clean")) => (p, true),
                _ => continue,
            };
            if !r.nested.iter().any(|x| x.n == n) {
                r.nested.push(NestedRecord { n, path, clean });
            }
        } else if let Some(rest) = line.strip_prefix("mode ") {
            let Some((mode, rest)) = rest.split_once(' ') else {
                continue;
            };
            let Some(mode) = parse_mode(mode) else {
                continue;
            };
            let (dir, rest) = match rest.split_once(' ') {
                Some(("dir", rest)) => (true, rest),
                Some(("file", rest)) => (false, rest),
                _ => continue,
            };
            let Some((path, "")) = unquote(rest) else {
                continue;
            };
            if !r.modes.iter().any(|x| x.path == path) {
                r.modes.push(ModeRecord { path, mode, dir });
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_bytes_come_back_from_their_quoted_form(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)
        ) {
            let q = quote(&bytes);
            proptest::prop_assert!(q.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{}", q);
            proptest::prop_assert_eq!(unquote(&q), Some((bytes.clone(), "")));
            let r = Records {
                unborn: None,
                nested: vec![NestedRecord { n: 3, path: bytes.clone(), clean: true }],
                modes: vec![ModeRecord { path: bytes, mode: 0o600, dir: false }],
            };
            let msg = format!("WIP on x: 1234567 y\n\nbody\n\n{}", lines(&r));
            proptest::prop_assert_eq!(parse(msg.as_bytes()), r);
        }
    }

    #[test]
    fn records_round_trip_and_malformed_lines_are_not_records() {
        let r = Records {
            unborn: Some("refs/heads/feature/x".into()),
            nested: vec![
                NestedRecord {
                    n: 0,
                    path: b"vendor/lib".to_vec(),
                    clean: false,
                },
                NestedRecord {
                    n: 2,
                    path: b"odd\n\"name\"\xff".to_vec(),
                    clean: true,
                },
            ],
            modes: vec![
                ModeRecord {
                    path: Vec::new(),
                    mode: 0o700,
                    dir: true,
                },
                ModeRecord {
                    path: b"config/.env".to_vec(),
                    mode: 0o600,
                    dir: false,
                },
                ModeRecord {
                    path: b"odd\n\xff".to_vec(),
                    mode: 0o000,
                    dir: false,
                },
            ],
        };
        let msg = format!("WIP on (no branch): 1234567 x\n\nbody\n\n{}", lines(&r));
        assert_eq!(parse(msg.as_bytes()), r);
        for bad in [
            "nested 0 vendor/lib",
            "nested 0 \"vendor/lib",
            "nested 0 \"vendor/lib\" dirty",
            "nested x \"vendor/lib\"",
            "nested 0 \"a\\q\"",
            "unborn \"HEAD\"",
            "mode 600 \".env\"",
            "mode 4755 file \"setuid\"",
            "mode 6OO file \"x\"",
            "mode 600 link \"x\"",
            "mode 600 file x",
        ] {
            let msg = format!("WIP on x: 1 y\n\n{bad}\n");
            assert_eq!(parse(msg.as_bytes()), Records::default(), "{bad}");
        }
        // The subject line is never one.
        assert_eq!(parse(b"nested 0 \"a\"\n"), Records::default());
    }

    #[test]
    fn what_needs_no_quoting_is_left_as_it_is() {
        assert_eq!(quote_if_needed(b"/srv/wt/w1"), "/srv/wt/w1");
        assert_eq!(
            quote_if_needed(b"w\nnested 0 \"x\""),
            "\"w\\nnested 0 \\\"x\\\"\""
        );
        assert_eq!(quote_if_needed(b""), "\"\"");
    }
}
