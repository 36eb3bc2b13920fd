//! The pattern handler through the shared backstore conformance suite: as
//! a read-only medium it must refuse every write, discard and zeroing
//! without changing what it reads, and it grows online.

use backstore::conformance::{check, Expect};
use backstore::Backstore;
use handler_example::PatternBackstore;

#[test]
fn pattern_passes_the_shared_suite() {
    let p = PatternBackstore::new(8 << 20, 1);
    check(
        "user:pattern",
        &p,
        &Expect {
            writable: false,
            ..Expect::default()
        },
    );
    assert_eq!(p.size(), 11 << 20, "grown by the suite's resize step");
}
