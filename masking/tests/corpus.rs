//! Labelled corpus generator and scorer for the accuracy test and `examples/accuracy.rs`.
//!
//! Records are JSON payloads or free text mixing real-looking PII (valid card numbers, SSNs,
//! IBANs, ...; cards also next to an expiry date, a CVV or an item count) with near misses a
//! careless detector would flag: Luhn-failing cards, 9xx and 666 SSNs, IBANs with a wrong
//! check or an unknown country, order IDs, timestamps, UUIDs, SKUs, ISBNs, version strings,
//! hashes, `::` in type signatures. Half the near misses have no negative context word, so
//! precision measures the validators and not only the context words. Every record knows how many values of each detector each JSON path holds;
//! the scorer compares that with the masker's findings, and also checks that no labelled
//! value survives in the output. Deterministic: same seed, same corpus.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use callproof_masking::{FieldRules, Masker};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

pub const SEED: u64 = 0xca11_f00f;
pub const N_RECORDS: usize = 6000;

pub enum Payload {
    Json(Value),
    Text(String),
}

pub struct Record {
    pub payload: Payload,
    /// (detector, path) -> number of labelled values.
    pub expected: BTreeMap<(String, String), u32>,
    /// The labelled values, to check none leaks into the output.
    pub secrets: Vec<String>,
}

/// One generated piece of text: a value with the phrase in front of it, and its label.
struct Item {
    text: String,
    value: String,
    detector: Option<&'static str>,
    /// A JSON key that fits the value (context for the detectors).
    key: &'static str,
}

pub fn generate(seed: u64, n_records: usize) -> Vec<Record> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n_records)
        .map(|i| {
            if i % 2 == 0 {
                json_record(&mut rng)
            } else {
                text_record(&mut rng)
            }
        })
        .collect()
}

fn items(rng: &mut StdRng) -> Vec<Item> {
    let n_pii = rng.gen_range(0..=3);
    let n_decoys = rng.gen_range(1..=3);
    let mut items: Vec<Item> = (0..n_pii).map(|_| pii(rng)).collect();
    items.extend((0..n_decoys).map(|_| decoy(rng)));
    items.shuffle(rng);
    items
}

fn text_record(rng: &mut StdRng) -> Record {
    let items = items(rng);
    let joiners = ["; ", ", ", ". ", " and ", "\n", " | "];
    let mut text = String::from(
        *["Note: ", "", "Support ticket. ", "log: "]
            .choose(rng)
            .unwrap(),
    );
    let mut record = empty_record();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push_str(joiners.choose(rng).unwrap());
        }
        text.push_str(&item.text);
        record.label(item, "");
    }
    text.push_str([".", "", " thanks", "!"].choose(rng).unwrap());
    record.payload = Payload::Text(text);
    record
}

fn json_record(rng: &mut StdRng) -> Record {
    let items = items(rng);
    let mut record = empty_record();
    let mut args = Map::new();
    let mut notes = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match rng.gen_range(0..4) {
            // In a field of its own, under a telling key.
            0 | 1 => {
                let key = format!("{}_{i}", item.key);
                record.label(&item, &format!("/args/{key}"));
                if item.detector == Some("CREDIT_CARD")
                    && item.value.bytes().all(|b| b.is_ascii_digit())
                    && rng.gen_bool(0.5)
                {
                    // Card numbers also arrive as JSON numbers.
                    args.insert(key, Value::from(item.value.parse::<u64>().unwrap()));
                } else {
                    args.insert(key, Value::String(item.text));
                }
            }
            // In free text inside the payload.
            _ => notes.push(item),
        }
    }
    if !notes.is_empty() {
        let text = notes
            .iter()
            .map(|n| n.text.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let path = format!("/args/messages/{}", 0);
        for note in &notes {
            record.label(note, &path);
        }
        args.insert("messages".into(), Value::Array(vec![Value::String(text)]));
    }
    record.payload = Payload::Json(serde_json::json!({
        "function": *["refund_payment", "lookup_customer", "send_email", "create_ticket"].choose(rng).unwrap(),
        "call_id": uuid(rng),
        "args": args,
        "attempt": rng.gen_range(1..4),
    }));
    record
}

fn empty_record() -> Record {
    Record {
        payload: Payload::Text(String::new()),
        expected: BTreeMap::new(),
        secrets: Vec::new(),
    }
}

impl Record {
    fn label(&mut self, item: &Item, path: &str) {
        if let Some(detector) = item.detector {
            *self
                .expected
                .entry((detector.to_owned(), path.to_owned()))
                .or_default() += 1;
            self.secrets.push(item.value.clone());
        }
    }
}

