//! Proof that masking allocates nothing when there is nothing to mask: a counting global
//! allocator, counting per thread so that the test harness's own threads do not interfere.
#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this file only counts and forwards.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use callproof_masking::{FieldRules, Masker, MaskingConfig};
use serde_json::json;

struct CountingAllocator;

thread_local! {
    static N_ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        N_ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        N_ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = N_ALLOCATIONS.with(Cell::get);
    f();
    N_ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn nothing_to_mask_means_no_allocation_and_a_near_miss_one() {
    let masker = Masker::new(&MaskingConfig::default()).unwrap();
    let rules = FieldRules::parse(&["/args/password", "token"]).unwrap();
    let mut clean = json!({
        "function": "lookup_order",
        "call_id": "0c1f6223-b380-4c52-9d68-25da2b6ad3e0",
        "args": {
            "created_at": "2024-01-15T10:30:00.123Z",
            "amount": 1234.56,
            "quantity": 3,
            "lines": [{"sku": "AB-77", "note": "gift wrap, deliver after 5pm"}],
            "flags": [true, false, null],
        },
    });
    // A near miss: the card pattern matches, validation rejects it. Asking the pattern set
    // which detectors matched costs one small allocation, and nothing else may.
    let mut near_miss = json!({"order_id": "ORD-20240115-000123"});
    let text = "The quick brown fox jumps over the lazy dog, 42 times on 2024-01-15.";
    // Warm-up: the regex engines build their per-thread caches and lazy DFA states on the
    // first searches; that is one-off cost, not per-call.
    for _ in 0..3 {
        masker.mask_json(&mut clean, &rules, true).unwrap();
        masker.mask_json(&mut near_miss, &rules, true).unwrap();
        masker.mask_text(text);
    }
    let n_clean = allocations_during(|| {
        for _ in 0..100 {
            let findings = masker.mask_json(&mut clean, &rules, true).unwrap();
            assert!(findings.is_empty());
        }
    });
    let n_text = allocations_during(|| {
        for _ in 0..100 {
            let (masked, findings) = masker.mask_text(text);
            assert!(matches!(masked, std::borrow::Cow::Borrowed(_)) && findings.is_empty());
        }
    });
    let n_near_miss = allocations_during(|| {
        for _ in 0..100 {
            let findings = masker.mask_json(&mut near_miss, &rules, true).unwrap();
            assert!(findings.is_empty());
        }
    });
    assert_eq!((n_clean, n_text, n_near_miss), (0, 0, 100));
}

#[test]
fn the_counter_counts() {
    let n = allocations_during(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(n, 1);
}
