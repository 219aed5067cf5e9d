use std::collections::HashMap;

use serde_json::json;

use super::*;

const CLAIMS: [&str; 2] = ["tenant", "acr"];

fn compile(source: &str) -> Result<Rule, RuleError> {
    let claims: Vec<String> = CLAIMS.map(String::from).to_vec();
    Rule::compile(source, Vocabulary { claims: &claims })
}

fn refused(source: &str) -> RuleError {
    compile(source).expect_err(source)
}

/// A context as the gateway builds one: alice of `support`, acting through `agent-7`, calling
/// `refund` at 2026-03-04 10:30 UTC (a Wednesday) with `args`.
fn evaluate(source: &str, args: serde_json::Value) -> Outcome {
    let rule = compile(source).unwrap();
    let mut context = Context::with_env(environment());
    let actor: HashMap<&str, Value> = HashMap::from([("sub", "agent-7".into())]);
    let principal: HashMap<&str, Value> = HashMap::from([
        ("sub", "alice".into()),
        ("iss", "https://issuer.example".into()),
        ("groups", vec!["support", "eu"].into()),
        ("actor", actor.into()),
    ]);
    context.add_variable_from_value("principal", principal);
    context.add_variable_from_value("claims", HashMap::from([("tenant", "acme")]));
    context.add_variable_from_value("call", HashMap::from([("function", "refund")]));
    context.add_variable_as_val("args", json_val(&args));
    // 2026-03-04T10:30:00Z
    context.add_variable_as_val(
        "now",
        time_val(std::time::Duration::from_secs(1_772_620_200)),
    );
    rule.evaluate(&context)
}

