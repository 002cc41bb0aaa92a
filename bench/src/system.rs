//! The systems compared, and what each is asked to do.

/// One server configuration of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum System {
    /// A bare axum WebSocket echo: the transport floor.
    AxumEcho,
    /// jsonrpsee's WebSocket server with an `echo` method.
    Jsonrpsee,
    /// socketioxide with an `echo` event answered by ack, and room broadcasts.
    Socketioxide,
    /// webmesh, MessagePack.
    WebmeshMsgpack,
    /// webmesh, JSON.
    WebmeshJson,
    /// webmesh, MessagePack, a 16 KiB compressible payload, zlib on.
    WebmeshLargeZlib,
    /// webmesh, MessagePack, the same 16 KiB payload, zlib off.
    WebmeshLargeRaw,
}

impl System {
    pub(crate) const ALL: [System; 7] = [
        System::AxumEcho,
        System::Jsonrpsee,
        System::Socketioxide,
        System::WebmeshMsgpack,
        System::WebmeshJson,
        System::WebmeshLargeZlib,
        System::WebmeshLargeRaw,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::AxumEcho => "axum-echo",
            System::Jsonrpsee => "jsonrpsee",
            System::Socketioxide => "socketioxide",
            System::WebmeshMsgpack => "webmesh-msgpack",
            System::WebmeshJson => "webmesh-json",
            System::WebmeshLargeZlib => "webmesh-16k-zlib",
            System::WebmeshLargeRaw => "webmesh-16k-raw",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether its idle memory is measured (the large-payload variants are
    /// the same server as webmesh-msgpack).
    pub(crate) fn measures_idle(self) -> bool {
        !matches!(self, System::WebmeshJson | System::WebmeshLargeZlib | System::WebmeshLargeRaw)
    }

    /// The path of the WebSocket endpoint.
    pub(crate) fn path(self) -> &'static str {
        match self {
            System::Socketioxide => "/socket.io/?EIO=4&transport=websocket",
            _ => "/",
        }
    }
}
