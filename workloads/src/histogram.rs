//! A log-linear histogram of TSC cycles for the latency figures: exact below 64, then
//! 32 buckets per power of two up to 2^63, so a percentile read from it is within 1/32
//! (3%) below the true value; the maximum is kept exactly.

use alloc::vec::Vec;

/// Buckets: exact below 64 cycles, then 32 per power of two up to 2^63.
const BUCKETS: usize = 64 + 58 * 32;

/// A log-linear histogram of TSC cycles.
pub struct Histogram {
    counts: Vec<u64>,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: alloc::vec![0; BUCKETS],
            max: 0,
        }
    }

    #[inline]
    fn bucket(cycles: u64) -> usize {
        if cycles < 64 {
            return cycles as usize;
        }
        let exponent = 63 - cycles.leading_zeros() as usize; // >= 6
        let step = (cycles >> (exponent - 5)) as usize & 31;
        64 + (exponent - 6) * 32 + step
    }

    /// The least value of a bucket.
    fn floor(bucket: usize) -> u64 {
        if bucket < 64 {
            return bucket as u64;
        }
        let exponent = (bucket - 64) / 32 + 6;
        let step = ((bucket - 64) % 32) as u64;
        (32 + step) << (exponent - 5)
    }

    #[inline(always)]
    pub fn record(&mut self, cycles: u64) {
        self.counts[Self::bucket(cycles)] += 1;
        self.max = self.max.max(cycles);
    }

    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.max = self.max.max(other.max);
    }

    /// The least bucket floor at or above which lie at most 1% of the values: the floor
    /// of the bucket that holds the 99th percentile.
    pub fn p99(&self) -> u64 {
        let total: u64 = self.counts.iter().sum();
        let wanted = total - total / 100;
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted && count > 0 {
                return Self::floor(bucket);
            }
        }
        0
    }

    /// The largest value recorded (exact).
    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn buckets_are_ordered_and_floors_round_down_by_less_than_a_32nd() {
        let mut last = 0;
        for value in (0..1_000_000u64).step_by(7).chain([u64::MAX / 3]) {
            let bucket = Histogram::bucket(value);
            assert!(bucket >= last, "{value}");
            last = bucket;
            let floor = Histogram::floor(bucket);
            assert!(
                floor <= value && value - floor <= value / 32,
                "{value} -> {floor}"
            );
        }
    }

    #[test]
    fn p99_of_a_hundred_values_is_the_99th() {
        let mut histogram = Histogram::new();
        for value in 1..=100 {
            histogram.record(value);
        }
        // 99 falls in the bucket [98, 100) of 32 steps per power of two.
        assert_eq!(histogram.p99(), 98);
        assert_eq!(histogram.max(), 100);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_larger_max() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        for value in 1..=50 {
            a.record(value);
        }
        for value in 51..=100 {
            b.record(value);
        }
        a.merge(&b);
        assert_eq!(a.p99(), 98);
        assert_eq!(a.max(), 100);
    }
}
