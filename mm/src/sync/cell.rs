//! [`RaceCheck`]: makes plain shared memory that lives outside any Rust cell (raw arena
//! memory written through pointers, such as the header and entries of a per-CPU array)
//! visible to loom's data-race detector.
//!
//! Normally it is a zero-sized type whose methods do nothing and compile to nothing: the
//! kernel's hit path is unchanged. Under `--cfg loom` it is a `loom::cell::UnsafeCell<()>`
//! standing for the memory it guards: the code calls [`RaceCheck::read`] before it reads
//! that memory and [`RaceCheck::write`] before it writes it, and loom reports any two
//! such accesses, one of them a write, that are not ordered by happens-before. Its
//! creation counts as a write (loom records the creating thread's clock), which is what
//! lets a model catch an object published to another thread without a release/acquire
//! pair. The report names the region and the last write to it ("made", "emptied",
//! "freed", ...), so that a model's failure says which protocol step was broken, not only
//! loom's "Causality violation".

/// A stand-in for a region of plain memory, for loom's race detector. See the
/// [module docs](self).
#[derive(Debug)]
pub struct RaceCheck {
    #[cfg(loom)]
    cell: loom::cell::UnsafeCell<()>,
    #[cfg(loom)]
    what: &'static str,
    /// The last write's label (the models' bookkeeping, not seen by loom).
    #[cfg(loom)]
    last_write: std::sync::Mutex<&'static str>,
}

impl RaceCheck {
    /// A new region called `what`, written ("made") by the calling thread.
    #[cfg(not(loom))]
    #[inline(always)]
    pub const fn new(_what: &'static str) -> Self {
        Self {}
    }

    /// A new region called `what`, written ("made") by the calling thread.
    #[cfg(loom)]
    pub fn new(what: &'static str) -> Self {
        Self {
            cell: loom::cell::UnsafeCell::new(()),
            what,
            last_write: std::sync::Mutex::new("made"),
        }
    }

    /// Records a read of the region by this thread.
    #[inline(always)]
    pub fn read(&self) {
        #[cfg(loom)]
        self.checked("read", || self.cell.with(|_| ()));
    }

    /// Records a write of the region by this thread; `how` labels it in reports.
    #[inline(always)]
    pub fn write(&self, how: &'static str) {
        #[cfg(not(loom))]
        let _ = how;
        #[cfg(loom)]
        {
            self.checked(how, || self.cell.with_mut(|_| ()));
            *self.last_write.lock().unwrap_or_else(|e| e.into_inner()) = how;
        }
    }

    /// Runs loom's check, and turns its report into one that names the region.
    #[cfg(loom)]
    fn checked(&self, access: &str, check: impl FnOnce()) {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
        if let Err(report) = caught {
            let loom_says = report
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| report.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            let last = *self.last_write.lock().unwrap_or_else(|e| e.into_inner());
            panic!(
                "data race on {}: {access}, not ordered with another access (last write: \
                 {last}); loom: {loom_says}",
                self.what
            );
        }
    }
}
