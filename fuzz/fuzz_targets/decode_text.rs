//! Text frames: native JSON, and webmesh 0.1.2's JSON and hex(zlib(msgpack)).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    webmesh::internals::decode_anything(true, data, 1 << 20);
});
