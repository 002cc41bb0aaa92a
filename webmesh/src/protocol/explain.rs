//! Why a payload did not decode, in the same words for every format.
//!
//! serde_json reads each value as what it is, so a wrong type reads
//! `invalid type: string "2", expected u32`; rmp-serde reads numbers by a
//! shortcut that only says `wrong msgpack marker FixStr(1)`. This runs only
//! once decoding has failed: it decodes the MessagePack again with a
//! deserializer that, like serde_json's, hands every value to the visitor as
//! what it is, and so gets serde's own words. It reads the bytes in place,
//! as rmp-serde does, and stops at the first error: a payload that fails
//! costs no more memory to explain than to decode.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;

use super::payload::PayloadError;

/// The error of `T` from MessagePack `bytes`, which rmp-serde refused.
pub(super) fn msgpack<T: DeserializeOwned>(bytes: &[u8]) -> PayloadError {
    let mut strict = Strict { rest: bytes, depth: super::msgpack::MAX_DEPTH };
    match serde_path_to_error::deserialize::<_, T>(&mut strict) {
        Err(e) if !e.inner().unsure => PayloadError::new(e.path().to_string(), e.inner().message.clone()),
        // Where this reader does not follow rmp-serde (extension types,
        // broken bytes), rmp-serde's own words are the better ones.
        _ => match serde_path_to_error::deserialize::<_, T>(&mut super::msgpack::deserializer(bytes)) {
            Err(e) => PayloadError::new(e.path().to_string(), e.inner().to_string()),
            Ok(_) => PayloadError::new(".".into(), "the payload does not decode".into()),
        },
    }
}

/// The error of `T` from JSON `bytes`, which serde_json refused, without
/// serde_json's line and column: they count from the payload, not the
/// message, and MessagePack has no such thing.
pub(super) fn json<T: DeserializeOwned>(bytes: &[u8]) -> PayloadError {
    match serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_slice(bytes)) {
        Err(e) => {
            let inner = e.inner();
            let mut message = inner.to_string();
            if inner.line() != 0 {
                let position = format!(" at line {} column {}", inner.line(), inner.column());
                if let Some(stripped) = message.strip_suffix(&position) {
                    message.truncate(stripped.len());
                }
            }
            PayloadError::new(e.path().to_string(), message)
        }
        Ok(_) => PayloadError::new(".".into(), "the payload does not decode".into()),
    }
}

/// A decoding error, worded as serde_json words it.
#[derive(Debug)]
struct Error {
    message: String,
    /// Whether rmp-serde may have read these bytes differently.
    unsure: bool,
}

impl Error {
    fn unsure(message: impl Into<String>) -> Self {
        Self { message: message.into(), unsure: true }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self { message: message.to_string(), unsure: false }
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::custom(format_args!("invalid type: {}, expected {expected}", AsJson(unexpected)))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::custom(format_args!("invalid value: {}, expected {expected}", AsJson(unexpected)))
    }
}

/// An unexpected value as serde_json names it: `null`, and floats in their
/// shortest form.
struct AsJson<'a>(Unexpected<'a>);

impl fmt::Display for AsJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Unexpected::Unit => f.write_str("null"),
            Unexpected::Float(value) => match serde_json::Number::from_f64(value) {
                Some(number) => write!(f, "floating point `{number}`"),
                None => fmt::Display::fmt(&self.0, f),
            },
            other => fmt::Display::fmt(&other, f),
        }
    }
}

/// MessagePack in place, every value handed over as what it is.
struct Strict<'de> {
    rest: &'de [u8],
    depth: usize,
}

