//! The layering of `mm`, checked on its source: a module may use its own layer, the
//! layers below it, `platform` and `sync`, and nothing above.
//!
//! ```text
//!  kmalloc   the front end: kmalloc, kfree, large blocks, GlobalAlloc
//!  percpu    layer 1: per-CPU arrays
//!  slab      layer 2: slab caches, the general caches
//!  range     layer 3: ranges (with `bootstrap` and `heap`, which owns layers 3 and 4)
//!  page      layer 4: page frames
//!  platform, sync: the seam and the lock, usable from every layer, using none
//! ```
//!
//! The scan reads every `crate::` path of a module's code, in `use` lines and inline
//! alike (comments and `#[cfg(test)]` modules are skipped: tests may reach anywhere), and
//! resolves names that `lib.rs` re-exports to the module they come from. Test files
//! (`*_tests.rs`, `src/tests/`) and the hosted platform (`hosted*.rs`, which assembles a
//! whole machine) are not layers and are not scanned.

#![cfg(not(miri))] // Miri isolates the file system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layer of a top-level module of `mm`: lower numbers sit higher. `None` for the
/// modules every layer may use.
fn rank(module: &str) -> Option<u8> {
    match module {
        "kmalloc" => Some(0),
        "percpu" => Some(1),
        "slab" => Some(2),
        "range" | "bootstrap" | "heap" => Some(3),
        "page" => Some(4),
        _ => None,
    }
}

/// Whether `user` may use `used`.
fn allowed(user: &str, used: &str) -> bool {
    match (rank(user), rank(used)) {
        // `platform` and `sync` use only each other.
        (None, target) => target.is_none(),
        (Some(_), None) => true,
        (Some(me), Some(target)) => target >= me,
    }
}

/// The code of a file without comments and without the `#[cfg(test)]` module that ends
/// it, if any.
fn code_of(source: &str) -> String {
    let mut code = String::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod ") && next.ends_with('{'))
        {
            break;
        }
        let without_comment = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

/// Every top-level module named by a `crate::` path in `code`, `use crate::{a, b}`
/// groups included; names re-exported by `lib.rs` resolve through `reexports`.
fn modules_used(code: &str, reexports: &BTreeMap<String, String>) -> Vec<String> {
    let mut used = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or("").trim())
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            let module = reexports.get(name).map_or(name, String::as_str);
            used.push(module.to_owned());
        }
    }
    used
}

/// `lib.rs`'s `pub use module::{A, B}` lines, as name -> module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = code_of(lib).replace('\n', " ");
    for statement in code.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.trim().rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

/// The top-level module a source file belongs to, or `None` if it is not scanned.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = file.file_name()?.to_str()?;
    let module = first.trim_end_matches(".rs");
    let skipped = name.ends_with("_tests.rs")
        || name == "lib.rs"
        || module == "tests"
        || module.starts_with("hosted");
    (!skipped).then(|| module.to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read mm/src") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every use of a layer above, as "file: uses module".
fn violations(files: &[(String, String)], reexports: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    for (module_and_file, source) in files {
        let (module, file) = module_and_file.split_once(':').expect("module:file");
        for used in modules_used(&code_of(source), reexports) {
            if used != module && !allowed(module, &used) {
                found.push(format!("{file}: {module} uses {used}"));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn no_module_of_mm_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .filter_map(|path| {
            let module = module_of(&src, path)?;
            let source = std::fs::read_to_string(path).expect("read a source file");
            Some((format!("{module}:{}", path.display()), source))
        })
        .collect();
    assert!(
        files.len() > 30,
        "the scan found only {} files",
        files.len()
    );
    let found = violations(&files, &reexports(&lib));
    assert!(
        found.is_empty(),
        "uses of a layer above:\n{}",
        found.join("\n")
    );
}

/// The scan itself finds what it must: an inline path, a `use` group, a re-exported
/// name, and nothing in comments or test modules.
#[test]
fn the_layering_scan_sees_every_kind_of_upward_use() {
    let reexports = reexports("pub use heap::{Heap, HeapStats};\npub use page::PageAllocator;");
    let cases = [
        ("slab:a.rs", "fn f() { crate::percpu::MAX_CPUS; }", true),
        ("slab:b.rs", "use crate::{page, kmalloc::Gfp};", true),
        ("page:c.rs", "use crate::Heap;", true),
        (
            "range:d.rs",
            "use crate::PageAllocator; use crate::platform::PAGE_SIZE;",
            false,
        ),
        ("sync:e.rs", "use crate::slab::SlabError;", true),
        (
            "slab:f.rs",
            "// crate::percpu is above\n/// [`crate::kmalloc`]",
            false,
        ),
        (
            "page:g.rs",
            "fn f() {}\n#[cfg(test)]\nmod tests {\n use crate::slab::X;\n}",
            false,
        ),
        (
            "percpu:h.rs",
            "use crate::slab::SlabCaches; use crate::sync::SpinLock;",
            false,
        ),
    ];
    for (file, source, upward) in cases {
        let found = violations(&[(file.to_owned(), source.to_owned())], &reexports);
        assert_eq!(!found.is_empty(), upward, "{file}: {source:?} -> {found:?}");
    }
}
