//! The README's `daeda …` command lines cannot drift from the CLI: every one
//! found in a fenced code block names a subcommand that exists (its `--help`
//! exits 0), and every `--flag` on the line is one that subcommand takes.
//!
//! Synopsis lines are read as written: `[--opt X]` and `(--a|--b)` are
//! optional or alternative flags, a ` | ` outside brackets separates
//! alternative subcommands (`registry lock | check | diff`, `runs list | runs
//! show`), an indented line starting with `[` or `-` continues the line above.

use std::process::Command;

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

/// Global options that take a value, allowed before the subcommand.
const GLOBAL_WITH_VALUE: [&str; 4] = ["--catalog", "--redis", "--run-root", "--config"];

/// The `daeda …` command lines of the README's fenced code blocks, joined
/// across continuation lines, comments dropped.
fn command_lines(readme: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_block = false;
    let mut last_was_command = false;
    for raw in readme.lines() {
        if raw.trim_start().starts_with("```") {
            in_block = !in_block;
            last_was_command = false;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = match raw.find(" #") {
            Some(i) => &raw[..i],
            None => raw,
        };
        let trimmed = line.trim();
        let continues = raw.starts_with(' ') && (trimmed.starts_with('[') || trimmed.starts_with('-'));
        if last_was_command && continues {
            let prev = out.last_mut().unwrap();
            prev.push(' ');
            prev.push_str(trimmed);
            continue;
        }
        last_was_command = false;
        let cmd = if trimmed.starts_with("daeda ") {
            Some(trimmed)
        } else {
            // `X=$(daeda …)`: the command inside the substitution.
            trimmed.find("$(daeda ").map(|i| trimmed[i + 2..].rsplit_once(')').map_or(&trimmed[i + 2..], |(c, _)| c))
        };
        if let Some(cmd) = cmd {
            out.push(cmd.trim_end_matches('\\').trim().to_string());
            last_was_command = true;
        }
    }
    out
}

/// Splits a synopsis at ` | ` outside brackets and parentheses.
fn alternatives(line: &str) -> Vec<String> {
    let (mut parts, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            _ => {}
        }
        if depth == 0 && c == ' ' && chars.get(i + 1) == Some(&'|') && chars.get(i + 2) == Some(&' ') {
            parts.push(std::mem::take(&mut cur));
            i += 3;
            continue;
        }
        cur.push(c);
        i += 1;
    }
    parts.push(cur);
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

/// The subcommand words at the head of `words` (after global options).
fn subcommand(words: &[&str]) -> Vec<String> {
    let mut path = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if GLOBAL_WITH_VALUE.contains(&w) {
            i += 2;
            continue;
        }
        if w.starts_with('-') || !w.chars().all(|c| c.is_ascii_lowercase() || c == '-') || w.is_empty() {
            break;
        }
        path.push(w.to_string());
        i += 1;
    }
    path
}

fn flags(segment: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = segment.as_bytes();
    let mut i = 0;
    while let Some(j) = segment[i..].find("--") {
        let start = i + j;
        let mut end = start + 2;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'-')
        {
            end += 1;
        }
        if end > start + 2 {
            out.push(segment[start..end].to_string());
        }
        i = end;
    }
    out
}

/// `daeda <path> --help`, or None when that is not a command.
fn help(path: &[String]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_daeda")).args(path).arg("--help").output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_command_lines_in_the_readme_parse() {
    let lines = command_lines(README);
    assert!(lines.len() >= 15, "too few daeda command lines found, is the extraction broken? {lines:#?}");
    let mut problems = Vec::new();
    let mut checked = 0;
    for line in &lines {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let first = words.join(" ");
        let mut parent: Vec<String> = Vec::new();
        for (n, alt) in alternatives(&first).iter().enumerate() {
            let alt_words: Vec<&str> = alt.split_whitespace().collect();
            let path = subcommand(&alt_words);
            // A later alternative is a sibling subcommand (`registry lock | check`)
            // or, failing that, a whole command again (`runs list | runs show`).
            let candidates: Vec<Vec<String>> = if n == 0 {
                vec![path.clone()]
            } else {
                vec![parent.iter().cloned().chain(path.iter().cloned()).collect(), path.clone()]
            };
            let Some((path, text)) = candidates.into_iter().find_map(|p| help(&p).map(|h| (p, h))) else {
                problems.push(format!("`{line}`: `daeda {}` is not a command", path.join(" ")));
                continue;
            };
            if n == 0 {
                parent = path[..path.len().saturating_sub(1)].to_vec();
            }
            for flag in flags(alt) {
                let known = text.split(|c: char| c.is_whitespace() || c == ',').any(|w| w == flag);
                if !known {
                    problems.push(format!("`{line}`: `daeda {}` takes no `{flag}`", path.join(" ")));
                }
            }
            checked += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "the README disagrees with the CLI ({checked} commands checked):\n{}",
        problems.join("\n")
    );
}

/// The extraction itself, on the shapes the README uses.
#[test]
fn readme_command_extraction_reads_synopses() {
    let md = "text `daeda no` here\n```\ndaeda materialize --online (--service NAME ...|--all) [--as-of TS]\n                 [--mode full|incremental] [--json]\ndaeda lineage [SERVICE] [--json | --dot]   # a comment --nope\n```\n```sh\nTOKEN=$(daeda token mint --sub ranker --services a)\n./scripts/demo.sh\n```\n";
    let lines = command_lines(md);
    assert_eq!(
        lines,
        [
            "daeda materialize --online (--service NAME ...|--all) [--as-of TS] [--mode full|incremental] [--json]",
            "daeda lineage [SERVICE] [--json | --dot]",
            "daeda token mint --sub ranker --services a",
        ]
    );
    assert_eq!(
        alternatives("registry lock | check [--json | --x] | diff"),
        ["registry lock", "check [--json | --x]", "diff"]
    );
    assert_eq!(subcommand(&["--catalog", "c", "online", "get", "--service", "x"]), ["online", "get"]);
    assert_eq!(flags(&lines[0]), ["--online", "--service", "--all", "--as-of", "--mode", "--json"]);
}

/// Splits a shell line into words, honouring single quotes (all the README uses).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// "Your own Parquet" works as written: its YAML (with the example's Parquet
/// path pointed at generated files, absolute) validates, materializes and is
/// served by the three commands that follow it.
#[test]
fn the_readme_catalog_for_your_own_parquet_works() {
    let env = crate::support::TestEnv::new(20);
    let start = README.find("# my_catalog/clicks.yaml\n").expect("the README's own-Parquet example");
    let yaml = &README[start..start + README[start..].find("```").unwrap()];
    let parquet = env.data().join("user_features/*/*.parquet");
    assert!(yaml.contains("path: /data/clicks/*.parquet"), "{yaml}");
    let yaml = yaml.replace("/data/clicks/*.parquet", parquet.to_str().unwrap());
    std::fs::create_dir_all(env.dir.path().join("my_catalog")).unwrap();
    std::fs::write(env.dir.path().join("my_catalog/clicks.yaml"), yaml).unwrap();

    let commands: Vec<String> =
        command_lines(README).into_iter().filter(|l| l.contains("--catalog my_catalog")).collect();
    assert_eq!(commands.len(), 3, "{commands:?}");
    let mut last = String::new();
    for line in &commands {
        let words = shell_words(line);
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        last = env.expect(0, &args).0;
    }
    let got: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(got["service"], "clicks");
    assert_eq!(got["generation"], "1");
    assert_eq!(got["columns"]["user_id"], serde_json::json!([1, 2]));
    assert!(got["status"].as_array().unwrap().iter().all(|s| s != "missing"), "{got}");
}
