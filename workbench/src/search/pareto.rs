//! Pareto fronts for multi-objective selection, as in NSGA-II (Deb et al. 2002): fast non-dominated
//! sorting into fronts, crowding distance within a front, and survivor selection by (front, -crowding).
//! Every objective is minimised; ties break by index, so results are deterministic.

/// True when `a` is no worse than `b` in every objective and better in at least one.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
}

/// A point with an infinite or NaN objective (a failed trial's loss) is worst in every objective, so
/// everything that trained dominates it.
fn clean(points: &[Vec<f64>]) -> Vec<Vec<f64>> {
    points.iter().map(|p| if p.iter().all(|x| x.is_finite()) { p.clone() } else { vec![f64::MAX; p.len()] }).collect()
}

/// Indices of `points` sorted into non-dominated fronts: front 0 is the Pareto front.
pub fn fronts(points: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let p = clean(points);
    let n = p.len();
    let mut dominated_by = vec![0usize; n];
    let mut dominates_list = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && dominates(&p[i], &p[j]) {
                dominates_list[i].push(j);
            } else if i != j && dominates(&p[j], &p[i]) {
                dominated_by[i] += 1;
            }
        }
    }
    let mut out = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        out.push(current);
        current = next;
    }
    out
}

/// Crowding distance of each member of `front` (same order): the sum over objectives of the normalised
/// gap between its neighbours; the extremes get infinity.
pub fn crowding(points: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let p = clean(points);
    let mut dist = vec![0.0; front.len()];
    let m = p.first().map_or(0, |x| x.len());
    // One column per objective, over the front's members.
    let columns: Vec<Vec<f64>> = (0..m).map(|k| front.iter().map(|&i| p[i][k]).collect()).collect();
    for col in &columns {
        let mut order: Vec<usize> = (0..front.len()).collect();
        order.sort_by(|&a, &b| col[a].total_cmp(&col[b]).then(front[a].cmp(&front[b])));
        let (Some(&first), Some(&last)) = (order.first(), order.last()) else { continue };
        let (lo, hi) = (col[first], col[last]);
        dist[first] = f64::INFINITY;
        dist[last] = f64::INFINITY;
        if hi > lo {
            for w in 1..order.len().saturating_sub(1) {
                dist[order[w]] += (col[order[w + 1]] - col[order[w - 1]]) / (hi - lo);
            }
        }
    }
    dist
}

/// (front index, crowding distance) of every point: the NSGA-II comparison key (lower front, then larger distance).
pub fn rank_and_crowding(points: &[Vec<f64>]) -> Vec<(usize, f64)> {
    let mut out = vec![(0, 0.0); points.len()];
    for (r, front) in fronts(points).iter().enumerate() {
        for (i, d) in front.iter().zip(crowding(points, front)) {
            out[*i] = (r, d);
        }
    }
    out
}

/// True when point `a` beats point `b` under NSGA-II's crowded comparison (ties: the lower index).
pub fn better(key: &[(usize, f64)], a: usize, b: usize) -> bool {
    let (ka, kb) = (key[a], key[b]);
    ka.0 < kb.0 || (ka.0 == kb.0 && (ka.1 > kb.1 || (ka.1 == kb.1 && a < b)))
}

/// The `n` survivors of `points` in NSGA-II order: whole fronts, the last one cut by crowding distance.
pub fn select(points: &[Vec<f64>], n: usize) -> Vec<usize> {
    let key = rank_and_crowding(points);
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| key[a].0.cmp(&key[b].0).then(key[b].1.total_cmp(&key[a].1)).then(a.cmp(&b)));
    order.truncate(n);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fronts_and_crowding_on_a_small_set() {
        // (loss, params): 0, 1 and 2 trade off; 3 is dominated by 1; 4 failed.
        let pts = vec![vec![1.0, 30.0], vec![2.0, 20.0], vec![3.0, 10.0], vec![2.5, 25.0], vec![f64::INFINITY, 5.0]];
        let f = fronts(&pts);
        assert_eq!(f, vec![vec![0, 1, 2], vec![3], vec![4]]);
        let c = crowding(&pts, &f[0]);
        assert!(c[0].is_infinite() && c[2].is_infinite() && c[1].is_finite());
        assert_eq!(select(&pts, 2).len(), 2);
        assert!(!select(&pts, 4).contains(&4));
        assert!(dominates(&[1.0, 1.0], &[1.0, 2.0]) && !dominates(&[1.0, 2.0], &[1.0, 2.0]));
    }
}
