//! Properties of the decoders over arbitrary input: they never panic, and
//! what is encoded decodes to the same.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use super::{Compression, Envelope, Frame, Incoming, WireFormat};

/// JSON-like values, nested a few levels.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[ -~]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn decode(frame: Frame) -> Option<Incoming> {
    let format = WireFormat::detect(&frame).ok()?;
    format.decode(frame, 1 << 20).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_binary_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Some(Incoming::Call { payload, .. }) = decode(Frame::Binary(Bytes::from(bytes))) {
            let _ = payload.deserialize::<Value>();
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,256}") {
        if let Some(Incoming::Call { payload, .. } | Incoming::Legacy { payload, .. }) = decode(Frame::text(text)) {
            let _ = payload.deserialize::<Value>();
        }
    }

    #[test]
    fn mutated_envelopes_never_panic(data in value(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let frame = WireFormat::MsgPack.encode(&Envelope::Call { id: 1, path: "/p", data: &data }, Compression::default()).unwrap();
        let Frame::Binary(bytes) = frame else { unreachable!() };
        let mut bytes = bytes.to_vec();
        for (index, byte) in flips {
            let i = index.index(bytes.len());
            bytes[i] = byte;
        }
        if let Some(Incoming::Call { payload, .. }) = decode(Frame::Binary(bytes.into())) {
            let _ = payload.deserialize::<Value>();
        }
    }

    #[test]
    fn calls_round_trip_in_both_codecs(id in any::<u64>(), path in "/[a-z/]{0,30}", data in value()) {
        for format in [WireFormat::MsgPack, WireFormat::Json] {
            // A threshold of 0 makes every MessagePack frame compressed too.
            for compression in [Compression::default(), Compression { threshold: 0 }] {
                let frame = format.encode(&Envelope::Call { id, path: &path, data: &data }, compression).unwrap();
                match decode(frame) {
                    Some(Incoming::Call { id: got_id, path: got_path, payload }) => {
                        prop_assert_eq!(got_id, id);
                        prop_assert_eq!(&got_path, &path);
                        prop_assert_eq!(payload.deserialize::<Value>().unwrap(), data.clone());
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
