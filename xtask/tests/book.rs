//! The book builds with the pinned mdBook (`MDBOOK`, which `cargo xtask test` installs
//! and exports), every chapter of `SUMMARY.md` becomes a page, and every link from one
//! page of the built book to another resolves. A chapter listed without its file
//! fails the build (`create-missing = false`), shown on a small broken book. The
//! Markdown's own relative links, into the book and into the repository, are checked
//! by `docs_links.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn mdbook() -> String {
    std::env::var("MDBOOK").unwrap_or_else(|_| {
        panic!("MDBOOK is not set: `cargo xtask test` installs the pinned mdBook and sets it (or `cargo xtask book` installs it)")
    })
}

fn build(book: &Path, out: &Path) -> std::process::Output {
    Command::new(mdbook())
        .arg("build")
        .arg(book)
        .arg("--dest-dir")
        .arg(out)
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", mdbook()))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferriseats-book-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `(…)` targets of `[…](…)` links in SUMMARY.md.
fn chapters(summary: &str) -> Vec<String> {
    summary
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(str::to_owned)
        .collect()
}

/// Every `href="…"` of an HTML page.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

fn html_pages(dir: &Path, pages: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            html_pages(&path, pages);
        } else if path.extension().is_some_and(|e| e == "html") {
            pages.push(path);
        }
    }
}

#[test]
fn the_book_builds_and_its_pages_link_to_pages_that_exist() {
    let out = temp_dir("built");
    let built = build(&workspace_root().join("docs"), &out);
    assert!(
        built.status.success(),
        "mdbook build docs failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let summary = std::fs::read_to_string(workspace_root().join("docs/src/SUMMARY.md")).unwrap();
    let chapters = chapters(&summary);
    assert!(
        chapters.len() > 20,
        "SUMMARY.md lists {} chapters",
        chapters.len()
    );
    for chapter in &chapters {
        let page = out.join(chapter.replace(".md", ".html"));
        assert!(
            page.is_file(),
            "{chapter} has no page at {}",
            page.display()
        );
    }
    let broken = broken_links(&out);
    assert!(
        broken.is_empty(),
        "links between pages of the built book that lead nowhere:\n{}",
        broken.join("\n")
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// Links from a page of the built book in `out` to a page of it that does not exist.
fn broken_links(out: &Path) -> Vec<String> {
    let mut pages = Vec::new();
    html_pages(out, &mut pages);
    let mut broken = Vec::new();
    for page in &pages {
        let html = std::fs::read_to_string(page).unwrap();
        for href in hrefs(&html) {
            let target = href.split('#').next().unwrap_or_default();
            // Other sites, anchors in the same page, and links that leave the book for
            // the repository's files (they resolve on a forge and in an editor; the
            // Markdown links are checked by docs_links.rs).
            if target.is_empty() || href.contains("://") || href.starts_with("mailto:") {
                continue;
            }
            let resolved = normalise(&page.parent().unwrap().join(target));
            if resolved.starts_with(out) && !resolved.exists() {
                broken.push(format!(
                    "{} → {href}",
                    page.strip_prefix(out).unwrap().display()
                ));
            }
        }
    }
    broken
}

/// `a/b/../c` → `a/c`, without touching the disk.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A book of its own under the temporary directory: the workshop's `book.toml` and
/// `files` (paths under `src/`, contents).
fn small_book(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let book = temp_dir(name);
    std::fs::copy(
        workspace_root().join("docs/book.toml"),
        book.join("book.toml"),
    )
    .unwrap();
    for (path, text) in files {
        let path = book.join("src").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    book
}

#[test]
fn a_chapter_listed_without_its_file_fails_the_build() {
    let book = small_book(
        "broken",
        &[
            (
                "SUMMARY.md",
                "# Summary\n\n- [Here](here.md)\n- [Missing](missing.md)\n",
            ),
            ("here.md", "# Here\n\n[the missing one](missing.md)\n"),
        ],
    );
    let built = build(&book, &book.join("out"));
    assert!(
        !built.status.success(),
        "a missing chapter must fail the build"
    );
    assert!(
        String::from_utf8_lossy(&built.stderr).contains("missing.md"),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(
        !book.join("src/missing.md").exists(),
        "create-missing must stay off"
    );
    std::fs::remove_dir_all(&book).unwrap();
}

#[test]
fn a_link_to_a_page_that_does_not_exist_is_found() {
    let book = small_book(
        "dead-link",
        &[
            (
                "SUMMARY.md",
                "# Summary\n\n- [Intro](README.md)\n- [Part](part/README.md)\n",
            ),
            ("README.md", "# Intro\n\n[the part](part/README.md)\n"),
            (
                "part/README.md",
                "# Part\n\n[gone](gone.md), [here](README.md#part), [elsewhere](https://example.org/x.html)\n",
            ),
        ],
    );
    let out = book.join("out");
    assert!(build(&book, &out).status.success());
    let broken = broken_links(&out);
    assert!(
        broken.iter().any(|b| b == "part/README.html → gone.html"),
        "{broken:?}"
    );
    assert!(
        !broken.iter().any(|b| b.ends_with("README.html#part")),
        "{broken:?}"
    );
    std::fs::remove_dir_all(&book).unwrap();
}
