//! The policy language: allow rules (`functions.<name>.policy.allow`) and approval conditions
//! (`functions.<name>.approval.condition`) are CEL expressions, compiled by the `cel` crate
//! (cel-rust), over the variables documented in `docs/policy.md`:
//!
//! | variable    | what it holds |
//! |-------------|---------------|
//! | `principal` | the caller: `sub`, `iss`, `groups`, and when the token has them `email`, `client_id`, `actor` (`sub`, `iss`, `client_id`: the agent acting for the subject, RFC 8693) |
//! | `claims`    | the token claims named in `ingress.policy_claims`, as the token has them |
//! | `call`      | the call: `function`, the name of the function called (`function` itself is a word CEL reserves) |
//! | `args`      | the call's JSON arguments as the caller sent them (before masking) |
//! | `now`       | when the gateway decides, a CEL `timestamp` (UTC) |
//!
//! cel-rust has no type checker, so [`Rule::compile`] checks what can be told from the parsed
//! expression alone, and refuses, with the line and column in the expression:
//! - an expression that does not parse;
//! - a variable that is not one of the above (comprehension variables such as `g` in
//!   `principal.groups.exists(g, g == "ops")` are known inside their macro), a field of
//!   `principal`, `principal.actor` or `call` that the gateway never sets, a claim not named
//!   in `ingress.policy_claims`;
//! - a function that the crate's standard library does not have (`exist` for `exists`);
//! - an expression whose top level cannot give a boolean: a literal other than `true` or
//!   `false`, a list or map, arithmetic, a conversion (`int(..)`, `size(..)`), a value read
//!   from the input (`args.amount`, `principal.sub`: compare it instead), and a conditional
//!   (`_ ? _ : _`) whose branches are such.
//!
//! What it cannot tell: the types of `args` and `claims` (they are whatever the caller or the
//! issuer sent), so `args.amount > 1000` compiles whether `amount` will be a number, a string or
//! missing, and a function given arguments of the wrong type. Those are run-time errors, and the
//! gateway fails closed on them: an allow rule that errors (or gives a non-boolean) denies the
//! call, an approval condition that errors requires approval.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
};
use cel::common::value::Val;
use cel::{Context, Env, ExecutionError, Program, Value};

/// The variables an expression may read.
pub const VARIABLES: [&str; 5] = ["principal", "claims", "call", "args", "now"];

/// The fields of `principal`, `principal.actor` and `call` the gateway sets.
const PRINCIPAL_FIELDS: [&str; 6] = ["sub", "iss", "email", "groups", "client_id", "actor"];
const ACTOR_FIELDS: [&str; 3] = ["sub", "iss", "client_id"];
const CALL_FIELDS: [&str; 1] = ["function"];

/// CEL's macros: a call to one that is still a call was not expanded (wrong arguments).
const MACROS: [&str; 6] = ["has", "all", "exists", "exists_one", "map", "filter"];

/// Identifiers CEL resolves to types (`type(x) == int`), which are not variables.
const TYPE_NAMES: [&str; 12] = [
    "bool",
    "bytes",
    "double",
    "duration",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "timestamp",
    "type",
    "uint",
];

/// What [`Rule::compile`] needs to know of the deployment: the claims `claims` holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vocabulary<'a> {
    pub claims: &'a [String],
}

/// A compiled rule, checked as far as it can be without running it (see the module doc).
#[derive(Debug)]
pub struct Rule {
    source: String,
    program: Program,
    reads: BTreeSet<&'static str>,
}

