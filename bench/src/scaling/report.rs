//! `scaling report`: the tables, the CSV and the plots of `scripts/bench scaling`, from
//! the cell lines of the kernel's logs and of the hosted run.
//!
//! A cell line is `scaling: [side=hosted] cpus=N alloc=NAME workload=W key=value...`
//! (no `side`: the kernel). For each side and workload the table gives throughput
//! (million operations per second, all CPUs together), speed-up over 1 CPU, scaling
//! efficiency T(n) / (n T(1)), and `mm`'s throughput over each peer's at the same CPU
//! count; then the latency figures (TSC cycles: p99 and max of one alloc and one free,
//! and, in the kernel, the longest interrupts-off stretch). CPU counts above the host's
//! cores are marked `*`: oversubscribed, they measure time-sharing, not parallelism.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

/// One measured cell.
#[derive(Clone, Debug)]
pub struct Cell {
    pub side: String,
    pub cpus: usize,
    pub alloc: String,
    pub workload: String,
    pub ops_per_s: f64,
    pub cycles_per_op: f64,
    pub alloc_p99: u64,
    pub alloc_max: u64,
    pub free_p99: u64,
    pub free_max: u64,
    pub irqoff_max: Option<u64>,
}

/// The allocator the ratios are of.
const OURS: &str = "mm";

fn parse(line: &str) -> Option<Cell> {
    let rest = line.trim().strip_prefix("scaling: ")?;
    let mut words = std::collections::HashMap::new();
    for word in rest.split_ascii_whitespace() {
        let (key, value) = word.split_once('=')?;
        words.insert(key, value);
    }
    let number = |key: &str| words.get(key)?.parse::<f64>().ok();
    let integer = |key: &str| words.get(key)?.parse::<u64>().ok();
    Some(Cell {
        side: words.get("side").unwrap_or(&"kernel").to_string(),
        cpus: integer("cpus")? as usize,
        alloc: words.get("alloc")?.to_string(),
        workload: words.get("workload")?.to_string(),
        ops_per_s: number("ops_per_s")?,
        cycles_per_op: number("cycles_per_op")?,
        alloc_p99: integer("alloc_p99")?,
        alloc_max: integer("alloc_max")?,
        free_p99: integer("free_p99")?,
        free_max: integer("free_max")?,
        irqoff_max: integer("irqoff_max"),
    })
}

/// The cells of every file, in the order read.
pub fn read(files: &[PathBuf]) -> Result<Vec<Cell>, String> {
    let mut cells = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
        cells.extend(text.lines().filter_map(parse));
    }
    Ok(cells)
}

/// Everything the tables and plots need about the cells.
pub struct Data {
    pub cells: Vec<Cell>,
    pub cores: usize,
    /// How the kernel was run, for the titles.
    pub kernel_label: String,
}

impl Data {
    pub fn get(&self, side: &str, workload: &str, alloc: &str, cpus: usize) -> Option<&Cell> {
        self.cells.iter().rev().find(|c| {
            c.side == side && c.workload == workload && c.alloc == alloc && c.cpus == cpus
        })
    }

    /// Values of a field in order of first appearance.
    fn distinct<T: Ord + Clone>(&self, f: impl Fn(&Cell) -> T) -> Vec<T> {
        let mut seen = BTreeSet::new();
        self.cells
            .iter()
            .map(f)
            .filter(|v| seen.insert(v.clone()))
            .collect()
    }

    pub fn sides(&self) -> Vec<String> {
        self.distinct(|c| c.side.clone())
    }

    pub fn workloads(&self) -> Vec<String> {
        self.distinct(|c| c.workload.clone())
    }

    pub fn allocators(&self, side: &str) -> Vec<String> {
        self.distinct(|c| (c.side == side).then(|| c.alloc.clone()))
            .into_iter()
            .flatten()
            .collect()
    }

    pub fn cpus(&self, side: &str) -> Vec<usize> {
        let mut cpus: Vec<usize> = self
            .distinct(|c| (c.side == side).then_some(c.cpus))
            .into_iter()
            .flatten()
            .collect();
        cpus.sort_unstable();
        cpus
    }

    /// Throughput over 1 CPU's.
    pub fn speedup(&self, cell: &Cell) -> Option<f64> {
        let one = self.get(&cell.side, &cell.workload, &cell.alloc, 1)?;
        Some(cell.ops_per_s / one.ops_per_s)
    }

