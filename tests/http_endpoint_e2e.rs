//! The opt-in ClickHouse HTTP interface of the embedded engine
//! (`clickhouse.http_endpoint`), spoken to as clickhouse-client-compatible
//! tools and Grafana's ClickHouse data source do: HTTP basic auth or
//! `X-ClickHouse-User`/`-Key`, the query in the body or in `?query=`.
//! Read-only, password required, on the configured loopback port.

use claude_ingest::sink::clickhouse::ChClient;
use claude_ingest::sink::embedded::{Credentials, EmbeddedClickHouse, Exposed, Role};
use claude_ingest::sink::identity::Identity;
use claude_ingest::sink::migrations::migrate;
use std::net::TcpListener;

const PASSWORD: &str = "a long grafana password";

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn post(url: &str, auth: Option<(&str, &str)>, query: &str) -> (u16, String) {
    let mut req = reqwest::Client::new().post(url).body(query.to_string());
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_read_with_the_password_and_cannot_write_or_get_in_without_it() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let exposed = Exposed {
        port,
        login: Credentials {
            user: "grafana".into(),
            password: PASSWORD.into(),
        },
    };
    let dir = data.path().to_path_buf();
    let engine = tokio::task::spawn_blocking(move || {
        EmbeddedClickHouse::start_exposed(None, &dir, Some(exposed))
    })
    .await
    .unwrap()
    .expect("engine starts on the configured port");
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(engine.access().url, url.trim_end_matches('/'));

    // the engine's own writer makes something to read
    let w = engine.access().writer.clone();
    let (st, body) = post(
        &url,
        Some((&w.user, &w.password)),
        "CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x",
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, _) = post(
        &url,
        Some((&w.user, &w.password)),
        "INSERT INTO t VALUES (7)",
    )
    .await;
    assert_eq!(st, 200);

    // a tool with the password reads, in the format it asks for
    let auth = Some(("grafana", PASSWORD));
    let (st, body) = post(&url, auth, "SELECT sum(x) AS s FROM t FORMAT JSONEachRow").await;
    assert_eq!((st, body.trim()), (200, r#"{"s":7}"#));
    let get = reqwest::Client::new()
        .get(format!("{url}?query=SELECT%20version()"))
        .header("X-ClickHouse-User", "grafana")
        .header("X-ClickHouse-Key", PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 200);
    assert!(get.text().await.unwrap().starts_with("26."));

    // ... but cannot write, nor lift its readonly
    let (st, body) = post(&url, auth, "INSERT INTO t VALUES (8)").await;
    assert_ne!(st, 200, "{body}");
    assert!(body.contains("ACCESS_DENIED"), "{body}");
    let (st, _) = post(&url, auth, "SET readonly = 0").await;
    assert_ne!(st, 200);

    // no password, a wrong one, or the name alone: 401
    for a in [
        None,
        Some(("grafana", "not the password!!")),
        Some(("grafana", "")),
    ] {
        let (st, _) = post(&url, a, "SELECT 1").await;
        assert_eq!(st, 401, "{a:?}");
    }
    let (st, body) = post(&url, auth, "SELECT sum(x) FROM t").await;
    assert_eq!((st, body.trim()), (200, "7"), "nothing was written");

    grafana_dashboard_queries_run(&engine, &url).await;
    drop(engine);
}

/// Every query of `examples/grafana/dashboard.json` runs through the tools
/// login on a store with the engine's schema, and the figures come out.
async fn grafana_dashboard_queries_run(engine: &EmbeddedClickHouse, url: &str) {
    let writer = ChClient::new(engine.settings(Role::Writer, "claude_logs")).unwrap();
    let who = Identity::resolve(Some("box-a"), Some("ann")).unwrap();
    migrate(&writer, &[], &who).await.expect("schema");
    let row = r#"{"project":"p","message_id":"m1","request_id":"r1","session_id":"s","timestamp":"2026-11-01 10:00:00","model":"claude-sonnet-4-5","output_tokens":5,"cost":0.25,"host":"box-a","user_name":"ann"}"#;
    writer
        .insert_json_each_row("claude_requests", format!("{row}\n").into(), "t1")
        .await
        .unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana/dashboard.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let time_filter = regex::Regex::new(r"\$__timeFilter\((\w+)\)").unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    for p in panels {
        let sql = p["targets"][0]["rawSql"].as_str().unwrap();
        let sql = time_filter.replace_all(sql, "$1 >= '2000-01-01'");
        let q = format!("{url}?database=claude_logs");
        let (st, body) = post(
            &q,
            Some(("grafana", PASSWORD)),
            &format!("{sql} FORMAT JSONEachRow"),
        )
        .await;
        assert_eq!(st, 200, "{}: {body}", p["title"]);
        if p["title"] == "Cost by user and host" {
            assert_eq!(
                body.trim(),
                r#"{"user_name":"ann","host":"box-a","cost_usd":0.25,"sessions":1}"#
            );
        }
    }
}
