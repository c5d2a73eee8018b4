//! The tape's spare buffers, kept across [`Tape::reset`](super::Tape::reset) so that steps of
//! the same shapes allocate no data buffer after the first.

/// Bytes a buffer holds: its capacity, not its length, since that is what stays allocated.
pub(super) fn capacity_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Spare buffers kept for reuse. Steps repeat the same shapes, so a best fit by capacity finds
/// the buffer of exactly the size a previous step used at that point.
#[derive(Debug, Default)]
pub(super) struct Pool<T> {
    free: Vec<Vec<T>>,
}

impl<T: Copy + Default> Pool<T> {
    /// A buffer of `len` default (zero) elements, reusing the smallest spare one that fits, or
    /// else growing the largest spare one, so the pool never holds more buffers than a step had
    /// alive at once.
    pub(super) fn take(&mut self, len: usize) -> Vec<T> {
        let mut v = self.take_stale(len);
        v.fill(T::default());
        v
    }

    /// A buffer of `len` elements whose contents are whatever a previous step left there (zeros
    /// where it grew): only for outputs that a kernel overwrites entirely before anything reads
    /// them, which saves clearing the buffer first.
    pub(super) fn take_stale(&mut self, len: usize) -> Vec<T> {
        let fit = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let largest = || {
            self.free
                .iter()
                .enumerate()
                .max_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i)
        };
        match fit.or_else(largest) {
            Some(i) => {
                let mut v = self.free.swap_remove(i);
                v.truncate(len);
                v.resize(len, T::default());
                v
            }
            None => vec![T::default(); len],
        }
    }

    /// A copy of `src` in a reused buffer.
    pub(super) fn copy_of(&mut self, src: &[T]) -> Vec<T> {
        let mut v = self.take_stale(src.len());
        v.copy_from_slice(src);
        v
    }

    pub(super) fn give(&mut self, v: Vec<T>) {
        if v.capacity() > 0 {
            self.free.push(v);
        }
    }

    fn spare_bytes(&self) -> usize {
        self.free.iter().map(capacity_bytes).sum()
    }
}

/// The pools of a tape, one per element type it stores.
#[derive(Debug, Default)]
pub(super) struct Pools {
    pub(super) f32s: Pool<f32>,
    pub(super) ids: Pool<u32>,
    pub(super) offsets: Pool<usize>,
}

impl Pools {
    /// Bytes held by the spare buffers of every pool.
    pub(super) fn spare_bytes(&self) -> usize {
        self.f32s.spare_bytes() + self.ids.spare_bytes() + self.offsets.spare_bytes()
    }
}