fn item(text: String, value: String, detector: Option<&'static str>, key: &'static str) -> Item {
    Item {
        text,
        value,
        detector,
        key,
    }
}

fn with_phrase(rng: &mut StdRng, phrases: &[&str], value: &str) -> String {
    let phrase = phrases.choose(rng).unwrap();
    if phrase.is_empty() {
        value.to_owned()
    } else {
        format!("{phrase} {value}")
    }
}

fn pii(rng: &mut StdRng) -> Item {
    match rng.gen_range(0..10) {
        0 => {
            let card = valid_card(rng);
            let v = format_card(rng, &card);
            let text = next_to_other_numbers(rng, &v);
            item(
                with_phrase(
                    rng,
                    &["card", "paid with", "cc:", "", "Visa/MC", "number"],
                    &text,
                ),
                v,
                Some("CREDIT_CARD"),
                "card_number",
            )
        }
        1 => {
            let (v, needs_context) = ssn(rng);
            let phrases: &[&str] = if needs_context {
                &["SSN", "ssn:", "social security no."]
            } else {
                &["SSN", "", "customer", "id"]
            };
            item(with_phrase(rng, phrases, &v), v, Some("US_SSN"), "ssn")
        }
        2 => {
            let v = iban(rng, true);
            item(
                with_phrase(rng, &["IBAN", "transfer to", "", "account"], &v),
                v,
                Some("IBAN"),
                "iban",
            )
        }
        3 => {
            let v = email(rng);
            item(
                with_phrase(rng, &["email", "contact", "", "send to"], &v),
                v,
                Some("EMAIL"),
                "email",
            )
        }
        4 => {
            let (v, needs_context) = phone(rng);
            let phrases: &[&str] = if needs_context {
                &["phone", "tel:", "call", "mobile"]
            } else {
                &["phone", "", "call me at", "reach"]
            };
            item(with_phrase(rng, phrases, &v), v, Some("PHONE"), "phone")
        }
        5 => {
            let v = ip(rng);
            item(
                with_phrase(rng, &["from", "client ip", "", "host"], &v),
                v,
                Some("IP_ADDRESS"),
                "client_ip",
            )
        }
        6 => {
            let v = format!(
                "{}{}",
                ["AKIA", "ASIA"].choose(rng).unwrap(),
                random_from(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
            );
            item(
                with_phrase(rng, &["aws_access_key_id=", "key", ""], &v),
                v,
                Some("AWS_ACCESS_KEY"),
                "access_key",
            )
        }
        7 => {
            let v = jwt(rng, true);
            item(
                with_phrase(rng, &["token", "jwt=", ""], &v),
                v,
                Some("JWT"),
                "session",
            )
        }
        8 => {
            let token = random_from(
                rng,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                12,
            ) + "7Qx"
                + &random_from(rng, b"abcdefghijklmnopqrstuvwxyz0123456789-._", 20);
            let text = format!(
                "{} {token}",
                ["Authorization: Bearer", "bearer", "Bearer"]
                    .choose(rng)
                    .unwrap()
            );
            item(text, token, Some("BEARER_TOKEN"), "headers")
        }
        _ => {
            let body: Vec<String> = (0..rng.gen_range(2..6))
                .map(|_| {
                    random_from(
                        rng,
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                        64,
                    )
                })
                .collect();
            let kind = ["RSA ", "EC ", "", "OPENSSH "].choose(rng).unwrap();
            let v = format!(
                "-----BEGIN {kind}PRIVATE KEY-----\n{}\n-----END {kind}PRIVATE KEY-----",
                body.join("\n")
            );
            item(v.clone(), v, Some("PRIVATE_KEY"), "key_pem")
        }
    }
}

/// A card as it often arrives: followed by an expiry date or a CVV (four digits for Amex),
/// or preceded by an item count; half the time on its own.
fn next_to_other_numbers(rng: &mut StdRng, card: &str) -> String {
    let is_amex = card.starts_with("34") || card.starts_with("37");
    match rng.gen_range(0..6) {
        0 => format!(
            "{card} {:02}/{}",
            rng.gen_range(1..13),
            rng.gen_range(25..32)
        ),
        1 if is_amex => format!("{card} {}", digits(rng, 4)),
        1 => format!("{card} {}", digits(rng, 3)),
        2 => format!("item {} {card}", rng.gen_range(1..20)),
        _ => card.to_owned(),
    }
}

fn decoy(rng: &mut StdRng) -> Item {
    // Half the near misses carry a word that lowers confidence ("order", "SKU", "version");
    // the other half carry none, so that only the validators can reject them.
    if rng.gen_bool(0.5) {
        decoy_with_context(rng)
    } else {
        decoy_without_context(rng)
    }
}

/// Near misses with no negative context word in front of them.
fn decoy_without_context(rng: &mut StdRng) -> Item {
    let none = |text: String, key| item(text, String::new(), None, key);
    let neutral = ["", "ref", "see", "id"];
    match rng.gen_range(0..10) {
        0 => {
            // A Luhn-failing card next to an expiry date, a CVV or an item count.
            let mut digits = valid_card(rng).into_bytes();
            let last = digits.len() - 1;
            digits[last] = b'0' + (digits[last] - b'0' + rng.gen_range(1..10)) % 10;
            let v = format_card(rng, &String::from_utf8(digits).unwrap());
            let text = next_to_other_numbers(rng, &v);
            none(with_phrase(rng, &neutral, &text), "reference")
        }
        1 => {
            // Luhn-valid, card-shaped, but no issuer uses the prefix.
            let prefix = *["1", "7", "8", "9", "0"].choose(rng).unwrap();
            let mut number = prefix.to_owned() + &digits(rng, 14);
            let check = (0..10)
                .map(|check| format!("{number}{check}"))
                .find(|candidate| luhn(candidate))
                .unwrap();
            number = check;
            let v = format_card(rng, &number);
            none(with_phrase(rng, &neutral, &v), "reference")
        }
        2 => {
            // A long reference grouped in fours: Luhn-valid card-length runs sit inside it.
            let n_groups = rng.gen_range(5..7);
            let groups: Vec<String> = (0..n_groups).map(|_| digits(rng, 4)).collect();
            let v = groups.join(*[" ", "-"].choose(rng).unwrap());
            none(with_phrase(rng, &neutral, &v), "reference")
        }
        3 => {
            // SSN-shaped with an area never issued.
            let area = match rng.gen_range(0..3) {
                0 => format!("9{:02}", rng.gen_range(0..100)),
                1 => "666".to_owned(),
                _ => "000".to_owned(),
            };
            let v = format!(
                "{area}-{:02}-{:04}",
                rng.gen_range(1..100),
                rng.gen_range(1..10000)
            );
            none(with_phrase(rng, &neutral, &v), "reference")
        }
        4 => {
            // IBAN-shaped, check digits right, but no such country.
            let v = iban_of_unknown_country(rng);
            none(with_phrase(rng, &neutral, &v), "reference")
        }
        5 => {
            // Ten-digit and order-style numbers with nothing saying "phone" or "order".
            let v = match rng.gen_range(0..4) {
                0 => format!("#{}", rng.gen_range(2_000_000_000u64..9_999_999_999)),
                1 => format!("ORD-{:08}", rng.gen_range(0..100_000_000)),
                2 => format!(
                    "INV-{}-{:06}",
                    rng.gen_range(2015..2026),
                    rng.gen_range(0..1_000_000)
                ),
                _ => format!("{}", rng.gen_range(2_000_000_000u64..9_999_999_999)),
            };
            none(with_phrase(rng, &neutral, &v), "reference")
        }
        6 => none(
            // Dotted numbers that are not addresses: five parts, or an octet over 255.
            if rng.gen_bool(0.5) {
                format!(
                    "{}.{}.{}.{}.{}",
                    rng.gen_range(0..20),
                    rng.gen_range(0..20),
                    rng.gen_range(0..100),
                    rng.gen_range(0..1000),
                    rng.gen_range(0..100)
                )
            } else {
                format!(
                    "{}.{}.{}.{}",
                    rng.gen_range(256..1000),
                    rng.gen_range(0..256),
                    rng.gen_range(0..256),
                    rng.gen_range(0..256)
                )
            },
            "reference",
        ),
        7 => none(
            // Type signatures and paths that contain "::".
            (*[
                "x :: Int",
                "f :: a -> b",
                "use a::b",
                "dead::beef",
                "cafe::face",
                "see :: here",
            ]
            .choose(rng)
            .unwrap())
            .to_owned(),
            "signature",
        ),
        8 => none(
            // ISBN-13 without the word ISBN.
            format!(
                "978-{}-{:02}-{:06}-{}",
                rng.gen_range(0..10),
                rng.gen_range(0..100),
                rng.gen_range(0..1_000_000),
                rng.gen_range(0..10)
            ),
            "reference",
        ),
        _ => none(
            // Timestamps and epoch milliseconds, bare.
            if rng.gen_bool(0.5) {
                format!(
                    "{}-{:02}-{:02} {:02}:{:02}:{:02}",
                    rng.gen_range(2015..2026),
                    rng.gen_range(1..13),
                    rng.gen_range(1..29),
                    rng.gen_range(0..24),
                    rng.gen_range(0..60),
                    rng.gen_range(0..60)
                )
            } else {
                format!("{}", rng.gen_range(1_500_000_000_000u64..1_800_000_000_000))
            },
            "reference",
        ),
    }
}

/// Near misses, most with a word that says what they are ("order", "SKU", "version").
fn decoy_with_context(rng: &mut StdRng) -> Item {
    let none = |text: String, key| item(text, String::new(), None, key);
    match rng.gen_range(0..16) {
        0 => {
            // A card number with a wrong check digit.
            let mut digits = valid_card(rng).into_bytes();
            let last = digits.len() - 1;
            digits[last] = b'0' + (digits[last] - b'0' + rng.gen_range(1..10)) % 10;
            let v = format_card(rng, &String::from_utf8(digits).unwrap());
            none(with_phrase(rng, &["card", "", "ref"], &v), "card_number")
        }
        1 => {
            let area = [
                format!("9{:02}", rng.gen_range(0..100)),
                "666".into(),
                "000".into(),
            ]
            .choose(rng)
            .unwrap()
            .clone();
            none(
                format!(
                    "ssn {area}-{:02}-{:04}",
                    rng.gen_range(1..100),
                    rng.gen_range(1..10000)
                ),
                "ssn",
            )
        }
        2 => {
            let mut v = iban(rng, false);
            v.push_str("");
            none(with_phrase(rng, &["IBAN", ""], &v), "iban")
        }
        3 => none(
            format!("order ORD-{:08}", rng.gen_range(0..100_000_000)),
            "order_id",
        ),
        4 => none(
            format!("order #{}", rng.gen_range(2_000_000_000u64..9_999_999_999)),
            "order_id",
        ),
        5 => none(
            format!(
                "invoice INV-{}-{:06}",
                rng.gen_range(2015..2026),
                rng.gen_range(0..1_000_000)
            ),
            "invoice",
        ),
        6 => {
            let ts = format!(
                "{}-{:02}-{:02}T{:02}:{:02}:{:02}{}",
                rng.gen_range(2015..2026),
                rng.gen_range(1..13),
                rng.gen_range(1..29),
                rng.gen_range(0..24),
                rng.gen_range(0..60),
                rng.gen_range(0..60),
                [".123Z", "Z", "+02:00", ""].choose(rng).unwrap()
            );
            none(with_phrase(rng, &["at", "created", ""], &ts), "created_at")
        }
        7 => none(
            format!(
                "ts {}",
                rng.gen_range(1_500_000_000_000u64..1_800_000_000_000)
            ),
            "ts",
        ),
        8 => none(format!("request {}", uuid(rng)), "request_id"),
        9 => none(
            format!(
                "SKU {}-{}-{:04}",
                rng.gen_range(200..999),
                rng.gen_range(200..999),
                rng.gen_range(0..10000)
            ),
            "sku",
        ),
        10 => none(
            format!(
                "ISBN 978-{}-{:02}-{:06}-{}",
                rng.gen_range(0..10),
                rng.gen_range(0..100),
                rng.gen_range(0..1_000_000),
                rng.gen_range(0..10)
            ),
            "isbn",
        ),
        11 => none(
            format!(
                "version {}.{}.{}.{}",
                rng.gen_range(0..20),
                rng.gen_range(0..20),
                rng.gen_range(0..100),
                rng.gen_range(0..1000)
            ),
            "version",
        ),
        12 => none(
            format!("sha256 {}", random_from(rng, b"0123456789abcdef", 64)),
            "digest",
        ),
        13 => none(
            format!(
                "total ${}.{:02} for {} items",
                rng.gen_range(1..100_000),
                rng.gen_range(0..100),
                rng.gen_range(1..50)
            ),
            "amount",
        ),
        14 => {
            // Near-miss secrets: a key ID one character short, a "JWT" whose parts are not JSON.
            if rng.gen_bool(0.5) {
                none(
                    format!(
                        "key AKIA{}",
                        random_from(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 15)
                    ),
                    "access_key",
                )
            } else {
                none(format!("token {}", jwt(rng, false)), "session")
            }
        }
        _ => none(
            format!(
                "{} at {:02}:{:02}",
                ["user@localhost", "@support_team", "admin@", "mailto:"]
                    .choose(rng)
                    .unwrap(),
                rng.gen_range(0..24),
                rng.gen_range(0..60)
            ),
            "handle",
        ),
    }
}

fn random_from(rng: &mut StdRng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(*alphabet.choose(rng).unwrap()))
        .collect()
}