#[test]
fn common_rules_compile_and_say_what_they_read() {
    for (source, reads) in [
        (r#""support" in principal.groups"#, vec!["principal"]),
        (
            r#"has(principal.actor) && principal.actor.sub.startsWith("agent-")"#,
            vec!["principal"],
        ),
        ("args.amount > 1000", vec!["args"]),
        (
            r#"now.getDayOfWeek("Europe/Paris") in [1, 2, 3, 4, 5] && now.getHours("Europe/Paris") >= 9"#,
            vec!["now"],
        ),
        (
            r#"claims.tenant == "acme" && call.function == "refund""#,
            vec!["call", "claims"],
        ),
        (
            r#"principal.groups.exists(g, g.endsWith("-admins")) || args.items.all(i, i.price < 10)"#,
            vec!["args", "principal"],
        ),
        (r#"args.env.matches("^prod")"#, vec!["args"]),
        (
            r#"principal["sub"] == "alice" ? true : false"#,
            vec!["principal"],
        ),
        ("true", vec![]),
    ] {
        let rule = compile(source).unwrap_or_else(|error| panic!("{source}: {error}"));
        for variable in VARIABLES {
            assert_eq!(
                rule.reads(variable),
                reads.contains(&variable),
                "{source} reads {variable}?"
            );
        }
    }
}

#[test]
fn an_expression_that_does_not_parse_is_refused_with_its_position() {
    let error = refused("args.amount >> 1000");
    assert_eq!((error.line, error.column), (1, 14), "{error}");
    assert!(error.reason.starts_with("does not parse"), "{error}");
    let error = refused("args.amount > 1000 &&\n  (args.env == \"prod\"");
    assert_eq!(error.line, 2, "{error}");
    assert!(
        error.to_string().starts_with("at line 2, column"),
        "{error}"
    );
    assert_eq!(refused("").line, 1);
}

#[test]
fn an_unknown_variable_is_refused_where_it_is_named() {
    // The old condition language read the arguments without a prefix.
    let error = refused("amount > 1000");
    assert_eq!((error.line, error.column), (1, 1), "{error}");
    assert!(
        error.reason.contains("unknown variable `amount`"),
        "{error}"
    );
    let error = refused("args.amount > 1000 || requester == \"bob\"");
    assert_eq!(error.column, 23, "{error}");
    // A comprehension variable is known inside its macro only.
    compile(r#"principal.groups.exists(g, g == "ops")"#).unwrap();
    let error = refused(r#"principal.groups.exists(g, g == "ops") && g == "ops""#);
    assert!(error.reason.contains("unknown variable `g`"), "{error}");
}

#[test]
fn an_unknown_field_or_claim_is_refused_where_it_is_named() {
    let error = refused(r#"principal.subject == "alice""#);
    assert_eq!((error.line, error.column), (1, 11), "{error}");
    assert!(error.reason.contains("principal.subject"), "{error}");
    let error = refused(r#"has(principal.actor) && principal.actor.name == "x""#);
    assert!(error.reason.contains("principal.actor.name"), "{error}");
    let error = refused(r#"claims.department == "finance""#);
    assert_eq!(error.column, 8, "{error}");
    assert!(error.reason.contains("ingress.policy_claims"), "{error}");
    let error = refused(r#"claims["department"] == "finance""#);
    assert!(error.reason.contains("claims.department"), "{error}");
    let error = Rule::compile(r#"claims.tenant == "a""#, Vocabulary::default()).unwrap_err();
    assert!(error.reason.contains("no claim is selected"), "{error}");
    assert!(refused("now.hour > 9").reason.contains("timestamp"));
    assert!(
        refused(r#"call.upstream == "x""#)
            .reason
            .contains("call.upstream")
    );
}

#[test]
fn an_unknown_function_is_refused() {
    let error = refused(r#"principal.groups.exist(g, g == "ops")"#);
    assert!(error.reason.contains("unknown function `exist`"), "{error}");
    assert!(refused("isAdmin(principal)").reason.contains("`isAdmin`"));
    let error = refused("principal.groups.exists(g)");
    assert!(error.reason.contains("macro"), "{error}");
    for known in [
        "size(principal.groups) > 1",
        r#"principal.sub.contains("a")"#,
        r#"timestamp("2026-01-01T00:00:00Z") < now"#,
        r#"now - duration("1h") < now"#,
        r#"int(args.amount) > 1 && double(args.amount) > 1.0 && string(args.id) == "1""#,
        r#"type(args.amount) == int"#,
    ] {
        compile(known).unwrap_or_else(|error| panic!("{known}: {error}"));
    }
}

#[test]
fn an_expression_that_cannot_give_a_boolean_is_refused() {
    for (source, what) in [
        ("args.amount", "a value read from the input"),
        ("principal.sub", "a value read from the input"),
        ("args[\"amount\"]", "a value read from the input"),
        ("1 + 2", "arithmetic"),
        ("\"prod\"", "a string"),
        ("1000", "a number"),
        ("null", "null"),
        ("[true]", "a list"),
        ("{\"a\": true}", "a map"),
        ("size(principal.groups)", "a number"),
        ("principal.groups.map(g, g == \"ops\")", "a list"),
        ("principal.groups.filter(g, g == \"ops\")", "a list"),
        ("args.amount > 1 ? \"yes\" : false", "a string"),
        ("now", "a value read from the input"),
    ] {
        let error = refused(source);
        assert!(error.reason.contains(what), "{source}: {error}");
        assert!(
            error.reason.contains("not true or false"),
            "{source}: {error}"
        );
    }
    // A macro that gives a boolean, and a conditional whose branches are tests, are fine.
    compile(r#"principal.groups.exists_one(g, g == "ops")"#).unwrap();
    compile(r#"args.amount > 1 ? args.env == "prod" : true"#).unwrap();
}

#[test]
fn rules_decide_over_the_documented_variables() {
    let holds = |source: &str, args: serde_json::Value| evaluate(source, args);
    let transfer = json!({"amount": 1500, "env": "prod", "items": [{"price": 9.5}]});
    assert_eq!(
        holds("args.amount > 1000", transfer.clone()),
        Outcome::Holds
    );
    assert_eq!(
        holds("args.amount <= 1000", transfer.clone()),
        Outcome::DoesNotHold
    );
    // Integral and fractional JSON numbers compare with int and double literals alike.
    assert_eq!(
        holds("args.amount == 1500.0", transfer.clone()),
        Outcome::Holds
    );
    assert_eq!(
        holds("args.items[0].price < 10", transfer.clone()),
        Outcome::Holds
    );
    assert_eq!(
        holds(r#"args.env in ["prod", "staging"]"#, transfer.clone()),
        Outcome::Holds
    );
    assert_eq!(
        holds(
            r#""support" in principal.groups && principal.actor.sub == "agent-7""#,
            json!({})
        ),
        Outcome::Holds
    );
    assert_eq!(
        holds(
            r#"claims.tenant == "acme" && call.function == "refund""#,
            json!({})
        ),
        Outcome::Holds
    );
    // 10:30 UTC is 11:30 in Paris, on a Wednesday (3).
    assert_eq!(
        holds(
            r#"now.getDayOfWeek("Europe/Paris") == 3 && now.getHours("Europe/Paris") == 11"#,
            json!({})
        ),
        Outcome::Holds
    );
    assert_eq!(
        holds(r#"has(args.env) && args.env == "dev""#, json!({})),
        Outcome::DoesNotHold
    );
}

#[test]
fn a_rule_that_errors_is_undecided_and_never_shows_a_value() {
    let missing = evaluate("args.amount > 1000", json!({}));
    assert_eq!(
        missing,
        Outcome::Undecided("a field or element it reads is missing")
    );
    let card = json!({"amount": "4111 1111 1111 1111"});
    let Outcome::Undecided(reason) = evaluate("args.amount > 1000", card.clone()) else {
        panic!("a string compared with a number must not decide");
    };
    assert!(!reason.contains("4111"), "{reason}");
    let Outcome::Undecided(reason) = evaluate("args.amount + 1 > 2", card) else {
        panic!("a string plus a number must not decide");
    };
    assert!(!reason.contains("4111"), "{reason}");
    // CEL's `||` and `&&` are commutative over errors: a true side decides.
    assert_eq!(
        evaluate(
            r#"args.amount > 1000 || args.env == "prod""#,
            json!({"env": "prod"})
        ),
        Outcome::Holds
    );
    assert_eq!(
        evaluate("args.flag == true ? true : false", json!({})),
        Outcome::Undecided("a field or element it reads is missing")
    );
}

/// Every `allow` and `condition` of docs/policy.md compiles, so the guide shows only rules the
/// gateway accepts.
#[test]
fn the_rules_in_the_policy_guide_compile() {
    let guide = include_str!("../../../docs/policy.md");
    let mut snippets = Vec::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        if !(line.starts_with("allow = '") || line.starts_with("condition = '")) {
            continue;
        }
        let mut snippet = line.to_string();
        if line.ends_with("= '''") || (line.contains("'''") && !line.ends_with("'''")) {
            for next in lines.by_ref() {
                snippet.push('\n');
                snippet.push_str(next);
                if next.ends_with("'''") {
                    break;
                }
            }
        }
        snippets.push(snippet);
    }
    assert!(snippets.len() >= 15, "found {}", snippets.len());
    for snippet in snippets {
        let table: toml::Table =
            toml::from_str(&snippet).unwrap_or_else(|e| panic!("{snippet}: {e}"));
        let source = table
            .values()
            .next()
            .and_then(|value| value.as_str())
            .unwrap();
        compile(source).unwrap_or_else(|error| panic!("{source}: {error}"));
    }
}
