use super::*;

const EXAMPLE: &str = r#"
[ingress]
listen = "127.0.0.1:0"
instance_id = "gw-test"

[oidc]
issuer = "http://127.0.0.1:9000"
audiences = ["callproof"]
groups_claim = "realm_access.roles"

[kafka]
brokers = "127.0.0.1:9092"

[functions.get_customer]
upstream = "http://127.0.0.1:9100/customer"
timeout_ms = 2000
credential = { kind = "bearer", token = "${CUSTOMER_TOKEN}" }

[functions.get_customer.policy]
allow_groups = ["support"]
mask_request = ["/ssn", "password"]

[functions.legacy]
upstream = "http://127.0.0.1:9100/legacy"
credential = { kind = "basic", username = "svc", password = "literal-password" }
"#;

fn env(name: &str) -> Option<String> {
    (name == "CUSTOMER_TOKEN").then(|| "token-from-env".to_string())
}

/// Loads `source` as the gateway does, with an `[oidc]` section (which it requires) appended
/// when the source has none, so that line numbers stay those of `source`.
fn load(source: &str) -> Result<Config, ConfigError> {
    let source = if source.contains("[oidc]") {
        source.to_string()
    } else {
        format!(
            "{source}\n[oidc]\nissuer = \"http://127.0.0.1:9000\"\naudiences = [\"callproof\"]\n"
        )
    };
    Config::from_toml_with_env(&source, "deploy.toml", Service::Ingress, &env)
}

fn load_as(service: Service, source: &str) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(source, "deploy.toml", service, &env)
}

#[test]
fn example_loads_and_resolves_env_references() {
    let config = load(EXAMPLE).unwrap();
    let function = &config.functions["get_customer"];
    let Credential::Bearer(bearer) = &function.credential else {
        panic!("bearer credential expected");
    };
    assert_eq!(bearer.token.as_ref().unwrap().expose(), "token-from-env");
    assert_eq!(function.policy.allow_groups, ["support"]);
    assert!(function.policy.detect);
    assert_eq!(config.oidc.unwrap().clock_skew_secs, 30);
}

#[test]
fn broker_and_masking_key_may_come_from_the_environment() {
    let source =
        "[kafka]\nbrokers = \"${CUSTOMER_TOKEN}\"\n[masking]\nhmac_key = \"${CUSTOMER_TOKEN}\"\n";
    let config = load(source).unwrap();
    assert_eq!(config.kafka.brokers, "token-from-env");
    assert_eq!(config.masking.hmac_key.as_deref(), Some("token-from-env"));
    let error = error_of("[kafka]\nbrokers = \"${UNSET_BROKERS}\"\n");
    assert!(error.contains("UNSET_BROKERS"), "{error}");
}

#[test]
fn secrets_never_print() {
    let config = load(EXAMPLE).unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("token-from-env"));
    assert!(!printed.contains("literal-password"));
    assert!(printed.contains("[secret]"));
}

#[test]
fn kafka_properties_resolve_the_environment_and_never_print() {
    let source = "[kafka.properties]\n\"security.protocol\" = \"sasl_ssl\"\n\"sasl.password\" = \"${CUSTOMER_TOKEN}\"\n";
    let config = load(source).unwrap();
    assert_eq!(config.kafka.properties["sasl.password"], "token-from-env");
    assert_eq!(config.kafka.properties["security.protocol"], "sasl_ssl");
    let printed = format!("{config:?}");
    assert!(!printed.contains("token-from-env"), "{printed}");
    assert!(printed.contains("sasl.password"), "{printed}");
}

#[test]
fn secret_from_file_drops_the_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "from-file\n").unwrap();
    let source = format!(
        "[functions.f]\nupstream = \"http://x\"\ncredential = {{ kind = \"header\", name = \"x-api-key\", value_file = {:?} }}\n",
        path.display().to_string()
    );
    let config = load(&source).unwrap();
    let Credential::Header(header) = &config.functions["f"].credential else {
        panic!("header credential expected");
    };
    assert_eq!(header.value.as_ref().unwrap().expose(), "from-file");
}

