//! Typed column buffers a reader fills, and the bad cells it finds on the way.

use crate::io::plan::Rule;
use crate::schema::{ConversionKind, EngagementKind, Surface};

/// A bad cell (or, with no column, a bad row) of a table being read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Bad {
    /// Row of the table (all its files together), from 0.
    pub(crate) row: usize,
    /// Index of the planned column, if the problem is one cell.
    pub(crate) column: Option<usize>,
    /// What is wrong.
    pub(crate) message: String,
}

/// Where a decoder records bad cells: the table row of the slot's first row and the column.
pub(crate) struct BadSink<'a> {
    pub(crate) base: usize,
    pub(crate) column: usize,
    pub(crate) bad: &'a mut Vec<Bad>,
}

impl BadSink<'_> {
    /// Records that row `i` of the slot is bad.
    pub(crate) fn push(&mut self, i: usize, message: String) {
        self.bad.push(Bad {
            row: self.base + i,
            column: Some(self.column),
            message,
        });
    }
}

/// One column's values, of the type its [`Rule`] gives. Bad cells hold a placeholder (zero,
/// `None`, the first enum value) until their rows are dropped.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Values {
    I64(Vec<i64>),
    OptI64(Vec<Option<i64>>),
    OptU32(Vec<Option<u32>>),
    F32(Vec<f32>),
    OptF32(Vec<Option<f32>>),
    Surface(Vec<Surface>),
    Engagement(Vec<EngagementKind>),
    Conversion(Vec<ConversionKind>),
}

