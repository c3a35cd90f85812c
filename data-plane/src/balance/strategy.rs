//! A route's strategy: the order in which a request tries the candidates of each priority
//! tier. Tiers stay in priority order (a fallback chain); inside a tier the strategy
//! decides who goes first, and the rest follow as failover in the strategy's order.
//!
//! The state the strategies read (in-flight counts, latency averages, round-robin
//! positions, sticky choices) outlives config swaps: it belongs to the proxy, not to a
//! revision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use fulcrum_proto::model::RouteStrategy;

/// Weight of a new latency sample in the moving average (the rest is the old average).
const LATENCY_ALPHA: f64 = 0.2;
/// Sticky choices kept at most; past it, expired ones are dropped, then the oldest.
const MAX_STICKY: usize = 100_000;

/// A candidate as a strategy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot<'a> {
    pub provider: &'a str,
    pub priority: u32,
    pub weight: u32,
    /// Input plus output USD per million tokens; `None` when unpriced.
    pub price: Option<f64>,
}

/// What the strategies remember between requests.
#[derive(Debug, Default)]
pub struct StrategyState {
    per_provider: RwLock<HashMap<String, Arc<ProviderStats>>>,
    round_robin: RwLock<HashMap<String, Arc<AtomicU64>>>,
    sticky: Mutex<HashMap<(String, String), (String, i64)>>,
}

/// Live figures of one provider.
#[derive(Debug, Default)]
pub struct ProviderStats {
    in_flight: AtomicU64,
    /// Moving average of time to first byte, in microseconds, as f64 bits; 0 = unknown.
    latency_us: AtomicU64,
}

/// Counts a request in flight at a provider until dropped.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<ProviderStats>,
}

