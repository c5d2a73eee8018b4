//! Arrow arrays (from Parquet) into typed column buffers, checking every value.

use std::str::FromStr;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, LargeStringArray, StringArray, StringViewArray};
use arrow_schema::DataType;

use crate::error::Error;
use crate::io::TS_RANGE;
use crate::io::columns::{BadSink, Slot, Values};
use crate::io::plan::{NULL_MESSAGE, Rule, check_float, check_position, check_ts};
use crate::schema::stable_string_id;

/// Decodes `array` into `out` (of the same length) by `rule`, recording bad cells in `sink`.
/// An `Err` means the array's type does not fit the rule (a structural problem).
pub(crate) fn decode(
    array: &dyn Array,
    rule: Rule,
    out: Slot<'_>,
    sink: &mut BadSink<'_>,
) -> std::result::Result<(), String> {
    if array.len() != out.len() {
        return Err(format!(
            "a batch of {} values for a slot of {} rows",
            array.len(),
            out.len()
        ));
    }
    if let Some(dict) = array.as_any_dictionary_opt() {
        return decode_dictionary(dict, rule, out, sink);
    }
    if *array.data_type() == DataType::Null {
        if !rule.nullable() {
            (0..array.len()).for_each(|i| sink.push(i, NULL_MESSAGE.to_owned()));
        }
        return Ok(());
    }
    let nulls = array.logical_nulls();
    let is_null = |i: usize| nulls.as_ref().is_some_and(|n| n.is_null(i));
    let has_nulls = nulls.as_ref().is_some_and(|n| n.null_count() > 0);
    let mismatch = || format!("expected {}, found {}", rule.expected(), array.data_type());
    match out {
        Slot::I64(out) => {
            if let Some(ints) = Ints::of(array) {
                fill_ids(ints, rule, has_nulls, &is_null, out, sink);
            } else if let (Rule::Categorical, Some(strings)) = (rule, Strs::of(array)) {
                for (i, o) in out.iter_mut().enumerate() {
                    if is_null(i) {
                        sink.push(i, NULL_MESSAGE.to_owned());
                    } else {
                        *o = categorical_text(strings.get(i));
                    }
                }
            } else {
                return Err(mismatch());
            }
        }
        Slot::OptI64(out) => {
            let ints = Ints::of(array).ok_or_else(mismatch)?;
            for (i, o) in out.iter_mut().enumerate() {
                if is_null(i) {
                    *o = None;
                } else {
                    match ints.get(i) {
                        Ok(v) => *o = Some(v),
                        Err(m) => sink.push(i, m),
                    }
                }
            }
        }
        Slot::OptU32(out) => {
            let ints = Ints::of(array).ok_or_else(mismatch)?;
            for (i, o) in out.iter_mut().enumerate() {
                if is_null(i) {
                    *o = None;
                } else {
                    match ints.get(i).and_then(check_position) {
                        Ok(v) => *o = Some(v),
                        Err(m) => sink.push(i, m),
                    }
                }
            }
        }
        Slot::F32(out) => {
            let floats = Floats::of(array).ok_or_else(mismatch)?;
            for (i, o) in out.iter_mut().enumerate() {
                if is_null(i) {
                    sink.push(i, NULL_MESSAGE.to_owned());
                } else {
                    match check_float(rule, floats.get(i)) {
                        Ok(v) => *o = v,
                        Err(m) => sink.push(i, m),
                    }
                }
            }
        }
        Slot::OptF32(out) => {
            let floats = Floats::of(array).ok_or_else(mismatch)?;
            for (i, o) in out.iter_mut().enumerate() {
                if is_null(i) {
                    *o = None;
                } else {
                    match check_float(rule, floats.get(i)) {
                        Ok(v) => *o = Some(v),
                        Err(m) => sink.push(i, m),
                    }
                }
            }
        }
        Slot::Surface(out) => fill_names(array, &is_null, out, sink).ok_or_else(mismatch)?,
        Slot::Engagement(out) => fill_names(array, &is_null, out, sink).ok_or_else(mismatch)?,
        Slot::Conversion(out) => fill_names(array, &is_null, out, sink).ok_or_else(mismatch)?,
    }
    Ok(())
}

/// A categorical value written as text: the integer it spells, else its stable id (so that
/// `3` reads the same from an integer column, a string column and CSV).
pub(crate) fn categorical_text(s: &str) -> i64 {
    s.parse::<i64>().unwrap_or_else(|_| stable_string_id(s))
}