fn digits(rng: &mut StdRng, len: usize) -> String {
    random_from(rng, b"0123456789", len)
}

fn valid_card(rng: &mut StdRng) -> String {
    let (prefix, len) = *[
        ("4", 16),
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("65", 16),
        ("3530", 16),
        ("4", 13),
    ]
    .choose(rng)
    .unwrap();
    let mut number = prefix.to_owned() + &digits(rng, len - prefix.len() - 1);
    for check in 0..10 {
        let candidate = format!("{number}{check}");
        if luhn(&candidate) {
            number = candidate;
            break;
        }
    }
    number
}

fn luhn(number: &str) -> bool {
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn format_card(rng: &mut StdRng, digits: &str) -> String {
    let separator = *["", " ", "-"].choose(rng).unwrap();
    if separator.is_empty() {
        return digits.to_owned();
    }
    let groups: Vec<usize> = if digits.len() == 15 {
        vec![4, 6, 5]
    } else {
        vec![4; digits.len().div_ceil(4)]
    };
    let mut out = Vec::new();
    let mut at = 0;
    for g in groups {
        let end = (at + g).min(digits.len());
        out.push(&digits[at..end]);
        at = end;
    }
    out.join(separator)
}

/// A valid SSN and whether it needs a context word (bare nine digits do).
fn ssn(rng: &mut StdRng) -> (String, bool) {
    let area = loop {
        let area = rng.gen_range(1..900);
        if area != 666 {
            break area;
        }
    };
    let (group, serial) = (rng.gen_range(1..100), rng.gen_range(1..10000));
    match rng.gen_range(0..6) {
        0 => (format!("{area:03}{group:02}{serial:04}"), true),
        1 => (format!("{area:03} {group:02} {serial:04}"), true),
        _ => (format!("{area:03}-{group:02}-{serial:04}"), false),
    }
}

fn iban(rng: &mut StdRng, valid: bool) -> String {
    let (country, bban) = match rng.gen_range(0..6) {
        0 => ("DE", digits(rng, 18)),
        1 => (
            "GB",
            random_from(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4) + &digits(rng, 14),
        ),
        2 => ("FR", digits(rng, 23)),
        3 => (
            "NL",
            random_from(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4) + &digits(rng, 10),
        ),
        4 => ("ES", digits(rng, 20)),
        _ => (
            "IT",
            random_from(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 1) + &digits(rng, 22),
        ),
    };
    let numeric: String = format!("{bban}{country}00")
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                c.to_string()
            } else {
                (c as u32 - 'A' as u32 + 10).to_string()
            }
        })
        .collect();
    let remainder = numeric
        .bytes()
        .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    let mut check = 98 - remainder;
    if !valid {
        check = (check + rng.gen_range(1..97)) % 97;
    }
    let compact = format!("{country}{check:02}{bban}");
    if rng.gen_bool(0.5) {
        return compact;
    }
    compact
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

