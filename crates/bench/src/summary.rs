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
    /// (line, reason) of the first dataset records that could not be read.
    pub malformed: Vec<(usize, String)>,
    /// How many records could not be read in all.
    pub malformed_total: usize,
    /// The post-hoc oracle over the policies run (`None` with fewer than two policies or no
    /// item every policy answered).
    pub best_of: Option<BestOf>,
}

/// A bound, not a policy: for each item that every policy answered (none errored), the
/// cheapest policy that was right, else the cheapest attempt. Picked separately under each
/// price profile (accuracy does not depend on the profile). It shows what a router choosing
/// among exactly these policies could reach if it knew the answers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BestOf {
    pub policies: Vec<String>,
    /// Items every policy answered.
    pub items: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub ci95: [f64; 2],
    pub cost_per_item: BTreeMap<String, f64>,
    /// The baseline's accuracy and cost change on the same items (when it was run).
    pub baseline_accuracy: Option<f64>,
    pub cost_change_vs_baseline: BTreeMap<String, Option<f64>>,
    /// How often each policy was picked under the headline profile.
    pub picks: BTreeMap<String, usize>,
}

/// The post-hoc oracle over `results` (policy name → its items); see [`BestOf`].
pub fn best_of(
    results: &BTreeMap<String, Vec<ItemResult>>,
    pool: &PoolConfig,
    baseline: &str,
) -> Option<BestOf> {
    if results.len() < 2 {
        return None;
    }
    let profiles: Vec<String> = pool
        .models
        .first()
        .map(|m| m.prices.keys().cloned().collect())
        .unwrap_or_default();
    // id → one graded result per policy, in policy-name order.
    let mut by_item: BTreeMap<&str, Vec<(&str, &ItemResult)>> = BTreeMap::new();
    for (policy, items) in results {
        for r in items.iter().filter(|r| r.error.is_none()) {
            by_item.entry(&r.id).or_default().push((policy, r));
        }
    }
    let complete: Vec<&Vec<(&str, &ItemResult)>> = by_item
        .values()
        .filter(|v| {
            v.len() == results.len() && {
                let mut names: Vec<&str> = v.iter().map(|(p, _)| *p).collect();
                names.dedup();
                names.len() == results.len()
            }
        })
        .collect();
    if complete.is_empty() {
        return None;
    }
    let n = complete.len();
    let correct = complete
        .iter()
        .filter(|v| v.iter().any(|(_, r)| r.correct))
        .count();
    let mut cost_per_item = BTreeMap::new();
    let mut base_cost = BTreeMap::new();
    let mut picks = BTreeMap::new();
    for profile in &profiles {
        let mut total = 0.0;
        let mut base_total = 0.0;
        for routes in &complete {
            let cost = |r: &ItemResult| cost_of(&r.usage, pool, profile);
            let right = routes.iter().any(|(_, r)| r.correct);
            let (policy, pick) = routes
                .iter()
                .filter(|(_, r)| r.correct || !right)
                .min_by(|a, b| cost(a.1).total_cmp(&cost(b.1)))
                .copied()
                .expect("every complete item has a route per policy");
            total += cost(pick);
            if let Some((_, b)) = routes.iter().find(|(p, _)| *p == baseline) {
                base_total += cost(b);
            }
            if *profile == pool.price_profile {
                *picks.entry(policy.to_string()).or_insert(0) += 1;
            }
        }
        cost_per_item.insert(profile.clone(), total / n as f64);
        base_cost.insert(profile.clone(), base_total / n as f64);
    }
    let has_baseline = results.contains_key(baseline);
    let baseline_accuracy = has_baseline.then(|| {
        complete
            .iter()
            .filter(|v| v.iter().any(|(p, r)| *p == baseline && r.correct))
            .count() as f64
            / n as f64
    });
    let cost_change_vs_baseline = cost_per_item
        .iter()
        .map(|(p, c)| {
            let b = base_cost.get(p).copied().unwrap_or(0.0);
            (p.clone(), (has_baseline && b > 0.0).then(|| c / b - 1.0))
        })
        .collect();
    Some(BestOf {
        policies: results.keys().cloned().collect(),
        items: n,
        correct,
        accuracy: correct as f64 / n as f64,
        ci95: wilson95(correct, n),
        cost_per_item,
        baseline_accuracy,
        cost_change_vs_baseline,
        picks,
    })
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
    // At the ends the bound is exact (0 or 1); the formula leaves rounding dust there.
    let lo = if k == 0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let hi = if k as f64 == n {
        1.0
    } else {
        (center + half).min(1.0)
    };
    [lo, hi]
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
    if let Some(b) = &summary.best_of {
        let _ = write!(
            s,
            "\n**Post-hoc oracle** (a bound, not a policy): on the {} items every policy answered, \
             the cheapest policy that was right, else the cheapest attempt: accuracy {} ({}–{})",
            b.items,
            pct(b.accuracy),
            pct(b.ci95[0]),
            pct(b.ci95[1])
        );
        if let Some(a) = b.baseline_accuracy {
            let _ = write!(s, " against {} for `{}`", pct(a), summary.baseline);
        }
        let costs: Vec<String> = b
            .cost_per_item
            .iter()
            .map(
                |(p, c)| match b.cost_change_vs_baseline.get(p).copied().flatten() {
                    Some(x) => format!("${c:.7} `{p}` ({:+.1}%)", x * 100.0),
                    None => format!("${c:.7} `{p}`"),
                },
            )
            .collect();
        let picks: Vec<String> = b.picks.iter().map(|(p, k)| format!("`{p}` {k}")).collect();
        let _ = writeln!(
            s,
            "; cost/item {}. Picks under `{}`: {}.",
            costs.join(", "),
            summary.price_profile,
            picks.join(", ")
        );
    }
    if summary.malformed_total > 0 {
        let _ = writeln!(
            s,
            "\nMalformed dataset records skipped: {}",
            summary.malformed_total
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
        for n in 1..200 {
            assert_eq!(wilson95(0, n)[0], 0.0, "n = {n}");
            assert_eq!(wilson95(n, n)[1], 1.0, "n = {n}");
        }
        let [lo, hi] = wilson95(0, 10);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-4, "{hi}");
        assert_eq!(wilson95(0, 0), [0.0, 0.0]);
    }

    /// One graded item: `tokens` output tokens on `model`, right or wrong, or errored.
    fn result(
        id: &str,
        policy: &str,
        model: &str,
        tokens: u64,
        outcome: Option<bool>,
    ) -> ItemResult {
        let usage = ModelUsage {
            calls: 1,
            input_tokens: 0,
            output_tokens: tokens,
        };
        serde_json::from_value(serde_json::json!({
            "id": id, "policy": policy, "gold": {"number": "1"}, "answer": "", "prediction": "",
            "correct": outcome == Some(true), "grade_method": "numeric", "grade_detail": "",
            "cost_usd": 0.0, "usage": {model: usage}, "latency_ms": 1.0,
            "decomposition_failed": false, "warnings": [], "steps": [], "judge": null,
            "error": if outcome.is_none() { serde_json::json!("boom") } else { serde_json::Value::Null },
        }))
        .expect("an ItemResult")
    }

    #[test]
    fn best_of_picks_the_cheapest_right_policy_per_item() {
        let pool = PoolConfig::embedded();
        let (small, large) = (pool.models[1].id.clone(), pool.models[2].id.clone());
        let (cheap, base) = ("direct:small".to_string(), "direct:large".to_string());
        let mut results = BTreeMap::new();
        // q1: both right → the small model; q2: only large right → large; q3: both wrong →
        // the cheaper attempt (small); q4: errored under one policy → left out.
        results.insert(
            cheap.clone(),
            vec![
                result("q1", &cheap, &small, 100, Some(true)),
                result("q2", &cheap, &small, 100, Some(false)),
                result("q3", &cheap, &small, 100, Some(false)),
                result("q4", &cheap, &small, 100, None),
            ],
        );
        results.insert(
            base.clone(),
            vec![
                result("q1", &base, &large, 100, Some(true)),
                result("q2", &base, &large, 100, Some(true)),
                result("q3", &base, &large, 100, Some(false)),
                result("q4", &base, &large, 100, Some(true)),
            ],
        );
        let b = best_of(&results, &pool, &base).expect("two policies, three complete items");
        assert_eq!((b.items, b.correct), (3, 2));
        assert_eq!(b.baseline_accuracy, Some(2.0 / 3.0));
        let profile = &pool.price_profile;
        assert_eq!(b.picks.get(&cheap), Some(&2), "{:?}", b.picks);
        assert_eq!(b.picks.get(&base), Some(&1), "{:?}", b.picks);
        let price = |i: usize| pool.models[i].prices[profile].output * 100.0 / 1e6;
        let want = (2.0 * price(1) + price(2)) / 3.0;
        assert!((b.cost_per_item[profile] - want).abs() < 1e-12);
        let change = b.cost_change_vs_baseline[profile].expect("baseline ran");
        assert!((change - (want / price(2) - 1.0)).abs() < 1e-9, "{change}");
        // One policy alone is no oracle.
        results.remove(&cheap);
        assert!(best_of(&results, &pool, &base).is_none());
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
