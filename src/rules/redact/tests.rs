use super::*;
use crate::rules::RuleSet;
use serde_json::json;
use std::path::Path;

fn red() -> Redactor {
    Redactor::new(vec![
        Pattern::new("aws", r"AKIA[0-9A-Z]{16}").unwrap(),
        Pattern::compile(&RedactSpec {
            name: "password".into(),
            pattern: r"(?i)(password=)\S+".into(),
            replace: Some("${1}[REDACTED]".into()),
            keep: None,
            key: None,
        })
        .unwrap(),
    ])
    .unwrap()
}

/// The default rule pack's redactor.
fn pack() -> Redactor {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    RuleSet::load_dir(&dir)
        .unwrap_or_else(|e| panic!("default rules must load:\n{e}"))
        .redactor()
        .clone()
}

#[test]
fn redacts_nested_strings_and_counts() {
    let mut doc = json!({"a": ["key AKIAABCDEFGHIJKLMNOP and AKIAABCDEFGHIJKLMNOQ"], "b": {"c": "PASSWORD=hunter2 ok"}, "AKIAABCDEFGHIJKLMNOP": 1});
    let mut hits = vec![];
    red().redact_value(&mut doc, &mut hits);
    assert_eq!(doc["a"][0], "key [REDACTED:aws] and [REDACTED:aws]");
    assert_eq!(doc["b"]["c"], "PASSWORD=[REDACTED] ok");
    assert_eq!(hits.len(), 3);
    assert!(doc.get("AKIAABCDEFGHIJKLMNOP").is_some(), "keys untouched");
}

#[test]
fn literal_masking() {
    let mut doc = json!({"t": "mail bob@x.io or bob@x.io", "u": ["bob@x.io"]});
    let n = mask_literals(&mut doc, &["bob@x.io".into(), String::new()], "[M]");
    assert_eq!(n, 3);
    assert_eq!(doc["t"], "mail [M] or [M]");
}

#[test]
fn secret_group_keep_and_key() {
    let p = Pattern::compile(&RedactSpec {
        name: "pw".into(),
        pattern: r"pw=(?P<secret>\S+)".into(),
        replace: None,
        keep: Some(OneOrMany::Many(vec![r"^\$".into(), "^x+$".into()])),
        key: Some("^pw$".into()),
    })
    .unwrap();
    let r = Redactor::new(vec![p]).unwrap();
    let mut hits = vec![];
    let out = r.redact_str("a pw=hunter2 b pw=$PW c pw=xxx", &mut hits);
    assert_eq!(out.as_deref(), Some("a pw=[REDACTED:pw] b pw=$PW c pw=xxx"));
    assert_eq!(hits, ["pw"]);
    // nothing replaced: no new string, no hit
    assert_eq!(r.redact_str("pw=$PW", &mut hits), None);
    // by key: the whole value, unless it is spared; nested values too
    let mut doc = json!({"pw": "two words", "o": {"pw": "$X", "q": ["pw=abc"]}, "n": {"pw": 5}});
    let mut hits = vec![];
    r.redact_value(&mut doc, &mut hits);
    assert_eq!(
        doc,
        json!({"pw": "[REDACTED:pw]", "o": {"pw": "$X", "q": ["pw=[REDACTED:pw]"]}, "n": {"pw": 5}})
    );
    assert_eq!(hits.len(), 2);
    // markers are never redacted again: a second pass changes nothing
    let again = doc.clone();
    r.redact_value(&mut doc, &mut hits);
    assert_eq!(doc, again);
    assert_eq!(hits.len(), 2);
}

