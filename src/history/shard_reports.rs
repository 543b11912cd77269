//! Shard reports at the sink, and `ferry report SINK`: the combined totals of every shard
//! of a job, and which shards have not finished.
//!
//! A run with `--shard K/N` writes `.ferry-report.shard-K-of-N.json` at the sink when it
//! starts (status `running`) and again when it ends (`finished`, or `cancelled`), holding
//! the same JSON as `--report` plus where and when it ran. A task killed mid-run leaves
//! `running`; its rerun replaces it.

use crate::error::{ExitCode, FerryError};
use crate::shard::Shard;
use crate::sink::{Sink, SinkError};
use crate::view::Summary;
use crate::words::human_bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::SystemTime;

/// The name every shard report starts with.
pub const REPORT_PREFIX: &str = ".ferry-report.shard-";

/// The report object of `shard`.
pub fn report_name(shard: Shard) -> String {
    format!("{REPORT_PREFIX}{}-of-{}.json", shard.index(), shard.count())
}

/// Where and when a shard ran, beside its summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardRun {
    /// `K/N`.
    pub shard: String,
    /// `running`, `finished` or `cancelled`.
    pub status: String,
    /// The host it ran on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// When it started, RFC 3339 UTC.
    pub started: String,
    /// When it ended, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// The plan it ran from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

impl ShardRun {
    /// This process, starting shard `shard` now.
    pub fn starting(shard: Shard, plan: Option<String>) -> Self {
        ShardRun {
            shard: shard.to_string(),
            status: "running".into(),
            host: host_name(),
            pid: std::process::id(),
            started: now(),
            ended: None,
            plan,
        }
    }

    /// Writes the report of `shard` at `sink`: this run, and the summary once there is one.
    ///
    /// # Errors
    /// When the sink refuses it.
    pub fn write(
        &self,
        sink: &dyn Sink,
        shard: Shard,
        summary: Option<&Summary>,
    ) -> Result<(), SinkError> {
        let mut v = summary
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_else(|| json!({}));
        v["run"] = serde_json::to_value(self).unwrap_or_default();
        let bytes = serde_json::to_vec_pretty(&v).unwrap_or_default();
        sink.write_meta(&report_name(shard), &bytes)
    }

