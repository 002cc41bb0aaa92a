//! `wss://`: server certificates, a given CA, mutual TLS, and handshakes
//! that stall, with certificates made in the test.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use webmesh::extract::Authenticated;
use webmesh::{AuthError, Client, ClientTls, Connection, Error, Handshake, Router, Server, ServerBuilder, TlsConfig};

/// A CA, a server certificate for 127.0.0.1 and a client certificate it signed.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    /// The client certificate in DER, as the server should see it.
    client_der: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    };
    let (cert, key, _) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key, client_der) = leaf(vec!["billing.internal".into()]);
    Pki { ca: ca.pem(), server: (cert, key), client: (client_cert, client_key), client_der }
}

fn router() -> Router {
    Router::new().on("/whoami", |conn: Connection| async move { conn.peer_addr().map(|a| a.ip().to_string()) })
}

async fn start(tls: TlsConfig) -> String {
    start_with(Server::builder().router(router()), tls).await
}

async fn start_with(builder: ServerBuilder, tls: TlsConfig) -> String {
    let server = builder.registered_handlers(false).tls(tls).addr("127.0.0.1:0").bind().await.unwrap();
    let url = format!("wss://{}", server.local_addr());
    tokio::spawn(server.serve());
    url
}

/// A server whose authentication hook names clients by their certificate:
/// `billing` for the one `pki` issued, `anonymous` for none (or refuses
/// those with 401, if `refuse_anonymous`).
fn by_certificate(pki: &Pki, refuse_anonymous: bool) -> ServerBuilder {
    let billing = pki.client_der.clone();
    let router = Router::new().on("/who", |Authenticated(name): Authenticated<String>| async move { name });
    Server::builder().router(router).authenticate(move |handshake: Handshake| {
        let billing = billing.clone();
        async move {
            match handshake.peer_certificates() {
                Some([leaf, ..]) if leaf.as_ref() == billing.as_slice() => Ok("billing".to_owned()),
                Some(_) => Err(AuthError::forbidden("unknown certificate")),
                None if refuse_anonymous => Err(AuthError::unauthorized("present a client certificate")),
                None => Ok("anonymous".to_owned()),
            }
        }
    })
}

#[tokio::test]
async fn a_client_trusting_the_ca_calls_over_wss() {
    let pki = pki();
    let url = start(TlsConfig::from_pem(pki.server.0.as_bytes(), pki.server.1.as_bytes()).unwrap()).await;
    let tls = ClientTls::default().ca_pem(pki.ca.as_bytes()).unwrap();
    let client = Client::builder(&url).tls(tls).connect().await.unwrap();
    assert_eq!(client.call::<Option<String>>("/whoami", &()).await.unwrap().as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn an_unknown_server_certificate_or_plain_ws_is_refused() {
    let pki = pki();
    let url = start(TlsConfig::from_pem(pki.server.0.as_bytes(), pki.server.1.as_bytes()).unwrap()).await;
    // The system roots do not know this test CA, nor does another CA.
    let err = Client::connect(&url).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let another_ca = self::pki().ca;
    let other = ClientTls::default().ca_pem(another_ca.as_bytes()).unwrap();
    let err = Client::builder(&url).tls(other).connect().await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // A wrong scheme says which to use, both ways.
    let err = Client::connect(&url.replace("wss://", "ws://")).await.unwrap_err();
    assert!(err.to_string().contains("use wss://"), "{err}");
    let plain = Server::builder().registered_handlers(false).router(router()).addr("127.0.0.1:0").bind().await.unwrap();
    let plain_url = format!("wss://{}", plain.local_addr());
    tokio::spawn(plain.serve());
    let trusting = ClientTls::default().ca_pem(pki.ca.as_bytes()).unwrap();
    let err = Client::builder(&plain_url).tls(trusting).connect().await.unwrap_err();
    assert!(err.to_string().contains("use ws://"), "{err}");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let tls = TlsConfig::from_pem(pki.server.0.as_bytes(), pki.server.1.as_bytes())
        .unwrap()
        .client_ca_pem(pki.ca.as_bytes())
        .unwrap();
    let url = start(tls).await;
    let trusting = ClientTls::default().ca_pem(pki.ca.as_bytes()).unwrap();
    let without = Client::builder(&url).tls(trusting.clone()).no_reconnect().connect().await;
    // TLS 1.3 reports a missing client certificate after the handshake: at
    // the upgrade or at the first call.
    match without {
        Err(_) => {}
        Ok(client) => assert!(client.call::<Option<String>>("/whoami", &()).await.is_err()),
    }
    let with = trusting.client_cert_pem(pki.client.0.as_bytes(), pki.client.1.as_bytes()).unwrap();
    let client = Client::builder(&url).tls(with).connect().await.unwrap();
    assert!(client.call::<Option<String>>("/whoami", &()).await.unwrap().is_some());
}

#[tokio::test]
async fn stalled_handshakes_do_not_hold_up_other_clients() {
    let pki = pki();
    let url = start(TlsConfig::from_pem(pki.server.0.as_bytes(), pki.server.1.as_bytes()).unwrap()).await;
    let addr = url.trim_start_matches("wss://").to_owned();
    // Twenty peers that connect and never say a word.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let tls = ClientTls::default().ca_pem(pki.ca.as_bytes()).unwrap();
    // Well inside the 10 s a handshake may take: the silent ones wait alone.
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        let client = Client::builder(&url).tls(tls).connect().await.unwrap();
        client.call::<Option<String>>("/whoami", &()).await.unwrap()
    });
    assert!(served.await.unwrap().is_some());
    drop(silent);
}