/// Why an expression is refused: where in it (1-based line and column, counted in characters)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", position(*line, *column))]
pub struct RuleError {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

fn position(line: usize, column: usize) -> String {
    if line > 1 {
        format!("at line {line}, column {column} of the expression")
    } else {
        format!("at column {column} of the expression")
    }
}

/// What evaluating a rule for one call gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Holds,
    DoesNotHold,
    /// The rule could not be decided; the reason names the kind of failure and never a value
    /// (the arguments may be personal data).
    Undecided(&'static str),
}

/// The environment every rule is compiled and run in: CEL's standard library and macros.
/// Built once: `Env::stdlib()` registers hundreds of overloads.
pub fn environment() -> Arc<Env> {
    static ENVIRONMENT: OnceLock<Arc<Env>> = OnceLock::new();
    Arc::clone(ENVIRONMENT.get_or_init(|| Arc::new(Env::stdlib())))
}

impl Rule {
    pub fn compile(source: &str, vocabulary: Vocabulary<'_>) -> Result<Rule, RuleError> {
        let program = environment().compile(source).map_err(|errors| {
            let first = errors.errors.first();
            let (line, column) = first.map_or((1, 1), |error| {
                (
                    usize::try_from(error.pos.0).unwrap_or(1).max(1),
                    usize::try_from(error.pos.1).unwrap_or(1).max(1),
                )
            });
            RuleError {
                line,
                column,
                reason: first.map_or_else(
                    || "does not parse".to_string(),
                    |error| format!("does not parse: {}", error.msg),
                ),
            }
        })?;
        let mut checker = Checker {
            program: &program,
            source,
            vocabulary,
            bound: Vec::new(),
            reads: BTreeSet::new(),
        };
        checker.walk(program.expression())?;
        let reads = checker.reads;
        if let Kind::Not(what) = kind_of(&program.expression().expr, &[]) {
            // The whole expression is at fault: point at its start, not at its operator.
            let leading = &source[..source.len() - source.trim_start().len()];
            let line = 1 + leading.matches('\n').count();
            let column = 1 + leading.rsplit('\n').next().unwrap_or("").chars().count();
            return Err(RuleError {
                line,
                column,
                reason: format!(
                    "gives {what}, not true or false: make it a test, e.g. `args.amount > 1000` \
                     or `args.urgent == true`"
                ),
            });
        }
        Ok(Rule {
            source: source.to_string(),
            program,
            reads,
        })
    }

    /// The expression as written in the configuration.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression reads `variable` (one of [`VARIABLES`]): the gateway builds only
    /// the variables a rule reads, and decides a rule that does not read `args` before reading
    /// the request body.
    pub fn reads(&self, variable: &str) -> bool {
        self.reads.contains(variable)
    }

