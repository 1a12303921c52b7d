//! loom models of kmalloc's own paths over the real allocator (see `percpu.rs` for what
//! every model checks and why each has a preemption bound; the bodies are in
//! `common/models.rs`).
#![cfg(loom)]

mod common;

use common::{models, run};

#[test]
fn model8_two_kfrees_of_one_large_block() {
    run("8 two kfrees of one large block", None, models::model8);
}

#[test]
fn model9_two_size_classes_at_once() {
    run("9 two size classes at once", Some(3), models::model9);
}

#[test]
fn model10_two_kfrees_of_one_object() {
    run("10 two kfrees of one object", None, models::model10);
}
