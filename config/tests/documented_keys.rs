//! Every key the configuration accepts is documented in `docs/configuration.md`, and every key
//! documented there is accepted.
//!
//! The key list is not written out by hand: it is read from the structs themselves, by
//! deserializing them through [`Walker`], a serde deserializer that records each struct's field
//! names (the list serde's derive hands to `deserialize_struct`) and descends into every field.
//! A key added to a struct therefore shows up here without anyone remembering this test.
//!
//! A key `a.b.c` is documented when `docs/configuration.md` has a heading naming the table
//! (`` ## `[a.b]` ``, `` ### `[[a.b]]` ``) followed, before the next heading, by a table row whose
//! first cell is `` `c` ``. Map entries chosen by the deployment (`[functions.<name>]`,
//! `kafka.properties`) are written `<name>`.

use std::cell::RefCell;
use std::collections::BTreeSet;

use callproof_config::{
    BasicCredential, BearerCredential, Config, FunctionConfig, HeaderCredential,
};
use serde::Deserialize;
use serde::de::value::{Error, MapDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// Stands for a key chosen by the deployment (a function name, a Kafka property, ...).
const ANY: &str = "<name>";

/// The credential kinds this test walks; a new kind must be added here (and documented).
const CREDENTIAL_KINDS: [&str; 4] = ["none", "bearer", "header", "basic"];

const DOC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/configuration.md"
));

/// The dotted paths the walk met: tables (structs) and the other values.
#[derive(Default)]
struct Keys {
    tables: BTreeSet<String>,
    values: BTreeSet<String>,
}

/// A deserializer that produces a valid placeholder for every value and records the dotted path
/// of every key it is asked for.
#[derive(Clone, Copy)]
struct Walker<'a> {
    path: &'a str,
    keys: &'a RefCell<Keys>,
}

impl Walker<'_> {
    fn record(&self) {
        self.keys.borrow_mut().values.insert(self.path.to_string());
    }

    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

macro_rules! leaf {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.record();
            visitor.$visit($($value)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Walker<'_> {
    type Error = Error;

    leaf! {
        deserialize_bool => visit_bool(true),
        deserialize_i8 => visit_i64(1),
        deserialize_i16 => visit_i64(1),
        deserialize_i32 => visit_i64(1),
        deserialize_i64 => visit_i64(1),
        deserialize_u8 => visit_u64(1),
        deserialize_u16 => visit_u64(1),
        deserialize_u32 => visit_u64(1),
        deserialize_u64 => visit_u64(1),
        deserialize_f32 => visit_f64(0.5),
        deserialize_f64 => visit_f64(0.5),
        deserialize_char => visit_char('x'),
        // Valid wherever a string is parsed further (socket addresses).
        deserialize_str => visit_str("127.0.0.1:1"),
        deserialize_string => visit_str("127.0.0.1:1"),
        deserialize_bytes => visit_bytes(b"x"),
        deserialize_byte_buf => visit_bytes(b"x"),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str("x"),
        deserialize_ignored_any => visit_unit(),
    }

    /// Only internally tagged enums (`credential`) get here: a leaf, walked on its own below.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record();
        visitor.visit_map(MapDeserializer::new(std::iter::once(("kind", "none"))))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// A list's elements share the list's key (`masking.custom.name`).
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    /// A map with keys chosen by the deployment: one entry, `<name>`.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.child(ANY);
        visitor.visit_map(Fields {
            names: vec![ANY],
            walker: self,
            next_path: path,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if !self.path.is_empty() {
            self.keys.borrow_mut().tables.insert(self.path.to_string());
        }
        let mut names: Vec<&str> = fields.to_vec();
        names.reverse();
        visitor.visit_map(Fields {
            names,
            walker: self,
            next_path: String::new(),
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.record();
        visitor.visit_enum(StrDeserializer::<Error>::new(variants[0]))
    }
}

/// A sequence of one element.
struct OneElement<'a>(Option<Walker<'a>>);

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .take()
            .map(|walker| seed.deserialize(walker))
            .transpose()
    }
}

/// A map holding every field of a struct (or the one `<name>` entry of a map).
struct Fields<'a> {
    /// Still to give, last first.
    names: Vec<&'a str>,
    walker: Walker<'a>,
    next_path: String,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.names.pop() else {
            return Ok(None);
        };
        self.next_path = self.walker.child(name);
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(Walker {
            path: &self.next_path,
            keys: self.walker.keys,
        })
    }
}