impl InFlight {
    /// Feeds one time-to-first-byte sample into the moving average of the provider this
    /// request is at.
    pub fn record_latency(&self, latency: Duration) {
        let stats = &self.stats;
        let sample = latency.as_secs_f64() * 1e6;
        // A lost race between two updates loses one sample: harmless for an average.
        let old = f64::from_bits(stats.latency_us.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            sample
        } else {
            old + LATENCY_ALPHA * (sample - old)
        };
        stats.latency_us.store(new.to_bits(), Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StrategyState {
    fn stats(&self, provider: &str) -> Arc<ProviderStats> {
        if let Some(stats) = self
            .per_provider
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(provider)
        {
            return Arc::clone(stats);
        }
        let mut map = self
            .per_provider
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(provider.to_string()).or_default())
    }

    /// Marks a request in flight at `provider` for as long as the guard lives.
    pub fn start(&self, provider: &str) -> InFlight {
        let stats = self.stats(provider);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { stats }
    }

    fn in_flight(&self, provider: &str) -> u64 {
        self.per_provider
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(provider)
            .map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
    }

    fn latency_us(&self, provider: &str) -> f64 {
        self.per_provider
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(provider)
            .map_or(0.0, |s| {
                f64::from_bits(s.latency_us.load(Ordering::Relaxed))
            })
    }

    fn next_turn(&self, route: &str) -> u64 {
        if let Some(counter) = self
            .round_robin
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
        {
            return counter.fetch_add(1, Ordering::Relaxed);
        }
        let mut map = self
            .round_robin
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(route.to_string())
            .or_default()
            .fetch_add(1, Ordering::Relaxed)
    }

    /// The provider a client stuck to on a route, if that choice has not expired.
    pub fn sticky(&self, client: &str, route: &str, now_ms: i64) -> Option<String> {
        let map = self.sticky.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(client.to_string(), route.to_string()))
            .filter(|(_, until)| *until > now_ms)
            .map(|(provider, _)| provider.clone())
    }

    /// Remembers that a client's request on a route was served by `provider`.
    pub fn stick(&self, client: &str, route: &str, provider: &str, until_ms: i64, now_ms: i64) {
        let mut map = self.sticky.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_STICKY {
            map.retain(|_, (_, until)| *until > now_ms);
            if map.len() >= MAX_STICKY
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            (client.to_string(), route.to_string()),
            (provider.to_string(), until_ms),
        );
    }

    /// The order to try `slots` in (indexes into `slots`), for a route named `route`.
    /// `slots` come in base order: priority ascending, then as the route lists them.
    pub fn order(&self, strategy: RouteStrategy, route: &str, slots: &[Slot<'_>]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..slots.len()).collect();
        if strategy == RouteStrategy::Priority || slots.len() < 2 {
            return order;
        }
        let turn = (strategy == RouteStrategy::RoundRobin).then(|| self.next_turn(route));
        let mut start = 0;
        while start < order.len() {
            let tier = slots[order[start]].priority;
            let end = order[start..]
                .iter()
                .position(|&i| slots[i].priority != tier)
                .map_or(order.len(), |n| start + n);
            self.order_tier(strategy, turn, slots, &mut order[start..end]);
            start = end;
        }
        order
    }

    fn order_tier(
        &self,
        strategy: RouteStrategy,
        turn: Option<u64>,
        slots: &[Slot<'_>],
        tier: &mut [usize],
    ) {
        let n = tier.len();
        if n < 2 {
            return;
        }
        match strategy {
            RouteStrategy::Priority => {}
            RouteStrategy::RoundRobin => {
                let by = usize::try_from(turn.unwrap_or(0) % n as u64).unwrap_or(0);
                tier.rotate_left(by);
            }
            RouteStrategy::Random => {
                for i in (1..n).rev() {
                    let j = random_below(i as u64 + 1);
                    tier.swap(i, j);
                }
            }
            RouteStrategy::Weighted => {
                // Weighted draws without replacement: the first is picked in proportion to
                // its weight, then the next among the rest, and so on.
                for i in 0..n - 1 {
                    let total: u64 = tier[i..]
                        .iter()
                        .map(|&k| u64::from(slots[k].weight.max(1)))
                        .sum();
                    let mut draw = random_below(total) as u64;
                    let mut pick = i;
                    for (offset, &k) in tier[i..].iter().enumerate() {
                        let w = u64::from(slots[k].weight.max(1));
                        if draw < w {
                            pick = i + offset;
                            break;
                        }
                        draw -= w;
                    }
                    tier.swap(i, pick);
                }
            }
            RouteStrategy::LeastInFlight => {
                tier.sort_by_key(|&k| self.in_flight(slots[k].provider));
            }
            RouteStrategy::LowestLatency => {
                // Unmeasured candidates go first, so that each gets measured.
                tier.sort_by(|&a, &b| {
                    self.latency_us(slots[a].provider)
                        .total_cmp(&self.latency_us(slots[b].provider))
                });
            }
            RouteStrategy::LowestCost => {
                tier.sort_by(|&a, &b| {
                    let price = |k: usize| slots[k].price.unwrap_or(f64::INFINITY);
                    price(a).total_cmp(&price(b))
                });
            }
        }
    }
}

/// A uniform draw from `0..bound` (`bound` > 0), from the OS's generator.
fn random_below(bound: u64) -> usize {
    let value = getrandom::u64().unwrap_or(0);
    usize::try_from(value % bound.max(1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(provider: &str, priority: u32, weight: u32, price: Option<f64>) -> Slot<'_> {
        Slot {
            provider,
            priority,
            weight,
            price,
        }
    }

    #[test]
    fn priority_keeps_the_base_order() {
        let state = StrategyState::default();
        let slots = [
            slot("a", 1, 1, None),
            slot("b", 1, 1, None),
            slot("c", 2, 1, None),
        ];
        assert_eq!(state.order(RouteStrategy::Priority, "r", &slots), [0, 1, 2]);
    }

    #[test]
    fn round_robin_rotates_within_a_tier_only() {
        let state = StrategyState::default();
        let slots = [
            slot("a", 1, 1, None),
            slot("b", 1, 1, None),
            slot("c", 2, 1, None),
        ];
        let firsts: Vec<usize> = (0..4)
            .map(|_| state.order(RouteStrategy::RoundRobin, "r", &slots))
            .inspect(|order| assert_eq!(order[2], 2, "the lower tier stays last"))
            .map(|order| order[0])
            .collect();
        assert_eq!(firsts, [0, 1, 0, 1]);
    }

    #[test]
    fn weighted_follows_the_weights() {
        let state = StrategyState::default();
        let slots = [slot("a", 1, 1, None), slot("b", 1, 9, None)];
        let b_first = (0..2_000)
            .filter(|_| state.order(RouteStrategy::Weighted, "r", &slots)[0] == 1)
            .count();
        // Expected 1,800; the bounds are over 8 standard deviations wide.
        assert!((1_700..=1_900).contains(&b_first), "{b_first}");
    }

    #[test]
    fn random_puts_everyone_first_sometimes() {
        let state = StrategyState::default();
        let slots = [
            slot("a", 1, 1, None),
            slot("b", 1, 1, None),
            slot("c", 1, 1, None),
        ];
        let mut seen = [0usize; 3];
        for _ in 0..600 {
            let order = state.order(RouteStrategy::Random, "r", &slots);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2], "a permutation");
            seen[order[0]] += 1;
        }
        assert!(seen.iter().all(|&n| n > 100), "{seen:?}");
    }

    #[test]
    fn least_in_flight_and_lowest_latency_read_live_figures() {
        let state = StrategyState::default();
        let slots = [slot("a", 1, 1, None), slot("b", 1, 1, None)];
        let guard = state.start("a");
        assert_eq!(
            state.order(RouteStrategy::LeastInFlight, "r", &slots),
            [1, 0]
        );
        drop(guard);
        assert_eq!(
            state.order(RouteStrategy::LeastInFlight, "r", &slots),
            [0, 1]
        );
        state.start("a").record_latency(Duration::from_millis(300));
        state.start("b").record_latency(Duration::from_millis(100));
        assert_eq!(
            state.order(RouteStrategy::LowestLatency, "r", &slots),
            [1, 0]
        );
        // The average moves towards new samples.
        for _ in 0..30 {
            state.start("a").record_latency(Duration::from_millis(10));
        }
        assert_eq!(
            state.order(RouteStrategy::LowestLatency, "r", &slots),
            [0, 1]
        );
    }

    #[test]
    fn lowest_cost_puts_unpriced_last() {
        let state = StrategyState::default();
        let slots = [
            slot("a", 1, 1, None),
            slot("b", 1, 1, Some(3.0)),
            slot("c", 1, 1, Some(1.5)),
        ];
        assert_eq!(
            state.order(RouteStrategy::LowestCost, "r", &slots),
            [2, 1, 0]
        );
    }

    #[test]
    fn sticky_choices_expire() {
        let state = StrategyState::default();
        state.stick("team-a", "gpt-*", "p1", 2_000, 1_000);
        assert_eq!(
            state.sticky("team-a", "gpt-*", 1_500).as_deref(),
            Some("p1")
        );
        assert_eq!(state.sticky("team-b", "gpt-*", 1_500), None);
        assert_eq!(state.sticky("team-a", "gpt-*", 2_000), None);
    }
}
