use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;

/// The data of a message, still encoded, decoded on demand into the type a
/// handler or caller asks for.
///
/// Handlers rarely see it: any `T: DeserializeOwned` argument is decoded from
/// it. It is useful where the type is chosen at run time:
///
/// ```
/// # fn demo(payload: webmesh::Payload) -> Result<(), webmesh::PayloadError> {
/// let value: serde_json::Value = payload.deserialize()?;
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    repr: Repr,
}

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    MsgPack(Bytes),
    Json(Bytes),
}

const MSGPACK_NIL: &[u8] = &[0xc0];

impl Payload {
    pub(crate) fn msgpack(bytes: Bytes) -> Self {
        Self { repr: Repr::MsgPack(bytes) }
    }

    pub(crate) fn json(bytes: Bytes) -> Self {
        Self { repr: Repr::Json(bytes) }
    }

    /// Its bytes, if it is MessagePack.
    pub(crate) fn as_msgpack(&self) -> Option<&Bytes> {
        match &self.repr {
            Repr::MsgPack(bytes) => Some(bytes),
            Repr::Json(_) => None,
        }
    }

    /// Its size, encoded.
    pub(crate) fn len(&self) -> usize {
        match &self.repr {
            Repr::MsgPack(bytes) | Repr::Json(bytes) => bytes.len(),
        }
    }

    /// The memory it may take once decoded; see `weight.rs`.
    pub(crate) fn weight(&self) -> usize {
        match &self.repr {
            Repr::MsgPack(bytes) => super::weight::msgpack(bytes),
            Repr::Json(bytes) => super::weight::json(bytes),
        }
    }

    /// The payload of a message that carried none (`nil`).
    pub(crate) fn nil() -> Self {
        Self::msgpack(Bytes::from_static(MSGPACK_NIL))
    }

    /// Decodes the payload into `T`.
    ///
    /// The error names the offending field, e.g. `items[2].price`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        // Tracking the path costs on every call and matters only on failure:
        // decode plainly, and again with tracking to name the field, in the
        // same words whatever the format.
        match &self.repr {
            Repr::MsgPack(bytes) => T::deserialize(&mut super::msgpack::deserializer(bytes))
                .map_err(|_| super::explain::msgpack::<T>(bytes)),
            Repr::Json(bytes) => T::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
                .map_err(|_| super::explain::json::<T>(bytes)),
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::MsgPack(b) => write!(f, "Payload::MsgPack({} bytes)", b.len()),
            Repr::Json(b) => write!(f, "Payload::Json({})", String::from_utf8_lossy(b)),
        }
    }
}

/// A payload did not decode into the type that was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError {
    field: String,
    message: String,
}

impl PayloadError {
    pub(super) fn new(field: String, message: String) -> Self {
        Self { field, message }
    }

    /// The path to the offending field (`.` for the payload itself).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What was wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "." {
            write!(f, "invalid payload: {}", self.message)
        } else {
            write!(f, "invalid payload at `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for PayloadError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        items: Vec<Item>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        price: u32,
    }

    #[test]
    fn error_names_the_field_in_both_codecs() {
        let json = Payload::json(Bytes::from_static(br#"{"items":[{"price":1},{"price":"x"}]}"#));
        let err = json.deserialize::<Order>().unwrap_err();
        assert_eq!(err.field(), "items[1].price");

        let value = serde_json::json!({"items": [{"price": 1}, {"price": "x"}]});
        let packed = rmp_serde::to_vec_named(&value).unwrap();
        let err = Payload::msgpack(packed.into()).deserialize::<Order>().unwrap_err();
        assert_eq!(err.field(), "items[1].price");
    }

    #[test]
    fn nil_is_none() {
        assert_eq!(Payload::nil().deserialize::<Option<u8>>().unwrap(), None);
    }
}
