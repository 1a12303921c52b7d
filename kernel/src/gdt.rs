//! The global descriptor table and task-state segment of each CPU.
//!
//! Long mode ignores segmentation for addressing, but a CPU still needs a GDT with
//! a 64-bit code segment, and a TSS whose interrupt stack table (IST) gives the
//! double-fault handler a known-good stack: a double fault is often caused by a
//! kernel stack overflow, and pushing the exception frame onto that same stack
//! would escalate it to a triple fault (a silent machine reset). Each CPU needs its
//! own TSS (the CPU marks it busy when it is loaded), hence one [`CpuTables`] per CPU.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use crate::stack::GuardedStack;

/// The IST slot used by the double-fault handler.
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;

/// Size of each CPU's double-fault stack.
pub const FAULT_STACK_SIZE: usize = 16 * 1024;

/// The bootstrap processor's double-fault stack.
pub static BSP_FAULT_STACK: GuardedStack<FAULT_STACK_SIZE> = GuardedStack::new();

/// One CPU's GDT and TSS, built once and then only read by the CPU.
pub struct CpuTables {
    tss: Once<TaskStateSegment>,
    gdt: Once<(GlobalDescriptorTable, Selectors)>,
}

struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

impl CpuTables {
    pub const fn new() -> Self {
        Self {
            tss: Once::new(),
            gdt: Once::new(),
        }
    }

    /// Builds the tables (first call only) and loads them on the calling CPU:
    /// `lgdt`, reload of CS and the data segments, `ltr`.
    pub fn load(&'static self, fault_stack_top: VirtAddr) {
        let tss = self.tss.call_once(|| {
            let mut tss = TaskStateSegment::new();
            tss.interrupt_stack_table[DOUBLE_FAULT_IST_INDEX as usize] = fault_stack_top;
            tss
        });
        let (gdt, selectors) = self.gdt.call_once(|| {
            let mut gdt = GlobalDescriptorTable::new();
            let code = gdt.append(Descriptor::kernel_code_segment());
            let data = gdt.append(Descriptor::kernel_data_segment());
            let tss = gdt.append(Descriptor::tss_segment(tss));
            (gdt, Selectors { code, data, tss })
        });
        gdt.load();
        // SAFETY: the selectors index descriptors of the GDT just loaded, which is
        // 'static; the code selector is a 64-bit ring-0 code segment and the data
        // selector a writable ring-0 data segment, as CS and SS require.
        unsafe {
            CS::set_reg(selectors.code);
            SS::set_reg(selectors.data);
            DS::set_reg(selectors.data);
            ES::set_reg(selectors.data);
            load_tss(selectors.tss);
        }
    }
}

/// The bootstrap processor's tables.
pub static BSP_TABLES: CpuTables = CpuTables::new();
