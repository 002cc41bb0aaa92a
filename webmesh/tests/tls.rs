//! `wss://`: server certificates, a given CA, mutual TLS, and handshakes
//! that stall, with certificates made in the test.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use webmesh::{Client, ClientTls, Connection, Router, Server, TlsConfig};

/// A CA, a server certificate for 127.0.0.1 and a client certificate it signed.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let client = leaf(vec!["billing.internal".into()]);
    Pki { ca: ca.pem(), server, client }
}

fn router() -> Router {
    Router::new().on("/whoami", |conn: Connection| async move { conn.peer_addr().map(|a| a.ip().to_string()) })
}

async fn start(tls: TlsConfig) -> String {
    let server = Server::builder()
        .registered_handlers(false)
        .router(router())
        .tls(tls)
        .addr("127.0.0.1:0")
        .bind()
        .await
        .unwrap();
    let url = format!("wss://{}", server.local_addr());
    tokio::spawn(server.serve());
    url
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
