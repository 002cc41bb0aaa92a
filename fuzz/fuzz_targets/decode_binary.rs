//! Binary frames: native MessagePack, compressed or not, as the server reads them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    webmesh::internals::decode_anything(false, data, 1 << 20);
});