/// IBAN-shaped, with check digits that pass mod 97, under a country code no registry has.
fn iban_of_unknown_country(rng: &mut StdRng) -> String {
    let country = *["XA", "QZ", "ZZ", "AA", "UK"].choose(rng).unwrap();
    let bban = digits(rng, 18);
    let numeric: String = format!("{bban}{country}00")
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                c.to_string()
            } else {
                (c as u32 - 'A' as u32 + 10).to_string()
            }
        })
        .collect();
    let remainder = numeric
        .bytes()
        .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    format!("{country}{:02}{bban}", 98 - remainder)
}

fn email(rng: &mut StdRng) -> String {
    let first = [
        "ann", "bob", "carla", "dmitri", "eve", "fatima", "guo", "hiro",
    ]
    .choose(rng)
    .unwrap();
    let last = ["smith", "o.neil", "garcia", "nguyen", "muller", "k"]
        .choose(rng)
        .unwrap();
    let tag = if rng.gen_bool(0.2) {
        format!("+{}", rng.gen_range(1..99))
    } else {
        String::new()
    };
    let domain = [
        "example.com",
        "mail.example.org",
        "corp-mail.co.uk",
        "uni.edu",
        "x.io",
    ]
    .choose(rng)
    .unwrap();
    format!("{first}.{last}{tag}@{domain}")
}