/// (pattern that must fire, text, the secret that must disappear)
const CAUGHT: &[(&str, &str, &str)] = &[
    ("private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"),
    ("private_key", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGXq3lIBCADJ7v0g1Qm2Zb9Xx4kq0Rj8sYwL\n=Ab3c\n-----END PGP PRIVATE KEY BLOCK-----", "lQOYBGXq3lIBCADJ7v0g1Qm2Zb9Xx4kq0Rj8sYwL"),
    ("private_key", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\nlQOYBGXq3lIBCADJ7v0g1Qm2Zb9Xx4kq\n-----END PGP PRIVATE KEY BLOCK-----", "lQOYBGXq3lIBCADJ7v0g1Qm2Zb9Xx4kq"),
    ("anthropic_api_key", "export ANTHROPIC_API_KEY=sk-ant-api03-Zx8QmT4vN2pL7rK9sW3yB6dF1hJ5gC0eA", "Zx8QmT4vN2pL7rK9sW3yB6dF1hJ5gC0eA"),
    ("openai_api_key", "OPENAI_API_KEY=sk-proj-Qw3rTy8UiOp2AsDfGh5JkLzXcVbNm1Lk9Jh", "Qw3rTy8UiOp2AsDfGh5JkLzXcVbNm1Lk9Jh"),
    ("aws_access_key", "aws_access_key_id = AKIAZ7Q3XK2M5N8P4R6T", "AKIAZ7Q3XK2M5N8P4R6T"),
    ("aws_secret_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Lk3Mn2P", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Lk3Mn2P"),
    ("aws_secret_key", r#"{"Credentials": {"SecretAccessKey": "Hq8vPz2mRkL5nW9sT3xY7bC1dF4gJ6hK0aQeUiOp", "Expiration": "2026"}}"#, "Hq8vPz2mRkL5nW9sT3xY7bC1dF4gJ6hK0aQeUiOp"),
    ("github_token", "git clone https://ghp_R2d4F6h8J0k2L4n6P8r0T2v4X6z8B0d2F4h6@github.com/o/r", "ghp_R2d4F6h8J0k2L4n6P8r0T2v4X6z8B0d2F4h6"),
    ("gitlab_token", "GITLAB_TOKEN=glpat-x7Yq2Rk9Lm4Np8Tz3Wv6", "glpat-x7Yq2Rk9Lm4Np8Tz3Wv6"),
    ("npm_token", "//registry.npmjs.example/:_authToken=npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"),
    ("huggingface_token", "huggingface-cli login --token hf_Zq7Xw3Rt9Yp2Lm5Nk8Vb4Hc6Jd1Fg0SsAa", "hf_Zq7Xw3Rt9Yp2Lm5Nk8Vb4Hc6Jd1Fg0SsAa"),
    ("slack_token", "SLACK_BOT_TOKEN=xoxb-2048-4096-Kq8Wz3Rt9Yp2", "xoxb-2048-4096-Kq8Wz3Rt9Yp2"),
    ("slack_webhook", "curl -X POST https://hooks.slack.com/services/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", "T03ABCD7E/B05FGHI2J/k8Lm2Np4Qr6St8Uv0Wx2Yz4A"),
    ("discord_webhook", "https://discord.com/api/webhooks/112233445566778899/Zx8QmT4vN2pL7rK9sW3yB6dF1hJ5gC0e", "Zx8QmT4vN2pL7rK9sW3yB6dF1hJ5gC0e"),
    ("google_api_key", "key=AIzaSyD4f8Gh2Jk6Lm0Np4Qr8St2Uv6Wx0Yz4Ab", "AIzaSyD4f8Gh2Jk6Lm0Np4Qr8St2Uv6Wx0Yz4Ab"),
    ("stripe_key", "STRIPE_SECRET=sk_live_51Hq8vPz2mRkL5nW9sT3xY7b", "sk_live_51Hq8vPz2mRkL5nW9sT3xY7b"),
    ("jwt", "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n", "dozjgNryP4J3jVmNHl0w5N_XgL0n"),
    ("bearer_token", "curl -H 'Authorization: Bearer a1b2c3d4e5f6a7b8c9d0e1f2' https://api", "a1b2c3d4e5f6a7b8c9d0e1f2"),
    ("basic_auth", "curl -H \"Authorization: Basic YWRtaW46aHVudGVyMjAyNg==\" https://x", "YWRtaW46aHVudGVyMjAyNg=="),
    ("curl_user", "curl -u admin:Tr0ub4dor3 https://jenkins.internal/api", "Tr0ub4dor3"),
    ("curl_user", "curl --user deploy:'s3cret-Pa55' https://x", "s3cret-Pa55"),
    ("url_credentials", "DATABASE_URL=postgres://app:Xk92mPq7vL@db:5432/app", "Xk92mPq7vL"),
    ("url_token", "GET https://api.example.net/v1/export?format=csv&access_token=Qm9sdF9rZXlfOTk4Nw", "Qm9sdF9rZXlfOTk4Nw"),
    ("url_token", "wget 'https://files.internal/dl?token=7f3a9c2e1b8d4f60'", "7f3a9c2e1b8d4f60"),
    ("url_token", "https://x.io/cb?api_key=k3yV4lu3_2026x", "k3yV4lu3_2026x"),
    ("netrc_password", "machine api.heroku.com\n  login me@corp.io\n  password 5f2c8e1a-9b7d-4c3e", "5f2c8e1a-9b7d-4c3e"),
    ("netrc_password", "machine git.corp login builder password Wint3rIsC0ming", "Wint3rIsC0ming"),
    ("secret_field", r#"{"username": "svc", "password": "correct_horse"}"#, "correct_horse"),
    ("secret_field", r#"payload = {\"client_secret\":\"cs_9f8e7d6c5b4a\"}"#, "cs_9f8e7d6c5b4a"),
    ("password_assignment", "PGPASSWORD=hunter2 psql -h db", "hunter2"),
    ("password_assignment", "db:\n  password: postgres\n  host: x", "postgres"),
    ("password_assignment", "conn = connect(password=\"S3cure!pass\")", "S3cure!pass"),
    ("password_assignment", "password: str = \"Pydantic9Default\"", "Pydantic9Default"),
    ("password_assignment", "spring.datasource.password=Xyz12345", "Xyz12345"),
    ("password_assignment", "'password' => 'laravel-Pa55'", "laravel-Pa55"),
    ("secret_assignment", "SECRET_KEY = 'django-insecure-8f#x2k$9q'", "django-insecure-8f#x2k$9q"),
    ("secret_assignment", "api_key: 4f9a8c7e6d5b4a3c2d1e", "4f9a8c7e6d5b4a3c2d1e"),
    ("secret_assignment", "CLIENT_SECRET=Gh7Kp2Lq9Rs4", "Gh7Kp2Lq9Rs4"),
    ("password_flag", "redis-cli --pass Rd1sP4ss -h cache", "Rd1sP4ss"),
    ("password_flag", "mongo --password M0ng0Pw db", "M0ng0Pw"),
    ("mysql_password_flag", "mysql -u root -pTopSecret1 db", "TopSecret1"),
    ("email_mask", "Author: Jane Roe <jane.roe@corp-mail.io>", "jane.roe@corp-mail.io"),
    ("email_mask", "git log: Author: Piotr <piotr.n@gmail.com>", "piotr.n@gmail.com"),
];

#[test]
fn every_kind_is_caught_by_its_pattern() {
    let r = pack();
    let mut failures = vec![];
    for (name, text, secret) in CAUGHT {
        let mut hits = vec![];
        let out = r
            .redact_str(text, &mut hits)
            .unwrap_or_else(|| text.to_string());
        if out.contains(secret) || !hits.iter().any(|h| h == name) {
            failures.push(format!("{name}: {hits:?} `{text}` -> `{out}`"));
        }
        // JSON-escaped, as in a dead letter's raw line, it goes too
        let escaped = serde_json::to_string(text).unwrap();
        let (raw, _) = redact_text_of(&r, &escaped);
        let secret_escaped = serde_json::to_string(secret).unwrap();
        let secret_escaped = secret_escaped.trim_matches('"');
        if raw.contains(secret_escaped) {
            failures.push(format!("{name} (escaped): `{raw}`"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn redact_text_of(r: &Redactor, s: &str) -> (String, usize) {
    let mut hits = vec![];
    let out = r.redact_str(s, &mut hits).unwrap_or_else(|| s.to_string());
    (out, hits.len())
}

/// Ordinary code and prose as it occurs in real Claude Code logs: it must come
/// through byte-identical.
const UNTOUCHED: &[&str] = &[
    "  config :my_app, MyApp.LLM,\n    api_key: anthropic_api_key(),\n    model: \"claude\"",
    "Co-Authored-By: Claude <noreply@anthropic.com>",
    "Co-authored-by: octocat <583231+octocat@users.noreply.github.com>",
    "git remote add origin git@github.com:owner/repo.git",
    "pub struct Login {\n    pub user: String,\n    pub password: String,\n}",
    "interface Creds { password: string; apiKey?: string }",
    "def login(user: str, password: str) -> bool:",
    "const token = getToken();\nconst apiKey = process.env.ANTHROPIC_API_KEY;",
    "api_key = os.environ[\"ANTHROPIC_API_KEY\"]",
    "password = os.getenv('DB_PASSWORD')",
    "export PGPASSWORD=$DB_PASSWORD",
    "PASSWORD=${POSTGRES_PASSWORD:-}",
    "client = Anthropic(api_key=api_key)",
    "conn = psycopg.connect(user=user, password=password)",
    "self.password = password",
    "password: <your-password>",
    "API_KEY=your-api-key-here",
    "\"password\": \"***\"",
    "password: changeme",
    "Password: must be at least 8 characters long",
    "The password reset link expires after one hour.",
    "if let Some(secret) = secrets.get(name) {",
    "env:\n  API_KEY: ${{ secrets.ANTHROPIC_API_KEY }}",
    "ANTHROPIC_API_KEY: settings.ANTHROPIC_API_KEY",
    "access_token: str | None = None",
    "--password-file /run/secrets/db",
    "git push -u origin main",
    "docker run -u 1000:1000 image",
    "risk-assessment-framework-document-version2",
    "if line.starts_with(\"-----BEGIN RSA PRIVATE KEY-----\") {",
    "postgres://user:password@localhost:5432/db",
    "https://example.net/search?q=tokenizer&page=2",
    "bypass: true",
    "cd $PWD && OLDPWD=/tmp ls",
    "Bearer authentication with a short-lived token",
    "headers = {\"Authorization\": f\"Bearer {token}\"}",
    "@types/node@20.1.0 and pkg@latest",
    "assert!(is_valid(\"user@example.com\")); // and admin@mail.example.org",
    "ssh deploy@build.test; mail root@localhost",
    "<input type=\"password\" name=\"password\" autocomplete=\"current-password\">",
];

#[test]
fn ordinary_code_and_prose_are_untouched() {
    let r = pack();
    let mut failures = vec![];
    for text in UNTOUCHED {
        let mut hits = vec![];
        if let Some(out) = r.redact_str(text, &mut hits) {
            failures.push(format!("{hits:?} `{text}` -> `{out}`"));
            continue;
        }
        let mut doc = json!({"message": {"content": [{"type": "text", "text": text}]}});
        let before = doc.clone();
        r.redact_value(&mut doc, &mut hits);
        assert_eq!(doc, before);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn structured_tool_inputs_are_redacted_by_key() {
    let r = pack();
    let mut doc = json!({"type": "tool_use", "name": "mcp__db__connect", "input": {
        "host": "db.internal", "user": "svc", "password": "plain words too",
        "client_secret": "abc", "apiKey": "k3y", "db_password": "ab", "GITHUB_TOKEN": "t0k",
        "SecretAccessKey": "short", "auth": {"Authorization": "Basic Zm9vOmJhcg=="},
        "token": "$TOKEN", "maxThinkingTokens": 5, "input_tokens": "7"}});
    let mut hits = vec![];
    r.redact_value(&mut doc, &mut hits);
    let i = &doc["input"];
    for k in [
        "password",
        "client_secret",
        "apiKey",
        "GITHUB_TOKEN",
        "SecretAccessKey",
    ] {
        assert_eq!(i[k], "[REDACTED:secret_field]", "{k}");
    }
    assert_eq!(i["auth"]["Authorization"], "[REDACTED:secret_field]");
    assert_eq!(i["token"], "$TOKEN", "a reference is not a secret");
    assert_eq!(i["db_password"], "ab", "two characters are no secret");
    assert_eq!(i["input_tokens"], "7");
    assert_eq!(i["host"], "db.internal");
    assert_eq!(hits.len(), 6, "{hits:?}");
}

/// The per-thread memory of judged strings answers for one redactor only:
/// a string another rule pack found clean is scanned again by this one.
#[test]
fn remembered_answers_belong_to_one_redactor() {
    let lenient = Redactor::new(vec![Pattern::new("none", "NEVER_MATCHES_X").unwrap()]).unwrap();
    let strict = red();
    let key = "AKIAABCDEFGHIJKLMNOP";
    let mut hits = Vec::new();
    for _ in 0..2 {
        assert_eq!(lenient.redact_str(key, &mut hits), None);
        assert_eq!(
            strict.redact_str(key, &mut hits).as_deref(),
            Some("[REDACTED:aws]")
        );
    }
    assert_eq!(hits, ["aws", "aws"]);
    // object keys: remembered per redactor too
    let p = Pattern::compile(&RedactSpec {
        name: "field".into(),
        pattern: "NEVER_MATCHES_Y".into(),
        replace: None,
        keep: None,
        key: Some("^token$".into()),
    })
    .unwrap();
    let keyed = Redactor::new(vec![p]).unwrap();
    for _ in 0..2 {
        let mut doc = json!({"token": "abc123456", "other": "abc123456"});
        let mut hits = Vec::new();
        keyed.redact_value(&mut doc, &mut hits);
        assert_eq!(
            doc,
            json!({"token": "[REDACTED:field]", "other": "abc123456"})
        );
        let mut doc = json!({"token": "abc123456"});
        lenient.redact_value(&mut doc, &mut hits);
        assert_eq!(doc, json!({"token": "abc123456"}));
    }
}
