//! The fuzz driver: a byte string read as a configuration and a sequence of operations
//! on mm's whole allocator (hosted), good ones and bad ones, checked against a model.
//!
//! The model is the set of live blocks: for each, its address, size, where it came from
//! and a tag written into its first and last bytes. After every operation:
//!
//! - an allocation returns a block that overlaps no live block, aligned as asked, or
//!   `OutOfMemory`;
//! - a good free succeeds, and the block's tag was intact until then;
//! - a bad free (a pointer inside a live block, a pointer of no block, a block freed
//!   into the wrong cache, the block freed just before, a block freed earlier with
//!   other frees between) is refused with an error and changes nothing: the block stays
//!   live with its tag.
//!
//! At the end everything is freed, every invariant checked, and the heap must be
//! exactly as it was before the allocator started.
//!
//! Every bad free is made in every configuration (per-CPU caches on or off, debug checks
//! on or off): the live map (`mm/src/slab/live.rs`) catches a double free whatever came
//! between.

use mm::hosted::{HostedLayout, HostedMachine};
use mm::hosted_cpus::HostCpus;
use mm::kmalloc::{Gfp, Kmalloc};
use mm::page::PhysRegion;
use mm::percpu::Cache;
use mm::slab::{SlabError, SlabFlags, SlabOptions};
use std::collections::BTreeMap;
use std::ptr::NonNull;

/// Operations per input at most (an input's bytes run out first, usually).
const MAX_OPS: usize = 400;

/// Reads the input a byte at a time; zeros once it runs out.
struct Input<'a>(std::slice::Iter<'a, u8>);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }

    fn word(&mut self) -> usize {
        usize::from(self.byte()) | usize::from(self.byte()) << 8
    }

    fn done(&self) -> bool {
        self.0.len() == 0
    }
}

/// Where a live block came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Kmalloc,
    Cache(usize),
}

#[derive(Clone, Copy, Debug)]
struct Block {
    size: usize,
    source: Source,
    tag: u8,
}

/// A small PC-like machine: a DMA zone and normal RAM, a window twice the RAM.
fn layout() -> HostedLayout {
    const MIB: u64 = 1 << 20;
    HostedLayout {
        regions: vec![
            PhysRegion::new(15 * MIB, 16 * MIB),
            PhysRegion::new(4 << 30, (4 << 30) + 6 * MIB),
        ],
        reserved: Vec::new(),
        window_pages: 4096,
        page_tables: false,
    }
}

type Allocator<'h, 'm> = Kmalloc<&'h mm::Heap<'m, &'m mm::hosted::HostedPlatform>, HostCpus>;

struct State<'a, 'h, 'm> {
    slab: &'a Allocator<'h, 'm>,
    caches: Vec<Cache<'a, &'h mm::Heap<'m, &'m mm::hosted::HostedPlatform>, HostCpus>>,
    live: BTreeMap<usize, Block>,
    /// Blocks freed since the last allocation of any kind, most recent last. Only these
    /// may be freed again as a test: once anything is allocated, a freed address may
    /// belong to a new user, and freeing it again would free that user's block, which
    /// no allocator without generation tags can tell from a good free.
    freed: Vec<(usize, Source)>,
    /// The per-CPU layer's state of the configuration (switched off and back to it).
    per_cpu: bool,
    /// The block freed by the operation just before, if that was a good free: the
    /// double free tried first (the commonest in real code).
    just_freed: Option<(usize, Source)>,
    next_tag: u8,
}

