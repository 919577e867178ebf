//! `cargo xtask tidy`: checks of the tree that no compiler makes.
//!
//! * Every Markdown file a source file or a doc page names (`docs/mechanisms.md`, `README.md`, …)
//!   exists in the repository, and every section a source cites as `mechanisms.md` §N or §N.M is a
//!   heading of `docs/mechanisms.md` (`## N.` or `### N.M`). Formulas are stated once, there.
//! * Every property id of the proofs' catalog (M1–M18, T1–T15) is listed in `docs/mechanisms.md` §3,
//!   and every id listed there is in the catalog.
//! * No file under `crates/*/src` holds more than [`MAX_CODE_LINES`] lines of code before its
//!   `#[cfg(test)]` module (blank and comment lines do not count), unless [`LONG_FILES`] says why.
//!
//! The same checks run as the test `tidy_tree_is_clean`, so `cargo test --workspace` enforces them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Most lines of code in one source file (tests excluded).
pub const MAX_CODE_LINES: usize = 600;

/// Source files allowed over [`MAX_CODE_LINES`], each with the reason.
pub const LONG_FILES: &[(&str, &str)] = &[];

/// One finding: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the repository root, with a line number where there is one.
    pub place: String,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.what)
    }
}

/// The repository root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// Runs every check on the tree at `root`.
pub fn check(root: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mechanisms = std::fs::read_to_string(root.join("docs/mechanisms.md")).unwrap_or_default();
    if mechanisms.is_empty() {
        problems.push(Problem {
            place: "docs/mechanisms.md".into(),
            what: "missing or empty".into(),
        });
    }
    let sections = headings(&mechanisms);
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "fuzz", "docs", "scripts"] {
        collect_files(&root.join(dir), &mut files);
    }
    files.push(root.join("README.md"));
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let rel = relative(root, path);
        if rel == "xtask/src/tidy.rs" {
            continue; // its tests cite missing files on purpose
        }
        for c in citations(&text) {
            if let Some(what) = unresolved(root, path, &sections, &c) {
                problems.push(Problem {
                    place: format!("{rel}:{}", c.line),
                    what,
                });
            }
        }
        if is_crate_source(&rel) {
            let n = code_lines(&text);
            if n > MAX_CODE_LINES && !LONG_FILES.iter().any(|(p, _)| *p == rel) {
                problems.push(Problem {
                    place: rel.clone(),
                    what: format!(
                        "{n} lines of code outside tests (at most {MAX_CODE_LINES}): split it by \
                         job, or list it in xtask/src/tidy.rs LONG_FILES with the reason"
                    ),
                });
            }
        }
    }
    let catalog = std::fs::read_to_string(root.join("crates/mechanism/tests/lemmas/catalog.rs"))
        .unwrap_or_default();
    problems.extend(catalog_vs_docs(
        &crate::catalog_ids(&catalog),
        &listed_ids(&mechanisms),
    ));
    problems
}

/// A Markdown file named in a text, with the section cited after it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    /// 1-based line.
    pub line: usize,
    /// The path as written (`docs/mechanisms.md`, `math.md`, `../README.md`).
    pub file: String,
    /// `N` or `N.M` after a `§` that follows the name (within the same line).
    pub section: Option<String>,
}

/// Every `*.md` name in `text` (a run of path characters ending in `.md`), with a following
/// `§N[.M]` on the same line when one comes before the next name.
pub fn citations(text: &str) -> Vec<Citation> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find(".md") {
            let end = pos + 3;
            let next_is_path = rest[end..]
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
            let start = rest[..pos]
                .rfind(|ch: char| !(ch.is_ascii_alphanumeric() || "_-./".contains(ch)))
                .map_or(0, |p| p + 1);
            let name = &rest[start..end];
            let tail = &rest[end..];
            rest = tail;
            if next_is_path || name.len() <= 3 || name.starts_with("http") || name.contains("//") {
                continue;
            }
            let upto_next = tail.find(".md").map_or(tail, |p| &tail[..p]);
            let section = upto_next.find('§').map(|p| {
                upto_next[p + '§'.len_utf8()..]
                    .trim_start()
                    .chars()
                    .take_while(|ch| ch.is_ascii_digit() || *ch == '.')
                    .collect::<String>()
                    .trim_end_matches('.')
                    .to_string()
            });
            out.push(Citation {
                line: i + 1,
                file: name.to_string(),
                section: section.filter(|s| !s.is_empty()),
            });
        }
    }
    out
}

/// The section numbers of a Markdown page: `## 2. Title` gives `2`, `### 2.1 Title` gives `2.1`.
pub fn headings(md: &str) -> BTreeSet<String> {
    md.lines()
        .filter(|l| l.starts_with("##"))
        .filter_map(|l| {
            let num: String = l
                .trim_start_matches('#')
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let num = num.trim_end_matches('.');
            (!num.is_empty()).then(|| num.to_string())
        })
        .collect()
}

/// Lines of code before the first `#[cfg(test)]`: blank lines and `//` comments do not count.
pub fn code_lines(src: &str) -> usize {
    src.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count()
}

