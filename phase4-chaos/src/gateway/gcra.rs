//! Rate limiting with GCRA, kept in Redis so that every gateway replica shares it.
//!
//! **GCRA** (the generic cell rate algorithm, from ATM networks) is a token bucket
//! that stores one number per key instead of a count and a timestamp: the
//! *theoretical arrival time* (TAT), when the key's bucket would be full again if
//! nothing more arrived. With a rate of one request every `T` (the emission
//! interval) and a burst of `B` requests (tolerance `τ = B·T`):
//!
//! ```text
//! tat     = max(stored TAT, now)
//! new_tat = tat + T·cost
//! allowed ⇔ new_tat − now ≤ τ          (the bucket has room for this request)
//! ```
//!
//! If allowed, store `new_tat` (expiring when the bucket is full again, so idle keys
//! cost nothing). If not, the request may come back at `new_tat − τ`: that is its
//! `Retry-After`. Remaining requests are `⌊(τ − (new_tat − now)) / T⌋`.
//!
//! The whole decision runs in one Lua script, so it is atomic however many gateways
//! ask at once, and it reads the clock of Redis (`TIME`), not of each gateway, so
//! replicas with drifting clocks still agree. Redis's own reference for this is
//! `redis-cell`; Debian's Redis has no modules, hence the script.

use std::time::Duration;

/// One limit: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub per_second: f64,
    pub burst: u32,
}

impl Quota {
    /// The emission interval `T`, in microseconds.
    fn interval_us(self) -> u64 {
        (1e6 / self.per_second).round().max(1.0) as u64
    }

    /// The window over which `burst` requests are the quota: `B·T`, at least 1 s
    /// (what `RateLimit-Policy`'s `w` says).
    pub fn window(self) -> Duration {
        Duration::from_micros(self.interval_us() * u64::from(self.burst))
            .max(Duration::from_secs(1))
    }
}

/// What the limiter decided for one request and one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests still allowed right now.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset_after: Duration,
    /// When refused: until this request would be allowed.
    pub retry_after: Duration,
}

/// `KEYS[1]`: the key's TAT (µs, Redis clock). `ARGV`: T (µs), τ (µs), cost.
/// Returns `{allowed (0|1), remaining, retry_after µs, reset_after µs}`.
const SCRIPT: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval * cost

if new_tat - now > tolerance then
  -- Refused: nothing is stored, so a refused request costs the key nothing.
  local retry_after = new_tat - tolerance - now
  return {0, 0, retry_after, tat - now}
end

redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
local remaining = math.floor((tolerance - (new_tat - now)) / interval)
return {1, remaining, 0, new_tat - now}
";

/// The limiter: one Lua script, loaded once (`EVALSHA`, falling back to `EVAL`).
#[derive(Debug, Clone)]
pub struct Gcra {
    script: std::sync::Arc<redis::Script>,
}

impl Default for Gcra {
    fn default() -> Self {
        Gcra {
            script: std::sync::Arc::new(redis::Script::new(SCRIPT)),
        }
    }
}

impl Gcra {
    /// Charges one request to `key` under `quota`.
    pub async fn check(
        &self,
        redis: &mut redis::aio::ConnectionManager,
        key: &str,
        quota: Quota,
    ) -> redis::RedisResult<Decision> {
        let interval = quota.interval_us();
        let tolerance = interval * u64::from(quota.burst);
        let (allowed, remaining, retry_us, reset_us): (i64, i64, i64, i64) = self
            .script
            .key(key)
            .arg(interval)
            .arg(tolerance)
            .arg(1)
            .invoke_async(redis)
            .await?;
        let micros = |us: i64| Duration::from_micros(us.max(0) as u64);
        Ok(Decision {
            allowed: allowed == 1,
            remaining: remaining.max(0) as u64,
            retry_after: micros(retry_us),
            reset_after: micros(reset_us),
        })
    }
}

/// Whole seconds for a header, rounded up (0.2 s → 1: never tell a client to come
/// back before it may).
pub fn header_seconds(duration: Duration) -> u64 {
    duration.as_micros().div_ceil(1_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_burst_at_the_rate_and_never_below_a_second() {
        let quota = Quota {
            per_second: 10.0,
            burst: 20,
        };
        assert_eq!(quota.interval_us(), 100_000);
        assert_eq!(quota.window(), Duration::from_secs(2));
        let small = Quota {
            per_second: 100.0,
            burst: 5,
        };
        assert_eq!(small.window(), Duration::from_secs(1));
    }

    #[test]
    fn header_seconds_round_up() {
        assert_eq!(header_seconds(Duration::from_millis(200)), 1);
        assert_eq!(header_seconds(Duration::from_secs(2)), 2);
        assert_eq!(header_seconds(Duration::ZERO), 0);
    }
}
