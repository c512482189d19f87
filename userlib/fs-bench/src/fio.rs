//! fio results: one line per fio run (`record`, from fio's JSON output), and the markdown
//! table of their medians (`report`), with IOPS ratios against two baselines.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// What one fio run measured. Latencies in microseconds; NaN when fio reported none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Operations per second (reads, or writes: with fsync=1 the fsyncs' time is included).
    pub iops: f64,
    /// Median completion latency of the reads or writes.
    pub p50: f64,
    /// 99th percentile completion latency.
    pub p99: f64,
    /// Median latency of the fsyncs (fsync=1 runs).
    pub sync_p50: f64,
    /// 99th percentile latency of the fsyncs.
    pub sync_p99: f64,
}

fn percentile_us(section: &Value, key: &str) -> f64 {
    section
        .get("percentile")
        .and_then(|p| p.get(key))
        .and_then(Value::as_f64)
        .map_or(f64::NAN, |ns| ns / 1000.0)
}

/// Parses fio's `--output-format=json` output (anything before the first `{`, such as a
/// warning, is skipped). The direction is the one of the two that did I/O.
pub fn parse(text: &str) -> Result<Sample> {
    let start = text
        .find('{')
        .ok_or_else(|| anyhow!("no JSON in fio's output"))?;
    let v: Value = serde_json::from_str(&text[start..]).context("parsing fio's JSON output")?;
    let job = v
        .get("jobs")
        .and_then(|j| j.get(0))
        .ok_or_else(|| anyhow!("fio's JSON has no job"))?;
    if let Some(e) = job.get("error").and_then(Value::as_i64) {
        if e != 0 {
            return Err(anyhow!("the fio job failed with error {e}"));
        }
    }
    let ios = |dir: &str| {
        job.get(dir)
            .and_then(|d| d.get("total_ios"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let dir = if ios("read") > ios("write") {
        "read"
    } else {
        "write"
    };
    let d = job
        .get(dir)
        .ok_or_else(|| anyhow!("fio's JSON has no {dir} section"))?;
    let iops = d
        .get("iops")
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow!("fio's JSON has no {dir} iops"))?;
    let clat = d.get("clat_ns").cloned().unwrap_or(Value::Null);
    let sync = job
        .get("sync")
        .filter(|s| s.get("total_ios").and_then(Value::as_u64).unwrap_or(0) > 0)
        .and_then(|s| s.get("lat_ns"))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Sample {
        iops,
        p50: percentile_us(&clat, "50.000000"),
        p99: percentile_us(&clat, "99.000000"),
        sync_p50: percentile_us(&sync, "50.000000"),
        sync_p99: percentile_us(&sync, "99.000000"),
    })
}

/// Appends `label workload iops p50 p99 sync_p50 sync_p99` (tab-separated) to `out`.
pub fn record(label: &str, workload: &str, json: &Path, out: &Path) -> Result<Sample> {
    let text = fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let s = parse(&text).with_context(|| format!("{label}, {workload}"))?;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    writeln!(
        f,
        "{label}\t{workload}\t{}\t{}\t{}\t{}\t{}",
        s.iops, s.p50, s.p99, s.sync_p50, s.sync_p99
    )?;
    Ok(s)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn cell(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// The medians of each (label, workload), in the order first seen.
pub fn medians(text: &str) -> Result<Vec<(String, String, usize, Sample)>> {
    let mut runs: BTreeMap<(String, String), Vec<[f64; 5]>> = BTreeMap::new();
    let mut order = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 7 {
            continue;
        }
        let key = (f[0].to_string(), f[1].to_string());
        let mut v = [0.0; 5];
        for (i, x) in f[2..].iter().enumerate() {
            v[i] = x
                .parse()
                .with_context(|| format!("line {}: {x:?} is not a number", n + 1))?;
        }
        if !runs.contains_key(&key) {
            order.push(key.clone());
        }
        runs.entry(key).or_default().push(v);
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let r = &runs[&k];
            let col = |i: usize| median(r.iter().map(|v| v[i]).collect());
            let s = Sample {
                iops: col(0),
                p50: col(1),
                p99: col(2),
                sync_p50: col(3),
                sync_p99: col(4),
            };
            (k.0, k.1, r.len(), s)
        })
        .collect())
}