    /// `mm`'s throughput over this cell's, at the same CPU count.
    pub fn ours_over(&self, cell: &Cell) -> Option<f64> {
        let ours = self.get(&cell.side, &cell.workload, OURS, cell.cpus)?;
        Some(ours.ops_per_s / cell.ops_per_s)
    }

    pub fn label(&self, cpus: usize) -> String {
        if cpus > self.cores {
            format!("{cpus}*")
        } else {
            cpus.to_string()
        }
    }

    pub fn side_title(&self, side: &str) -> String {
        if side == "kernel" {
            format!("kernel ({})", self.kernel_label)
        } else {
            "hosted (threads pinned to cores)".into()
        }
    }
}

fn cell_text(value: Option<f64>, precision: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.precision$}"))
}

/// The tables, as printed.
pub fn tables(data: &Data) -> String {
    let mut out = String::new();
    let star = format!(
        "* = oversubscribed: more CPUs than the host's {} cores (time-sharing, not parallelism)",
        data.cores
    );
    for side in data.sides() {
        let cpus = data.cpus(&side);
        let allocators = data.allocators(&side);
        let many: Vec<usize> = cpus.iter().copied().filter(|&n| n > 1).collect();
        for workload in data.workloads() {
            let _ = writeln!(
                out,
                "\n== {}, {workload}: Mops/s (all CPUs), speed-up T(n)/T(1), efficiency T(n)/(n T(1)); {star}",
                data.side_title(&side)
            );
            let mut header = format!("{:<24}", "allocator");
            for &n in &cpus {
                let _ = write!(header, " {:>8}", data.label(n));
            }
            header.push_str(" |");
            for &n in &many {
                let _ = write!(header, " {:>6}", format!("x{}", data.label(n)));
            }
            header.push_str(" |");
            for &n in &many {
                let _ = write!(header, " {:>6}", format!("e{}", data.label(n)));
            }
            let _ = writeln!(out, "{header}");
            for alloc in &allocators {
                let mut row = format!("{alloc:<24}");
                let cell = |n| data.get(&side, &workload, alloc, n);
                for &n in &cpus {
                    let _ = write!(
                        row,
                        " {:>8}",
                        cell_text(cell(n).map(|c| c.ops_per_s / 1e6), 2)
                    );
                }
                row.push_str(" |");
                for &n in &many {
                    let _ = write!(
                        row,
                        " {:>6}",
                        cell_text(cell(n).and_then(|c| data.speedup(c)), 2)
                    );
                }
                row.push_str(" |");
                for &n in &many {
                    let e = cell(n).and_then(|c| data.speedup(c)).map(|s| s / n as f64);
                    let _ = write!(row, " {:>6}", cell_text(e, 2));
                }
                let _ = writeln!(out, "{row}");
            }
            let _ = writeln!(out, "{:<24}", "mm over each peer (x):");
            for alloc in allocators.iter().filter(|a| *a != OURS) {
                let mut row = format!("  / {alloc:<20}");
                for &n in &cpus {
                    let ratio = data
                        .get(&side, &workload, alloc, n)
                        .and_then(|c| data.ours_over(c));
                    let _ = write!(row, " {:>8}", cell_text(ratio, 2));
                }
                let _ = writeln!(out, "{row}");
            }
        }
        let _ = writeln!(
            out,
            "\n== {}: latency, TSC cycles (p99 / max of one alloc, of one free{})",
            data.side_title(&side),
            if side == "kernel" {
                "; longest interrupts-off stretch of the allocator"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "{:<10} {:<24} {:>5} {:>8} {:>11} {:>8} {:>11} {:>11}",
            "workload",
            "allocator",
            "cpus",
            "alloc p99",
            "alloc max",
            "free p99",
            "free max",
            "irq-off max"
        );
        for workload in data.workloads() {
            for alloc in &allocators {
                for &n in &cpus {
                    let Some(c) = data.get(&side, &workload, alloc, n) else {
                        continue;
                    };
                    let _ = writeln!(
                        out,
                        "{workload:<10} {alloc:<24} {:>5} {:>8} {:>11} {:>8} {:>11} {:>11}",
                        data.label(n),
                        c.alloc_p99,
                        c.alloc_max,
                        c.free_p99,
                        c.free_max,
                        c.irqoff_max.map_or("-".into(), |v| v.to_string())
                    );
                }
            }
        }
    }
    out
}

/// The CSV: one row per cell.
pub fn csv(data: &Data) -> String {
    let mut out = String::from(
        "side,workload,allocator,cpus,oversubscribed,ops_per_s,cycles_per_op,speedup,efficiency,\
         mm_over_this,alloc_p99_cycles,alloc_max_cycles,free_p99_cycles,free_max_cycles,\
         irqoff_max_cycles\n",
    );
    for side in data.sides() {
        for workload in data.workloads() {
            for alloc in data.allocators(&side) {
                for n in data.cpus(&side) {
                    let Some(c) = data.get(&side, &workload, &alloc, n) else {
                        continue;
                    };
                    let speedup = data.speedup(c);
                    let _ = writeln!(
                        out,
                        "{side},{workload},{alloc},{n},{},{:.0},{:.1},{},{},{},{},{},{},{},{}",
                        n > data.cores,
                        c.ops_per_s,
                        c.cycles_per_op,
                        cell_text(speedup, 3),
                        cell_text(speedup.map(|s| s / n as f64), 3),
                        cell_text(data.ours_over(c), 3),
                        c.alloc_p99,
                        c.alloc_max,
                        c.free_p99,
                        c.free_max,
                        c.irqoff_max.map_or(String::new(), |v| v.to_string()),
                    );
                }
            }
        }
    }
    out
}

/// `scaling report --out DIR [--cores N] [--kernel-label TEXT] FILE...`
pub fn main(args: &[String]) -> Result<(), String> {
    let mut out = None;
    let mut cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut kernel_label = String::from("QEMU, multi-threaded TCG: a vCPU is a host thread");
    let mut files = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(args.next().ok_or("--out needs a folder")?)),
            "--kernel-label" => {
                kernel_label = args.next().ok_or("--kernel-label needs a text")?.clone();
            }
            "--cores" => {
                cores = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--cores takes a number")?;
            }
            file => files.push(PathBuf::from(file)),
        }
    }
    let out = out.ok_or("--out is required")?;
    let data = Data {
        cells: read(&files)?,
        cores,
        kernel_label,
    };
    if data.cells.is_empty() {
        return Err("no cell lines (scaling: cpus=...) in the files given".into());
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    print!("{}", tables(&data));
    let csv_path = out.join("scaling.csv");
    std::fs::write(&csv_path, csv(&data))
        .map_err(|e| format!("cannot write {}: {e}", csv_path.display()))?;
    println!("\nCSV: {}", csv_path.display());
    for side in data.sides() {
        for workload in data.workloads() {
            let path = out.join(format!("{side}-{workload}.svg"));
            crate::plot::throughput(&data, &side, &workload, &path)?;
            println!("plot: {}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(side: &str, cpus: usize, alloc: &str, ops: f64) -> String {
        format!(
            "scaling: {side}cpus={cpus} alloc={alloc} workload=pairs ops=1 ms=1 ops_per_s={ops} \
             cycles_per_op=1.0 alloc_p99=1 alloc_max=2 free_p99=3 free_max=4"
        )
    }

    #[test]
    fn speedup_efficiency_and_ratios_come_from_the_same_side_and_workload() {
        let cells = [
            line("", 1, "mm", 10.0),
            line("", 2, "mm", 18.0),
            line("", 2, "talc", 2.0),
            line("side=hosted ", 1, "mm", 100.0),
        ]
        .iter()
        .filter_map(|l| parse(l))
        .collect();
        let data = Data {
            cells,
            cores: 2,
            kernel_label: String::new(),
        };
        let two = data.get("kernel", "pairs", "mm", 2).expect("parsed");
        assert_eq!(data.speedup(two), Some(1.8));
        let talc = data.get("kernel", "pairs", "talc", 2).expect("parsed");
        assert_eq!(data.ours_over(talc), Some(9.0));
        assert!(data.get("hosted", "pairs", "mm", 1).is_some());
        assert!(csv(&data).contains("kernel,pairs,mm,2,false,18,1.0,1.800,0.900,1.000,1,2,3,4,\n"));
        assert_eq!(data.label(4), "4*");
    }
}