fn error_of(source: &str) -> String {
    load(source).unwrap_err().to_string()
}

#[test]
fn unknown_key_is_refused_with_line() {
    let source = "[ingress]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n";
    let error = error_of(source);
    assert!(error.starts_with("deploy.toml:3:"), "{error}");
    assert!(error.contains("unknown field `listen_port`"), "{error}");
}

#[test]
fn missing_env_is_refused_naming_key_variable_and_line() {
    let source = "[functions.f]\nupstream = \"http://x\"\n\n[functions.f.credential]\nkind = \"bearer\"\ntoken = \"${NOT_SET}\"\n";
    let error = error_of(source);
    assert!(error.starts_with("deploy.toml:6:"), "{error}");
    assert!(error.contains("functions.f.credential.token"), "{error}");
    assert!(error.contains("NOT_SET"), "{error}");
}

#[test]
fn bad_values_are_refused_with_reason() {
    let cases = [
        (
            "[functions.f]\nupstream = \"ftp://x\"\n",
            "functions.f.upstream` must be an http(s) URL",
        ),
        (
            "[functions.\"a b\"]\nupstream = \"http://x\"\n",
            "not a valid function name",
        ),
        (
            "[functions.f]\nupstream = \"http://x\"\ntimeout_ms = 0\n",
            "timeout_ms` must be positive",
        ),
        (
            "[functions.f]\nupstream = \"http://x\"\nmax_request_bytes = 99999999999\n",
            "max_request_bytes` must be between",
        ),
        (
            "[oidc]\nissuer = \"http://i\"\naudiences = []\n",
            "must name at least one audience",
        ),
        (
            "[oidc]\nissuer = \"http://i\"\naudiences = [\"a\"]\nalgorithms = [\"HS256\"]\n",
            "\"HS256\", which is not one of",
        ),
        (
            "[functions.f]\nupstream = \"http://x\"\ncredential = { kind = \"bearer\" }\n",
            "is missing",
        ),
        (
            "[functions.f]\nupstream = \"http://x\"\ncredential = { kind = \"header\", name = \"bad header\", value = \"v\" }\n",
            "not a valid HTTP header name",
        ),
        (
            "[functions.f]\nupstream = \"http://x\"\ncredential = { kind = \"magic\" }\n",
            "unknown variant `magic`",
        ),
        (
            "[ingress]\nlisten = \"not an address\"\n",
            "invalid socket address",
        ),
        ("[ingress\n", "invalid table header"),
        (
            "[ingress]\nmax_in_flight = 0\n",
            "ingress.max_in_flight` must be between 1 and",
        ),
        (
            "[ingress]\nworker_threads = 0\n",
            "ingress.worker_threads` must be between 1 and",
        ),
        ("[kafka.properties]\nacks = \"1\"\n", "must not set `acks`"),
        (
            "[ingress]\nmax_response_bytes = 0\n",
            "ingress.max_response_bytes` must be positive",
        ),
        (
            "[oidc]\nissuer = \"http://i\"\naudiences = [\"a\"]\nhttp_timeout_ms = 0\n",
            "oidc.http_timeout_ms` must be positive",
        ),
        (
            "[oidc]\nissuer = \"http://i\"\naudiences = [\"a\"]\njwks_cache_secs = 0\n",
            "oidc.jwks_cache_secs` must be positive",
        ),
        (
            "[oidc]\nissuer = \"http://i\"\naudiences = [\"a\"]\njwks_min_refresh_secs = 0\n",
            "oidc.jwks_min_refresh_secs` must be positive",
        ),
        (
            "[kafka]\ndelivery_timeout_ms = 0\n",
            "kafka.delivery_timeout_ms` must be between 1 and",
        ),
        (
            "[kafka.properties]\n\"sasl.password\" = \"${UNSET_KAFKA_PASSWORD}\"\n",
            "`kafka.properties.sasl.password` refers to environment variable `UNSET_KAFKA_PASSWORD`",
        ),
    ];
    for (source, expected) in cases {
        let error = error_of(source);
        assert!(error.contains(expected), "{source:?}: {error}");
        assert!(error.starts_with("deploy.toml:"), "{error}");
    }
}

