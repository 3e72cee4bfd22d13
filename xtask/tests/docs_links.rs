//! Every README maps concepts to files and the book links chapters; a renamed file or
//! chapter must not leave a dead link behind. Checks every relative link (and
//! `#anchor` into a Markdown file) in the READMEs and in `docs/src`.

use std::path::{Path, PathBuf};

mod support;
use support::workspace_root;

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = support::readmes(root);
    let mut stack = vec![root.join("docs/src"), root.join("exercises/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files
}

/// GitHub/mdBook-style heading anchors of a Markdown file.
fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| {
            line.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn every_relative_link_in_the_readmes_and_the_book_resolves() {
    let root = workspace_root();
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_code = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            for (at, _) in line.match_indices("](") {
                let rest = &line[at + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue; // external, or an mdBook draft chapter `[x]()`
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                checked += 1;
                if !resolved.exists() {
                    broken.push(format!("{}: {target}", file.display()));
                } else if !anchor.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(&resolved).unwrap();
                    if !anchors(&target_text).iter().any(|a| a == anchor) {
                        broken.push(format!("{}: {target} (no such heading)", file.display()));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 50,
        "only {checked} links found: is the link syntax still recognised?"
    );
}

#[test]
fn anchors_follow_the_heading_text() {
    assert_eq!(anchors("## See each lesson\n"), ["see-each-lesson"]);
    assert_eq!(
        anchors("### The order is stored before the payment call\n"),
        ["the-order-is-stored-before-the-payment-call"]
    );
}