/// A phone number and whether it needs a context word.
fn phone(rng: &mut StdRng) -> (String, bool) {
    let area = rng.gen_range(200..1000);
    let exchange = rng.gen_range(200..1000);
    let line = rng.gen_range(0..10000);
    match rng.gen_range(0..16) {
        0 => (format!("+1 {area} {exchange} {line:04}"), false),
        1 => (
            format!(
                "+44 20 {} {}",
                rng.gen_range(1000..10000),
                rng.gen_range(1000..10000)
            ),
            false,
        ),
        2 => (
            format!("+49{}{}", rng.gen_range(150..180), digits(rng, 8)),
            false,
        ),
        3 => (format!("({area}) {exchange}-{line:04}"), false),
        4 => (format!("{area}-{exchange}-{line:04}"), false),
        5 => (format!("{area}{exchange}{line:04}"), true),
        // National formats of the UK, the EU's large countries, India and Australia, and a
        // North American number whose exchange starts with 0 or 1.
        7 => (
            format!("(020) 7{} {}", digits(rng, 3), digits(rng, 4)),
            false,
        ),
        8 => (
            format!("07{} {}", rng.gen_range(400..1000), digits(rng, 6)),
            false,
        ),
        9 => (format!("02079{}", digits(rng, 6)), true),
        10 => (
            format!(
                "0{} {} {} {} {}",
                rng.gen_range(1..6),
                rng.gen_range(10..100),
                digits(rng, 2),
                digits(rng, 2),
                digits(rng, 2)
            ),
            false,
        ),
        11 => (
            format!("030 {}", rng.gen_range(20_000_000..100_000_000)),
            false,
        ),
        12 => (
            format!("({area}) {:03}-{line:04}", rng.gen_range(0..200)),
            false,
        ),
        13 => (format!("9{} {}", digits(rng, 4), digits(rng, 5)), false),
        14 => (
            format!("04{} {} {}", digits(rng, 2), digits(rng, 3), digits(rng, 3)),
            false,
        ),
        _ => (
            format!(
                "020 {} {}",
                rng.gen_range(1000..10000),
                rng.gen_range(1000..10000)
            ),
            true,
        ),
    }
}

