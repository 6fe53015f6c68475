//! Summaries of finished runs: accuracy with a 95% interval, cost under every price
//! profile, cost reduction against the baseline, step shares, latency percentiles,
//! decomposition failures and errored items. Written as JSON and Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use r2_pool::PoolConfig;
use serde::Serialize;

use crate::run::{ItemResult, ModelUsage};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicySummary {
    pub policy: String,
    /// Items with a result (graded or errored).
    pub items: usize,
    /// Items that ran to an answer (errored ones excluded).
    pub graded: usize,
    pub correct: usize,
    /// `correct / graded`.
    pub accuracy: f64,
    /// Wilson score interval at 95%.
    pub ci95: [f64; 2],
    /// Total USD by price profile, recomputed from tokens per model.
    pub cost_total: BTreeMap<String, f64>,
    pub cost_per_item: BTreeMap<String, f64>,
    /// Relative change of cost per item against the baseline, by profile (-0.86 = 86% cheaper).
    pub cost_change_vs_baseline: BTreeMap<String, Option<f64>>,
    /// Share of model calls per model.
    pub step_share: BTreeMap<String, f64>,
    pub usage: BTreeMap<String, ModelUsage>,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub decomposition_failures: usize,
    /// Answers decided by a judge model.
    pub judged: usize,
    /// `id: error` of every item that errored.
    pub errored: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub dataset: String,
    pub baseline: String,
    pub price_profile: String,
    pub policies: Vec<PolicySummary>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// (line, reason) of dataset records that could not be read.
    pub malformed: Vec<(usize, String)>,
}

/// Wilson score interval for `k` successes in `n` trials at 95%.
pub fn wilson95(k: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 0.0];
    }
    let (z, n, p) = (1.959_963_984_540_054_f64, n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    [(center - half).max(0.0), (center + half).min(1.0)]
}

/// Nearest-rank percentile of unsorted values (0 for none).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// Cost of `usage` under `profile`; models missing from the pool cost nothing (and are
/// visible in `usage`).
pub fn cost_of(usage: &BTreeMap<String, ModelUsage>, pool: &PoolConfig, profile: &str) -> f64 {
    usage
        .iter()
        .filter_map(|(id, u)| {
            let m = pool.models.iter().find(|m| &m.id == id)?;
            let p = m.prices.get(profile)?;
            Some((u.input_tokens as f64 * p.input + u.output_tokens as f64 * p.output) / 1e6)
        })
        .sum()
}

pub fn summarise(policy: &str, results: &[ItemResult], pool: &PoolConfig) -> PolicySummary {
    let graded: Vec<&ItemResult> = results.iter().filter(|r| r.error.is_none()).collect();
    let correct = graded.iter().filter(|r| r.correct).count();
    let profiles: Vec<String> = pool
        .models
        .first()
        .map(|m| m.prices.keys().cloned().collect())
        .unwrap_or_default();
    let mut usage: BTreeMap<String, ModelUsage> = BTreeMap::new();
    for r in &graded {
        for (id, u) in &r.usage {
            let t = usage.entry(id.clone()).or_default();
            t.calls += u.calls;
            t.input_tokens += u.input_tokens;
            t.output_tokens += u.output_tokens;
        }
    }
    let mut cost_total = BTreeMap::new();
    let mut cost_per_item = BTreeMap::new();
    for p in &profiles {
        let total = cost_of(&usage, pool, p);
        cost_total.insert(p.clone(), total);
        cost_per_item.insert(
            p.clone(),
            if graded.is_empty() {
                0.0
            } else {
                total / graded.len() as f64
            },
        );
    }
    let calls: u32 = usage.values().map(|u| u.calls).sum();
    let step_share = usage
        .iter()
        .map(|(id, u)| {
            (
                id.clone(),
                if calls == 0 {
                    0.0
                } else {
                    u.calls as f64 / calls as f64
                },
            )
        })
        .collect();
    let latencies: Vec<f64> = graded.iter().map(|r| r.latency_ms).collect();
    PolicySummary {
        policy: policy.to_string(),
        items: results.len(),
        graded: graded.len(),
        correct,
        accuracy: if graded.is_empty() {
            0.0
        } else {
            correct as f64 / graded.len() as f64
        },
        ci95: wilson95(correct, graded.len()),
        cost_total,
        cost_per_item,
        cost_change_vs_baseline: BTreeMap::new(),
        step_share,
        usage,
        latency_p50_ms: percentile(&latencies, 50.0),
        latency_p95_ms: percentile(&latencies, 95.0),
        decomposition_failures: graded.iter().filter(|r| r.decomposition_failed).count(),
        judged: graded.iter().filter(|r| r.judge.is_some()).count(),
        errored: results
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.id)))
            .collect(),
    }
}

