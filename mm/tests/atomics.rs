//! Every atomic of `mm` comes from one shim, `mm::sync::atomic` (`core`'s types, or
//! loom's under `--cfg loom`), so that the loom models see every atomic access of the
//! allocator. Checked on the source: outside `src/sync/atomic.rs`, no code names
//! `core::sync::atomic` or `std::sync::atomic`. Comments are skipped, and so is test
//! code (`*_tests.rs`, `src/tests/`, a `#[cfg(test)]` module ending a file), whose
//! atomics are the tests' own bookkeeping, never built under loom.

#![cfg(not(miri))] // Miri isolates the file system.

use std::path::{Path, PathBuf};

/// The paths that bypass the shim.
const FORBIDDEN: [&str; 2] = ["core::sync::atomic", "std::sync::atomic"];

/// The code of a file: comments dropped, and nothing from a `#[cfg(test)] mod .. {` on.
fn code_of(source: &str) -> String {
    let mut code = String::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod ") && next.ends_with('{'))
        {
            break;
        }
        code.push_str(line.find("//").map_or(line, |at| &line[..at]));
        code.push('\n');
    }
    code
}

/// `file:line: text` for every line of `code` that names a forbidden path.
fn bypasses(file: &str, code: &str) -> Vec<String> {
    code.lines()
        .enumerate()
        .filter(|(_, line)| FORBIDDEN.iter().any(|path| line.contains(path)))
        .map(|(n, line)| format!("{file}:{}: {}", n + 1, line.trim()))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read mm/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_atomic_of_mm_comes_from_the_shim() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    let mut scanned = 0;
    for path in files {
        let rel = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "sync/atomic.rs" || rel.ends_with("_tests.rs") || rel.starts_with("tests/") {
            continue;
        }
        scanned += 1;
        let source = std::fs::read_to_string(&path).expect("read a source file");
        found.extend(bypasses(&rel, &code_of(&source)));
    }
    assert!(scanned > 30, "the scan found too few files ({scanned})");
    assert!(
        found.is_empty(),
        "atomics not taken from crate::sync::atomic (loom would not see them):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_sees_a_bypass_and_ignores_comments_and_tests() {
    let source = "use crate::sync::atomic::Ordering;\n\
                  // core::sync::atomic in a comment is fine\n\
                  static X: core::sync::atomic::AtomicBool = AtomicBool::new(false);\n\
                  #[cfg(test)]\n\
                  mod tests {\n\
                  use std::sync::atomic::AtomicU64;\n\
                  }\n";
    let found = bypasses("x.rs", &code_of(source));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("x.rs:3: static X"), "{found:?}");
}
