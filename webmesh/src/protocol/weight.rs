//! How much memory a payload may take once decoded: its bytes, plus a cost
//! for each element in it.
//!
//! Compression makes bytes cheap to send and a value's elements make decoded
//! data larger than its bytes: a MessagePack `nil` is one byte and decodes
//! into a 32-byte `serde_json::Value`. The server charges a message's weight
//! to its connection before running its handler, and refuses one heavier
//! than the connection may hold, without decoding it.

/// What one element (a number, a string, a map key or value) is counted as,
/// beyond its bytes: the size of a dynamic value (`serde_json::Value`,
/// `rmpv::Value`). A message of 8M `nil`s is 8 MiB, and 264 MiB decoded.
pub(crate) const ELEMENT_COST: usize = 32;

/// What a map is counted as, beyond its elements: a small map decodes into a
/// tree node of several hundred bytes (`serde_json::Map`), so a million
/// `{"a":0}` take some 640 MB decoded.
pub(crate) const MAP_COST: usize = 512;

/// The weight of a MessagePack value: a scan of its markers, skipping the
/// bodies of strings, binaries and extensions.
pub(crate) fn msgpack(bytes: &[u8]) -> usize {
    let mut elements = 0usize;
    let mut maps = 0usize;
    let mut at = 0usize;
    while let Some(&marker) = bytes.get(at) {
        elements += 1;
        if matches!(marker, 0x80..=0x8f | 0xde | 0xdf) {
            maps += 1;
        }
        let len = |width: usize| -> usize {
            let Some(raw) = bytes.get(at + 1..at + 1 + width) else { return usize::MAX / 2 };
            raw.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
        };
        // The bytes after the marker: fixed, or a length field and a body.
        let skip = match marker {
            0x00..=0x9f | 0xc0..=0xc3 | 0xe0..=0xff => 0,
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xc4 | 0xd9 => 1 + len(1),
            0xc5 | 0xda => 2 + len(2),
            0xc6 | 0xdb => 4 + len(4),
            0xc7 => 2 + len(1),
            0xc8 => 3 + len(2),
            0xc9 => 5 + len(4),
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xca | 0xce | 0xd2 => 4,
            0xcb | 0xcf | 0xd3 => 8,
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            0xdc | 0xde => 2,
            0xdd | 0xdf => 4,
        };
        at = at.saturating_add(1).saturating_add(skip);
    }
    weigh(bytes.len(), elements, maps)
}

/// The weight of a JSON value: its structural characters outside strings
/// (`[`, `{`, `:` and `,`) count the elements closely enough.
pub(crate) fn json(bytes: &[u8]) -> usize {
    let mut elements = 1usize;
    let mut maps = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' => {
                    elements += 1;
                    maps += 1;
                }
                b'[' | b':' | b',' => elements += 1,
                _ => {}
            }
        }
    }
    weigh(bytes.len(), elements, maps)
}

fn weigh(bytes: usize, elements: usize, maps: usize) -> usize {
    bytes.saturating_add(elements.saturating_mul(ELEMENT_COST)).saturating_add(maps.saturating_mul(MAP_COST))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The elements each format counts, once the maps' cost is taken off.
    fn elements_of(value: &serde_json::Value) -> (usize, usize) {
        let maps = value.to_string().matches('{').count() * MAP_COST;
        let packed = rmp_serde::to_vec(value).unwrap();
        let text = serde_json::to_vec(value).unwrap();
        ((msgpack(&packed) - packed.len() - maps) / ELEMENT_COST, (json(&text) - text.len() - maps) / ELEMENT_COST)
    }

    #[test]
    fn counts_the_elements_in_both_formats() {
        use serde_json::json;
        assert_eq!(elements_of(&json!(null)), (1, 1));
        let text = json!("a long string, with [brackets], {braces}: and \"quotes\"");
        let packed = rmp_serde::to_vec(&text).unwrap();
        assert_eq!(msgpack(&packed), packed.len() + ELEMENT_COST, "one element, no map");
        let written = serde_json::to_vec(&text).unwrap();
        assert_eq!(json(&written), written.len() + ELEMENT_COST, "braces in a string are text");
        let small_map = rmp_serde::to_vec_named(&json!({"a": 0})).unwrap();
        assert_eq!(msgpack(&small_map), small_map.len() + 3 * ELEMENT_COST + MAP_COST);
        assert_eq!(elements_of(&json!([1, 2, 3])), (4, 4));
        assert_eq!(elements_of(&json!({"a": 1, "b": [true, 2.5, -7, 300000]})), (9, 9));
        // JSON counts separators: empty containers come out a little heavier.
        assert_eq!(elements_of(&json!([[], {}, ""])), (4, 6));
    }

    #[test]
    fn a_million_nils_weigh_what_they_decode_into() {
        let mut nils = vec![0xdd, 0x00, 0x0f, 0x42, 0x40];
        nils.extend(std::iter::repeat_n(0xc0, 1_000_000));
        assert_eq!(msgpack(&nils), nils.len() + 1_000_001 * ELEMENT_COST);
    }

    #[test]
    fn truncated_or_lying_lengths_end_the_scan() {
        assert!(msgpack(&[0xdb, 0xff, 0xff, 0xff, 0xff, 0xc0]) < 100);
        assert!(msgpack(&[0xc6]) < 100);
        assert_eq!(json(br#""unterminated"#), 13 + ELEMENT_COST);
    }
}