impl State<'_, '_, '_> {
    fn check_new(&mut self, addr: usize, size: usize, align: usize, source: Source) {
        assert!(
            addr.is_multiple_of(align.max(1)),
            "{addr:#x} not aligned to {align}"
        );
        if let Some((&start, block)) = self.live.range(..addr + size.max(1)).next_back() {
            assert!(
                start + block.size.max(1) <= addr,
                "{addr:#x}+{size} overlaps the live block {start:#x}+{}",
                block.size
            );
        }
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        let tag = self.next_tag;
        if size > 0 {
            // SAFETY: a fresh block of `size` bytes, ours.
            unsafe {
                let p = addr as *mut u8;
                p.write(tag);
                p.add(size - 1).write(tag);
            }
        }
        self.live.insert(addr, Block { size, source, tag });
    }

    fn check_tag(&self, addr: usize, block: &Block) {
        if block.size > 0 {
            // SAFETY: a live block of `size` bytes that the driver owns.
            let (first, last) = unsafe {
                let p = addr as *const u8;
                (p.read(), p.add(block.size - 1).read())
            };
            assert_eq!(
                (first, last),
                (block.tag, block.tag),
                "block {addr:#x} was damaged"
            );
        }
    }

    /// Frees `addr` as coming from `source`: Ok for a live block of that source.
    fn free(&mut self, addr: usize, source: Source) -> Result<(), SlabError> {
        let ptr = addr as *mut u8;
        match source {
            // SAFETY: the model says whether the block is live; a bad free is refused.
            Source::Kmalloc => unsafe { self.slab.kfree(ptr) },
            // SAFETY: as above.
            Source::Cache(i) => unsafe {
                self.caches[i].free(NonNull::new(ptr).expect("non-null"))
            },
        }
    }

    fn free_live(&mut self, pick: usize) {
        let Some((&addr, &block)) = self.live.iter().nth(pick % self.live.len().max(1)) else {
            return;
        };
        self.check_tag(addr, &block);
        self.free(addr, block.source).expect("a good free succeeds");
        self.live.remove(&addr);
        self.freed.push((addr, block.source));
        self.just_freed = Some((addr, block.source));
    }

    /// A bad free must be refused and change nothing.
    fn refused(&mut self, what: &str, addr: usize, source: Source) {
        let before: Vec<_> = self.live.iter().map(|(&a, &b)| (a, b.size)).collect();
        let result = self.free(addr, source);
        assert!(
            result.is_err(),
            "{what}: the bad free of {addr:#x} ({source:?}) was accepted"
        );
        let after: Vec<_> = self.live.iter().map(|(&a, &b)| (a, b.size)).collect();
        assert_eq!(before, after);
        for (&a, b) in &self.live {
            self.check_tag(a, b);
        }
    }
}

/// Runs one input. Panics (a finding) when the allocator and the model disagree.
pub fn run(data: &[u8]) {
    let mut input = Input(data.iter());
    let config = input.byte();
    let per_cpu = config & 1 == 0;
    let debug = config & 2 != 0;
    HostCpus::bind(0);
    let mut machine = HostedMachine::new(layout());
    let heap = machine.boot().expect("the hosted machine boots");
    let before = snapshot(&heap);
    {
        let options = SlabOptions {
            debug,
            reporter: None,
            no_per_cpu: !per_cpu,
        };
        let slab: Allocator<'_, '_> = Kmalloc::new(&heap, options).expect("the allocator starts");
        let mut state = State {
            slab: &slab,
            caches: Vec::new(),
            live: BTreeMap::new(),
            freed: Vec::new(),
            per_cpu,
            just_freed: None,
            next_tag: 0,
        };
        for (name, size) in [
            ("fuzz-a", 8 + input.byte() as usize),
            ("fuzz-b", 300 + input.word() % 4000),
        ] {
            let flags = if input.byte() & 1 == 1 {
                SlabFlags::HWCACHE_ALIGN
            } else {
                SlabFlags::NONE
            };
            let cache = slab.caches().create_cache(name, size, 0, flags, None, None);
            state.caches.push(cache.expect("a cache is created"));
        }
        for _ in 0..MAX_OPS {
            if input.done() {
                break;
            }
            step(&mut state, &mut input);
        }
        // Everything back, then nothing may be left.
        while !state.live.is_empty() {
            state.free_live(0);
        }
        for cache in state.caches.drain(..) {
            assert!(cache.destroy().is_ok(), "an empty cache is destroyed");
        }
        slab.caches().check_invariants();
    }
    heap.shrink();
    heap.check_invariants();
    assert_eq!(snapshot(&heap), before, "the heap ends as it started");
}

