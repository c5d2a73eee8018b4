//! Row-major matrix views, the shape-carrying arguments of the kernels, and where a backward
//! kernel puts an input's gradient.

use std::fmt;

use faer::{Accum, MatRef};

/// A `[rows, cols]` row-major matrix borrowed from a contiguous slice.
///
/// Every matrix a kernel reads arrives as a view, so each operand carries its own shape and the
/// kernel checks that the shapes agree. The rows are contiguous, because the kernels walk whole
/// rows as slices; [`Rows::mat`] is faer's view of the same memory, for [`gemm`](crate::gemm).
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> Rows<'a> {
    /// `data` as a `[rows, cols]` matrix.
    ///
    /// # Panics
    ///
    /// If `data.len() != rows * cols`.
    #[track_caller]
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        check_view(data.len(), rows, cols);
        Self { data, rows, cols }
    }

    /// The elements, row after row.
    pub fn data(self) -> &'a [f32] {
        self.data
    }

    /// The number of rows.
    pub fn rows(self) -> usize {
        self.rows
    }

    /// The number of columns.
    pub fn cols(self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    pub fn shape(self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// faer's view of the same matrix (transpose it with `.transpose()`).
    pub fn mat(self) -> MatRef<'a, f32> {
        MatRef::from_row_major_slice(self.data, self.rows, self.cols)
    }
}

/// A `[rows, cols]` row-major matrix borrowed mutably from a contiguous slice: a kernel's
/// destination.
#[derive(Debug)]
pub struct RowsMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
}

impl<'a> RowsMut<'a> {
    /// `data` as a `[rows, cols]` matrix.
    ///
    /// # Panics
    ///
    /// If `data.len() != rows * cols`.
    #[track_caller]
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        check_view(data.len(), rows, cols);
        Self { data, rows, cols }
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The elements, row after row.
    pub fn data(&mut self) -> &mut [f32] {
        self.data
    }

    /// The elements, for as long as the view's borrow.
    pub fn into_data(self) -> &'a mut [f32] {
        self.data
    }

    /// A shared view of the same matrix.
    pub fn rb(&self) -> Rows<'_> {
        Rows {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// A shorter-lived mutable view of the same matrix, to pass on while keeping this one.
    pub fn rb_mut(&mut self) -> RowsMut<'_> {
        RowsMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

#[track_caller]
fn check_view(len: usize, rows: usize, cols: usize) {
    assert!(
        rows.checked_mul(cols) == Some(len),
        "a {rows} x {cols} view needs {rows} * {cols} elements, the slice has {len}"
    );
}

/// Where a backward kernel puts the gradient of one of its inputs: a matrix of the input's
/// shape, written (`Accum::Replace`, its old contents never read) or added to (`Accum::Add`).
///
/// Only its leading columns may be wanted ([`InputGrad::leading`]): a kernel then computes at
/// least those and may leave the others as they were, which lets a product skip the columns
/// of constant inputs at the end of a tower's x0, whose gradient nothing reads.
#[derive(Debug)]
pub struct InputGrad<'a> {
    pub(crate) dx: RowsMut<'a>,
    pub(crate) accum: Accum,
    pub(crate) cols: usize,
}

impl<'a> InputGrad<'a> {
    /// The whole of `dx`, receiving the gradient per `accum`.
    pub fn new(dx: RowsMut<'a>, accum: Accum) -> Self {
        let cols = dx.cols();
        Self { dx, accum, cols }
    }

    /// Only the first `cols` columns are wanted.
    ///
    /// # Panics
    ///
    /// If `cols` exceeds the gradient's width.
    #[track_caller]
    pub fn leading(self, cols: usize) -> Self {
        let width = self.dx.cols();
        assert!(
            cols <= width,
            "InputGrad::leading: {cols} columns wanted of {width}"
        );
        Self { cols, ..self }
    }

    /// Panics unless the gradient has `shape`, naming the kernel and argument.
    #[track_caller]
    pub(crate) fn check(&self, kernel: &str, arg: impl fmt::Display, shape: (usize, usize)) {
        crate::shape::check_shape(kernel, arg, self.dx.shape(), shape);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "a 2 x 3 view needs 2 * 3 elements, the slice has 5")]
    fn a_view_checks_its_length() {
        Rows::new(&[0.0; 5], 2, 3);
    }

    #[test]
    #[should_panic(expected = "InputGrad::leading: 4 columns wanted of 3")]
    fn leading_columns_fit_the_width() {
        let mut dx = [0.0; 6];
        let _ = InputGrad::new(RowsMut::new(&mut dx, 2, 3), Accum::Add).leading(4);
    }
}