    /// Runs the rule in `context` (built from [`environment`], with the variables it reads).
    /// An error or a result other than a boolean is [`Outcome::Undecided`]: the caller fails
    /// closed.
    pub fn evaluate(&self, context: &Context<'_, '_>) -> Outcome {
        match self.program.execute(context) {
            Ok(Value::Bool(true)) => Outcome::Holds,
            Ok(Value::Bool(false)) => Outcome::DoesNotHold,
            Ok(_) => Outcome::Undecided("it gave a value that is not true or false"),
            Err(error) => Outcome::Undecided(describe(&error)),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The kind of an evaluation error, in words that never carry a value: cel-rust's messages
/// include the operands (`Unsupported binary operator '+': String("4111…")`).
fn describe(error: &ExecutionError) -> &'static str {
    match error {
        ExecutionError::NoSuchKey(_) | ExecutionError::IndexOutOfBounds(_) => {
            "a field or element it reads is missing"
        }
        ExecutionError::NoSuchOverload(_)
        | ExecutionError::UnexpectedType { .. }
        | ExecutionError::ValuesNotComparable(..)
        | ExecutionError::UnsupportedBinaryOperator(..)
        | ExecutionError::UnsupportedTargetType { .. }
        | ExecutionError::NotSupportedAsMethod { .. }
        | ExecutionError::UnsupportedIndex(..)
        | ExecutionError::UnsupportedKeyType(_) => "a value it reads has a type it cannot use",
        ExecutionError::UndeclaredReference(_) => "it names something that is not defined",
        ExecutionError::DivisionByZero(_)
        | ExecutionError::RemainderByZero(_)
        | ExecutionError::Overflow(..) => "its arithmetic failed",
        _ => "it failed",
    }
}

/// What the top level of an expression gives, as far as can be told without types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    /// Certainly not a boolean; names what it is.
    Not(&'static str),
    /// Cannot be told (a function the checker does not know the result of).
    Unknown,
}

/// `accumulators` are the comprehension accumulators in scope, with the kind of their initial
/// value: a macro's result is its accumulator (`exists` starts from `false`, `map` from `[]`).
fn kind_of(expr: &Expr, accumulators: &[(&str, Kind)]) -> Kind {
    match expr {
        Expr::Literal(LiteralValue::Boolean(_)) => Kind::Bool,
        Expr::Literal(LiteralValue::Null) => Kind::Not("null"),
        Expr::Literal(LiteralValue::String(_)) => Kind::Not("a string"),
        Expr::Literal(LiteralValue::Bytes(_)) => Kind::Not("bytes"),
        Expr::Literal(_) => Kind::Not("a number"),
        Expr::List(_) => Kind::Not("a list"),
        Expr::Map(_) | Expr::Struct(_) => Kind::Not("a map"),
        Expr::Ident(name) => accumulators
            .iter()
            .rev()
            .find(|(accumulator, _)| accumulator == name)
            .map_or(Kind::Not("a value read from the input"), |(_, kind)| *kind),
        Expr::Select(select) if select.test => Kind::Bool,
        Expr::Select(_) => Kind::Not("a value read from the input"),
        Expr::Comprehension(comprehension) => {
            let mut inner = accumulators.to_vec();
            inner.push((
                comprehension.accu_var.as_str(),
                kind_of(&comprehension.accu_init.expr, accumulators),
            ));
            kind_of(&comprehension.result.expr, &inner)
        }
        Expr::Call(call) => call_kind(call, accumulators),
        Expr::Unspecified => Kind::Unknown,
    }
}

fn call_kind(call: &CallExpr, accumulators: &[(&str, Kind)]) -> Kind {
    match call.func_name.as_str() {
        operators::LOGICAL_AND
        | operators::LOGICAL_OR
        | operators::LOGICAL_NOT
        | operators::NOT_STRICTLY_FALSE
        | operators::EQUALS
        | operators::NOT_EQUALS
        | operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS
        | operators::IN
        | "contains"
        | "startsWith"
        | "endsWith"
        | "matches"
        | "bool" => Kind::Bool,
        operators::ADD
        | operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO
        | operators::NEGATE => Kind::Not("the result of arithmetic"),
        operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT => {
            Kind::Not("a value read from the input")
        }
        operators::CONDITIONAL => {
            let kinds: Vec<Kind> = call
                .args
                .get(1..)
                .unwrap_or_default()
                .iter()
                .map(|branch| kind_of(&branch.expr, accumulators))
                .collect();
            if let Some(Kind::Not(what)) = kinds.iter().find(|kind| matches!(kind, Kind::Not(_))) {
                Kind::Not(what)
            } else if kinds.iter().all(|kind| *kind == Kind::Bool) {
                Kind::Bool
            } else {
                Kind::Unknown
            }
        }
        "size" | "int" | "uint" | "double" | "getFullYear" | "getMonth" | "getDayOfYear"
        | "getDayOfMonth" | "getDate" | "getDayOfWeek" | "getHours" | "getMinutes"
        | "getSeconds" | "getMilliseconds" => Kind::Not("a number"),
        "string" => Kind::Not("a string"),
        "bytes" => Kind::Not("bytes"),
        "timestamp" => Kind::Not("a timestamp"),
        "duration" => Kind::Not("a duration"),
        "type" => Kind::Not("a type"),
        _ => Kind::Unknown,
    }
}

/// Walks the expression: checks every variable and field it names, every function it calls,
/// and records which of [`VARIABLES`] it reads.
struct Checker<'a> {
    program: &'a Program,
    source: &'a str,
    vocabulary: Vocabulary<'a>,
    /// Comprehension variables in scope, innermost last.
    bound: Vec<&'a str>,
    reads: BTreeSet<&'static str>,
}

impl<'a> Checker<'a> {
    fn walk(&mut self, node: &'a IdedExpr) -> Result<(), RuleError> {
        match &node.expr {
            Expr::Ident(name) => self.variable(node, name),
            Expr::Select(select) => {
                self.field(node, &select.operand, &select.field)?;
                self.walk(&select.operand)
            }
            Expr::Call(call) => {
                if call.func_name == operators::INDEX
                    && let [operand, index] = call.args.as_slice()
                    && let Expr::Literal(LiteralValue::String(field)) = &index.expr
                {
                    self.field(index, operand, field.inner())?;
                }
                self.function(node, call)?;
                if let Some(target) = &call.target {
                    self.walk(target)?;
                }
                call.args
                    .iter()
                    .try_for_each(|argument| self.walk(argument))
            }
            Expr::List(list) => list
                .elements
                .iter()
                .try_for_each(|element| self.walk(element)),
            Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
                EntryExpr::MapEntry(entry) => {
                    self.walk(&entry.key)?;
                    self.walk(&entry.value)
                }
                EntryExpr::StructField(field) => self.walk(&field.value),
            }),
            Expr::Struct(structure) => structure.entries.iter().try_for_each(|entry| match &entry
                .expr
            {
                EntryExpr::MapEntry(entry) => {
                    self.walk(&entry.key)?;
                    self.walk(&entry.value)
                }
                EntryExpr::StructField(field) => self.walk(&field.value),
            }),
            Expr::Comprehension(comprehension) => {
                self.walk(&comprehension.iter_range)?;
                self.walk(&comprehension.accu_init)?;
                let depth = self.bound.len();
                self.bound.push(&comprehension.iter_var);
                if let Some(second) = &comprehension.iter_var2 {
                    self.bound.push(second);
                }
                self.bound.push(&comprehension.accu_var);
                let walked = [
                    &comprehension.loop_cond,
                    &comprehension.loop_step,
                    &comprehension.result,
                ]
                .into_iter()
                .try_for_each(|part| self.walk(part));
                self.bound.truncate(depth);
                walked
            }
            Expr::Literal(_) | Expr::Unspecified => Ok(()),
        }
    }

