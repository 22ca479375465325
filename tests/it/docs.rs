//! The documentation is checked like code: the configuration reference is generated from
//! the settings table (so it cannot drift from `--help`), and every relative link and
//! `#anchor` in the README and the book resolves.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Component, Path, PathBuf};

use fwatchdog::cli::{Heading, CONTEXT_ENV, IGNORED_ENV};
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CONFIGURATION: &str = "docs/src/configuration.md";
/// The line after which the configuration page is generated; the text above it is
/// written by hand and kept as is.
const MARKER: &str = "<!-- Generated from the settings table in src/cli.rs";
const REGENERATE: &str = "FWATCHDOG_UPDATE_DOCS=1 cargo test --test it docs::";

/// `<`, `>`, `|` and `*` would be read as HTML, a table cell border or emphasis.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("\\|"),
            '*' => out.push_str("\\*"),
            c => out.push(c),
        }
    }
    out
}

fn code_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The generated part of the configuration page: one table per heading, in `--help`
/// order, each row with an anchor named after the setting (`configuration.md#port`).
fn reference() -> String {
    let mut out = String::new();
    for heading in Heading::ALL {
        let mut rows = heading.settings().peekable();
        if rows.peek().is_none() {
            continue;
        }
        let _ = write!(
            out,
            "\n## {}\n\n| setting | flag | env | default | meaning |\n|---|---|---|---|---|\n",
            heading.title()
        );
        for s in rows {
            let _ = writeln!(
                out,
                "| <a id=\"{id}\"></a>`{id}` | `--{flag}` | {env} | {default} | {help} |",
                id = s.id,
                flag = s.flag,
                env = code_list(s.env),
                default = escape(s.default),
                help = escape(s.help),
            );
        }
    }
    let _ = write!(
        out,
        "\n## Read from the environment, not settings\n\n\
         {}: the function's name and namespace, which OpenFaaS gives every function; \
         `jwt_auth` checks tokens against them.\n\n\
         ## Accepted but not honoured\n\n\
         Settings of the OpenFaaS watchdogs that fwatchdog does not act on. Each one set \
         gets a warning at startup with this advice; none of them would weaken protection.\n\n\
         | env | instead |\n|---|---|\n",
        code_list(CONTEXT_ENV)
    );
    for (name, advice) in IGNORED_ENV {
        let _ = writeln!(out, "| `{name}` | {} |", escape(advice));
    }
    out
}

#[test]
fn configuration_reference_is_generated_from_the_settings_table() {
    let path = Path::new(ROOT).join(CONFIGURATION);
    let current = std::fs::read_to_string(&path).expect(CONFIGURATION);
    let Some(at) = current.find(MARKER) else {
        panic!("{CONFIGURATION} lost its line {MARKER:?}: put it back below the hand-written part")
    };
    let head_end = at
        + current[at..]
            .find('\n')
            .map_or(current.len() - at, |i| i + 1);
    let wanted = format!("{}{}", &current[..head_end], reference());
    if current == wanted {
        return;
    }
    if std::env::var_os("FWATCHDOG_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &wanted).expect("write the configuration page");
        eprintln!("{CONFIGURATION} regenerated");
        return;
    }
    let first_difference = current
        .lines()
        .zip(wanted.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map_or_else(
            || {
                let (file, generated) = (current.lines().count(), wanted.lines().count());
                format!("the file has {file} lines, the generated page {generated}")
            },
            |(i, (a, b))| format!("line {}:\n  file:      {a}\n  generated: {b}", i + 1),
        );
    panic!(
        "{CONFIGURATION} does not match the settings table in src/cli.rs; regenerate it with\n\n    \
         {REGENERATE}\n\nand commit it. First difference, {first_difference}"
    );
}

#[test]
fn help_lists_the_settings_under_their_headings() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fwatchdog"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in Heading::ALL {
        let Some(first) = heading.settings().next() else {
            continue;
        };
        let at = help
            .find(&format!("\n{}:\n", heading.title()))
            .unwrap_or_else(|| panic!("no heading {:?} in:\n{help}", heading.title()));
        let next = help[at + 1..]
            .find("\n\n")
            .map_or(help.len(), |i| at + 1 + i);
        assert!(
            help[at..next].contains(&format!("--{} ", first.flag)),
            "--{} is not right under {:?}:\n{help}",
            first.flag,
            heading.title()
        );
    }
}

/// The Markdown files users read: the README and the book.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read docs/src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![Path::new(ROOT).join("README.md")];
    walk(&Path::new(ROOT).join("docs/src"), &mut files);
    files.sort();
    files
}

