//! Key state transitions: every change of a key's state goes through here, so that it is
//! stored together with its history entry in the caller's transaction, whoever decided
//! it (a data plane's event, a probe, an operator, a timer). `docs/key-states.md` is the
//! state machine these functions implement.

use fulcrum_proto::model::KeyState;
use fulcrum_proto::pb;

use crate::store::{TreeId, Tx, TxResult};

/// Transitions kept per key; older ones are dropped.
pub const HISTORY_LIMIT: usize = 100;

/// Source of a transition decided by the validation scheduler.
pub const SOURCE_PROBE: &str = "probe";
/// Source of a transition an operator asked for.
pub const SOURCE_OPERATOR: &str = "operator";
/// Source of a transition made because a time ran out.
pub const SOURCE_TIMER: &str = "timer";

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub to: KeyState,
    pub reason: String,
    /// End of a `cooling` or `exhausted` state; 0 otherwise.
    pub until_unix_ms: i64,
    /// For a per-model quota: the model; the key's own state is then left alone.
    pub model: String,
}

impl Change {
    pub fn new(to: KeyState, reason: impl Into<String>) -> Self {
        Self {
            to,
            reason: reason.into(),
            until_unix_ms: 0,
            model: String::new(),
        }
    }

    pub fn until(mut self, until_unix_ms: i64) -> Self {
        self.until_unix_ms = until_unix_ms;
        self
    }
}

/// Applies `change` to `key`, stores the key and appends the transition to its history.
/// A per-model change (`model` set) adds or extends that model's exhaustion and leaves the
/// key's state as it is.
pub fn apply(
    tx: &Tx<'_>,
    key: &mut pb::ProviderKey,
    change: &Change,
    source: &str,
) -> TxResult<()> {
    let from = key.state;
    if change.model.is_empty() {
        key.state = change.to.to_pb() as i32;
        key.state_reason.clone_from(&change.reason);
        key.state_until_unix_ms = change.until_unix_ms;
        key.state_changed_unix_ms = tx.now_unix_ms();
        if change.to == KeyState::Active || change.to == KeyState::Disabled {
            // A key back in rotation (or out of it by hand) starts its models afresh.
            key.exhausted_models.clear();
        }
    } else {
        match key
            .exhausted_models
            .iter_mut()
            .find(|m| m.model == change.model)
        {
            Some(entry) => {
                entry.until_unix_ms = change.until_unix_ms;
                entry.reason.clone_from(&change.reason);
            }
            None => key.exhausted_models.push(pb::ModelExhaustion {
                model: change.model.clone(),
                until_unix_ms: change.until_unix_ms,
                reason: change.reason.clone(),
            }),
        }
    }
    tx.put(TreeId::Keys, &key.id, key)?;
    let to = if change.model.is_empty() {
        change.to.to_pb() as i32
    } else {
        pb::KeyState::Exhausted as i32
    };
    record(
        tx,
        &key.id,
        pb::KeyTransition {
            at_unix_ms: tx.now_unix_ms(),
            // For one model: from what the key was for it, its own state.
            from,
            to,
            reason: change.reason.clone(),
            source: source.to_string(),
            model: change.model.clone(),
            until_unix_ms: change.until_unix_ms,
        },
    )
}

/// Ends the exhaustion of every model of `key` whose time is up at `now`; stores the key
/// and a history entry per model when any ended. Returns how many ended.
pub fn expire_models(tx: &Tx<'_>, key: &mut pb::ProviderKey, now: i64) -> TxResult<usize> {
    let (ended, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut key.exhausted_models)
        .into_iter()
        .partition(|m| m.until_unix_ms <= now);
    key.exhausted_models = kept;
    if ended.is_empty() {
        return Ok(0);
    }
    tx.put(TreeId::Keys, &key.id, key)?;
    for model in &ended {
        record(
            tx,
            &key.id,
            pb::KeyTransition {
                at_unix_ms: tx.now_unix_ms(),
                from: pb::KeyState::Exhausted as i32,
                // The model is back to what the key is for every other model.
                to: key.state,
                reason: "quota reset".into(),
                source: SOURCE_TIMER.into(),
                model: model.model.clone(),
                until_unix_ms: 0,
            },
        )?;
    }
    Ok(ended.len())
}