    fn variable(&mut self, node: &IdedExpr, name: &str) -> Result<(), RuleError> {
        if self.bound.contains(&name) {
            return Ok(());
        }
        if let Some(variable) = VARIABLES.iter().find(|variable| **variable == name) {
            self.reads.insert(variable);
            return Ok(());
        }
        if TYPE_NAMES.contains(&name) {
            return Ok(());
        }
        Err(self.error(
            node.id,
            false,
            format!(
                "unknown variable `{name}`: the variables are {}",
                VARIABLES.map(|variable| format!("`{variable}`")).join(", ")
            ),
        ))
    }

    /// Checks `operand.field` (or `operand["field"]`) where the operand is a variable whose
    /// fields are known.
    fn field(&self, node: &IdedExpr, operand: &IdedExpr, field: &str) -> Result<(), RuleError> {
        let path = match &operand.expr {
            Expr::Ident(name) if !self.bound.contains(&name.as_str()) => vec![name.as_str()],
            Expr::Select(select)
                if !select.test
                    && matches!(&select.operand.expr, Expr::Ident(name)
                        if name == "principal" && !self.bound.contains(&"principal")) =>
            {
                vec!["principal", select.field.as_str()]
            }
            _ => return Ok(()),
        };
        let known: Vec<&str> = match path.as_slice() {
            ["principal"] => PRINCIPAL_FIELDS.to_vec(),
            ["principal", "actor"] => ACTOR_FIELDS.to_vec(),
            ["call"] => CALL_FIELDS.to_vec(),
            ["claims"] => self.vocabulary.claims.iter().map(String::as_str).collect(),
            ["now"] => Vec::new(),
            _ => return Ok(()),
        };
        if known.contains(&field) {
            return Ok(());
        }
        let variable = path.join(".");
        let reason = match (path.as_slice(), known.is_empty()) {
            (["claims"], true) => format!(
                "`claims.{field}`: no claim is selected; name it in `ingress.policy_claims` to use it"
            ),
            (["claims"], false) => format!(
                "`claims.{field}` is not one of the claims named in `ingress.policy_claims` ({})",
                known.join(", ")
            ),
            (["now"], _) => format!(
                "`now` is a timestamp and has no field `{field}`: use its functions, e.g. `now.getHours(\"Europe/Paris\")`"
            ),
            _ => format!(
                "unknown field `{variable}.{field}`: `{variable}` has {}",
                known.join(", ")
            ),
        };
        Err(self.error(node.id, true, reason))
    }

