//! Sets of CPUs by dense index: [`CpuSet`], a plain value (the targets of a call or a
//! shootdown, the CPUs a published wait is for), and [`AtomicCpuSet`], its shared twin
//! (a mailbox's pending senders, a call's unfinished targets).
//!
//! Why a type and not a `u64` mask: the kernel runs up to 255 CPUs (QEMU TCG's most),
//! so a set is [`CpuSet::CAPACITY`] bits in four words. Nothing in the protocol needs a
//! whole set changed atomically at once: each bit of an [`AtomicCpuSet`] has its own
//! story (a sender sets its pending bit and the target clears it; a target clears its
//! bit of `remaining`, which the sender set before publishing the request), so one
//! atomic read-modify-write of the word that holds the bit is exactly what one `u64`
//! gave, and a reader that takes or tests the words one after another sees each bit as
//! the single-word protocol did.
//!
//! An [`AtomicCpuSet<N>`] touches only the words that can hold CPUs below `N`: under
//! loom every atomic access is a branch point, and the models (`N` <= 4) then explore
//! exactly the one-word protocol; in the kernel (`N` = 255) a test of an empty set is
//! four relaxed loads of one cache line, off every allocation path.

#[cfg(not(loom))]
use core::sync::atomic::AtomicU64;
#[cfg(loom)]
use loom::sync::atomic::AtomicU64;

use core::sync::atomic::Ordering;

const WORD_BITS: usize = u64::BITS as usize;
const WORDS: usize = 4;

/// A set of CPU indices below [`CpuSet::CAPACITY`].
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSet {
    words: [u64; WORDS],
}

impl CpuSet {
    /// The most CPUs a set can hold.
    pub const CAPACITY: usize = WORDS * WORD_BITS;

    /// No CPU.
    pub const EMPTY: Self = Self { words: [0; WORDS] };

    /// CPUs `0..count`.
    pub fn first(count: usize) -> Self {
        assert!(count <= Self::CAPACITY, "more CPUs than a CPU set holds");
        let mut set = Self::EMPTY;
        for (index, word) in set.words.iter_mut().enumerate() {
            let bits = count.saturating_sub(index * WORD_BITS).min(WORD_BITS);
            *word = if bits == WORD_BITS {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
        }
        set
    }

    /// Only `cpu`.
    pub fn single(cpu: usize) -> Self {
        let mut set = Self::EMPTY;
        set.insert(cpu);
        set
    }

    pub fn insert(&mut self, cpu: usize) {
        self.words[cpu / WORD_BITS] |= bit(cpu);
    }

    pub fn remove(&mut self, cpu: usize) {
        self.words[cpu / WORD_BITS] &= !bit(cpu);
    }

    /// This set without `cpu`.
    pub fn without(mut self, cpu: usize) -> Self {
        self.remove(cpu);
        self
    }

    pub fn contains(&self, cpu: usize) -> bool {
        cpu < Self::CAPACITY && self.words[cpu / WORD_BITS] & bit(cpu) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&word| word == 0)
    }

    pub fn len(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    /// The CPUs of the set, lowest first (over a copy: the set may change meanwhile).
    pub fn iter(&self) -> impl Iterator<Item = usize> + use<> {
        let words = self.words;
        (0..WORDS).flat_map(move |index| {
            let mut word = words[index];
            core::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let cpu = index * WORD_BITS + word.trailing_zeros() as usize;
                word &= word - 1;
                Some(cpu)
            })
        })
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<T: IntoIterator<Item = usize>>(cpus: T) -> Self {
        let mut set = Self::EMPTY;
        for cpu in cpus {
            set.insert(cpu);
        }
        set
    }
}

impl core::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

fn bit(cpu: usize) -> u64 {
    1 << (cpu % WORD_BITS)
}

/// A [`CpuSet`] that several CPUs change at once, bit by bit, for a board of `N` CPUs
/// (see the module docs for why bit by bit is enough).
pub(crate) struct AtomicCpuSet<const N: usize> {
    words: [AtomicU64; WORDS],
}

impl<const N: usize> AtomicCpuSet<N> {
    const FITS: () = assert!(N <= CpuSet::CAPACITY, "more CPUs than a CPU set holds");
    /// The words that can hold a CPU below `N`: the only ones ever read or written.
    const USED: usize = N.div_ceil(WORD_BITS);

