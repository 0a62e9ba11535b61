//! [`RowBatch`]: encoded rows packed into two buffers, so a batch of thousands
//! of rows costs a handful of allocations instead of two per row.

/// Keys and values of a batch of online rows, in order.
#[derive(Debug, Default, Clone)]
pub struct RowBatch {
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    values: Vec<u8>,
    value_ends: Vec<usize>,
}

impl RowBatch {
    pub fn with_capacity(rows: usize, value_bytes: usize) -> RowBatch {
        RowBatch {
            keys: Vec::with_capacity(rows * 32),
            key_ends: Vec::with_capacity(rows),
            values: Vec::with_capacity(value_bytes),
            value_ends: Vec::with_capacity(rows),
        }
    }

    /// Starts a row under `key`; append its value to the returned buffer (e.g.
    /// with `codec::RowWriter`), then call [`RowBatch::seal`].
    pub fn start(&mut self, key: &[u8]) -> &mut Vec<u8> {
        debug_assert_eq!(self.key_ends.len(), self.value_ends.len(), "previous row not sealed");
        self.keys.extend_from_slice(key);
        self.key_ends.push(self.keys.len());
        &mut self.values
    }

    pub fn seal(&mut self) {
        self.value_ends.push(self.values.len());
    }

    /// A whole row at once.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.start(key).extend_from_slice(value);
        self.seal();
    }

    pub fn len(&self) -> usize {
        self.value_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.value_ends.is_empty()
    }

    /// Bytes of all values.
    pub fn value_bytes(&self) -> usize {
        self.values.len()
    }

    /// `(key, value)` of each sealed row, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let starts = |ends: &[usize], i: usize| if i == 0 { 0 } else { ends[i - 1] };
        (0..self.len()).map(move |i| {
            (
                &self.keys[starts(&self.key_ends, i)..self.key_ends[i]],
                &self.values[starts(&self.value_ends, i)..self.value_ends[i]],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_come_back_in_order() {
        let mut b = super::RowBatch::default();
        b.push(b"a", b"1");
        b.start(b"bb").extend_from_slice(b"22");
        b.seal();
        b.push(b"c", b"");
        let rows: Vec<_> = b.iter().collect();
        assert_eq!(rows, [(&b"a"[..], &b"1"[..]), (b"bb", b"22"), (b"c", b"")]);
        assert_eq!(b.value_bytes(), 3);
    }
}