    fn function(&self, node: &IdedExpr, call: &CallExpr) -> Result<(), RuleError> {
        let name = call.func_name.as_str();
        if name.starts_with('_') || name.starts_with('@') || name.starts_with('!') {
            return Ok(());
        }
        if name.starts_with('-') || function_is_known(name) {
            return Ok(());
        }
        let reason = if MACROS.contains(&name) {
            format!(
                "`{name}` is a macro and takes a variable and an expression, e.g. \
                 `principal.groups.exists(g, g == \"ops\")`"
            )
        } else {
            format!("unknown function `{name}`")
        };
        Err(self.error(node.id, call.target.is_some(), reason))
    }

    fn error(&self, id: u64, after_dot: bool, reason: String) -> RuleError {
        let (line, column) = locate(self.program, self.source, id, after_dot);
        RuleError {
            line,
            column,
            reason,
        }
    }
}

/// Whether CEL's standard library has a function (global or member) called `name`. cel-rust
/// does not expose its declarations, so this asks it: a call to a function it does not have
/// fails as an undeclared reference whatever the arguments, one it has with another error.
fn function_is_known(name: &str) -> bool {
    let environment = environment();
    let context = Context::with_env(Arc::clone(&environment));
    ["{0}()", "null.{0}()", "null.{0}(null)", "{0}(null)"]
        .iter()
        .any(|probe| {
            environment
                .compile(&probe.replace("{0}", name))
                .ok()
                .is_some_and(|program| {
                    !matches!(
                        program.execute(&context),
                        Err(ExecutionError::UndeclaredReference(reference)) if *reference == name
                    )
                })
        })
}

/// The 1-based line and column, in characters, of a node. cel-rust records the offset of a
/// field selection at its dot; `after_dot` moves past it, to the field name.
/// JSON (the arguments, a claim) as a CEL value that borrows its strings from `json`. Every
/// integral JSON number that fits is an `int` and any other a `double`, so `args.amount > 1000`
/// compares numbers whatever the JSON writer chose (CEL compares `int` and `double` with each
/// other).
pub fn json_val(json: &serde_json::Value) -> Box<dyn Val + '_> {
    use serde_json::Value as Json;
    match json {
        Json::Null => Box::new(CelNull),
        Json::Bool(boolean) => Box::new(CelBool::from(*boolean)),
        Json::Number(number) => match number.as_i64() {
            Some(integer) => Box::new(CelInt::from(integer)),
            None => Box::new(CelDouble::from(number.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(text) => Box::new(CelString::from(text.as_str())),
        Json::Array(items) => Box::new(CelList::from(
            items.iter().map(json_val).collect::<Vec<_>>(),
        )),
        Json::Object(fields) => json_map_val(fields),
    }
}

/// A JSON object as a CEL map, as [`json_val`].
pub fn json_map_val(fields: &serde_json::Map<String, serde_json::Value>) -> Box<dyn Val + '_> {
    Box::new(CelMap::from(
        fields
            .iter()
            .map(|(key, value)| (CelMapKey::from(key.as_str()), json_val(value)))
            .collect::<HashMap<_, _>>(),
    ))
}

/// `now` for CEL: a timestamp in UTC, from the time since the Unix epoch.
pub fn time_val(since_epoch: std::time::Duration) -> Box<dyn Val + 'static> {
    let micros = i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX);
    let utc = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    Box::new(CelTimestamp::from(utc.fixed_offset()))
}

fn locate(program: &Program, source: &str, id: u64, after_dot: bool) -> (usize, usize) {
    let Some((start, _)) = program.source_info().offset_for(id) else {
        return (1, 1);
    };
    let mut offset = usize::try_from(start).unwrap_or(0);
    let characters: Vec<char> = source.chars().collect();
    if after_dot && characters.get(offset) == Some(&'.') {
        offset += 1;
    }
    let before = &characters[..offset.min(characters.len())];
    let line = 1 + before
        .iter()
        .filter(|&&character| character == '\n')
        .count();
    let column = 1 + before
        .iter()
        .rev()
        .take_while(|&&character| character != '\n')
        .count();
    (line, column)
}

#[cfg(test)]
mod tests;
