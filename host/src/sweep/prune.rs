//! Early stopping: the median stopping rule and asynchronous successive halving (ASHA).
//!
//! A trial's reports are the values of the target metric at its evaluations, in order, as
//! losses (lower is better, see [`super::config::Direction::loss`]). The decisions here are pure
//! functions of the reports, so the sweep can apply them to trials that run in other processes.

use super::config::{PruneConfig, PruneRule};

/// Whether a trial with `reports` should stop, given the reports of every other trial (running,
/// finished or pruned).
pub fn should_prune(config: &PruneConfig, reports: &[f64], others: &[&[f64]]) -> bool {
    match config.rule {
        PruneRule::None => false,
        PruneRule::Median => median_rule(config, reports, others),
        PruneRule::Asha => asha(config, reports, others),
    }
}

fn best(reports: &[f64]) -> f64 {
    reports.iter().copied().filter(|value| !value.is_nan()).fold(f64::INFINITY, f64::min)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

/// Stops a trial whose best report so far is worse than the median, at the same report count,
/// of the other trials' best reports so far.
fn median_rule(config: &PruneConfig, reports: &[f64], others: &[&[f64]]) -> bool {
    let count = reports.len();
    if count == 0 || (count as u64) < config.warmup.max(1) {
        return false;
    }
    let mut peers: Vec<f64> = others
        .iter()
        .filter(|other| other.len() >= count)
        .map(|other| best(&other[..count]))
        .collect();
    if (peers.len() as u64) < config.min_trials {
        return false;
    }
    best(reports) > median(&mut peers)
}

/// The ASHA rungs a trial with `count` reports has reached: `grace * eta^k` reports.
fn rungs(config: &PruneConfig, count: usize) -> Vec<usize> {
    let mut rungs = Vec::new();
    let mut rung = config.grace.max(1) as usize;
    while rung <= count {
        rungs.push(rung);
        rung *= config.eta.max(2) as usize;
    }
    rungs
}

/// Stops a trial that has just reached a rung unless its value there is among the best `1/eta`
/// of the values that every trial reached at that rung, as in asynchronous successive halving
/// (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020). Between
/// rungs a trial is never stopped, so a promotion holds even when better trials arrive later.
fn asha(config: &PruneConfig, reports: &[f64], others: &[&[f64]]) -> bool {
    let Some(&rung) = rungs(config, reports.len()).last() else {
        return false;
    };
    if rung != reports.len() {
        return false;
    }
    let value = best(&reports[..rung]);
    let mut values: Vec<f64> = others
        .iter()
        .filter(|other| other.len() >= rung)
        .map(|other| best(&other[..rung]))
        .collect();
    values.push(value);
    if values.len() < 2 {
        return false;
    }
    values.sort_by(f64::total_cmp);
    let promoted = (values.len() / config.eta.max(2) as usize).max(1);
    value > values[promoted - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rule: PruneRule) -> PruneConfig {
        PruneConfig { rule, warmup: 1, min_trials: 2, eta: 3, grace: 1 }
    }

    #[test]
    fn median_stops_worse_trial() {
        let good: &[f64] = &[1.0, 0.5, 0.3];
        let fine: &[f64] = &[1.2, 0.6, 0.4];
        assert!(should_prune(&config(PruneRule::Median), &[5.0], &[good, fine]));
        assert!(!should_prune(&config(PruneRule::Median), &[0.9], &[good, fine]));
    }

    #[test]
    fn median_waits_for_peers() {
        let good: &[f64] = &[1.0];
        assert!(!should_prune(&config(PruneRule::Median), &[5.0], &[good]));
    }

    #[test]
    fn median_respects_warmup() {
        let mut rule = config(PruneRule::Median);
        rule.warmup = 2;
        let good: &[f64] = &[1.0, 0.5];
        assert!(!should_prune(&rule, &[5.0], &[good, good]));
        assert!(should_prune(&rule, &[5.0, 5.0], &[good, good]));
    }

    #[test]
    fn asha_keeps_top_third() {
        let others: Vec<&[f64]> = vec![&[1.0], &[2.0], &[3.0], &[4.0], &[5.0]];
        assert!(!should_prune(&config(PruneRule::Asha), &[0.5], &others));
        assert!(should_prune(&config(PruneRule::Asha), &[4.5], &others));
    }

    #[test]
    fn asha_promotion_holds_between_rungs() {
        let others: Vec<&[f64]> = vec![&[1.0, 0.9], &[2.0, 1.9]];
        assert!(!should_prune(&config(PruneRule::Asha), &[4.5, 4.0], &others));
    }

    #[test]
    fn asha_first_trial_continues() {
        assert!(!should_prune(&config(PruneRule::Asha), &[9.0], &[]));
    }

    #[test]
    fn asha_rungs_grow_geometrically() {
        assert_eq!(rungs(&config(PruneRule::Asha), 10), [1, 3, 9]);
    }
}
