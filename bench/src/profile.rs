//! `hitpath --profile FILE --per N`: where the counted instructions go, read from a
//! callgrind output file, per iteration of the counted loop:
//!
//! - inclusive: each function's own instructions and those of everything it calls;
//! - self, by source file: the instructions of each function that come from each source
//!   file, which splits a function into the code inlined into it (in a release build
//!   most of the hit path is inlined into `GlobalAlloc::alloc` and `dealloc`).
//!
//! The format (callgrind's "format specification"): `fn=(id) name` starts the cost lines
//! of a function (`fn=(id)` alone refers to a name given before; `cfn=` lines name the
//! callee of the next call and share that table); `fl=`, `fi=` and `fe=` set the source
//! file of the lines that follow (their own name table, shared with `cfl=`/`cfi=`); a
//! cost line is a position followed by the event counts (here only `Ir`); a
//! `calls=COUNT TARGET` line says that the next cost line is the inclusive cost of a
//! call from the current function, not its own. Recursion would be counted twice in the
//! inclusive figures; the hit path has none.

use std::collections::HashMap;

/// Name compression: `(id) name` defines `id`, `(id)` refers to it.
#[derive(Default)]
struct Names(HashMap<String, String>);

impl Names {
    fn resolve(&mut self, spec: &str) -> String {
        let spec = spec.trim();
        match spec.strip_prefix('(').and_then(|rest| rest.split_once(')')) {
            Some((id, name)) if !name.trim().is_empty() => {
                self.0.insert(id.to_string(), name.trim().to_string());
                name.trim().to_string()
            }
            Some((id, _)) => self.0.get(id).cloned().unwrap_or_else(|| format!("({id})")),
            None => spec.to_string(),
        }
    }
}

/// What one callgrind file says, per function.
#[derive(Default)]
pub struct Profile {
    /// Inclusive count per function.
    pub inclusive: HashMap<String, u64>,
    /// Own count per (function, source file).
    pub own: HashMap<(String, String), u64>,
}

/// Reads callgrind's output `text`.
pub fn parse(text: &str) -> Profile {
    let (mut functions, mut files) = (Names::default(), Names::default());
    let mut profile = Profile::default();
    let (mut function, mut file) = (String::new(), String::new());
    let mut next_is_call = false;
    for line in text.lines() {
        if let Some(spec) = line.strip_prefix("fn=") {
            function = functions.resolve(spec);
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            functions.resolve(spec);
        } else if let Some(spec) = ["fl=", "fi=", "fe="]
            .iter()
            .find_map(|key| line.strip_prefix(key))
        {
            file = files.resolve(spec);
        } else if let Some(spec) = ["cfl=", "cfi="]
            .iter()
            .find_map(|key| line.strip_prefix(key))
        {
            files.resolve(spec);
        } else if line.starts_with("calls=") {
            next_is_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            let cost: u64 = line
                .split_ascii_whitespace()
                .nth(1)
                .and_then(|count| count.parse().ok())
                .unwrap_or(0);
            *profile.inclusive.entry(function.clone()).or_default() += cost;
            if !next_is_call {
                let key = (function.clone(), file.clone());
                *profile.own.entry(key).or_default() += cost;
            }
            next_is_call = false;
        }
    }
    profile
}

/// Prints the counted total, the `top` functions below it by inclusive count (the
/// callers of the counted loop, and the harness's own functions, are left out), and the
/// `top` (function, file) pairs by own count, per `per` iterations.
pub fn print(text: &str, per: u64, top: usize) {
    let profile = parse(text);
    let total = profile
        .inclusive
        .iter()
        .filter(|(name, _)| name.ends_with("::measured"))
        .map(|(_, &count)| count)
        .max()
        .unwrap_or(0);
    let per_iter = |count: u64| count as f64 / per as f64;
    let mut below: Vec<_> = profile
        .inclusive
        .into_iter()
        .filter(|(name, count)| *count < total && !name.starts_with("hitpath::workload::"))
        .collect();
    below.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    println!("inclusive:");
    println!(
        "{:>9.1}  (the counted loop, harness included)",
        per_iter(total)
    );
    for (name, count) in below.into_iter().take(top) {
        println!("{:>9.1}  {name}", per_iter(count));
    }
    let mut own: Vec<_> = profile
        .own
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .collect();
    own.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    println!("self, by the source file the instructions come from (inlined code included):");
    for ((function, file), count) in own.into_iter().take(top) {
        let file = file.rsplit('/').next().unwrap_or(&file);
        println!("{:>9.1}  {function}  [{file}]", per_iter(count));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trimmed callgrind file: `run` (own 10, in two files) calls `alloc` (own 7,
    /// which calls `guard`, own 3) and `free` (own 5).
    const SAMPLE: &str = "\
version: 1
events: Ir
summary: 25
fl=(1) /src/workload.rs
fn=(1) hitpath::workload::measured
1 0
cfn=(2) hitpath::workload::run
calls=1 5
1 25
fn=(2)
5 4
fi=(2) /src/hint.rs
9 6
fe=(1)
cfl=(3) /mm/kmalloc.rs
cfn=(3) alloc
calls=1000 1
6 10
cfn=(4) free
calls=1000 1
7 5
fl=(3)
fn=(3)
1 7
cfn=(5) guard
calls=1000 1
2 3
fn=(4)
1 5
fn=(5)
1 3
";

    #[test]
    fn inclusive_counts_add_the_calls_and_own_counts_split_by_file() {
        let profile = parse(SAMPLE);
        let inclusive = |name: &str| profile.inclusive.get(name).copied();
        assert_eq!(inclusive("hitpath::workload::measured"), Some(25));
        assert_eq!(inclusive("hitpath::workload::run"), Some(25));
        assert_eq!(inclusive("alloc"), Some(10));
        assert_eq!(inclusive("free"), Some(5));
        assert_eq!(inclusive("guard"), Some(3));
        let own = |function: &str, file: &str| {
            profile
                .own
                .get(&(function.to_string(), file.to_string()))
                .copied()
        };
        assert_eq!(own("hitpath::workload::run", "/src/workload.rs"), Some(4));
        assert_eq!(own("hitpath::workload::run", "/src/hint.rs"), Some(6));
        assert_eq!(own("alloc", "/mm/kmalloc.rs"), Some(7));
        assert_eq!(
            own("hitpath::workload::measured", "/src/workload.rs"),
            Some(0)
        );
    }
}
