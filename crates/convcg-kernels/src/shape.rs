//! Length and shape checks shared by the kernels' `# Panics` preconditions.

use std::fmt;

/// Panics unless `actual == expected`, naming the kernel and the argument (`Display`, so that
/// an indexed name costs nothing unless it is printed).
#[track_caller]
pub(crate) fn check_len(kernel: &str, arg: impl fmt::Display, actual: usize, expected: usize) {
    assert!(
        actual == expected,
        "{kernel}: `{arg}` has {actual} elements, expected {expected}"
    );
}

/// Panics unless `actual == expected`, both `(rows, cols)`, naming the kernel and the argument.
#[track_caller]
pub(crate) fn check_shape(
    kernel: &str,
    arg: impl fmt::Display,
    actual: (usize, usize),
    expected: (usize, usize),
) {
    assert!(
        actual == expected,
        "{kernel}: `{arg}` is {} x {}, expected {} x {}",
        actual.0,
        actual.1,
        expected.0,
        expected.1
    );
}
