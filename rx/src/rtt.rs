//! Round-trip time estimation and retransmission timeout (RFC 6298 style).
//!
//! Samples come from ACKs whose `serial` names a packet we sent: since every
//! transmission (including retransmits) gets a fresh serial, the sample is
//! never ambiguous (OpenAFS rx.c `rxi_ComputeRoundTripTime` uses the same
//! serial echo).

use std::time::Duration;

/// Lower bound for the RTO: OpenAFS never retransmits faster than this.
pub const MIN_RTO: Duration = Duration::from_millis(200);
/// Upper bound for the RTO including backoff.
pub const MAX_RTO: Duration = Duration::from_secs(10);
/// RTO before the first sample.
pub const INITIAL_RTO: Duration = Duration::from_secs(1);

/// Smoothed RTT state.
#[derive(Clone, Copy, Debug)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    backoff: u32,
}

impl Default for RttEstimator {
    fn default() -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            backoff: 0,
        }
    }
}

impl RttEstimator {
    /// Feed one RTT sample; resets the backoff.
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        self.backoff = 0;
    }

    /// Smoothed RTT, if any sample has been seen.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Forget the timeout backoff (new data was acknowledged).
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// Double the RTO after a timeout.
    pub fn on_timeout(&mut self) {
        self.backoff = (self.backoff + 1).min(6);
    }

    /// Current retransmission timeout including backoff.
    pub fn rto(&self) -> Duration {
        let base = match self.srtt {
            None => INITIAL_RTO,
            Some(s) => s + (self.rttvar * 4).max(Duration::from_millis(10)),
        };
        (base.max(MIN_RTO) * (1 << self.backoff)).min(MAX_RTO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_tracks_samples_and_backs_off() {
        let mut r = RttEstimator::default();
        assert_eq!(r.rto(), INITIAL_RTO);
        for _ in 0..20 {
            r.sample(Duration::from_millis(50));
        }
        assert!(r.rto() >= MIN_RTO && r.rto() < Duration::from_millis(300));
        r.on_timeout();
        r.on_timeout();
        assert!(r.rto() >= MIN_RTO * 4);
        r.sample(Duration::from_secs(3));
        assert!(r.rto() > Duration::from_secs(3));
        assert!(r.rto() <= MAX_RTO);
    }
}