    /// This run, ended with `summary`.
    pub fn ended(mut self, summary: &Summary) -> Self {
        self.status = match summary.cancelled {
            Some(_) => "cancelled".into(),
            None => "finished".into(),
        };
        self.ended = Some(now());
        self
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Every shard's report at a sink, added up.
#[derive(Debug, Clone, Serialize)]
pub struct Combined {
    /// The sums of every shard report's totals (same fields as a run's `totals`).
    pub totals: Value,
    /// The longest shard's wall time, in seconds.
    pub duration_s: f64,
    /// The sink.
    pub sink: String,
    /// Every failed file of every shard, with its shard.
    pub failures: Vec<Value>,
    /// Every shard's warnings, prefixed with its shard.
    pub warnings: Vec<String>,
    /// Why a shard stopped early, per shard that did.
    pub cancelled: Option<String>,
    /// Each shard expected (0…N-1 for each N seen): its run, totals and wall time, or
    /// `missing`.
    pub shards: Vec<Value>,
    /// The shards that have not finished: running, killed, cancelled or never started.
    pub unfinished: Vec<String>,
}

impl Combined {
    /// Reads and adds up every shard report at `sink`.
    ///
    /// # Errors
    /// [`FerryError::Usage`] when there is none, [`FerryError::History`] when one is
    /// damaged, [`FerryError::Sink`] when the sink fails.
    pub fn read(sink: &dyn Sink) -> Result<Self, FerryError> {
        let mut found: Vec<(Shard, Value)> = Vec::new();
        for name in sink.list_meta(REPORT_PREFIX)? {
            let Some(shard) = shard_of(&name) else {
                continue;
            };
            let Some(r) = sink.open_meta(&name)? else {
                continue;
            };
            let v: Value = serde_json::from_reader(r).map_err(|e| {
                FerryError::history(format!("{name} at {} is damaged: {e}", sink.describe()))
            })?;
            found.push((shard, v));
        }
        if found.is_empty() {
            return Err(FerryError::Usage(format!(
                "no shard reports at {} ({REPORT_PREFIX}K-of-N.json): runs with --shard write them",
                sink.describe()
            )));
        }
        found.sort_by_key(|(s, _)| (s.count(), s.index()));
        let mut c = Combined {
            totals: json!({}),
            duration_s: 0.0,
            sink: sink.describe(),
            failures: Vec::new(),
            warnings: Vec::new(),
            cancelled: None,
            shards: Vec::new(),
            unfinished: Vec::new(),
        };
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        let mut ns: Vec<u64> = found.iter().map(|(s, _)| s.count()).collect();
        ns.dedup();
        for n in ns {
            for k in 0..n {
                let shard = Shard::new(k, n).map_err(FerryError::history)?;
                let Some((_, v)) = found.iter().find(|(s, _)| *s == shard) else {
                    c.unfinished
                        .push(format!("{shard} (no report: never started)"));
                    c.shards
                        .push(json!({"shard": shard.to_string(), "status": "missing"}));
                    continue;
                };
                let run = &v["run"];
                let status = run["status"].as_str().unwrap_or("unknown");
                if status != "finished" {
                    c.unfinished.push(format!(
                        "{shard} ({status} since {} on {}, pid {})",
                        run["started"].as_str().unwrap_or("?"),
                        run["host"].as_str().unwrap_or("?"),
                        run["pid"]
                    ));
                }
                if let Some(t) = v["totals"].as_object() {
                    for (field, n) in t {
                        *counts.entry(field.clone()).or_default() += n.as_u64().unwrap_or(0);
                    }
                }
                c.duration_s = c.duration_s.max(v["duration_s"].as_f64().unwrap_or(0.0));
                for f in v["failures"].as_array().into_iter().flatten() {
                    let mut f = f.clone();
                    f["shard"] = shard.to_string().into();
                    c.failures.push(f);
                }
                for w in v["warnings"].as_array().into_iter().flatten() {
                    c.warnings
                        .push(format!("shard {shard}: {}", w.as_str().unwrap_or_default()));
                }
                if let Some(why) = v["cancelled"].as_str() {
                    c.cancelled = Some(format!("shard {shard}: {why}"));
                }
                let mut entry = run.clone();
                entry["totals"] = v["totals"].clone();
                entry["duration_s"] = v["duration_s"].clone();
                c.shards.push(entry);
            }
        }
        c.totals = serde_json::to_value(&counts).unwrap_or_default();
        Ok(c)
    }

    /// As JSON: the shape of `--report`, with `shards` and `unfinished` added.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The combined summary as lines for a person.
    pub fn render_text(&self) -> String {
        let t = |f: &str| self.totals[f].as_u64().unwrap_or(0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ferry: {} shards at {}: {} finished, {} not",
            self.shards.len(),
            self.sink,
            self.shards.len() - self.unfinished.len(),
            self.unfinished.len()
        );
        let _ = writeln!(
            s,
            "       {} discovered: {} succeeded, {} skipped, {} failed, {} cancelled",
            t("discovered"),
            t("succeeded"),
            t("skipped"),
            t("failed"),
            t("cancelled")
        );
        let _ = writeln!(
            s,
            "       {} → {} delivered; longest shard {:.2} s",
            human_bytes(t("bytes_in")),
            human_bytes(t("bytes_out")),
            self.duration_s
        );
        for u in &self.unfinished {
            let _ = writeln!(s, "       not finished: {u}");
        }
        for f in &self.failures {
            let _ = writeln!(
                s,
                "       failed ({}): {}: {}",
                f["shard"].as_str().unwrap_or("?"),
                f["path"].as_str().unwrap_or("?"),
                f["error"].as_str().unwrap_or("?")
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "       warning: {w}");
        }
        s
    }

    /// 0 when every shard finished with no failure; 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self.unfinished.is_empty() && self.totals["failed"].as_u64().unwrap_or(0) == 0 {
            true => ExitCode::Success,
            false => ExitCode::Failures,
        }
    }
}

/// The shard a report name is for.
fn shard_of(name: &str) -> Option<Shard> {
    let (k, n) = name
        .strip_prefix(REPORT_PREFIX)?
        .strip_suffix(".json")?
        .split_once("-of-")?;
    let shard = Shard::new(k.parse().ok()?, n.parse().ok()?).ok()?;
    (report_name(shard) == name).then_some(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_round_trip() {
        let s = Shard::new(2, 4).unwrap();
        assert_eq!(report_name(s), ".ferry-report.shard-2-of-4.json");
        assert_eq!(shard_of(&report_name(s)), Some(s));
        assert_eq!(shard_of(".ferry-report.shard-4-of-4.json"), None);
        assert_eq!(shard_of(".ferry-report.shard-02-of-4.json"), None);
    }
}