    /// No CPU.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        let () = Self::FITS;
        Self {
            words: [const { AtomicU64::new(0) }; WORDS],
        }
    }

    /// No CPU (loom's atomics cannot be made in `const`).
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        let () = Self::FITS;
        Self {
            words: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The CPUs of `set` (which must lie below `N`).
    pub(crate) fn from_set(set: CpuSet) -> Self {
        let atomic = Self::new();
        debug_assert!(set.iter().all(|cpu| cpu < N));
        for (word, bits) in atomic.words.iter().zip(set.words).take(Self::USED) {
            // Not shared yet: the publication of the set orders these stores.
            word.store(bits, Ordering::Relaxed);
        }
        atomic
    }

    /// Adds `cpu`: one `fetch_or`.
    pub(crate) fn insert(&self, cpu: usize, ordering: Ordering) {
        self.words[cpu / WORD_BITS].fetch_or(bit(cpu), ordering);
    }

    /// Removes `cpu`: one `fetch_and`.
    pub(crate) fn remove(&self, cpu: usize, ordering: Ordering) {
        self.words[cpu / WORD_BITS].fetch_and(!bit(cpu), ordering);
    }

    /// Whether no CPU is in the set, word by word.
    pub(crate) fn is_empty(&self, ordering: Ordering) -> bool {
        self.words[..Self::USED]
            .iter()
            .all(|word| word.load(ordering) == 0)
    }

    /// Empties the set, word by word, and returns what it held: a CPU added to a word
    /// after that word was taken stays for the next take.
    pub(crate) fn take(&self, ordering: Ordering) -> CpuSet {
        let mut set = CpuSet::EMPTY;
        for (taken, word) in set.words.iter_mut().zip(&self.words[..Self::USED]) {
            *taken = word.swap(0, ordering);
        }
        set
    }

    /// The set, word by word (a snapshot that may mix moments: for reports only).
    pub(crate) fn load(&self, ordering: Ordering) -> CpuSet {
        let mut set = CpuSet::EMPTY;
        for (loaded, word) in set.words.iter_mut().zip(&self.words[..Self::USED]) {
            *loaded = word.load(ordering);
        }
        set
    }

    /// Replaces the set, word by word (for reports only, as [`load`](Self::load)).
    pub(crate) fn store(&self, set: CpuSet, ordering: Ordering) {
        for (word, bits) in self.words[..Self::USED].iter().zip(set.words) {
            word.store(bits, ordering);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn first_fills_whole_and_partial_words() {
        assert!(CpuSet::first(0).is_empty());
        assert_eq!(CpuSet::first(3).iter().collect::<Vec<_>>(), [0, 1, 2]);
        for count in [63, 64, 65, 128, 200, 255, 256] {
            let set = CpuSet::first(count);
            assert_eq!(set.len(), count);
            assert!(set.iter().eq(0..count), "CPUs 0..{count}");
        }
    }

    #[test]
    fn insert_remove_contains_across_words() {
        let cpus = [0, 1, 63, 64, 127, 128, 191, 192, 254, 255];
        let mut set: CpuSet = cpus.into_iter().collect();
        assert_eq!(set.iter().collect::<Vec<_>>(), cpus);
        assert!(set.contains(254) && !set.contains(2) && !set.contains(256));
        set.remove(64);
        assert!(!set.contains(64));
        assert_eq!(set.without(254).len(), cpus.len() - 2);
        assert_eq!(CpuSet::single(200).iter().collect::<Vec<_>>(), [200]);
        assert_eq!(format!("{:?}", CpuSet::single(7)), "{7}");
    }

    #[test]
    fn atomic_set_takes_what_was_inserted_and_only_its_words() {
        let set = AtomicCpuSet::<255>::new();
        assert!(set.is_empty(Ordering::Relaxed));
        for cpu in [3, 64, 254] {
            set.insert(cpu, Ordering::Relaxed);
        }
        set.remove(64, Ordering::Relaxed);
        assert_eq!(
            set.load(Ordering::Relaxed).iter().collect::<Vec<_>>(),
            [3, 254]
        );
        assert_eq!(
            set.take(Ordering::Relaxed).iter().collect::<Vec<_>>(),
            [3, 254]
        );
        assert!(set.is_empty(Ordering::Relaxed));

        let small = AtomicCpuSet::<4>::from_set(CpuSet::first(4));
        assert_eq!(AtomicCpuSet::<4>::USED, 1);
        small.store(CpuSet::single(1), Ordering::Relaxed);
        assert_eq!(small.take(Ordering::Relaxed), CpuSet::single(1));
    }
}