/// Fill in each policy's cost change against `baseline` (when the baseline was run).
pub fn compare_to_baseline(summaries: &mut [PolicySummary], baseline: &str) {
    let Some(base) = summaries
        .iter()
        .find(|s| s.policy == baseline)
        .map(|s| s.cost_per_item.clone())
    else {
        for s in summaries.iter_mut() {
            s.cost_change_vs_baseline = s.cost_per_item.keys().map(|p| (p.clone(), None)).collect();
        }
        return;
    };
    for s in summaries.iter_mut() {
        s.cost_change_vs_baseline = s
            .cost_per_item
            .iter()
            .map(|(p, c)| {
                let b = base.get(p).copied().unwrap_or(0.0);
                (p.clone(), (b > 0.0).then(|| c / b - 1.0))
            })
            .collect();
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

pub fn markdown(summary: &Summary) -> String {
    let mut s = String::new();
    let profiles: Vec<String> = summary
        .policies
        .first()
        .map(|p| p.cost_per_item.keys().cloned().collect())
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "## {} — {} policies\n",
        summary.dataset,
        summary.policies.len()
    );
    let mut header = "| policy | n | accuracy (95% CI) |".to_string();
    let mut rule = "|---|---|---|".to_string();
    for p in &profiles {
        let _ = write!(header, " cost/item `{p}` | vs {} `{p}` |", summary.baseline);
        rule.push_str("---|---|");
    }
    header.push_str(" step share | latency p50 / p95 | plan failures | errors |");
    rule.push_str("---|---|---|---|");
    let _ = writeln!(s, "{header}\n{rule}");
    for p in &summary.policies {
        let mut row = format!(
            "| `{}` | {} | {} ({}–{}) |",
            p.policy,
            p.graded,
            pct(p.accuracy),
            pct(p.ci95[0]),
            pct(p.ci95[1])
        );
        for prof in &profiles {
            let c = p.cost_per_item.get(prof).copied().unwrap_or(0.0);
            let d = match p.cost_change_vs_baseline.get(prof).copied().flatten() {
                Some(x) => format!("{:+.1}%", x * 100.0),
                None => "n/a".into(),
            };
            let _ = write!(row, " ${c:.7} | {d} |");
        }
        let share: Vec<String> = p
            .step_share
            .iter()
            .map(|(m, x)| format!("{m} {:.0}%", x * 100.0))
            .collect();
        let _ = writeln!(
            row,
            " {} | {:.1} s / {:.1} s | {} | {} |",
            share.join(", "),
            p.latency_p50_ms / 1000.0,
            p.latency_p95_ms / 1000.0,
            p.decomposition_failures,
            p.errored.len()
        );
        s.push_str(&row);
    }
    let _ = writeln!(s, "\nCost reduction is relative to `{}` on the same items. Calls served from the call cache: {} of {}.", summary.baseline, summary.cache_hits, summary.cache_hits + summary.cache_misses);
    if !summary.malformed.is_empty() {
        let _ = writeln!(
            s,
            "\nMalformed dataset records skipped: {}",
            summary.malformed.len()
        );
        for (line, why) in summary.malformed.iter().take(20) {
            let _ = writeln!(s, "- line {line}: {why}");
        }
    }
    for p in &summary.policies {
        if !p.errored.is_empty() {
            let _ = writeln!(s, "\nErrored items under `{}`:", p.policy);
            for e in &p.errored {
                let _ = writeln!(s, "- {e}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // 50/100 → [0.4038, 0.5962]; 0/10 → [0, 0.2775]
        let [lo, hi] = wilson95(50, 100);
        assert!(
            (lo - 0.4038).abs() < 1e-4 && (hi - 0.5962).abs() < 1e-4,
            "{lo} {hi}"
        );
        let [lo, hi] = wilson95(0, 10);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-4, "{hi}");
        assert_eq!(wilson95(0, 0), [0.0, 0.0]);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
