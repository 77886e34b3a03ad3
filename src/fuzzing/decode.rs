//! The versioned input format every target decodes (see the [module docs](super) for the
//! opcode tables).
//!
//! An input is `version, op, op, …`. The version byte says which table revision wrote
//! it; an input with version 0 or a version newer than [`FORMAT_VERSION`] is ignored. An
//! opcode's two high bits give the length of its operand, so a decoder steps over an
//! opcode it does not know — operand included — and stays in step:
//!
//! | high bits | operand |
//! |---|---|
//! | `00` | none |
//! | `01` | 1 byte |
//! | `10` | 2 bytes, little-endian |
//! | `11` | 1 length byte `L`, then `L` bytes |
//!
//! Each table entry records the version that introduced it: an opcode newer than the
//! input's version byte is skipped as unknown, so a saved corpus file means the same
//! thing forever, whatever is added later.

/// The newest format version this build reads. Bump it when an opcode is added, and give
/// the new opcode `since: FORMAT_VERSION`.
pub const FORMAT_VERSION: u8 = 1;

/// One row of an opcode table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSpec {
    /// The opcode byte (its two high bits are the operand class).
    pub code: u8,
    /// A readable name, for transcripts and docs.
    pub name: &'static str,
    /// The format version that introduced it.
    pub since: u8,
}

/// A decoded operation: a known opcode and its raw operand bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op<'a> {
    /// The opcode.
    pub code: u8,
    /// The operand bytes (`0`, `1`, `2` or `L` of them).
    pub operand: &'a [u8],
}

impl Op<'_> {
    /// The operand's byte `i`, 0 past its end.
    pub fn byte(&self, i: usize) -> u8 {
        self.operand.get(i).copied().unwrap_or(0)
    }

    /// The operand bytes `i..i+2` as a little-endian `u16`, zeros past its end.
    pub fn u16(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.byte(i), self.byte(i + 1)])
    }
}

/// A reader over one input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    version: u8,
}

impl<'a> Input<'a> {
    /// Reads the version byte; `None` for an empty input or a version this build does not
    /// know (0, or newer than [`FORMAT_VERSION`]).
    pub fn new(data: &'a [u8]) -> Option<Self> {
        let (&version, _) = data.split_first()?;
        (1..=FORMAT_VERSION).contains(&version).then_some(Input { data, pos: 1, version })
    }

    /// The input's format version.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// True once every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next raw byte (0 once the input is exhausted): for headers, not for ops.
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// The next two raw bytes as a little-endian `u16` (zeros past the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// The next operation in `table`, skipping unknown opcodes (and opcodes newer than
    /// the input's version) with their operands. `None` at the end of the input, or when
    /// the last operand is cut short.
    pub fn next_op(&mut self, table: &[OpSpec]) -> Option<Op<'a>> {
        loop {
            let code = *self.data.get(self.pos)?;
            self.pos += 1;
            let len = match code >> 6 {
                0 => 0,
                1 => 1,
                2 => 2,
                _ => {
                    let len = usize::from(*self.data.get(self.pos)?);
                    self.pos += 1;
                    len
                }
            };
            let operand = self.data.get(self.pos..self.pos + len)?;
            self.pos += len;
            if table.iter().any(|s| s.code == code && s.since <= self.version) {
                return Some(Op { code, operand });
            }
        }
    }
}

/// The name of `code` in `table`, for transcripts.
pub fn op_name(table: &[OpSpec], code: u8) -> &'static str {
    table.iter().find(|s| s.code == code).map_or("unknown", |s| s.name)
}

/// A size skewed small, so that sizes land exactly on small limits (the `> high` and
/// `<= low` boundaries), with some large enough to cross the default 64 KiB: the two high
/// bits pick the range (`0..8`, `0..300`, `0..5000`, `60_000..~390_000`).
pub fn size(x: u16) -> usize {
    let low = usize::from(x & 0x3fff);
    match x >> 14 {
        0 => low & 7,
        1 => low % 300,
        2 => low % 5_000,
        _ => 60_000 + low * 20,
    }
}

/// A write-buffer limit: `None` (asyncio's "not given"), a tiny one (`0..16`), a
/// mid-range one (`0..16384`) or a large one (`0..131072`), by the two high bits.
pub fn limit(x: u16) -> Option<usize> {
    let low = usize::from(x & 0x3fff);
    match x >> 14 {
        0 => None,
        1 => Some(low & 15),
        2 => Some(low),
        _ => Some(low * 8),
    }
}

/// Milliseconds of virtual time: mostly short, sometimes up to about a minute.
pub fn millis(x: u8) -> u64 {
    match x >> 6 {
        0 => u64::from(x & 63),
        1 => u64::from(x & 63) * 10,
        2 => u64::from(x & 63) * 100,
        _ => u64::from(x & 63) * 1_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[OpSpec] = &[
        OpSpec { code: 0x01, name: "a", since: 1 },
        OpSpec { code: 0x41, name: "b", since: 1 },
        OpSpec { code: 0x81, name: "c", since: 1 },
        OpSpec { code: 0xC1, name: "d", since: 1 },
        OpSpec { code: 0x02, name: "future", since: 2 },
    ];

    fn ops(data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut input = Input::new(data).expect("version 1");
        std::iter::from_fn(|| input.next_op(TABLE)).map(|o| (o.code, o.operand.to_vec())).collect()
    }

    #[test]
    fn operand_length_comes_from_the_high_bits() {
        let data = [1, 0x01, 0x41, 7, 0x81, 1, 2, 0xC1, 3, 9, 8, 7];
        assert_eq!(
            ops(&data),
            [(0x01, vec![]), (0x41, vec![7]), (0x81, vec![1, 2]), (0xC1, vec![9, 8, 7])]
        );
    }

    #[test]
    fn unknown_opcodes_are_skipped_with_their_operands() {
        // 0x42 (1 byte), 0x82 (2 bytes) and 0xC2 (length-prefixed) are not in the table:
        // their operands (which look like known opcodes) must not be decoded as ops.
        let data = [1, 0x42, 0x01, 0x82, 0x01, 0x01, 0xC2, 2, 0x01, 0x01, 0x01];
        assert_eq!(ops(&data), [(0x01, vec![])]);
    }

    #[test]
    fn an_opcode_newer_than_the_input_is_unknown() {
        assert_eq!(ops(&[1, 0x02, 0x01]), [(0x01, vec![])]);
    }

    #[test]
    fn unknown_versions_and_cut_operands_are_ignored() {
        assert!(Input::new(&[]).is_none());
        assert!(Input::new(&[0, 0x01]).is_none());
        assert!(Input::new(&[FORMAT_VERSION + 1, 0x01]).is_none());
        assert_eq!(ops(&[1, 0x01, 0x81, 5]), [(0x01, vec![])]);
        assert_eq!(ops(&[1, 0xC1, 4, 1, 2]), []);
    }

    #[test]
    fn sizes_and_limits_hit_the_boundaries() {
        assert_eq!(size(0), 0);
        assert_eq!(size(7), 7);
        assert_eq!(size(0xC000), 60_000);
        assert!(size(0xFFFF) > 64 * 1024 * 5);
        assert_eq!(limit(0x1234), None);
        assert_eq!(limit(0x4000), Some(0));
        assert_eq!(limit(0x400F), Some(15));
    }
}
