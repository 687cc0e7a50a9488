//! Each namespace's share of a poll: a namespace whose workloads reference more distinct paths
//! than its budget has them polled in turns (a window that moves on each poll), so thousands of
//! paths under one tenant's prefix delay that tenant's rotations, not everyone's.

use std::collections::{BTreeMap, BTreeSet};

/// The paths of one store to poll this time: every path of a namespace within `budget`, and
/// for a namespace over it, `budget` of its paths starting where the window of poll `turn`
/// falls (so every path comes round within ceil(paths / budget) polls). A path two namespaces
/// share is polled when either selects it.
pub fn select_paths(
    by_namespace: &BTreeMap<String, BTreeSet<String>>,
    budget: usize,
    turn: u64,
) -> BTreeSet<String> {
    select_by_namespace(by_namespace, budget, turn)
        .into_values()
        .flatten()
        .collect()
}

/// [`select_paths`], each namespace's selection apart (its requests rest it alone).
pub fn select_by_namespace(
    by_namespace: &BTreeMap<String, BTreeSet<String>>,
    budget: usize,
    turn: u64,
) -> BTreeMap<String, BTreeSet<String>> {
    let budget = budget.max(1);
    by_namespace
        .iter()
        .map(|(namespace, paths)| {
            let chosen = if paths.len() <= budget {
                paths.clone()
            } else {
                let windows = paths.len().div_ceil(budget);
                let window = usize::try_from(turn % windows as u64).unwrap_or(0);
                paths
                    .iter()
                    .skip(window * budget)
                    .take(budget)
                    .cloned()
                    .collect()
            };
            (namespace.clone(), chosen)
        })
        .collect()
}

/// Paths of namespaces over their budget that wait for a later poll this time.
pub fn waiting(by_namespace: &BTreeMap<String, BTreeSet<String>>, budget: usize) -> usize {
    by_namespace
        .values()
        .map(|paths| paths.len().saturating_sub(budget.max(1)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaces(sizes: &[(&str, usize)]) -> BTreeMap<String, BTreeSet<String>> {
        sizes
            .iter()
            .map(|(ns, n)| {
                let paths = (0..*n)
                    .map(|i| format!("secret/data/{ns}/{i:04}"))
                    .collect();
                (ns.to_string(), paths)
            })
            .collect()
    }

    #[test]
    fn a_namespace_over_its_budget_is_polled_in_turns_and_others_every_time() {
        let by_ns = namespaces(&[("big", 25), ("small", 3)]);
        let mut seen_big = BTreeSet::new();
        for turn in 0..3 {
            let chosen = select_paths(&by_ns, 10, turn);
            let small = chosen.iter().filter(|p| p.contains("/small/")).count();
            assert_eq!(small, 3, "the small namespace is whole every poll");
            let big: Vec<_> = chosen.iter().filter(|p| p.contains("/big/")).collect();
            assert!(big.len() <= 10, "turn {turn}: {}", big.len());
            seen_big.extend(big.into_iter().cloned());
        }
        assert_eq!(
            seen_big.len(),
            25,
            "every path of the big one within 3 polls"
        );
        assert_eq!(waiting(&by_ns, 10), 15);
    }

    #[test]
    fn a_shared_path_is_polled_once_and_a_zero_budget_still_polls() {
        let by_ns: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_string(), BTreeSet::from(["s/x".to_string()])),
            ("b".to_string(), BTreeSet::from(["s/x".to_string()])),
        ]
        .into();
        assert_eq!(select_paths(&by_ns, 0, 7).len(), 1);
    }
}