#[test]
fn committed_examples_load() {
    let examples = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples")).unwrap();
    for entry in examples {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let path = path.display().to_string();
        // The quick start and compose keep their keys under .data/, keys/ and verifier/, made
        // on their first run: give the test its own.
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("log-signing.key"), "PRIVATE+KEY+test").unwrap();
        std::fs::write(data.path().join("log-verifier.key"), "test+00000000+AA==").unwrap();
        let source = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\".data/", &format!("\"{}/", data.path().display()))
            .replace("\"keys/", &format!("\"{}/", data.path().display()))
            .replace("\"verifier/", &format!("\"{}/", data.path().display()));
        for service in [Service::Ingress, Service::Processor, Service::Evidence] {
            Config::from_toml_with_env(&source, &path, service, &|_| Some("example-secret".into()))
                .unwrap_or_else(|error| panic!("{service:?}: {error}"));
        }
    }
}

#[test]
fn processor_sections_load_with_defaults_and_refuse_bad_values() {
    let config = load_as(
        Service::Processor,
        "[log]\nsigning_key = \"${CUSTOMER_TOKEN}\"\n",
    )
    .unwrap();
    assert_eq!(config.processor.group_id, "callproof-processor");
    assert_eq!(config.processor.batch_max_events, 5_000);
    assert!(config.storage.url.starts_with("file:///"));
    let log = config.log.as_ref().unwrap();
    assert_eq!(log.signing_key.as_ref().unwrap().expose(), "token-from-env");
    assert!(!format!("{config:?}").contains("token-from-env"));
    let cases = [
        (
            "[processor]\nbatch_max_events = 0\n",
            "processor.batch_max_events` must be positive",
        ),
        (
            "[processor]\nbatch_size = 3\n",
            "unknown field `batch_size`",
        ),
        ("[storage]\nurl = \"ftp://x\"\n", "storage.url` must be"),
        (
            "[index]\nwriter_memory_mb = 1\n",
            "index.writer_memory_mb` must be between",
        ),
        ("[log]\norigin = \"a\"\n", "log.signing_key` is missing"),
        (
            "[index]\nscratch_dir = \"\"\n",
            "index.scratch_dir` must not be empty",
        ),
        (
            "[index]\nmerge_factor = 1\n",
            "index.merge_factor` must be between",
        ),
        ("[index]\npath = \"/x\"\n", "unknown field `path`"),
        (
            "[kafka]\nbrokers = \"b:9092\"\ncalls_topic = \"\"\n",
            "kafka.calls_topic` is not a Kafka topic name",
        ),
        (
            "[kafka]\nbrokers = \"b:9092\"\nsiem_topic = \"siem events\"\n",
            "kafka.siem_topic` is not a Kafka topic name",
        ),
        (
            "[kafka]\nbrokers = \"b:9092\"\nsiem_topic = \"callproof.calls.v1\"\n",
            "kafka.siem_topic` must differ from kafka.calls_topic",
        ),
    ];
    for (source, expected) in cases {
        let error = load_as(Service::Processor, source).unwrap_err().to_string();
        assert!(error.contains(expected), "{source:?}: {error}");
        assert!(error.starts_with("deploy.toml:"), "{error}");
    }
}

/// Policy rules (`docs/policy.md`) are refused at load with the file's line and the position
/// in the expression.
mod policy_rules {
    use super::*;

    const FUNCTION: &str = "[functions.refund]\nupstream = \"http://x\"\n";