impl<'de> Strict<'de> {
    fn take(&mut self, n: usize) -> Result<&'de [u8], Error> {
        if n > self.rest.len() {
            return Err(Error::unsure("unexpected end of MessagePack data"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn peek(&self) -> Result<u8, Error> {
        self.rest.first().copied().ok_or_else(|| Error::unsure("unexpected end of MessagePack data"))
    }

    /// The length that follows a marker of `kind`, or `None` for a marker
    /// of another kind.
    fn len(&mut self, byte: u8, kind: Sized) -> Result<Option<usize>, Error> {
        let len = match (kind, byte) {
            (Sized::Str, 0xa0..=0xbf) => usize::from(byte & 0x1f),
            (Sized::Array, 0x90..=0x9f) | (Sized::Map, 0x80..=0x8f) => usize::from(byte & 0x0f),
            (Sized::Str, 0xd9) | (Sized::Bin, 0xc4) => usize::from(self.array::<1>()?[0]),
            (Sized::Str, 0xda) | (Sized::Bin, 0xc5) | (Sized::Array, 0xdc) | (Sized::Map, 0xde) => {
                usize::from(u16::from_be_bytes(self.array()?))
            }
            (Sized::Str, 0xdb) | (Sized::Bin, 0xc6) | (Sized::Array, 0xdd) | (Sized::Map, 0xdf) => {
                u32::from_be_bytes(self.array()?) as usize
            }
            _ => return Ok(None),
        };
        Ok(Some(len))
    }

    fn nested<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        if self.depth == 0 {
            return Err(de::Error::custom("recursion limit exceeded"));
        }
        self.depth -= 1;
        let result = read(self);
        self.depth += 1;
        result
    }

    fn any<V: Visitor<'de>>(&mut self, visitor: V, bytes_as_seq: bool) -> Result<V::Value, Error> {
        let byte = self.take(1)?[0];
        if let Some(len) = self.len(byte, Sized::Str)? {
            let data = self.take(len)?;
            return match std::str::from_utf8(data) {
                Ok(s) => visitor.visit_borrowed_str(s),
                Err(_) => Err(Error::unsure("a string is not UTF-8")),
            };
        }
        if let Some(len) = self.len(byte, Sized::Bin)? {
            let data = self.take(len)?;
            return if bytes_as_seq {
                visitor.visit_seq(de::value::SeqDeserializer::new(data.iter().copied()))
            } else {
                visitor.visit_borrowed_bytes(data)
            };
        }
        if let Some(len) = self.len(byte, Sized::Array)? {
            return self.nested(|de| {
                let mut seq = Elements { de, left: len };
                let value = visitor.visit_seq(&mut seq)?;
                match seq.left {
                    0 => Ok(value),
                    _ => Err(de::Error::invalid_length(len, &"fewer elements in array")),
                }
            });
        }
        if let Some(len) = self.len(byte, Sized::Map)? {
            return self.nested(|de| {
                let mut map = Elements { de, left: len };
                let value = visitor.visit_map(&mut map)?;
                match map.left {
                    0 => Ok(value),
                    _ => Err(de::Error::invalid_length(len, &"fewer elements in map")),
                }
            });
        }
        match byte {
            0x00..=0x7f => visitor.visit_u64(u64::from(byte)),
            0xe0..=0xff => visitor.visit_i64(i64::from(byte as i8)),
            0xc0 => visitor.visit_unit(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0xca => visitor.visit_f32(f32::from_be_bytes(self.array()?)),
            0xcb => visitor.visit_f64(f64::from_be_bytes(self.array()?)),
            0xcc => visitor.visit_u64(u64::from(self.array::<1>()?[0])),
            0xcd => visitor.visit_u64(u64::from(u16::from_be_bytes(self.array()?))),
            0xce => visitor.visit_u64(u64::from(u32::from_be_bytes(self.array()?))),
            0xcf => visitor.visit_u64(u64::from_be_bytes(self.array()?)),
            0xd0 => signed(visitor, i64::from(i8::from_be_bytes(self.array()?))),
            0xd1 => signed(visitor, i64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => signed(visitor, i64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => signed(visitor, i64::from_be_bytes(self.array()?)),
            // Extension types (0xc7-0xc9, 0xd4-0xd8) and 0xc1, never used.
            _ => Err(Error::unsure("a MessagePack extension type")),
        }
    }
}

/// The kinds of MessagePack value that carry a length.
#[derive(Clone, Copy)]
enum Sized {
    Str,
    Bin,
    Array,
    Map,
}

/// A signed integer, as JSON would hand it over: unsigned when it is not negative.
fn signed<'de, V: Visitor<'de>>(visitor: V, n: i64) -> Result<V::Value, Error> {
    match u64::try_from(n) {
        Ok(n) => visitor.visit_u64(n),
        Err(_) => visitor.visit_i64(n),
    }
}

impl<'de> de::Deserializer<'de> for &mut Strict<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.any(visitor, false)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek()? == 0xc0 {
            self.rest = &self.rest[1..];
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        // rmp-serde writes unit structs as `[]`.
        if self.peek()? == 0x90 {
            self.rest = &self.rest[1..];
            return visitor.visit_unit();
        }
        self.any(visitor, false)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Error> {
        if name == "_ExtStruct" {
            return Err(Error::unsure("a MessagePack extension type"));
        }
        visitor.visit_newtype_struct(self)
    }

    // rmp-serde reads binary data as a sequence where one is asked for.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.any(visitor, true)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.any(visitor, true)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.any(visitor, true)
    }

    // rmp-serde writes 128-bit integers as 16 bytes of binary data.
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.rest {
            [0xc4, 16, data @ ..] if data.len() >= 16 => {
                let n = i128::from_be_bytes(self.take(18)?[2..].try_into().unwrap_or_default());
                visitor.visit_i128(n)
            }
            _ => self.any(visitor, false),
        }
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.rest {
            [0xc4, 16, data @ ..] if data.len() >= 16 => {
                let n = u128::from_be_bytes(self.take(18)?[2..].try_into().unwrap_or_default());
                visitor.visit_u128(n)
            }
            _ => self.any(visitor, false),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let byte = self.peek()?;
        if (0xa0..=0xbf).contains(&byte) || (0xd9..=0xdb).contains(&byte) {
            // A unit variant, by name.
            let name: &'de str = de::Deserialize::deserialize(&mut *self)?;
            return visitor.visit_enum(name.into_deserializer());
        }
        let mut probe = Strict { rest: self.rest, depth: self.depth };
        let first = probe.take(1)?[0];
        match probe.len(first, Sized::Map)? {
            Some(1) => {
                self.rest = probe.rest;
                self.nested(|de| visitor.visit_enum(Variant { de }))
            }
            Some(_) => Err(de::Error::invalid_value(Unexpected::Map, &"map with a single key")),
            // Read as what it is, for serde's words about it.
            None => match self.any(Expecting("string or map"), false) {
                Ok(()) => Err(de::Error::custom("expected a string or a map")),
                Err(e) => Err(e),
            },
        }
    }

    fn is_human_readable(&self) -> bool {
        // As rmp-serde, so that types with two forms pick the same one.
        false
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf unit map struct identifier
        ignored_any
    }
}

/// A visitor that takes nothing: what it is given becomes an error saying
/// what it expected.
struct Expecting(&'static str);

impl Visitor<'_> for Expecting {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The elements of an array or the entries of a map.
struct Elements<'a, 'de> {
    de: &'a mut Strict<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // Not the announced length: a lying one must not reserve memory.
        Some(self.left.min(4096))
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(4096))
    }
}

/// An enum variant written as a map of one entry: `{name: data}`.
struct Variant<'a, 'de> {
    de: &'a mut Strict<'de>,
}

impl<'de> de::EnumAccess<'de> for Variant<'_, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let name = seed.deserialize(&mut *self.de)?;
        Ok((name, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self.de)
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        seed.deserialize(self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self.de, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(self, _fields: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(self.de, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use bytes::Bytes;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use crate::Payload;

    /// The field and message of decoding `value` into `T`, the same from
    /// MessagePack and JSON.
    fn error<T: DeserializeOwned + fmt::Debug>(value: serde_json::Value) -> (String, String) {
        let packed = rmp_serde::to_vec_named(&value).unwrap();
        let from_msgpack = Payload::msgpack(packed.into()).deserialize::<T>().unwrap_err();
        let from_json = Payload::json(Bytes::from(value.to_string())).deserialize::<T>().unwrap_err();
        assert_eq!(from_msgpack, from_json, "{value}");
        (from_json.field().to_owned(), from_json.message().to_owned())
    }

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Order {
        item: String,
        quantity: u32,
        size: Option<Size>,
        items: Option<Vec<Item>>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum Size {
        Small,
        Large,
        Custom(u32),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        price: u32,
    }

    #[test]
    fn the_common_mistakes_read_the_same_in_both_formats() {
        let cases: &[(serde_json::Value, &str, &str)] = &[
            (json!({"item": "tea", "quantity": "2"}), "quantity", r#"invalid type: string "2", expected u32"#),
            (json!({"item": "tea"}), ".", "missing field `quantity`"),
            (
                json!({"item": "tea", "quantity": 1, "size": "Huge"}),
                "size",
                "unknown variant `Huge`, expected one of `Small`, `Large`, `Custom`",
            ),
            (
                json!({"item": "tea", "quantity": 1, "items": [{"price": 1}, {"price": 2}, {"price": "x"}]}),
                "items[2].price",
                r#"invalid type: string "x", expected u32"#,
            ),
            (
                json!({"item": "tea", "quantity": 1, "items": [{"price": 1, "cost": 2}]}),
                "items[0].cost",
                "unknown field `cost`, expected `price`",
            ),
            (json!({"item": "tea", "quantity": null}), "quantity", "invalid type: null, expected u32"),
            (json!({"item": "tea", "quantity": 1.5}), "quantity", "invalid type: floating point `1.5`, expected u32"),
            (json!({"item": "tea", "quantity": -1}), "quantity", "invalid value: integer `-1`, expected u32"),
            (json!({"item": true, "quantity": 1}), "item", "invalid type: boolean `true`, expected a string"),
            (
                json!({"item": "tea", "quantity": 1, "items": {"a": 1}}),
                "items",
                "invalid type: map, expected a sequence",
            ),
            (
                json!({"item": "tea", "quantity": 1, "size": "Custom"}),
                "size.Custom",
                "invalid type: unit variant, expected newtype variant",
            ),
            (
                json!({"item": "tea", "quantity": 1, "size": {"Custom": "x"}}),
                "size.Custom",
                r#"invalid type: string "x", expected u32"#,
            ),
            (json!(["tea"]), ".", "invalid length 1, expected struct Order with 4 elements"),
            (json!("tea"), ".", r#"invalid type: string "tea", expected struct Order"#),
        ];
        for (value, field, message) in cases {
            assert_eq!(error::<Order>(value.clone()), (field.to_string(), message.to_string()), "{value}");
        }
        assert_eq!(error::<u8>(json!(300)).1, "invalid value: integer `300`, expected u8");
        assert_eq!(error::<(u32, u32)>(json!([1])).1, "invalid length 1, expected a tuple of size 2");
        assert_eq!(
            error::<BTreeMap<String, u32>>(json!({"a": "b"})),
            ("a".into(), r#"invalid type: string "b", expected u32"#.into())
        );
    }

    #[test]
    fn values_rmp_serde_reads_its_own_way_are_read_the_same() {
        // Compact forms (an address as bytes), 128-bit integers as binary
        // data, unit structs as `[]`: the error is past them, where it is.
        #[derive(Serialize)]
        struct Sent {
            addr: IpAddr,
            big: u128,
            unit: Unit,
            n: &'static str,
        }
        #[derive(Debug, Serialize, Deserialize)]
        struct Unit;
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Received {
            addr: IpAddr,
            big: u128,
            unit: Unit,
            n: u32,
        }
        let sent = Sent { addr: [10, 0, 0, 1].into(), big: u128::MAX, unit: Unit, n: "x" };
        let packed = rmp_serde::to_vec_named(&sent).unwrap();
        let err = Payload::msgpack(packed.into()).deserialize::<Received>().unwrap_err();
        assert_eq!((err.field(), err.message()), ("n", r#"invalid type: string "x", expected u32"#));
    }

    #[test]
    fn broken_bytes_keep_rmp_serde_words() {
        // A string announcing 4 bytes, with 1.
        let err = Payload::msgpack(Bytes::from_static(&[0xa4, b'a'])).deserialize::<String>().unwrap_err();
        assert!(!err.message().is_empty());
        // An extension type, which JSON has no word for.
        let err = Payload::msgpack(Bytes::from_static(&[0xd4, 0x01, 0x02])).deserialize::<u32>().unwrap_err();
        assert!(!err.message().is_empty());
    }
}
