//! Sequence gap detection: each APID's 14-bit sequence count must advance by one per packet.

use crate::codec::SEQUENCE_COUNT_MODULO;

const APIDS: usize = 2048;
const UNSEEN: u16 = u16::MAX;

/// Expected next sequence count per APID. The first packet of an APID sets the expectation;
/// a repeated or out-of-order count shows up as a (large) gap, as CCSDS cannot tell them apart.
#[derive(Debug)]
pub struct SequenceTracker {
    expected: Box<[u16; APIDS]>,
}

impl Default for SequenceTracker {
    fn default() -> Self {
        SequenceTracker {
            expected: Box::new([UNSEEN; APIDS]),
        }
    }
}

impl SequenceTracker {
    /// Records a packet; returns the number of packets missing before it, if any.
    pub fn observe(&mut self, apid: u16, sequence_count: u16) -> Option<u16> {
        let slot = &mut self.expected[usize::from(apid) % APIDS];
        let expected = std::mem::replace(slot, (sequence_count + 1) % SEQUENCE_COUNT_MODULO);
        if expected == UNSEEN || expected == sequence_count {
            return None;
        }
        Some((sequence_count + SEQUENCE_COUNT_MODULO - expected) % SEQUENCE_COUNT_MODULO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gaps_per_apid_across_the_wrap() {
        let mut tracker = SequenceTracker::default();
        assert_eq!(
            tracker.observe(100, 16382),
            None,
            "first packet sets the expectation"
        );
        assert_eq!(tracker.observe(100, 16383), None);
        assert_eq!(tracker.observe(100, 0), None, "wraps at 2^14");
        assert_eq!(tracker.observe(200, 7), None, "APIDs are independent");
        assert_eq!(tracker.observe(100, 3), Some(2), "1 and 2 missing");
        assert_eq!(tracker.observe(100, 4), None);
        assert_eq!(
            tracker.observe(100, 1),
            Some(16380),
            "a step back reads as a long gap"
        );
        assert_eq!(tracker.observe(200, 8), None);
        assert_eq!(tracker.observe(100, 16383), Some(16381));
        assert_eq!(
            tracker.observe(100, 1),
            Some(1),
            "0 missing across the wrap"
        );
    }
}
