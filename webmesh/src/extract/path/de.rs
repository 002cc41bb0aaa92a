//! A serde deserializer over path parameters: strings parsed into the
//! requested types, one parameter per value.

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

use super::PathRejection;

/// All the parameters: a value when there is one, a sequence or a map.
pub(super) struct Params<'a>(pub(super) &'a [(String, String)]);

/// One parameter's value.
struct Param<'a> {
    name: &'a str,
    value: &'a str,
}

impl<'a> Params<'a> {
    fn single(self) -> Result<Param<'a>, PathRejection> {
        match self.0 {
            [(name, value)] => Ok(Param { name, value }),
            _ => Err(de::Error::custom(format!("expected 1 parameter, the path has {}", self.0.len()))),
        }
    }
}

macro_rules! single {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
            self.single()?.$method(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Params<'de> {
    type Error = PathRejection;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
        match self.0.len() {
            1 => self.single()?.deserialize_any(visitor),
            _ => self.deserialize_map(visitor),
        }
    }

    single! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_identifier
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
        visitor.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, PathRejection> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathRejection> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
        visitor.visit_seq(Seq(self.0.iter()))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, PathRejection> {
        if len != self.0.len() {
            return Err(de::Error::custom(format!("expected {len} parameters, the path has {}", self.0.len())));
        }
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, PathRejection> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
        visitor.visit_map(Map { params: self.0.iter(), value: None })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathRejection> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathRejection> {
        self.single()?.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
        visitor.visit_unit()
    }
}

struct Seq<'a>(std::slice::Iter<'a, (String, String)>);

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = PathRejection;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, PathRejection> {
        self.0.next().map(|(name, value)| seed.deserialize(Param { name, value })).transpose()
    }
}

struct Map<'a> {
    params: std::slice::Iter<'a, (String, String)>,
    value: Option<Param<'a>>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = PathRejection;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, PathRejection> {
        let Some((name, value)) = self.params.next() else { return Ok(None) };
        self.value = Some(Param { name, value });
        seed.deserialize(name.as_str().into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, PathRejection> {
        let value = self.value.take().ok_or_else(|| de::Error::custom("a value without a key"))?;
        seed.deserialize(value)
    }
}

impl Param<'_> {
    fn error(&self, message: impl std::fmt::Display) -> PathRejection {
        PathRejection { param: Some(self.name.to_owned()), message: message.to_string() }
    }
}

macro_rules! parse {
    ($($method:ident => $visit:ident: $ty:ty,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
            match self.value.parse::<$ty>() {
                Ok(value) => visitor.$visit(value).map_err(|e: PathRejection| self.error(e.message)),
                Err(_) => Err(self.error(format!("cannot parse `{}` as {}", self.value, stringify!($ty)))),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Param<'de> {
    type Error = PathRejection;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
        visitor.visit_borrowed_str(self.value).map_err(|e: PathRejection| self.error(e.message))
    }

    parse! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
        deserialize_char => visit_char: char,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathRejection> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathRejection> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathRejection> {
        let name = self.name;
        let value = de::value::BorrowedStrDeserializer::<PathRejection>::new(self.value);
        visitor.visit_enum(value).map_err(|e| PathRejection { param: Some(name.to_owned()), message: e.message })
    }

    forward_to_deserialize_any! {
        str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}
