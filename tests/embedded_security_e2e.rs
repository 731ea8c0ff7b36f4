//! The embedded engine is reachable only by the engine itself (issue 10,
//! point 1): a request without the per-start key is refused, the key is in no
//! argv/environment and only in a 0600 file in a 0700 directory, and neither
//! the writer's nor the API's (reader's) connection can reach files, URLs or
//! other servers through ClickHouse's table functions, engines or
//! `INTO OUTFILE` / `FROM INFILE`.

mod common;

use claude_ingest::sink::embedded::{Access, EmbeddedClickHouse, Role, ACCESS_FILE};
use claude_ingest::sink::testing;
use std::os::unix::fs::PermissionsExt;

/// The test process's embedded engine (these tests need it, not a server).
fn engine() -> Option<&'static EmbeddedClickHouse> {
    let e = testing::embedded();
    if e.is_none() {
        eprintln!("CLICKHOUSE_URL is set: the embedded engine's access control is not under test");
    }
    e
}

async fn post(url: &str, auth: Option<(&str, &str)>, sql: &str) -> (u16, String) {
    let mut req = reqwest::Client::new().post(url).body(sql.to_string());
    if let Some((user, key)) = auth {
        req = req.basic_auth(user, Some(key));
    }
    let resp = req.send().await.expect("the front answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_request_without_the_engines_key_is_refused() {
    let Some(e) = engine() else { return };
    let url = e.url();
    let shadow = "SELECT * FROM file('/etc/passwd', 'LineAsString')";
    for auth in [
        None,
        Some(("default", "")),
        Some(("writer", "")),
        Some((
            "writer",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )),
        Some(("reader", e.access().writer.password.as_str())), // a key of another user
    ] {
        for sql in ["SELECT 1", shadow] {
            let (status, body) = post(url, auth, sql).await;
            assert_eq!(status, 401, "{auth:?} {sql}: {body}");
            assert!(body.contains("AUTHENTICATION_FAILED"), "{body}");
        }
    }
    // The engine's own keys work (so the refusals above are about the key).
    let w = &e.access().writer;
    assert_eq!(
        post(url, Some((&w.user, &w.password)), "SELECT 1").await.0,
        200
    );
    let r = &e.access().reader;
    assert_eq!(
        post(url, Some((&r.user, &r.password)), "SELECT 1").await.0,
        200
    );
}

#[tokio::test]
async fn the_key_is_only_in_a_private_file() {
    let Some(e) = engine() else { return };
    let dir = e.data_dir();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700, "data dir");
    assert_eq!(mode(&dir.join(ACCESS_FILE)), 0o600, "access file");
    let attached = Access::read(dir).expect("the documented way to attach");
    assert_eq!(attached.url, e.url());
    assert_eq!(attached.writer.password, e.access().writer.password);

    // Not in the child's argv or environment (what `ps e` shows other users).
    let pid = std::fs::read_to_string(dir.join(".child.lock")).unwrap();
    let proc_dir = std::path::Path::new("/proc").join(pid.trim());
    for f in ["cmdline", "environ"] {
        let bytes = std::fs::read(proc_dir.join(f)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("chdb_http") || f == "environ", "{f}: {text}");
        for key in [&e.access().writer.password, &e.access().reader.password] {
            assert!(
                !text.contains(key.as_str()),
                "key in /proc/{}/{f}",
                pid.trim()
            );
        }
    }
}