/// A heading's anchor as GitHub and mdBook make it: lower case, letters, digits, `-`
/// and `_` kept, spaces to `-`, everything else dropped; repeats get `-1`, `-2`, ….
fn slug(text: &str) -> String {
    text.trim()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_lowercase()),
            ' ' => Some('-'.to_lowercase()),
            _ => None,
        })
        .flatten()
        .collect()
}

struct Page {
    anchors: Vec<String>,
    /// (line, target) of every link and image.
    links: Vec<(usize, String)>,
}

fn parse(text: &str) -> Page {
    let html_id = regex::Regex::new(r#"<a\s+(?:id|name)="([^"]+)""#).expect("regex");
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut page = Page {
        anchors: Vec::new(),
        links: Vec::new(),
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut heading: Option<String> = None;
    for (event, range) in Parser::new_ext(text, Options::all()).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let n = seen.entry(base.clone()).or_insert(0);
                page.anchors.push(match *n {
                    0 => base,
                    n => format!("{base}-{n}"),
                });
                *n += 1;
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => page
                .links
                .push((line_of(range.start), dest_url.to_string())),
            Event::Html(h) | Event::InlineHtml(h) => {
                for c in html_id.captures_iter(&h) {
                    page.anchors.push(c[1].to_owned());
                }
            }
            _ => {}
        }
    }
    page
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// What is wrong with one link from `file`, if anything.
fn check_link(
    file: &Path,
    target: &str,
    pages: &BTreeMap<PathBuf, Page>,
    book: &Path,
) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else {
        normalise(&file.parent().expect("a folder").join(path))
    };
    if file.starts_with(book) && !resolved.starts_with(book) {
        return Some(format!(
            "{target} leaves docs/src, which the built book does not have: link the page \
             in the book, or the file on GitHub"
        ));
    }
    if !resolved.exists() {
        return Some(format!("{target}: no such file"));
    }
    if anchor.is_empty() {
        return None;
    }
    match pages.get(&resolved) {
        Some(page) if page.anchors.iter().any(|a| a == anchor) => None,
        Some(page) => Some(format!(
            "{target}: no #{anchor} there; its anchors are {:?}",
            page.anchors
        )),
        None => Some(format!(
            "{target}: #{anchor} in a file that is not Markdown"
        )),
    }
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = Path::new(ROOT);
    let book = root.join("docs/src");
    let pages: BTreeMap<PathBuf, Page> = markdown_files()
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("read");
            (f, parse(&text))
        })
        .collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for (file, page) in &pages {
        for (line, target) in &page.links {
            checked += 1;
            if let Some(why) = check_link(file, target, &pages, &book) {
                let name = file.strip_prefix(root).unwrap_or(file).display();
                broken.push(format!("{name}:{line}: {why}"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 10, "only {checked} links found");
}

#[test]
fn slugs_follow_github_and_mdbook() {
    assert_eq!(slug("OpenFaaS IAM (jwt_auth)"), "openfaas-iam-jwt_auth");
    assert_eq!(
        slug("Limits for clients without a key"),
        "limits-for-clients-without-a-key"
    );
    assert_eq!(
        slug("Signals and shutdown: SIGTERM — drain"),
        "signals-and-shutdown-sigterm--drain"
    );
    let page = parse("# A\n\n## A\n\n```\n# not a heading\n```\n[x](#a-1)\n");
    assert_eq!(page.anchors, ["a", "a-1"]);
    assert_eq!(page.links, [(8, "#a-1".to_owned())]);
}

#[test]
fn every_book_page_is_in_the_summary() {
    let book = Path::new(ROOT).join("docs/src");
    let summary = parse(&std::fs::read_to_string(book.join("SUMMARY.md")).expect("SUMMARY.md"));
    let listed: Vec<PathBuf> = summary
        .links
        .iter()
        .filter(|(_, target)| !target.is_empty())
        .map(|(_, target)| normalise(&book.join(target)))
        .collect();
    let missing: Vec<String> = markdown_files()
        .into_iter()
        .filter(|f| f.starts_with(&book) && !f.ends_with("SUMMARY.md") && !listed.contains(f))
        .map(|f| f.strip_prefix(ROOT).unwrap_or(&f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "pages mdBook would not build (add them to docs/src/SUMMARY.md): {missing:?}"
    );
}

/// The README is the front door; the details live in the book, where they can be found.
#[test]
fn readme_stays_short() {
    let lines = std::fs::read_to_string(Path::new(ROOT).join("README.md"))
        .expect("README.md")
        .lines()
        .count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines (at most 250): put the details in a page under docs/src \
         (docs/src/SUMMARY.md lists them) and link it"
    );
}
