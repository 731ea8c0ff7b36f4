//! The server path over `https://`: a TLS-terminating proxy (a test CA, a
//! certificate for `localhost`) in front of the engine's ClickHouse HTTP
//! interface. The engine must refuse the server while it does not trust the
//! CA, then, trusting it through `SSL_CERT_FILE` (read by the native-roots
//! loader), ingest through it exactly as over plain HTTP.
//!
//! The budget-alert webhook goes over the same TLS stack: refused while the
//! CA is not trusted, delivered once it is.
//!
//! A test binary of its own: it sets `SSL_CERT_FILE` for the process.

mod common;

use claude_ingest::pipeline::{run, RunOptions};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A CA and a `localhost` certificate signed by it: (CA PEM, server config).
fn certificates() -> (String, ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let chain = vec![CertificateDer::from(leaf.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (ca.pem(), config)
}

/// Terminate TLS on a free port and forward every connection to `upstream`.
async fn tls_proxy(config: ServerConfig, upstream: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return; // a client that refused our certificate
                };
                if let Ok(mut up) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_ingests_into_a_server_over_tls_only_when_it_trusts_it() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut cfg, plain) = config("tls", root.path(), state.path());
    for s in ["s1", "s2"] {
        let lines: Vec<String> = (0..5).flat_map(|i| entry_lines(s, i)).collect();
        append(&root.path().join(format!("-work-app/{s}.jsonl")), &lines);
    }
    let upstream = url::Url::parse(&cfg.clickhouse.url).unwrap();
    let upstream = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap()
    );
    let (ca_pem, server) = certificates();
    let port = tls_proxy(server.clone(), upstream).await;
    let (hook_upstream, posted) = webhook().await;
    let hook = format!(
        "https://localhost:{}/hook",
        tls_proxy(server, hook_upstream).await
    );
    cfg.clickhouse.url = format!("https://localhost:{port}");

    // not trusted yet: refused, nothing stored, nothing checkpointed
    let err = run(&cfg, RunOptions::once()).await.unwrap_err();
    let text = format!("{err:#}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer") || text.contains("tls"),
        "{text}"
    );
    assert_eq!(
        try_count(&plain, "SELECT count() FROM claude_messages").await,
        0
    );

    // a webhook client built now does not trust the CA either
    let untrusted = reqwest::Client::new();

    // trusted: everything arrives, once
    let ca = state.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    // SAFETY (edition 2021: safe fn): this test binary has no other test and
    // sets the variable before any client of the trusted run is built.
    std::env::set_var("SSL_CERT_FILE", &ca);
    run(&cfg, RunOptions::once())
        .await
        .expect("ingest over https");
    assert_eq!(
        count(&plain, "SELECT count() FROM claude_messages").await,
        30
    );
    run(&cfg, RunOptions::once()).await.unwrap();
    assert_eq!(
        count(&plain, "SELECT count() FROM claude_messages").await,
        30,
        "a re-run over TLS adds nothing"
    );
    assert_eq!(
        count(
            &plain,
            "SELECT sum(output_tokens) FROM claude_requests FINAL"
        )
        .await,
        2 * 5 * 20
    );
    alert_once(&plain, &hook, &untrusted).await;
    assert!(
        posted.lock().unwrap().is_empty(),
        "posted to an untrusted server"
    );
    alert_once(&plain, &hook, &reqwest::Client::new()).await;
    let posted = posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0]["kind"], "budget_alert");
    assert_eq!(posted[0]["alert"]["project"], "-work-app");
    plain.drop_database().await.unwrap();
}

type Posted = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A plain-HTTP webhook (the TLS proxy goes in front): its address and
/// every JSON body POSTed to `/hook`.
async fn webhook() -> (String, Posted) {
    use axum::{extract::State, routing::post, Json, Router};
    let got = Posted::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(g): State<Posted>, Json(v): Json<serde_json::Value>| async move {
                    g.lock().unwrap().push(v);
                },
            ),
        )
        .with_state(got.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

/// One alert check with a threshold `-work-app` is over (its requests are
/// weeks old: a window back to them), POSTed to `hook` by `http` (which
/// read the trusted certificates when it was built).
async fn alert_once(
    ch: &claude_ingest::sink::clickhouse::ChClient,
    hook: &str,
    http: &reqwest::Client,
) {
    use claude_ingest::api::alerts::{check_once, AlertLog};
    use claude_ingest::config::{AlertThreshold, AlertsSection};
    let alerts = AlertsSection {
        webhook: Some(hook.to_string()),
        check_interval_s: 1,
        window_minutes: 500_000,
        thresholds: vec![AlertThreshold {
            project: Some("-work-app".into()),
            user: None,
            cost_per_hour: 1e-9,
        }],
    };
    let raised = check_once(ch, &alerts, &AlertLog::default(), http)
        .await
        .unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
}