#[tokio::test]
async fn the_authentication_hook_sees_the_client_certificate() {
    let pki = pki();
    let ca_file = std::env::temp_dir().join(format!("webmesh-test-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, &pki.ca).unwrap();
    let tls = TlsConfig::from_pem(pki.server.0.as_bytes(), pki.server.1.as_bytes())
        .unwrap()
        .client_ca_pem_file(&ca_file)
        .unwrap();
    std::fs::remove_file(&ca_file).unwrap();
    let url = start_with(by_certificate(&pki, true), tls).await;
    let with = ClientTls::default()
        .ca_pem(pki.ca.as_bytes())
        .unwrap()
        .client_cert_pem(pki.client.0.as_bytes(), pki.client.1.as_bytes())
        .unwrap();
    let client = Client::builder(&url).tls(with).connect().await.unwrap();
    assert_eq!(client.call::<String>("/who", &()).await.unwrap(), "billing");
    // A missing file is a configuration error naming it.
    let err = TlsConfig::from_pem(pki.server.0.as_bytes(), pki.server.1.as_bytes())
        .unwrap()
        .client_ca_pem_file("/nonexistent/mesh-ca.pem")
        .unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("/nonexistent/mesh-ca.pem")), "{err}");
}

#[tokio::test]
async fn clients_without_a_certificate_may_be_let_in_for_the_hook_to_decide() {
    let pki = pki();
    let server_tls = || TlsConfig::from_pem(pki.server.0.as_bytes(), pki.server.1.as_bytes()).unwrap();
    let trusting = ClientTls::default().ca_pem(pki.ca.as_bytes()).unwrap();
    let with = trusting.clone().client_cert_pem(pki.client.0.as_bytes(), pki.client.1.as_bytes()).unwrap();
    let optional = server_tls().client_ca_pem(pki.ca.as_bytes()).unwrap().allow_clients_without_certificate();

    // The hook refuses those without one, with its own answer.
    let url = start_with(by_certificate(&pki, true), optional.clone()).await;
    match Client::builder(&url).tls(trusting.clone()).no_reconnect().connect().await {
        Err(Error::Refused { status: 401, message }) => assert_eq!(message, "present a client certificate"),
        other => panic!("expected a 401, got {other:?}"),
    }
    let client = Client::builder(&url).tls(with.clone()).connect().await.unwrap();
    assert_eq!(client.call::<String>("/who", &()).await.unwrap(), "billing");

    // The hook lets them in: it saw no certificate.
    let url = start_with(by_certificate(&pki, false), optional).await;
    let client = Client::builder(&url).tls(trusting.clone()).connect().await.unwrap();
    assert_eq!(client.call::<String>("/who", &()).await.unwrap(), "anonymous");
    let client = Client::builder(&url).tls(with.clone()).connect().await.unwrap();
    assert_eq!(client.call::<String>("/who", &()).await.unwrap(), "billing");

    // Without a client CA, no certificate is asked for, so none is seen,
    // even from a client that has one.
    let url = start_with(by_certificate(&pki, false), server_tls()).await;
    let client = Client::builder(&url).tls(with).connect().await.unwrap();
    assert_eq!(client.call::<String>("/who", &()).await.unwrap(), "anonymous");

    // Over plain ws://, there is no certificate to see.
    let plain = by_certificate(&pki, false).registered_handlers(false).addr("127.0.0.1:0").bind().await.unwrap();
    let url = format!("ws://{}", plain.local_addr());
    tokio::spawn(plain.serve());
    let client = Client::connect(&url).await.unwrap();
    assert_eq!(client.call::<String>("/who", &()).await.unwrap(), "anonymous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_over_mutual_tls_links_the_nodes_with_a_certificate_and_no_other() {
    use webmesh::{Mesh, NodeState};
    let pki = pki();
    let server_tls = || {
        TlsConfig::from_pem(pki.server.0.as_bytes(), pki.server.1.as_bytes())
            .unwrap()
            .client_ca_pem(pki.ca.as_bytes())
            .unwrap()
    };
    let trusting = ClientTls::default().ca_pem(pki.ca.as_bytes()).unwrap();
    let certified = trusting.clone().client_cert_pem(pki.client.0.as_bytes(), pki.client.1.as_bytes()).unwrap();
    let node = |name: &'static str, links: ClientTls| {
        let router = Router::new().on(&format!("/{name}"), move || async move { name });
        let server = Server::builder().registered_handlers(false).router(router).tls(server_tls()).addr("127.0.0.1:0");
        Mesh::builder()
            .server(server)
            .name(name)
            .link_tls(links)
            .link_heartbeat(Duration::from_millis(200), Duration::from_millis(300))
            .down_after(Duration::from_millis(500))
    };
    let a = node("a", certified.clone()).start().await.unwrap();
    assert!(a.url().starts_with("wss://127.0.0.1:"), "{}", a.url());
    let b = node("b", certified).peer(a.url()).start().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let both_up = |mesh: &Mesh| mesh.nodes().len() == 2 && mesh.nodes().iter().all(|n| n.state == NodeState::Up);
    while !(both_up(&a) && both_up(&b)) {
        assert!(std::time::Instant::now() < deadline, "the nodes did not link over mutual TLS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.call::<String>("/a", &()).await.unwrap(), "a");
    assert_eq!(a.call::<String>("/b", &()).await.unwrap(), "b");

    // A node without a client certificate is not admitted: a never hears of it.
    let intruder = node("intruder", trusting).peer(a.url()).start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(a.nodes().iter().all(|n| n.name != "intruder"), "{:?}", a.nodes());
    assert_eq!(intruder.nodes().len(), 1, "the intruder knows only itself");
    assert!(matches!(intruder.call::<String>("/a", &()).await, Err(Error::NoRoute { .. })));
    for mesh in [a, b, intruder] {
        mesh.shutdown().await;
    }
}