fn ip(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.7) {
        let o: [u8; 4] = rng.r#gen();
        return format!("{}.{}.{}.{}", o[0].max(1), o[1], o[2], o[3]);
    }
    let groups: Vec<String> = (0..8)
        .map(|_| format!("{:x}", rng.gen_range(1..0xffffu32)))
        .collect();
    if rng.gen_bool(0.5) {
        groups.join(":")
    } else {
        format!("2001:db8::{}", groups[5..].join(":"))
    }
}

fn jwt(rng: &mut StdRng, valid: bool) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    if !valid {
        // Starts like a JWT but the parts decode to garbage.
        return format!(
            "eyJ{}.eyJ{}.{}",
            random_from(rng, b"abcdefghijklmnop", 10),
            random_from(rng, b"qrstuvwxyz", 12),
            random_from(rng, b"abc", 8)
        );
    }
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64(format!(
        r#"{{"sub":"{}","iat":{}}}"#,
        rng.gen_range(1..1_000_000),
        rng.gen_range(1_600_000_000u64..1_800_000_000)
    )
    .as_bytes());
    let signature: [u8; 32] = rng.r#gen();
    format!("{header}.{payload}.{}", b64(&signature))
}

fn uuid(rng: &mut StdRng) -> String {
    let hex = random_from(rng, b"0123456789abcdef", 32);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Per-detector counts of true positives, false positives and false negatives.
#[derive(Default)]
pub struct Scores {
    pub by_detector: BTreeMap<String, (u64, u64, u64)>,
    /// Labelled values found verbatim in the masked output.
    pub leaks: u64,
    pub n_labelled: u64,
}

pub fn evaluate(masker: &Masker, records: &[Record]) -> Scores {
    let mut scores = Scores::default();
    for record in records {
        let (findings, output) = match &record.payload {
            Payload::Json(doc) => {
                let mut doc = doc.clone();
                let findings = masker
                    .mask_json(&mut doc, &FieldRules::empty(), true)
                    .expect("corpus documents are shallow");
                (findings, doc.to_string())
            }
            Payload::Text(text) => {
                let (masked, findings) = masker.mask_text(text);
                (findings, masked.into_owned())
            }
        };
        let mut found: BTreeMap<(String, String), u32> = BTreeMap::new();
        for finding in findings {
            *found.entry((finding.detector, finding.path)).or_default() += finding.count;
        }
        let keys: std::collections::BTreeSet<_> = found
            .keys()
            .chain(record.expected.keys())
            .cloned()
            .collect();
        for key in keys {
            let expected = u64::from(record.expected.get(&key).copied().unwrap_or(0));
            let got = u64::from(found.get(&key).copied().unwrap_or(0));
            let tp = expected.min(got);
            let entry = scores.by_detector.entry(key.0.clone()).or_default();
            entry.0 += tp;
            entry.1 += got - tp;
            entry.2 += expected - tp;
        }
        for secret in &record.secrets {
            scores.n_labelled += 1;
            // serde_json escapes newlines: compare on the first line for PEM blocks.
            if output.contains(secret.lines().next().unwrap_or_default()) {
                scores.leaks += 1;
            }
        }
    }
    scores
}

impl Scores {
    pub fn precision(&self, detector: &str) -> f64 {
        let (tp, fp, _) = self.by_detector.get(detector).copied().unwrap_or_default();
        ratio(tp, tp + fp)
    }

    pub fn recall(&self, detector: &str) -> f64 {
        let (tp, _, fn_) = self.by_detector.get(detector).copied().unwrap_or_default();
        ratio(tp, tp + fn_)
    }

    /// Labelled values of `detector` in the corpus (true positives plus misses).
    pub fn labelled(&self, detector: &str) -> u64 {
        let (tp, _, fn_) = self.by_detector.get(detector).copied().unwrap_or_default();
        tp + fn_
    }

    pub fn totals(&self) -> (u64, u64, u64) {
        self.by_detector
            .values()
            .fold((0, 0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1, acc.2 + v.2))
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        1.0
    } else {
        numerator as f64 / denominator as f64
    }
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// The Markdown table of `masking/README.md`.
impl fmt::Display for Scores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| detector | labelled | TP | FP | FN | precision | recall | F1 |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, (tp, fp, fn_): (u64, u64, u64)| {
            let (p, r) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
            writeln!(
                f,
                "| {name} | {} | {tp} | {fp} | {fn_} | {p:.4} | {r:.4} | {:.4} |",
                tp + fn_,
                f1(p, r)
            )
        };
        for (name, counts) in &self.by_detector {
            row(f, name, *counts)?;
        }
        row(f, "**all**", self.totals())?;
        writeln!(
            f,
            "\nlabelled values left verbatim in the output: {} of {}",
            self.leaks, self.n_labelled
        )
    }
}

