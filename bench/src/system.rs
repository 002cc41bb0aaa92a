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
    /// webmesh fan-out to wildcard subscribers of a topic that a subscribe
    /// handler guards: each delivery is authorised (and cached) per
    /// subscriber. Fan-out only.
    WebmeshGuarded,
    /// The NATS broker, driven by async-nats: the fan-out to beat. Fan-out
    /// only.
    NatsServer,
    /// webmesh with its subscription limits raised, for the cost of a
    /// publish beside many unrelated wildcard subscriptions. Scaling only.
    WebmeshScaling,
}

impl System {
    pub(crate) const ALL: [System; 10] = [
        System::AxumEcho,
        System::Jsonrpsee,
        System::Socketioxide,
        System::WebmeshMsgpack,
        System::WebmeshJson,
        System::WebmeshLargeZlib,
        System::WebmeshLargeRaw,
        System::WebmeshGuarded,
        System::NatsServer,
        System::WebmeshScaling,
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
            System::WebmeshGuarded => "webmesh-guarded",
            System::NatsServer => "nats-server",
            System::WebmeshScaling => "webmesh-scaling",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether its idle memory is measured (the other webmesh variants are
    /// the same server as webmesh-msgpack).
    pub(crate) fn measures_idle(self) -> bool {
        matches!(self, System::AxumEcho | System::Jsonrpsee | System::Socketioxide | System::WebmeshMsgpack)
    }

    /// Whether its CPU per call is measured.
    pub(crate) fn measures_calls(self) -> bool {
        !matches!(self, System::WebmeshGuarded | System::NatsServer | System::WebmeshScaling)
    }

    /// Whether its fan-out is measured.
    pub(crate) fn measures_fanout(self) -> bool {
        matches!(self, System::WebmeshMsgpack | System::WebmeshGuarded | System::Socketioxide | System::NatsServer)
    }

    /// The subscription pattern and the topic of the fan-out benchmark.
    pub(crate) fn fanout_topic(self) -> (&'static str, &'static str) {
        match self {
            System::WebmeshGuarded => ("/guarded/*", "/guarded/room"),
            _ => ("/fanout", "/fanout"),
        }
    }

    /// The path of the WebSocket endpoint.
    pub(crate) fn path(self) -> &'static str {
        match self {
            System::Socketioxide => "/socket.io/?EIO=4&transport=websocket",
            _ => "/",
        }
    }
}