fn step(state: &mut State<'_, '_, '_>, input: &mut Input<'_>) {
    let op = input.byte() % 12;
    if matches!(op, 0..=4 | 11) {
        // An allocation, or maintenance after which arrays are made anew.
        state.freed.clear();
    }
    // Only a good free (ops 5 to 7) leaves a block "just freed" for the next operation.
    let just_freed = state.just_freed.take();
    if op == 10 {
        state.just_freed = just_freed;
    }
    match op {
        // kmalloc, small sizes most often, sometimes large, sometimes aligned.
        0..=2 => {
            let size = match input.byte() % 8 {
                0 => input.word() * 8,
                1 => input.word(),
                _ => input.byte() as usize,
            };
            let (align, flags) = match input.byte() % 6 {
                0 => (1 << (input.byte() % 17), Gfp::KERNEL),
                1 => (0, Gfp::DMA),
                _ => (0, Gfp::KERNEL),
            };
            match state.slab.kmalloc_aligned(size, align, flags) {
                Ok(p) => state.check_new(p.addr().get(), size, align, Source::Kmalloc),
                Err(error) => assert_eq!(error, SlabError::OutOfMemory, "kmalloc({size})"),
            }
        }
        3 | 4 => {
            let i = usize::from(input.byte()) % state.caches.len();
            match state.caches[i].alloc() {
                Ok(p) => {
                    let size = state.caches[i].object_size();
                    let align = state.caches[i].align();
                    state.check_new(p.addr().get(), size, align, Source::Cache(i));
                }
                Err(error) => assert_eq!(error, SlabError::OutOfMemory),
            }
        }
        5..=7 => state.free_live(input.word()),
        // A pointer inside a live block.
        8 => {
            let pick = input.word();
            let offset = input.word();
            if let Some((&addr, &block)) = state.live.iter().nth(pick % state.live.len().max(1))
                && block.size > 1
            {
                let inside = addr + 1 + offset % (block.size - 1);
                state.refused("interior pointer", inside, block.source);
            }
        }
        // A pointer of no block, and a block freed into the wrong cache.
        9 => {
            let mut local = 0u64;
            state.refused("no block", (&raw mut local).addr(), Source::Kmalloc);
            state.refused("no block", (&raw mut local).addr(), Source::Cache(0));
            let pick = input.word();
            if let Some((&addr, &block)) = state.live.iter().nth(pick % state.live.len().max(1)) {
                let wrong = match block.source {
                    Source::Kmalloc => Source::Cache(0),
                    Source::Cache(0) => Source::Cache(1),
                    Source::Cache(_) => Source::Kmalloc,
                };
                state.refused("wrong cache", addr, wrong);
            }
        }
        // Double frees: of the block freed by the operation just before, or of one freed
        // earlier, with anything between.
        10 => {
            let older = usize::from(input.byte());
            if let Some((addr, source)) = state.just_freed {
                state.refused("double free of the block freed just before", addr, source);
            } else if !state.freed.is_empty() {
                let (addr, source) = state.freed[older % state.freed.len()];
                state.refused("double free with operations between", addr, source);
            }
        }
        // Maintenance: reap, tune, switch the per-CPU layer, drain.
        _ => match input.byte() % 4 {
            0 => {
                state.slab.caches().reap();
            }
            1 => {
                let limit = usize::from(input.byte() % 32);
                let batch = limit.div_ceil(2).max(1);
                let name = state.caches[0].name();
                let result = state.slab.caches().tune_cpucache(name, limit, batch);
                assert_eq!(result, Ok(()), "tune {name} {limit} {batch}");
            }
            2 => {
                // Every array freed, then back to the configuration's switch.
                state.slab.caches().set_per_cpu(false);
                state.slab.caches().set_per_cpu(state.per_cpu);
            }
            _ => state.slab.caches().drain_all(),
        },
    }
}

/// What must be the same before and after an input.
fn snapshot(heap: &mm::Heap<'_, &mm::hosted::HostedPlatform>) -> (mm::HeapStats, usize) {
    (heap.stats(), heap.platform().mapped_pages())
}