/// Appends one entry to a key's history, dropping the oldest beyond [`HISTORY_LIMIT`].
pub fn record(tx: &Tx<'_>, id: &str, transition: pb::KeyTransition) -> TxResult<()> {
    let mut history: pb::KeyHistory = tx.get(TreeId::KeyHistory, id)?.unwrap_or_default();
    history.transitions.push(transition);
    let excess = history.transitions.len().saturating_sub(HISTORY_LIMIT);
    history.transitions.drain(..excess);
    tx.put(TreeId::KeyHistory, id, &history)
}

/// Removes everything kept about a deleted key besides the key itself.
pub fn forget(tx: &Tx<'_>, id: &str) -> TxResult<()> {
    tx.remove(TreeId::KeyHistory, id)?;
    tx.remove(TreeId::KeySchedule, id)?;
    Ok(())
}

/// The next midnight in America/Los_Angeles strictly after `at_unix_ms`, when Gemini's
/// daily quotas reset. Daylight saving time follows the US rule in force since 2007 (from
/// the second Sunday of March, 02:00 local, to the first Sunday of November, 02:00 local),
/// so no time-zone database is needed.
pub fn next_pacific_midnight(at_unix_ms: i64) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    const HOUR_MS: i64 = 3_600_000;
    // Local date at `at`: try PDT first, fall back to PST when DST is not in force.
    let offset = |utc_ms: i64| -> i64 {
        if pacific_dst(utc_ms) {
            -7 * HOUR_MS
        } else {
            -8 * HOUR_MS
        }
    };
    let local = at_unix_ms + offset(at_unix_ms);
    let next_local_midnight = (local.div_euclid(DAY_MS) + 1) * DAY_MS;
    // Midnight is never inside a DST switch (those happen at 02:00), so the offset at
    // about that instant is the one that applies.
    let guess = next_local_midnight + 8 * HOUR_MS;
    next_local_midnight - offset(guess)
}

/// Whether US Pacific daylight time is in force at `utc_ms`.
fn pacific_dst(utc_ms: i64) -> bool {
    let days = utc_ms.div_euclid(86_400_000);
    let (year, _, _) = civil_from_days(days);
    // DST starts 2nd Sunday of March at 02:00 PST (10:00 UTC) and ends 1st Sunday of
    // November at 02:00 PDT (09:00 UTC).
    let start = days_from_civil(year, 3, nth_sunday(year, 3, 2)) * 86_400_000 + 10 * 3_600_000;
    let end = days_from_civil(year, 11, nth_sunday(year, 11, 1)) * 86_400_000 + 9 * 3_600_000;
    (start..end).contains(&utc_ms)
}

/// Day of the month of the `n`th Sunday of `month`.
fn nth_sunday(year: i64, month: u32, n: u32) -> u32 {
    let first = days_from_civil(year, month, 1);
    // 1970-01-01 was a Thursday: weekday 0 = Sunday.
    let weekday = (first + 4).rem_euclid(7);
    let first_sunday = 1 + (7 - weekday) % 7;
    u32::try_from(first_sunday).unwrap_or(1) + 7 * (n - 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        days_from_civil(year, month, day) * 86_400_000 + hour * 3_600_000 + minute * 60_000
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1000, 0, 1, 59, 365, 11_016, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(nth_sunday(2026, 3, 2), 8);
        assert_eq!(nth_sunday(2026, 11, 1), 1);
        assert_eq!(nth_sunday(2025, 3, 2), 9);
    }

    #[test]
    fn pacific_midnight_follows_daylight_saving() {
        // Winter (PST, UTC-8): midnight is 08:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc(2026, 1, 15, 12, 0)),
            utc(2026, 1, 16, 8, 0)
        );
        // Just before local midnight in winter: 07:59 UTC is 23:59 PST.
        assert_eq!(
            next_pacific_midnight(utc(2026, 1, 15, 7, 59)),
            utc(2026, 1, 15, 8, 0)
        );
        // Summer (PDT, UTC-7): midnight is 07:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc(2026, 7, 4, 20, 0)),
            utc(2026, 7, 5, 7, 0)
        );
        // The night DST starts (2026-03-08 02:00 PST): midnight that evening is PDT.
        assert_eq!(
            next_pacific_midnight(utc(2026, 3, 8, 12, 0)),
            utc(2026, 3, 9, 7, 0)
        );
        // The day DST ends (2026-11-01): the next midnight is PST.
        assert_eq!(
            next_pacific_midnight(utc(2026, 11, 1, 12, 0)),
            utc(2026, 11, 2, 8, 0)
        );
        // Exactly at midnight: the next one, a day later.
        assert_eq!(
            next_pacific_midnight(utc(2026, 1, 16, 8, 0)),
            utc(2026, 1, 17, 8, 0)
        );
    }
}