/// Phone numbers as Faker's phone providers write them for eleven locales, and near misses
/// (dates, times, amounts, order ids, ISBNs, ...) generated beside them; written once by
/// `tests/phones/generate.py` (fixed seed) and committed, so no Python runs at test time.
pub const FAKER_PHONES: &str = include_str!("phones/faker_phones.tsv");

/// Keys a phone number is filed under; each value is tested under every one in turn.
pub const PHONE_KEYS: [&str; 8] = [
    "phone",
    "mobile",
    "tel",
    "telephone",
    "phone_number",
    "fax",
    "contactPhone",
    "mobile-phone",
];

/// Phrases with a context word in front of a number in free text.
const PHONE_PHRASES: [&str; 7] = [
    "call me on",
    "phone:",
    "Tel.",
    "mobile",
    "fax",
    "reach me by phone at",
    "WhatsApp",
];

/// Keys near misses are filed under: none says "phone".
const NEAR_MISS_KEYS: [&str; 6] = ["created_at", "amount", "order_id", "ref", "isbn", "value"];

/// One line of `FAKER_PHONES`.
pub struct FakerValue {
    pub locale: &'static str,
    pub is_phone: bool,
    pub value: &'static str,
}

pub fn faker_values() -> Vec<FakerValue> {
    FAKER_PHONES
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut columns = line.splitn(3, '\t');
            let (locale, kind, value) = (
                columns.next().unwrap(),
                columns.next().unwrap(),
                columns.next().unwrap(),
            );
            assert!(kind == "phone" || kind == "near_miss", "{line}");
            FakerValue {
                locale,
                is_phone: kind == "phone",
                value,
            }
        })
        .collect()
}

