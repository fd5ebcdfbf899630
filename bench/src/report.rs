//! The bench's output: markdown tables (stdout and `<dir>/bench-<time>.md`; xtask's
//! dir is `target/bench`) and the same figures as JSON (`<dir>/bench-<time>.json`)
//! with a description of the machine, so that runs on different machines or commits
//! can be compared.
//!
//! Sections are plain rows of strings for the table and a JSON value each; the report
//! does no arithmetic of its own.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

/// One table of the report.
pub struct Section {
    /// The section's name in the JSON (`open_loop`, `saturation`, …).
    pub key: &'static str,
    pub title: String,
    pub note: String,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    pub json: Vec<Value>,
}

impl Section {
    pub fn new(key: &'static str, title: &str, note: &str, columns: &[&'static str]) -> Self {
        Self {
            key,
            title: title.to_owned(),
            note: note.to_owned(),
            columns: columns.to_vec(),
            rows: Vec::new(),
            json: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>, json: Value) {
        self.rows.push(cells);
        self.json.push(json);
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        if !self.note.is_empty() {
            out.push_str(&self.note);
            out.push_str("\n\n");
        }
        out.push_str(&format!("| {} |\n", self.columns.join(" | ")));
        out.push_str(&format!(
            "|{}\n",
            self.columns.iter().map(|_| " --- |").collect::<String>()
        ));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}

/// What the numbers were measured on.
pub fn machine(nginx_version: &str) -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_kib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let output = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let dirty =
        !output(Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]))
            .is_empty();
    json!({
        "cpu": cpu,
        "cores": cores,
        "memory_mib": mem_kib / 1024,
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "os": fs::read_to_string("/etc/debian_version").map(|v| format!("Debian {}", v.trim())).unwrap_or_default(),
        "rustc": output(Command::new("rustc").arg("--version")),
        "git_commit": output(Command::new("git").args(["rev-parse", "HEAD"])),
        "git_dirty": dirty,
        "nginx": nginx_version,
        "load_average_at_start": fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

/// Prints the report and writes both files into `dir`; returns their paths. `preface`,
/// when not empty, is a paragraph before the tables (how to read this run).
pub fn write(
    dir: &Path,
    machine: &Value,
    settings: &Value,
    preface: &str,
    sections: &[Section],
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    // Upstream mode runs outside a checkout: no commit.
    let commit = machine["git_commit"].as_str().map_or(String::new(), |c| {
        format!(
            ", commit {}{}",
            c.get(..12).unwrap_or(""),
            if machine["git_dirty"] == json!(true) {
                " (dirty)"
            } else {
                ""
            }
        )
    });
    let mut md = format!(
        "## kgate bench, {now}\n\n{} ({} cores), kernel {}, {}{commit}; settings {settings}\n\n",
        machine["cpu"].as_str().unwrap_or(""),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or(""),
        machine["rustc"].as_str().unwrap_or(""),
    );
    if !preface.is_empty() {
        md.push_str(preface);
        md.push_str("\n\n");
    }
    for section in sections {
        md.push_str(&section.markdown());
        md.push('\n');
    }
    print!("\n{md}");
    fs::create_dir_all(dir)?;
    let md_path = dir.join(format!("bench-{stamp}.md"));
    let json_path = dir.join(format!("bench-{stamp}.json"));
    fs::write(&md_path, md)?;
    let results: serde_json::Map<String, Value> = sections
        .iter()
        .map(|s| (s.key.to_owned(), Value::Array(s.json.clone())))
        .collect();
    let doc = json!({
        "time": now.to_string(),
        "machine": machine,
        "settings": settings,
        "results": results,
    });
    fs::write(&json_path, serde_json::to_string_pretty(&doc)?)?;
    Ok((md_path, json_path))
}
