//! The module layering of docs/architecture.md, checked against the code: every `crate::X` and
//! `sf_cache::X` reference in `src/` must name a module that the referring module's row allows.
//! The table is read from the document itself, so the two cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rules: module → the modules it may use (itself and the "every module" ones included).
#[derive(Debug)]
struct Rules {
    allowed: BTreeMap<String, BTreeSet<String>>,
}

/// Names in backticks, e.g. "`fetch`, `store`" → ["fetch", "store"].
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_rules(doc: &str) -> Result<Rules, String> {
    let everyone: Vec<String> = doc
        .lines()
        .find_map(|l| {
            l.split_once("every module may also use:")
                .map(|(_, rest)| ticked(rest))
        })
        .ok_or("docs/architecture.md: no line saying what \"every module may also use:\"")?;
    let mut lines = doc.lines().skip_while(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        !(cells.len() >= 4 && cells[1] == "module" && cells[3] == "may use")
    });
    lines
        .next()
        .ok_or("docs/architecture.md: no `| module | … | may use |` table")?;
    lines.next(); // |---|---|---|
    let mut allowed = BTreeMap::new();
    for l in lines.take_while(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        if cells.len() < 5 {
            return Err(format!("docs/architecture.md: malformed table row: {l}"));
        }
        let name = ticked(cells[1])
            .into_iter()
            .next()
            .ok_or_else(|| format!("docs/architecture.md: row without a `module` name: {l}"))?;
        let mut may: BTreeSet<String> = ticked(cells[3]).into_iter().collect();
        may.extend(everyone.iter().cloned());
        may.insert(name.clone());
        allowed.insert(name, may);
    }
    if allowed.is_empty() {
        return Err("docs/architecture.md: the module table has no rows".into());
    }
    Ok(Rules { allowed })
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs, which declares them).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_string())
}

/// Scan `text`, a line (or the rest of one) inside a `use crate::{ … }` group at `depth`, pushing
/// the names at the group's top level; returns the depth after it (0: the group is closed).
fn scan_group(text: &str, mut depth: usize, line: usize, out: &mut Vec<(usize, String)>) -> usize {
    let mut token = String::new();
    let mut at_top_start = depth == 1;
    for ch in text.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' => at_top_start = depth == 1,
            c if c.is_alphanumeric() || c == '_' => {
                if at_top_start {
                    token.push(c)
                }
            }
            _ => {
                if !token.is_empty() {
                    out.push((line, std::mem::take(&mut token)));
                }
                at_top_start = false;
            }
        }
        if depth == 0 {
            break;
        }
    }
    if !token.is_empty() {
        out.push((line, token));
    }
    depth
}

/// `(line number, module named)` for every `crate::X` / `sf_cache::X` reference in `text`,
/// including the names inside `use crate::{a::…, b}` groups. Comment lines are skipped.
fn references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut group = 0usize; // depth of an open `crate::{` group
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let line = match line.find(" //") {
            Some(p) => &line[..p],
            None => line,
        };
        let n = i + 1;
        if group > 0 {
            group = scan_group(line, group, n, &mut out);
            continue;
        }
        for root in ["crate::", "sf_cache::"] {
            let mut rest = line;
            while let Some(p) = rest.find(root) {
                let before = rest[..p].chars().last();
                rest = &rest[p + root.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                if let Some(after) = rest.strip_prefix('{') {
                    group = scan_group(after, 1, n, &mut out);
                    continue;
                }
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n, name));
                }
            }
        }
    }
    out
}

/// Every violation as `src/FILE:LINE: …`, and modules of `src/` that have no row.
fn check(rules: &Rules, files: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut unknown = BTreeSet::new();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _)| module_of(p))
        .chain(rules.allowed.keys().cloned())
        .collect();
    for (rel, text) in files {
        let Some(module) = module_of(rel) else {
            continue;
        };
        let Some(may) = rules.allowed.get(&module) else {
            unknown.insert(module);
            continue;
        };
        for (line, used) in references(text) {
            // Names that are no module (an item re-exported at the crate root) are not layering.
            if !modules.contains(&used) {
                continue;
            }
            if !may.contains(&used) {
                let list: Vec<&str> = may
                    .iter()
                    .filter(|m| **m != module)
                    .map(String::as_str)
                    .collect();
                problems.push(format!(
                    "src/{}:{line}: `{module}` may not use `{used}` (docs/architecture.md allows: {})",
                    rel.display(),
                    list.join(", ")
                ));
            }
        }
    }
    for m in unknown {
        problems.push(format!(
            "src/{m}: module has no row in docs/architecture.md's module table; add one (its job and what it may use)"
        ));
    }
    problems
}

fn rust_files(dir: &Path, base: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, base, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            out.push((p.strip_prefix(base).unwrap().to_path_buf(), text));
        }
    }
}

#[test]
fn src_follows_the_layering_of_docs_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let rules = parse_rules(&doc).unwrap_or_else(|e| panic!("{e}"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &root.join("src"), &mut files);
    assert!(files.len() > 50, "expected the crate's sources under src/");
    let problems = check(&rules, &files);
    assert!(
        problems.is_empty(),
        "{} layering violation(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_checker_finds_upward_imports_groups_and_unknown_modules() {
    let doc = "every module may also use: `fs`.\n\n\
        | module | its job | may use |\n|---|---|---|\n\
        | `top` | t | `low` |\n| `low` | l | — |\n| `fs` | f | — |\n";
    let rules = parse_rules(doc).unwrap();
    let files = vec![
        (
            PathBuf::from("top/mod.rs"),
            "use crate::low::X;\nuse crate::fs;\n".to_string(),
        ),
        (
            PathBuf::from("low/a.rs"),
            "// crate::top in a comment is fine\nuse crate::{fs::w,\n    top::Y};\nfn f() { crate::top::g() }\n"
                .to_string(),
        ),
        (PathBuf::from("fs.rs"), "use crate::fs::x;\n".to_string()),
        (PathBuf::from("extra/mod.rs"), "use crate::low;\n".to_string()),
    ];
    let problems = check(&rules, &files);
    assert_eq!(
        problems,
        vec![
            "src/low/a.rs:3: `low` may not use `top` (docs/architecture.md allows: fs)".to_string(),
            "src/low/a.rs:4: `low` may not use `top` (docs/architecture.md allows: fs)".to_string(),
            "src/extra: module has no row in docs/architecture.md's module table; add one (its job and what it may use)".to_string(),
        ]
    );
}