/// The markdown table of a results file: one row per workload and file system, medians
/// of the repetitions, IOPS against `base_a` and `base_b` (labels) on the same workload.
pub fn report(out: &Path, base_a: &str, base_b: &str) -> Result<String> {
    let text = fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    let m = medians(&text)?;
    let iops_of = |label: &str, w: &str| {
        m.iter()
            .find(|(l, wl, _, _)| l == label && wl == w)
            .map(|(_, _, _, s)| s.iops)
    };
    let mut workloads: Vec<&str> = Vec::new();
    for (_, w, _, _) in &m {
        if !workloads.contains(&w.as_str()) {
            workloads.push(w);
        }
    }
    let mut t = String::new();
    t.push_str(&format!(
        "| workload | file system | runs | IOPS | p50 (µs) | p99 (µs) | fsync p50 (µs) | fsync p99 (µs) | IOPS vs {base_a} | IOPS vs {base_b} |\n"
    ));
    t.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for w in workloads {
        for (l, _, n, s) in m.iter().filter(|(_, wl, _, _)| wl == w) {
            let ratio = |b: &str| match iops_of(b, w) {
                Some(base) if base > 0.0 => format!("{:.2}x", s.iops / base),
                _ => "-".into(),
            };
            t.push_str(&format!(
                "| {w} | {l} | {n} | {} | {} | {} | {} | {} | {} | {} |\n",
                cell(s.iops),
                cell(s.p50),
                cell(s.p99),
                cell(s.sync_p50),
                cell(s.sync_p99),
                ratio(base_a),
                ratio(base_b)
            ));
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITE_FSYNC: &str = r#"note: a warning first
{"jobs": [{"error": 0,
  "read": {"total_ios": 0, "iops": 0.0, "clat_ns": {"N": 0}},
  "write": {"total_ios": 100, "iops": 1234.5,
            "clat_ns": {"percentile": {"50.000000": 2000, "99.000000": 9000}}},
  "sync": {"total_ios": 100, "lat_ns": {"percentile": {"50.000000": 500, "99.000000": 1500}}}}]}"#;

    #[test]
    fn parses_writes_and_fsyncs() {
        let s = parse(WRITE_FSYNC).unwrap();
        assert_eq!(s.iops, 1234.5);
        assert_eq!((s.p50, s.p99), (2.0, 9.0));
        assert_eq!((s.sync_p50, s.sync_p99), (0.5, 1.5));
    }

    #[test]
    fn parses_reads_without_fsync() {
        let j = r#"{"jobs": [{"error": 0, "read": {"total_ios": 7, "iops": 70.0,
            "clat_ns": {"percentile": {"50.000000": 1000, "99.000000": 3000}}},
            "write": {"total_ios": 0, "iops": 0.0}, "sync": {"total_ios": 0}}]}"#;
        let s = parse(j).unwrap();
        assert_eq!((s.iops, s.p50, s.p99), (70.0, 1.0, 3.0));
        assert!(s.sync_p50.is_nan());
        assert!(parse(r#"{"jobs": [{"error": 5}]}"#).is_err());
        assert!(parse("fio: no JSON").is_err());
    }

    #[test]
    fn table_has_medians_and_ratios() {
        let dir = tempfile_dir();
        let out = dir.join("r.tsv");
        let lines = "tmpfs\tw\t100\t1\t2\tNaN\tNaN\n\
                     tmpfs\tw\t300\t1\t2\tNaN\tNaN\n\
                     tmpfs\tw\t200\t1\t2\tNaN\tNaN\n\
                     disk\tw\t10\t5\t9\tNaN\tNaN\n\
                     riofs\tw\t50\t2\t4\tNaN\tNaN\n";
        fs::write(&out, lines).unwrap();
        let t = report(&out, "tmpfs", "disk").unwrap();
        assert!(
            t.contains("| w | tmpfs | 3 | 200 | 1.0 | 2.0 | - | - | 1.00x | 20.00x |"),
            "{t}"
        );
        assert!(
            t.contains("| w | riofs | 1 | 50.0 | 2.0 | 4.0 | - | - | 0.25x | 5.00x |"),
            "{t}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fs-bench-fio-test-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
