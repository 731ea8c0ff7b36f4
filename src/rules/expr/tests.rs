use super::*;
use crate::rules::pricing::{Price, Rates};
use serde_json::json;

fn env() -> Env {
    let mut env = Env::default();
    let m = LookupMap::from_iter([("Read".to_string(), json!("read"))]);
    env.maps.insert("access".into(), Arc::new(m));
    let mut gs = globset::GlobSetBuilder::new();
    gs.add(globset::Glob::new("**/.env").unwrap());
    env.globs
        .insert("sensitive".into(), Arc::new(gs.build().unwrap()));
    let rates = |input: f64, output: f64| Rates {
        input,
        output,
        cache_write: Some(input * 1.25),
        cache_write_1h: Some(input * 2.0),
        cache_read: Some(input / 10.0),
    };
    let sonnet = Price {
        base: rates(3.0, 15.0),
        long_context: Some((200_000, rates(6.0, 22.5))),
        context_window: Some(200_000),
    };
    env.pricing.insert("claude-sonnet-4-5", sonnet).unwrap();
    env
}

impl Expr {
    fn compile_for_test(src: &str, env: &Env) -> Result<Expr, ExprError> {
        Expr::compile(src, env, &mut Slots::default())
    }
}

fn ev(src: &str, doc: &Value) -> Value {
    let env = env();
    let mut slots = Slots::default();
    let x = slots.slot("x");
    let e = Expr::compile(src, &env, &mut slots).unwrap_or_else(|e| panic!("{e}"));
    let mut vars = vec![Value::Null; slots.len()];
    vars[x] = json!({"y": 7});
    let labels = vec!["secret".to_string()];
    let ctx = Ctx {
        paths: &[],
        entry: doc,
        item: doc.get("it"),
        index: None,
        vars: &vars,
        labels: &labels,
        env: &env,
    };
    e.eval(&ctx).into_owned()
}

