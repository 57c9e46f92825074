//! A scenario's report: its figures in the order they were measured, printed as a readable
//! block or as one JSON object per line (`--json`).

use std::time::Duration;

use anyhow::Result;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::stats::LatencySummary;

/// One scenario's figures, in the order they were pushed (serde_json maps would sort
/// them, and `scenario` and `events_per_sec` should come first).
#[derive(Debug, Clone)]
pub struct Report {
    fields: Vec<(String, Value)>,
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        Report {
            fields: vec![("scenario".to_owned(), Value::from(scenario))],
        }
    }

    pub fn push(&mut self, name: &str, value: impl Into<Value>) {
        self.fields.push((name.to_owned(), value.into()));
    }

    /// A rate, to one decimal.
    pub fn push_rate(&mut self, name: &str, per_second: f64) {
        self.push(name, round(per_second, 1));
    }

    /// A duration in milliseconds, to the microsecond; `null` when nothing was measured.
    pub fn push_ms(&mut self, name: &str, ms: Option<f64>) {
        self.push(name, ms.map(|ms| round(ms, 3)));
    }

    pub fn push_mb(&mut self, name: &str, mb: f64) {
        self.push(name, round(mb, 1));
    }

    pub fn push_seconds(&mut self, name: &str, elapsed: Duration) {
        self.push(name, round(elapsed.as_secs_f64(), 2));
    }

    /// `numerator / denominator` to three decimals, `null` when undefined.
    pub fn push_ratio(&mut self, name: &str, numerator: f64, denominator: f64) {
        let ratio = (denominator > 0.0).then(|| round(numerator / denominator, 3));
        self.push(name, ratio);
    }

    /// `<prefix>p50_ms`, `<prefix>p99_ms` and `<prefix>max_ms`.
    pub fn push_latency(&mut self, prefix: &str, summary: &LatencySummary) {
        self.push_ms(&format!("{prefix}p50_ms"), summary.p50_ms);
        self.push_ms(&format!("{prefix}p99_ms"), summary.p99_ms);
        self.push_ms(&format!("{prefix}max_ms"), summary.max_ms);
    }

    /// The figures pushed so far, in order (the scenario's name first).
    pub fn figures(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }

    pub fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
        } else {
            let width = self
                .fields
                .iter()
                .map(|(name, _)| name.len())
                .max()
                .unwrap_or(0);
            for (index, (name, value)) in self.fields.iter().enumerate() {
                let shown = match value {
                    Value::Null => "-".to_owned(),
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                // The first field names the scenario and heads its block.
                if index == 0 {
                    println!("== {shown} ==");
                } else {
                    println!("  {name:<width$}  {shown}");
                }
            }
        }
        Ok(())
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (name, value) in &self.fields {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Rounds to `decimals` places so reports do not show float noise.
pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_keeps_field_order_and_writes_null_for_missing_figures() {
        let mut report = Report::new("single");
        report.push_rate("events_per_sec", 1234.56);
        report.push_ms("p99_ms", None);
        report.push_ratio("durable_to_null_ratio", 1.0, 3.0);
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"scenario":"single","events_per_sec":1234.6,"p99_ms":null,"durable_to_null_ratio":0.333}"#
        );
    }
}