/// A mutable window of a [`Values`] buffer, of the same variant.
pub(crate) enum Slot<'a> {
    I64(&'a mut [i64]),
    OptI64(&'a mut [Option<i64>]),
    OptU32(&'a mut [Option<u32>]),
    F32(&'a mut [f32]),
    OptF32(&'a mut [Option<f32>]),
    Surface(&'a mut [Surface]),
    Engagement(&'a mut [EngagementKind]),
    Conversion(&'a mut [ConversionKind]),
}

/// Applies `$f` to the vector inside a [`Values`] (or the slice inside a [`Slot`]), whatever
/// its element type.
macro_rules! each {
    ($enum:ident, $value:expr, $x:ident => $body:expr) => {
        match $value {
            $enum::I64($x) => $body,
            $enum::OptI64($x) => $body,
            $enum::OptU32($x) => $body,
            $enum::F32($x) => $body,
            $enum::OptF32($x) => $body,
            $enum::Surface($x) => $body,
            $enum::Engagement($x) => $body,
            $enum::Conversion($x) => $body,
        }
    };
}

/// Like [`each!`], wrapping the result back into the same variant of `$out`.
macro_rules! map_variant {
    ($enum:ident => $out:ident, $value:expr, $x:ident => $body:expr) => {
        match $value {
            $enum::I64($x) => $out::I64($body),
            $enum::OptI64($x) => $out::OptI64($body),
            $enum::OptU32($x) => $out::OptU32($body),
            $enum::F32($x) => $out::F32($body),
            $enum::OptF32($x) => $out::OptF32($body),
            $enum::Surface($x) => $out::Surface($body),
            $enum::Engagement($x) => $out::Engagement($body),
            $enum::Conversion($x) => $out::Conversion($body),
        }
    };
}

impl Values {
    /// `n` placeholder values of the type `rule` gives.
    pub(crate) fn filled(rule: Rule, n: usize) -> Values {
        match rule {
            Rule::Id | Rule::Ts | Rule::Categorical => Values::I64(vec![0; n]),
            Rule::OptId => Values::OptI64(vec![None; n]),
            Rule::Position => Values::OptU32(vec![None; n]),
            Rule::Dense => Values::F32(vec![0.0; n]),
            Rule::OptFloat | Rule::OptNonNegative => Values::OptF32(vec![None; n]),
            Rule::Surface => Values::Surface(vec![Surface::HomeFeed; n]),
            Rule::EngagementKind => Values::Engagement(vec![EngagementKind::Click; n]),
            Rule::ConversionKind => Values::Conversion(vec![ConversionKind::Purchase; n]),
        }
    }

    /// The whole buffer as a slot.
    pub(crate) fn slot(&mut self) -> Slot<'_> {
        map_variant!(Values => Slot, self, v => v.as_mut_slice())
    }

    /// Appends a placeholder (for a bad cell of a streamed table).
    pub(crate) fn push_placeholder(&mut self) {
        match self {
            Values::I64(v) => v.push(0),
            Values::OptI64(v) => v.push(None),
            Values::OptU32(v) => v.push(None),
            Values::F32(v) => v.push(0.0),
            Values::OptF32(v) => v.push(None),
            Values::Surface(v) => v.push(Surface::HomeFeed),
            Values::Engagement(v) => v.push(EngagementKind::Click),
            Values::Conversion(v) => v.push(ConversionKind::Purchase),
        }
    }

    /// Keeps the rows whose `keep` flag is set.
    pub(crate) fn retain(&mut self, keep: &[bool]) {
        each!(Values, self, v => {
            let mut flags = keep.iter();
            v.retain(|_| flags.next().copied().unwrap_or(false));
        })
    }

    /// Cuts the buffer into consecutive slots of the given lengths (which must sum to at most
    /// [`Values::len`]).
    pub(crate) fn split(&mut self, lens: &[usize]) -> Vec<Slot<'_>> {
        let mut rest = self.slot();
        let mut out = Vec::with_capacity(lens.len());
        for &n in lens {
            let n = n.min(rest.len());
            let (head, tail) = rest.split_at(n);
            out.push(head);
            rest = tail;
        }
        out
    }

    /// Writes `self[keys[i]]` into `out[i]` for every `i` with `take[i]` (a dictionary's values
    /// gathered by its keys). `out` must be of the same variant; other rows are left alone.
    pub(crate) fn gather(&self, keys: &[usize], take: &[bool], out: Slot<'_>) {
        fn copy<T: Copy>(src: &[T], keys: &[usize], take: &[bool], out: &mut [T]) {
            for ((o, &k), &t) in out.iter_mut().zip(keys).zip(take) {
                if let (true, Some(&v)) = (t, src.get(k)) {
                    *o = v;
                }
            }
        }
        match (self, out) {
            (Values::I64(s), Slot::I64(o)) => copy(s, keys, take, o),
            (Values::OptI64(s), Slot::OptI64(o)) => copy(s, keys, take, o),
            (Values::OptU32(s), Slot::OptU32(o)) => copy(s, keys, take, o),
            (Values::F32(s), Slot::F32(o)) => copy(s, keys, take, o),
            (Values::OptF32(s), Slot::OptF32(o)) => copy(s, keys, take, o),
            (Values::Surface(s), Slot::Surface(o)) => copy(s, keys, take, o),
            (Values::Engagement(s), Slot::Engagement(o)) => copy(s, keys, take, o),
            (Values::Conversion(s), Slot::Conversion(o)) => copy(s, keys, take, o),
            // Both sides are made from the same rule, so the variants always match.
            _ => {}
        }
    }
}

impl<'a> Slot<'a> {
    /// Rows.
    pub(crate) fn len(&self) -> usize {
        each!(Slot, self, v => v.len())
    }

    /// The first `mid` rows and the rest.
    ///
    /// # Panics
    /// If `mid > self.len()`.
    #[track_caller]
    pub(crate) fn split_at(self, mid: usize) -> (Slot<'a>, Slot<'a>) {
        match self {
            Slot::I64(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Slot::I64(a), Slot::I64(b))
            }
            Slot::OptI64(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Slot::OptI64(a), Slot::OptI64(b))
            }
            Slot::OptU32(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Slot::OptU32(a), Slot::OptU32(b))
            }
            Slot::F32(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Slot::F32(a), Slot::F32(b))
            }
            Slot::OptF32(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Slot::OptF32(a), Slot::OptF32(b))
            }
            Slot::Surface(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Slot::Surface(a), Slot::Surface(b))
            }
            Slot::Engagement(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Slot::Engagement(a), Slot::Engagement(b))
            }
            Slot::Conversion(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Slot::Conversion(a), Slot::Conversion(b))
            }
        }
    }
}