#[test]
fn paths_operators_and_functions() {
    let d = json!({"type": "assistant", "n": 3, "message": {"model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "name": "Read"}, {"type": "text", "text": "b"}],
        "usage": {"input_tokens": 1000000, "output_tokens": 0}},
        "it": {"input": {"file_path": "/p/x/.env", "command": "FOO=1 sudo /bin/rm -rf /"}},
        "weird-key": 1});
    assert_eq!(ev("type == 'assistant' && n >= 3", &d), json!(true));
    assert_eq!(ev("type in ['user', 'assistant']", &d), json!(true));
    assert_eq!(ev("!exists(missing.deep) || false", &d), json!(true));
    assert_eq!(ev("text(message.content)", &d), json!("a\nb"));
    assert_eq!(ev("count_type(message.content, 'tool_use')", &d), json!(1));
    assert_eq!(ev("message.content[1].name", &d), json!("Read"));
    assert_eq!(ev("message.content.1.name", &d), json!("Read"));
    assert_eq!(ev("entry['weird-key'] + 1", &d), json!(2));
    assert_eq!(
        ev(
            "lookup('access', item.name, 'other')",
            &json!({"it": {"name": "Zap"}})
        ),
        json!("other")
    );
    assert_eq!(ev("lookup('access', 'Read')", &d), json!("read"));
    assert_eq!(
        ev("in_globs(item.input.file_path, 'sensitive')", &d),
        json!(true)
    );
    assert_eq!(ev("first_word(item.input.command)", &d), json!("rm"));
    assert_eq!(ev("extension('/a/b.Tar.GZ')", &d), json!("gz"));
    assert_eq!(ev("dirname('/a/b.c')", &d), json!("/a"));
    // A 1M-token prompt is over the 200k long-context threshold: $6/M.
    assert_eq!(
        ev(
            "cost(message.model, message.usage.input_tokens, 0, 0, 0)",
            &d
        ),
        json!(6.0)
    );
    assert_eq!(
        ev("cost(message.model, 1000, 0, 2000, 0, 1000)", &d),
        json!(0.01275)
    );
    assert_eq!(ev("priced(message.model)", &d), json!(true));
    assert_eq!(ev("cost('unknown', 5, 5, 5, 5)", &d), Value::Null);
    assert_eq!(ev("context_window(message.model)", &d), json!(200000));
    assert_eq!(ev("preview('héllo', 2)", &d), json!("hé"));
    assert_eq!(ev("preview('héllo', 5)", &d), json!("héllo"));
    assert_eq!(ev("preview('héllo', 9)", &d), json!("héllo"));
    assert_eq!(ev("preview('héllo', 0)", &d), json!(""));
    assert_eq!(
        ev("sha256('abc')", &d),
        json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert_eq!(ev("$x.y * 2", &d), json!(14));
    assert_eq!(
        ev("has_label('secret') && !has_label('x')", &d),
        json!(true)
    );
    assert_eq!(ev("text(message.content) =~ '^a\\nb$'", &d), json!(true));
    assert_eq!(ev(r#"matches('x123', '\d+')"#, &d), json!(true));
    assert_eq!(ev("coalesce(nope, null, 'z')", &d), json!("z"));
    assert_eq!(ev("if(n > 5, 'big', 'small')", &d), json!("small"));
    assert_eq!(
        ev("iso_time('2026-01-02T03:04:05+01:00')", &d),
        json!("2026-01-02T02:04:05.000Z")
    );
    assert_eq!(ev("1 / 0", &d), Value::Null);
    assert_eq!(ev("round(2 / 3, 2)", &d), json!(0.67));
    assert_eq!(
        ev("union(['a', 'b'], if(true, ['b', 'c'], []), null, 'd')", &d),
        json!(["a", "b", "c", "d"])
    );
}

#[test]
fn compile_errors_point_at_the_problem() {
    let env = env();
    let e = Expr::compile_for_test("type == ", &env).unwrap_err();
    assert!(e.message.contains("end of expression"), "{e}");
    let e = Expr::compile_for_test("nosuch(1)", &env).unwrap_err();
    assert_eq!(e.message, "unknown function `nosuch`");
    assert_eq!(e.column, 1);
    let e = Expr::compile_for_test("a =~ '('", &env).unwrap_err();
    assert!(e.message.contains("bad regex"), "{e}");
    let e = Expr::compile_for_test("lookup('nomap', a)", &env).unwrap_err();
    assert!(e.message.contains("nomap"), "{e}");
    let e = Expr::compile_for_test("preview(a)", &env).unwrap_err();
    assert!(e.message.contains("takes 2"), "{e}");
    let e = Expr::compile_for_test("a b", &env).unwrap_err();
    assert!(e.message.contains("trailing"), "{e}");
    assert_eq!(e.column, 3);
}

/// `any_field` finds a key at any depth and matches its scalar value only:
/// not a key inside a string, not an object's text, not another key's value.
#[test]
fn any_field_reads_keys_at_any_depth_and_matches_their_scalars() {
    let d = json!({"x": [
        {"type": "tool_use", "name": "Bash", "input": {"command": "sudo rm -rf /\nls"}},
        {"type": "tool_result", "is_error": true, "content": "said \"name\":\"Edit\""},
        {"type": "text", "text": "{\"path\": \"/etc/x.pem\"}", "meta": {"path": {"deep": "a.pem"}}}
    ]});
    let t = |src: &str| ev(src, &d);
    assert_eq!(t("any_field(x, 'name', '^Bash$')"), json!(true));
    assert_eq!(
        t("any_field(x, 'name', '^Edit$')"),
        json!(false),
        "a key written inside a string is text"
    );
    assert_eq!(
        t("any_field(x, 'command', '(?m)^ls$')"),
        json!(true),
        "the raw value, newlines unescaped"
    );
    assert_eq!(
        t("any_field(x, 'is_error', '^true$')"),
        json!(true),
        "a boolean as JSON text"
    );
    assert_eq!(
        t("any_field(x, ['file_path', 'path'], 'pem$')"),
        json!(false),
        "an object's value is searched, not matched"
    );
    assert_eq!(
        t("any_field(x, ['file_path', 'deep'], 'pem$')"),
        json!(true)
    );
    assert_eq!(t("any_field(x, 'type', '^image$')"), json!(false));
    assert_eq!(t("any_field(nothing, 'type', '.')"), json!(false));
    let env = env();
    for bad in [
        "any_field(a, b, 'x')",
        "any_field(a, [], 'x')",
        "any_field(a, 'k', '(')",
        "any_field(a, 'k')",
    ] {
        assert!(Expr::compile_for_test(bad, &env).is_err(), "{bad}");
    }
}

proptest::proptest! {
    #[test]
    fn compiler_never_panics(src in "[a-z$.\\[\\]()'\"=!<>&|+*/0-9 ,~-]{0,40}") {
        let env = env();
        let mut slots = Slots::default();
        if let Ok(e) = Expr::compile(&src, &env, &mut slots) {
            let d = json!({"a": [1, {"b": "c"}]});
            let vars = vec![Value::Null; slots.len()];
            let ctx = Ctx { paths: &[], entry: &d, item: None, index: None, vars: &vars, labels: &[], env: &env };
            let _ = e.eval(&ctx);
        }
    }
}

/// The canonical-text shortcut gives what chrono's parse and format give, and
/// leaves everything it cannot vouch for to them.
#[test]
fn iso_time_shortcut_agrees_with_the_general_path() {
    let d = json!({});
    let general = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|d| json!(d.to_utc().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
            .unwrap_or(Value::Null)
    };
    for t in [
        "2026-10-01T10:00:00.000Z",
        "2024-02-29T23:59:59.999Z",
        "2025-02-29T10:00:00.000Z",
        "2026-04-31T10:00:00.000Z",
        "2026-13-01T10:00:00.000Z",
        "2026-10-01T24:00:00.000Z",
        "2026-10-01T10:60:00.000Z",
        "2016-12-31T23:59:60.000Z",
        "2026-10-01t10:00:00.000z",
        "2026-10-01T10:00:00.000+00:00",
        "2026-10-01 10:00:00.000Z",
        "2026-1a-01T10:00:00.000Z",
    ] {
        assert_eq!(ev(&format!("iso_time('{t}')"), &d), general(t), "{t}");
    }
}