/// Every key path the configuration accepts, tables included. A map of tables has a key per
/// table (`functions.<name>`); a map of values is one key (`kafka.properties`).
fn accepted_keys() -> BTreeSet<String> {
    let keys = RefCell::new(Keys::default());
    Config::deserialize(Walker {
        path: "",
        keys: &keys,
    })
    .expect("the walker builds a Config");
    // `credential` is an internally tagged enum, which serde reads without telling the field
    // names: walk each kind's struct. The kinds are checked against serde's own list below.
    let credential = format!("functions.{ANY}.credential");
    BearerCredential::deserialize(Walker {
        path: &credential,
        keys: &keys,
    })
    .unwrap();
    HeaderCredential::deserialize(Walker {
        path: &credential,
        keys: &keys,
    })
    .unwrap();
    BasicCredential::deserialize(Walker {
        path: &credential,
        keys: &keys,
    })
    .unwrap();
    let Keys { tables, mut values } = keys.into_inner();
    values.insert(format!("{credential}.kind"));
    let values = values.into_iter().map(|key| {
        key.strip_suffix(&format!(".{ANY}"))
            .map(str::to_string)
            .unwrap_or(key)
    });
    tables.iter().cloned().chain(values).collect()
}

/// The tables `docs/configuration.md` has a heading for, each with the text up to the next heading.
fn documented_sections() -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in DOC.lines() {
        if line.starts_with('#') {
            current = line
                .split('`')
                .nth(1)
                .filter(|quoted| quoted.starts_with('['))
                .map(|quoted| {
                    let table = quoted.trim_start_matches('[').trim_end_matches(']');
                    sections.push((table.to_string(), String::new()));
                    sections.len() - 1
                });
        } else if let Some(index) = current {
            sections[index].1.push_str(line);
            sections[index].1.push('\n');
        }
    }
    sections
}

/// The first cells of the table rows of a section: `` | `key` | ... `` gives `key`.
fn documented_rows(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_string())
        .filter(|key| {
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        })
        .collect()
}

#[test]
fn every_accepted_key_is_documented_and_every_documented_key_is_accepted() {
    let accepted = accepted_keys();
    // Not vacuous: the walk reaches every section (about a hundred keys today).
    assert!(
        accepted.len() > 80,
        "only {} keys found: {accepted:?}",
        accepted.len()
    );
    for key in [
        "ingress.approval_max_wait_secs",
        "functions.<name>.approval.webhook_url",
        "functions.<name>.credential.password_file",
        "masking.custom.negative_context",
        "storage.options",
        "evidence.verifier_key_file",
    ] {
        assert!(
            accepted.contains(key),
            "the walk missed {key}: {accepted:?}"
        );
    }

    let sections = documented_sections();
    let tables: BTreeSet<&str> = sections.iter().map(|(table, _)| table.as_str()).collect();
    let mut undocumented = Vec::new();
    let mut checked = 0;
    for key in &accepted {
        if tables.contains(key.as_str()) {
            continue;
        }
        // The longest enclosing table with a heading, and the rest of the key below it.
        let section = sections
            .iter()
            .filter(|(table, _)| key.starts_with(&format!("{table}.")))
            .max_by_key(|(table, _)| table.len());
        let Some((table, text)) = section else {
            undocumented.push(format!("{key} (no heading for its table)"));
            continue;
        };
        let rest = &key[table.len() + 1..];
        if documented_rows(text).contains(rest) {
            checked += 1;
        } else {
            undocumented.push(format!("{key} (no row `{rest}` under `[{table}]`)"));
        }
    }
    assert!(
        undocumented.is_empty(),
        "keys accepted by the configuration but not documented in docs/configuration.md:\n  {}",
        undocumented.join("\n  ")
    );
    assert!(checked > 70, "only {checked} keys were found in table rows");

    let mut unknown = Vec::new();
    for (table, text) in &sections {
        for row in documented_rows(text) {
            let key = format!("{table}.{row}");
            if !accepted.contains(&key) {
                unknown.push(key);
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "keys documented in docs/configuration.md that the configuration refuses: {unknown:?}"
    );
}

/// The credential kinds walked above are serde's whole list: a new kind fails here until it is
/// walked (and so documented).
#[test]
fn every_credential_kind_is_walked() {
    let error = toml::from_str::<FunctionConfig>(
        "upstream = \"http://x\"\ncredential = { kind = \"no-such-kind\" }\n",
    )
    .unwrap_err()
    .to_string();
    let expected = error
        .split_once("expected one of ")
        .map(|(_, list)| list)
        .unwrap_or_else(|| panic!("unexpected error: {error}"));
    let kinds: Vec<&str> = expected
        .lines()
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|kind| kind.trim().trim_matches('`'))
        .collect();
    assert_eq!(kinds, CREDENTIAL_KINDS, "{error}");
    for kind in CREDENTIAL_KINDS {
        assert!(
            DOC.contains(&format!("| `\"{kind}\"` |")),
            "credential kind {kind:?} has no row in docs/configuration.md"
        );
    }
}
