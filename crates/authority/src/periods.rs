//! Periods: fixed-length slices of time since the authority's epoch, plus the periods advanced by
//! hand.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// Seconds since the Unix epoch: the clock every period is read on (`now` of the authority's
/// methods). A clock before 1970 reads 0.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// How time maps to periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Periods {
    pub(crate) epoch: i64,
    pub(crate) seconds: u64,
    pub(crate) last: u64,
}

impl Periods {
    /// The period at unix time `now`, with `offset` periods advanced by hand.
    pub(crate) fn at(&self, now: i64, offset: u64) -> Result<u64, Error> {
        let elapsed = u64::try_from(now.saturating_sub(self.epoch)).unwrap_or(0);
        let period = (elapsed / self.seconds.max(1)).saturating_add(offset);
        if period > self.last {
            return Err(Error::PeriodsExhausted {
                period,
                last: self.last,
            });
        }
        Ok(period)
    }

    /// Unix time at which the clock-driven part of `period` starts (`offset` shifts it earlier).
    pub(crate) fn start(&self, period: u64, offset: u64) -> i64 {
        let clock_period = period.saturating_sub(offset);
        let seconds = i64::try_from(clock_period.saturating_mul(self.seconds)).unwrap_or(i64::MAX);
        self.epoch.saturating_add(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_follow_the_clock_and_the_offset() {
        let p = Periods {
            epoch: 1000,
            seconds: 100,
            last: 9,
        };
        assert_eq!(p.at(999, 0).unwrap(), 0);
        assert_eq!(p.at(1000, 0).unwrap(), 0);
        assert_eq!(p.at(1099, 0).unwrap(), 0);
        assert_eq!(p.at(1100, 0).unwrap(), 1);
        assert_eq!(p.at(1100, 2).unwrap(), 3);
        assert!(matches!(
            p.at(2000, 0),
            Err(Error::PeriodsExhausted {
                period: 10,
                last: 9
            })
        ));
        assert_eq!(p.start(3, 2), 1100);
    }
}