/// The property ids listed in `docs/mechanisms.md` §3: the first cell of each table row there.
pub fn listed_ids(md: &str) -> Vec<String> {
    let mut in_catalog = false;
    let mut ids = Vec::new();
    for line in md.lines() {
        if line.starts_with("## ") {
            in_catalog = line.starts_with("## 3.");
        }
        if !in_catalog {
            continue;
        }
        if let Some(cell) = line.strip_prefix('|').and_then(|r| r.split('|').next()) {
            let id = cell.trim();
            if crate::property_id(id).as_deref() == Some(id) {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

/// Ids in the catalog but not in the docs, and the other way round.
pub fn catalog_vs_docs(catalog: &[String], listed: &[String]) -> Vec<Problem> {
    let place = || "docs/mechanisms.md §3".to_string();
    let mut out: Vec<Problem> = catalog
        .iter()
        .filter(|id| !listed.contains(id))
        .map(|id| Problem {
            place: place(),
            what: format!("property {id} of the catalog is not listed"),
        })
        .collect();
    out.extend(
        listed
            .iter()
            .filter(|id| !catalog.contains(id))
            .map(|id| Problem {
                place: place(),
                what: format!("property {id} is listed but not in the catalog (catalog.rs)"),
            }),
    );
    if catalog.is_empty() {
        out.push(Problem {
            place: "crates/mechanism/tests/lemmas/catalog.rs".into(),
            what: "no property ids found".into(),
        });
    }
    out
}

/// Why a citation does not resolve, or `None` when it does. A name resolves against the citing
/// file's folder, any folder above it up to the root, and `docs/`.
fn unresolved(
    root: &Path,
    from: &Path,
    sections: &BTreeSet<String>,
    c: &Citation,
) -> Option<String> {
    let name = Path::new(&c.file);
    let mut candidates = vec![root.join(name), root.join("docs").join(name)];
    let mut dir = from.parent();
    while let Some(d) = dir {
        candidates.push(d.join(name));
        if d == root {
            break;
        }
        dir = d.parent();
    }
    let Some(found) = candidates.iter().find(|p| p.is_file()) else {
        return Some(format!(
            "cites `{}`, which is not in the repository (formulas are cited from docs/mechanisms.md)",
            c.file
        ));
    };
    let is_mechanisms = std::fs::canonicalize(found).ok()
        == std::fs::canonicalize(root.join("docs/mechanisms.md")).ok();
    match &c.section {
        Some(s) if is_mechanisms && !sections.contains(s) => Some(format!(
            "cites docs/mechanisms.md §{s}, which is not a section of it (sections: {})",
            sections.iter().cloned().collect::<Vec<_>>().join(", ")
        )),
        _ => None,
    }
}

/// `crates/<name>/src/**.rs`.
fn is_crate_source(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    parts.len() >= 4 && parts[0] == "crates" && parts[2] == "src" && rel.ends_with(".rs")
}

fn relative(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Source and doc files below `dir`, skipping build outputs, corpora and hidden folders.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if !(name.starts_with('.')
                || ["target", "corpus", "artifacts", "node_modules", "results"].contains(&name))
            {
                collect_files(&p, out);
            }
        } else if ["rs", "md", "py", "pyi", "sh", "toml"]
            .iter()
            .any(|x| name.ends_with(&format!(".{x}")))
        {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_names_and_sections() {
        let text = "//! see `docs/mechanisms.md` §2.2 and §9 of it\n\
                    /// (`math.md` M10), README.md, https://x.org/a.md and a.mdx\n\
                    // mechanisms.md §1. then notes.md §3.1";
        let c = citations(text);
        let got: Vec<(usize, &str, Option<&str>)> = c
            .iter()
            .map(|c| (c.line, c.file.as_str(), c.section.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "docs/mechanisms.md", Some("2.2")),
                (2, "math.md", None),
                (2, "README.md", None),
                (3, "mechanisms.md", Some("1")),
                (3, "notes.md", Some("3.1")),
            ]
        );
    }

    #[test]
    fn headings_give_section_numbers() {
        let md = "# Title\n## 1. One\n### 1.1 A\n### 1.2 B\n## Notes\n## 2. Two\n#### 2.1.1 deep\n";
        let h: Vec<String> = headings(md).into_iter().collect();
        assert_eq!(h, ["1", "1.1", "1.2", "2", "2.1.1"]);
    }

    #[test]
    fn code_lines_skip_comments_blanks_and_tests() {
        let src =
            "//! doc\n\nfn a() {}\n    // note\nfn b() {}\n#[cfg(test)]\nmod tests { fn c() {} }\n";
        assert_eq!(code_lines(src), 2);
    }

    #[test]
    fn ids_listed_in_section_three_only() {
        let md = "## 2. X\n| M9 | no |\n## 3. Catalog\n| id | p |\n| --- | --- |\n| M1 | a |\n\
                  | T2 | b |\n| Mx | c |\n## 4. Y\n| T3 | d |\n";
        assert_eq!(listed_ids(md), ["M1", "T2"]);
        let p = catalog_vs_docs(&["M1".into(), "M2".into()], &listed_ids(md));
        let what: Vec<&str> = p.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "property M2 of the catalog is not listed",
                "property T2 is listed but not in the catalog (catalog.rs)"
            ]
        );
    }

    #[test]
    fn unresolved_names_the_missing_file_and_section() {
        let root = repo_root();
        let sections = headings("## 1. A\n### 1.1 B\n");
        let from = root.join("crates/mechanism/src/lib.rs");
        let cite = |file: &str, section: Option<&str>| Citation {
            line: 1,
            file: file.into(),
            section: section.map(Into::into),
        };
        assert!(unresolved(&root, &from, &sections, &cite("math.md", None)).is_some());
        assert_eq!(
            unresolved(&root, &from, &sections, &cite("mechanisms.md", Some("1.1"))),
            None
        );
        let bad = unresolved(&root, &from, &sections, &cite("mechanisms.md", Some("1.2")));
        assert!(bad.is_some_and(|m| m.contains("§1.2")));
        assert_eq!(
            unresolved(&root, &from, &sections, &cite("README.md", None)),
            None
        );
    }

    /// The repository itself passes every check.
    #[test]
    fn tidy_tree_is_clean() {
        let problems = check(&repo_root());
        let report: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(report.is_empty(), "tidy:\n{}", report.join("\n"));
    }
}