/// Required integers (ids, timestamps, integer categoricals).
fn fill_ids(
    ints: Ints<'_>,
    rule: Rule,
    has_nulls: bool,
    is_null: &dyn Fn(usize) -> bool,
    out: &mut [i64],
    sink: &mut BadSink<'_>,
) {
    if let (Ints::I64(values), false) = (ints, has_nulls) {
        // The canonical case: copy the column chunk as it is, then check timestamps in one
        // branch-free pass and look for the culprits only if one is out of range.
        out.copy_from_slice(values);
        let in_range = |v: &i64| TS_RANGE.contains(v);
        if rule != Rule::Ts || out.iter().all(in_range) {
            return;
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        if is_null(i) {
            sink.push(i, NULL_MESSAGE.to_owned());
            continue;
        }
        let value = ints
            .get(i)
            .and_then(|v| if rule == Rule::Ts { check_ts(v) } else { Ok(v) });
        match value {
            Ok(v) => *o = v,
            Err(m) => sink.push(i, m),
        }
    }
}

/// Enumeration names (surface, kinds).
fn fill_names<T: FromStr<Err = Error>>(
    array: &dyn Array,
    is_null: &dyn Fn(usize) -> bool,
    out: &mut [T],
    sink: &mut BadSink<'_>,
) -> Option<()> {
    let strings = Strs::of(array)?;
    for (i, o) in out.iter_mut().enumerate() {
        if is_null(i) {
            sink.push(i, NULL_MESSAGE.to_owned());
            continue;
        }
        match strings.get(i).parse::<T>() {
            Ok(v) => *o = v,
            Err(e) => sink.push(i, e.to_string()),
        }
    }
    Some(())
}

/// A dictionary-encoded column: each distinct value is decoded once, then gathered by key.
fn decode_dictionary(
    dict: &dyn arrow_array::AnyDictionaryArray,
    rule: Rule,
    out: Slot<'_>,
    sink: &mut BadSink<'_>,
) -> std::result::Result<(), String> {
    let values = dict.values();
    let mut decoded = Values::filled(rule, values.len());
    let mut value_bad = Vec::new();
    decode(
        values.as_ref(),
        rule,
        decoded.slot(),
        &mut BadSink {
            base: 0,
            column: sink.column,
            bad: &mut value_bad,
        },
    )?;
    let mut value_error: Vec<Option<String>> = vec![None; values.len()];
    for b in value_bad {
        if let Some(e) = value_error.get_mut(b.row) {
            *e = Some(b.message);
        }
    }
    let n = out.len();
    // `normalized_keys` needs at least one value; with none, every key must be null.
    let keys = if values.is_empty() {
        vec![0; n]
    } else {
        dict.normalized_keys()
    };
    let key_nulls = dict.keys().logical_nulls();
    let mut take = vec![false; n];
    for (i, (&key, t)) in keys.iter().zip(take.iter_mut()).enumerate() {
        if key_nulls.as_ref().is_some_and(|nulls| nulls.is_null(i)) {
            if !rule.nullable() {
                sink.push(i, NULL_MESSAGE.to_owned());
            }
            continue;
        }
        match value_error.get(key) {
            Some(Some(message)) => sink.push(i, message.clone()),
            Some(None) => *t = true,
            None => sink.push(i, format!("dictionary key {key} is out of range")),
        }
    }
    decoded.gather(&keys, &take, out);
    Ok(())
}

/// The values of any Arrow integer array (nulls hold arbitrary values).
#[derive(Clone, Copy)]
enum Ints<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
}

impl<'a> Ints<'a> {
    fn of(array: &'a dyn Array) -> Option<Ints<'a>> {
        macro_rules! try_type {
            ($t:ty, $variant:ident) => {
                if let Some(a) = array.as_primitive_opt::<$t>() {
                    return Some(Ints::$variant(&a.values()[..]));
                }
            };
        }
        try_type!(Int64Type, I64);
        try_type!(Int32Type, I32);
        try_type!(Int16Type, I16);
        try_type!(Int8Type, I8);
        try_type!(UInt64Type, U64);
        try_type!(UInt32Type, U32);
        try_type!(UInt16Type, U16);
        try_type!(UInt8Type, U8);
        None
    }

    /// Value `i` widened to i64; a u64 above i64::MAX is an error. `i` is in bounds.
    fn get(self, i: usize) -> std::result::Result<i64, String> {
        match self {
            Ints::I8(v) => Ok(v[i].into()),
            Ints::I16(v) => Ok(v[i].into()),
            Ints::I32(v) => Ok(v[i].into()),
            Ints::I64(v) => Ok(v[i]),
            Ints::U8(v) => Ok(v[i].into()),
            Ints::U16(v) => Ok(v[i].into()),
            Ints::U32(v) => Ok(v[i].into()),
            Ints::U64(v) => i64::try_from(v[i])
                .map_err(|_| format!("{} does not fit in a signed 64-bit integer", v[i])),
        }
    }

    fn get_f32(self, i: usize) -> f32 {
        match self {
            Ints::U64(v) => v[i] as f32,
            // Every other type widens to i64 without loss.
            other => other.get(i).map_or(f32::NAN, |v| v as f32),
        }
    }
}

/// The values of a float (or integer) array, as f32.
#[derive(Clone, Copy)]
enum Floats<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    Int(Ints<'a>),
}

impl<'a> Floats<'a> {
    fn of(array: &'a dyn Array) -> Option<Floats<'a>> {
        if let Some(a) = array.as_primitive_opt::<Float32Type>() {
            Some(Floats::F32(&a.values()[..]))
        } else if let Some(a) = array.as_primitive_opt::<Float64Type>() {
            Some(Floats::F64(&a.values()[..]))
        } else {
            Ints::of(array).map(Floats::Int)
        }
    }

    /// Value `i`; a double outside f32's range becomes infinite (and fails the finite check).
    fn get(self, i: usize) -> f32 {
        match self {
            Floats::F32(v) => v[i],
            Floats::F64(v) => v[i] as f32,
            Floats::Int(ints) => ints.get_f32(i),
        }
    }
}

/// Any Arrow UTF-8 string array.
#[derive(Clone, Copy)]
enum Strs<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> Strs<'a> {
    fn of(array: &'a dyn Array) -> Option<Strs<'a>> {
        if let Some(a) = array.as_string_opt::<i32>() {
            Some(Strs::Utf8(a))
        } else if let Some(a) = array.as_string_opt::<i64>() {
            Some(Strs::Large(a))
        } else {
            array.as_string_view_opt().map(Strs::View)
        }
    }

    fn get(self, i: usize) -> &'a str {
        match self {
            Strs::Utf8(a) => a.value(i),
            Strs::Large(a) => a.value(i),
            Strs::View(a) => a.value(i),
        }
    }
}