/// Statements that would reach outside the data directory.
fn escapes(out: &std::path::Path) -> Vec<String> {
    let out = out.display();
    vec![
        "SELECT * FROM file('/etc/passwd', 'LineAsString')".into(),
        "SELECT * FROM FILE('/etc/passwd', 'LineAsString')".into(),
        "SELECT * FROM `file`('/etc/passwd', 'LineAsString')".into(),
        "SELECT file('/etc/passwd')".into(),
        "WITH file('/etc/passwd') AS x SELECT x".into(),
        "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')".into(),
        "SELECT * FROM remote('127.0.0.1:9', system.one)".into(),
        "SELECT * FROM s3('http://127.0.0.1:9/b/k.csv', 'CSV', 'a String')".into(),
        "SELECT * FROM executable('x.sh', 'CSV', 'a String')".into(),
        "SELECT * FROM sqlite('/etc/passwd', 't')".into(),
        "SELECT * FROM filesystem('/etc')".into(),
        "SELECT * FROM python(USERS)".into(),
        format!("SELECT 1 INTO OUTFILE '{out}'"),
        format!("SELECT $$x$$ INTO OUTFILE '{out}' TRUNCATE"),
        format!("SELECT 1; SELECT 2 INTO OUTFILE '{out}'"),
        format!("INSERT INTO claude_dead_letters FROM INFILE '{out}' FORMAT CSV"),
        format!("INSERT INTO FUNCTION file('{out}', 'CSV', 'x UInt8') SELECT 1"),
        format!("CREATE TABLE leak (x String) ENGINE = File(CSV, '{out}')"),
        "CREATE TABLE leak2 (x String) ENGINE = URL('http://127.0.0.1:9/x', CSV)".into(),
        "CREATE DICTIONARY d (x UInt8) PRIMARY KEY x SOURCE(FILE(path '/etc/passwd' format 'CSV')) LAYOUT(FLAT()) LIFETIME(0)".into(),
    ]
}

#[tokio::test]
async fn file_url_and_outfile_are_refused_on_both_connections() {
    let Some(e) = engine() else { return };
    let writer = testing::fresh_client("security").await;
    let r = e.access().credentials(Role::Reader);
    let reader = writer.with_login(&r.user, &r.password).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("written-by-clickhouse");
    for (name, client) in [("writer", &writer), ("reader", &reader)] {
        for sql in escapes(&out) {
            let res = client.query_bytes(&sql, &[], "TSV").await;
            assert!(res.is_err(), "{name} ran `{sql}`: {res:?}");
            let err = format!("{:#}", res.unwrap_err());
            assert!(
                err.contains("ACCESS_DENIED")
                    || err.contains("SYNTAX_ERROR")
                    || err.contains("READONLY"),
                "{name} `{sql}` failed for another reason: {err}"
            );
        }
        assert!(!out.exists(), "{name} wrote {}", out.display());
        // ... while the ordinary work of each still runs.
        assert_eq!(
            common::count(client, "SELECT count() FROM claude_messages").await,
            0
        );
    }
    // The reader reads only; the writer writes (the API cannot change data).
    let insert =
        "INSERT INTO claude_dead_letters (source_file, source_offset, stage) VALUES ('x', 1, 's')";
    let err = reader
        .execute(insert)
        .await
        .expect_err("reader must not insert");
    assert!(format!("{err:#}").contains("ACCESS_DENIED"), "{err:#}");
    let err = reader
        .execute("DROP TABLE claude_messages")
        .await
        .expect_err("reader must not drop");
    assert!(format!("{err:#}").contains("ACCESS_DENIED"), "{err:#}");
    writer.execute(insert).await.expect("the writer inserts");
    assert_eq!(
        common::count(&reader, "SELECT count() FROM claude_dead_letters").await,
        1
    );
    writer.drop_database().await.unwrap();
}

/// The reader's `readonly=1` is the front's, not the client's to lift.
#[tokio::test]
async fn the_reader_cannot_lift_readonly() {
    let Some(e) = engine() else { return };
    let r = e.access().credentials(Role::Reader);
    let url = format!("{}/?readonly=0", e.url());
    let (status, body) = post(
        &url,
        Some((&r.user, &r.password)),
        "SELECT getSetting('readonly')",
    )
    .await;
    assert_eq!((status, body.trim()), (200, "1"), "{body}");
    let (status, body) = post(
        e.url(),
        Some((&r.user, &r.password)),
        "SELECT 1 SETTINGS readonly = 0",
    )
    .await;
    assert_ne!(status, 200, "{body}");
}