/// Phones found per locale, in three settings, and near misses left alone.
#[derive(Default)]
pub struct PhoneScores {
    /// locale -> (numbers, found under a phone key, found after a context word, found bare).
    pub by_locale: BTreeMap<&'static str, [u64; 4]>,
    /// (near misses, left verbatim and unreported in text, under a non-phone key).
    pub near_misses: [u64; 3],
    /// What was missed (bare numbers too) or masked wrongly, printed by the test.
    pub misses: Vec<String>,
}

/// True when `output` masks `value` completely (no digit of it left) and reports it.
fn masked_whole(output: &str, findings: &[callproof_masking::Finding]) -> bool {
    !output.bytes().any(|b| b.is_ascii_digit()) && findings.iter().any(|f| f.detector == "PHONE")
}

pub fn evaluate_phones(masker: &Masker) -> PhoneScores {
    let mut scores = PhoneScores::default();
    for (i, entry) in faker_values().into_iter().enumerate() {
        if entry.is_phone {
            let row = scores.by_locale.entry(entry.locale).or_default();
            row[0] += 1;
            // Under a phone-like key, the whole value.
            let key = PHONE_KEYS[i % PHONE_KEYS.len()];
            let mut doc = serde_json::json!({ key: entry.value });
            let findings = masker
                .mask_json(&mut doc, &FieldRules::empty(), true)
                .unwrap();
            if masked_whole(doc[key].as_str().unwrap_or_default(), &findings) {
                row[1] += 1;
            } else {
                scores
                    .misses
                    .push(format!("{} under `{key}`: {}", entry.locale, entry.value));
            }
            // In free text after a context word.
            let phrase = PHONE_PHRASES[i % PHONE_PHRASES.len()];
            let text = format!("{phrase} {} tomorrow", entry.value);
            let (masked, findings) = masker.mask_text(&text);
            if masked_whole(&masked, &findings) {
                row[2] += 1;
            } else {
                scores.misses.push(format!(
                    "{} after `{phrase}`: {}",
                    entry.locale, entry.value
                ));
            }
            // Bare in free text: no word says what it is.
            let text = format!("see {} tomorrow", entry.value);
            let (masked, findings) = masker.mask_text(&text);
            if masked_whole(&masked, &findings) {
                row[3] += 1;
            } else {
                scores
                    .misses
                    .push(format!("{} bare: {}", entry.locale, entry.value));
            }
        } else {
            scores.near_misses[0] += 1;
            let text = format!("see {} now", entry.value);
            let (masked, findings) = masker.mask_text(&text);
            if masked == text && findings.is_empty() {
                scores.near_misses[1] += 1;
            } else {
                scores
                    .misses
                    .push(format!("near miss masked in text: {}", entry.value));
            }
            let key = NEAR_MISS_KEYS[i % NEAR_MISS_KEYS.len()];
            let mut doc = serde_json::json!({ key: entry.value });
            let findings = masker
                .mask_json(&mut doc, &FieldRules::empty(), true)
                .unwrap();
            if doc[key] == entry.value && findings.is_empty() {
                scores.near_misses[2] += 1;
            } else {
                scores
                    .misses
                    .push(format!("near miss masked under `{key}`: {}", entry.value));
            }
        }
    }
    scores
}

impl PhoneScores {
    /// Recall of one setting (1 = under a key, 2 = after a context word, 3 = bare) over
    /// `locale`, or over every locale for `None`.
    pub fn recall(&self, locale: Option<&str>, setting: usize) -> f64 {
        let (found, n) = self
            .by_locale
            .iter()
            .filter(|(l, _)| locale.is_none_or(|locale| locale == **l))
            .fold((0, 0), |(found, n), (_, row)| {
                (found + row[setting], n + row[0])
            });
        ratio(found, n)
    }
}

/// The phone table of `masking/README.md`.
impl fmt::Display for PhoneScores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| locale | numbers | under a phone key | after a context word | bare in text |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|")?;
        for (locale, row) in &self.by_locale {
            writeln!(
                f,
                "| {locale} | {} | {:.3} | {:.3} | {:.3} |",
                row[0],
                ratio(row[1], row[0]),
                ratio(row[2], row[0]),
                ratio(row[3], row[0])
            )?;
        }
        let n: u64 = self.by_locale.values().map(|row| row[0]).sum();
        writeln!(
            f,
            "| **all** | {n} | {:.3} | {:.3} | {:.3} |",
            self.recall(None, 1),
            self.recall(None, 2),
            self.recall(None, 3)
        )?;
        let [n_near, in_text, under_key] = self.near_misses;
        writeln!(
            f,
            "\nnear misses left verbatim: {in_text} of {n_near} in text, {under_key} of {n_near} under other keys"
        )
    }
}