    /// The file's line, the line and column in the expression, and the message of a refused
    /// rule.
    fn refused(source: &str) -> (Option<usize>, usize, usize, String) {
        let error = load(source).unwrap_err();
        let ConfigErrorKind::Rule { error: rule, .. } = &error.kind else {
            panic!("a rule error expected: {error}");
        };
        (error.line, rule.line, rule.column, error.to_string())
    }

    #[test]
    fn allow_rules_and_conditions_in_cel_load() {
        let source = format!(
            r#"[ingress]
policy_claims = ["tenant"]
{FUNCTION}[functions.refund.policy]
allow_groups = ["support"]
allow = 'claims.tenant == "acme" && args.amount <= 500'
[functions.refund.approval]
condition = '''
args.amount > 100 &&
  !("finance" in principal.groups)'''
approver_groups = ["finance"]
"#
        );
        let config = load(&source).unwrap();
        let function = &config.functions["refund"];
        assert!(
            function
                .policy
                .allow
                .as_deref()
                .unwrap()
                .contains("args.amount")
        );
        assert_eq!(config.ingress.policy_claims, ["tenant"]);
    }

    #[test]
    fn an_allow_rule_that_does_not_compile_is_refused_with_file_line_and_position() {
        let (line, _, column, error) = refused(&format!(
            "{FUNCTION}policy = {{ allow = \"principal.groups.exists(g, \" }}\n"
        ));
        assert_eq!(line, Some(3), "{error}");
        assert!(
            error.starts_with(&format!(
                "deploy.toml:3: `functions.refund.policy.allow` at column {column} of the \
                 expression: does not parse"
            )),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_variable_is_refused_with_file_line_and_position() {
        // The old language's bare field names are unknown variables in CEL.
        let (line, _, column, error) = refused(&format!(
            "{FUNCTION}policy = {{ allow = \"args.amount < 100 && amount > 1\" }}\n"
        ));
        assert_eq!((line, column), (Some(3), 22), "{error}");
        assert!(error.contains("unknown variable `amount`"), "{error}");
        // A claim is known only when `ingress.policy_claims` names it.
        let (_, _, _, error) = refused(&format!(
            "{FUNCTION}policy = {{ allow = 'claims.tenant == \"acme\"' }}\n"
        ));
        assert!(error.contains("ingress.policy_claims"), "{error}");
    }

    #[test]
    fn a_rule_that_cannot_give_a_boolean_is_refused_with_file_line_and_position() {
        for rule in ["args.amount", "1 + 2", "'prod'"] {
            let (line, _, column, error) =
                refused(&format!("{FUNCTION}policy = {{ allow = \"{rule}\" }}\n"));
            assert_eq!((line, column), (Some(3), 1), "{error}");
            assert!(error.contains("not true or false"), "{error}");
        }
    }

    #[test]
    fn an_error_on_a_later_line_of_a_multi_line_rule_names_that_file_line() {
        let source = format!(
            r#"{FUNCTION}[functions.refund.approval]
approver_groups = ["finance"]
condition = '''
args.amount > 100 &&
  principal.team == "x"'''
"#
        );
        let (line, expression_line, column, error) = refused(&source);
        // Line 6 holds `args.amount > 100 &&`, line 7 the unknown field.
        assert_eq!((line, expression_line, column), (Some(7), 2, 13), "{error}");
        assert!(error.contains("principal.team"), "{error}");
    }
}

#[test]
fn the_gateway_leaves_a_core_to_the_kafka_client_unless_told() {
    let defaults = load("").unwrap().ingress;
    assert_eq!(defaults.runtime_workers(1), 1);
    assert_eq!(defaults.runtime_workers(2), 1);
    assert_eq!(defaults.runtime_workers(8), 7);
    let configured = load("[ingress]\nworker_threads = 4\n").unwrap().ingress;
    assert_eq!(configured.runtime_workers(2), 4);
}
