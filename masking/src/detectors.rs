//! The built-in detectors: a pattern that finds candidates cheaply, then a validator that
//! decides, from the candidate and its surroundings, whether it is the real thing and how
//! confident we are.
//!
//! Patterns use explicit ASCII classes and ASCII word boundaries (`(?-u:\b)`): Unicode `\d`
//! and `\b` would match Arabic-Indic digits and force the slow engine on non-ASCII text.

use std::net::Ipv6Addr;
use std::str::FromStr;

use base64::Engine as _;

use crate::checksum::{luhn, mod97};
use crate::phone::{self, Shape};

/// A validated match: the span to mask (which may be narrower than the pattern's match,
/// e.g. only the token after `Bearer `) and its confidence before context words.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Accepted {
    pub start: usize,
    pub end: usize,
    pub confidence: f32,
}

/// Validates the pattern match `text[start..end]`, looking at the text around it if needed.
pub(crate) type ValidateFn = fn(text: &str, start: usize, end: usize) -> Option<Accepted>;

/// How a value is normalized before it is keyed into an HMAC token, so that
/// `4111 1111 1111 1111` and `4111-1111-1111-1111` give the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Normalize {
    /// Keep as is.
    Verbatim,
    /// Keep letters and digits, upper-cased.
    Alphanumeric,
    /// Lower-case (e-mail addresses compare case-insensitively in practice).
    Lowercase,
}

pub(crate) struct BuiltinSpec {
    pub name: &'static str,
    pub pattern: &'static str,
    pub validate: ValidateFn,
    pub context: &'static [&'static str],
    pub negative_context: &'static [&'static str],
    pub normalize: Normalize,
}

/// Words that make a number look like a business identifier rather than personal data.
const IDENTIFIER_WORDS: &[&str] = &[
    "order", "invoice", "tracking", "sku", "serial", "isbn", "part no", "ticket", "build",
];

/// The built-in detectors, in the order findings report them.
pub(crate) const BUILTINS: &[BuiltinSpec] = &[
    BuiltinSpec {
        name: "CREDIT_CARD",
        pattern: r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
        validate: credit_card,
        context: &[
            "card",
            "credit",
            "visa",
            "mastercard",
            "amex",
            "payment",
            "pan",
            "cc",
        ],
        negative_context: IDENTIFIER_WORDS,
        normalize: Normalize::Alphanumeric,
    },
    BuiltinSpec {
        name: "US_SSN",
        pattern: r"(?-u:\b)[0-9]{3}[- ]?[0-9]{2}[- ]?[0-9]{4}(?-u:\b)",
        validate: us_ssn,
        context: &["ssn", "social security", "social sec", "taxpayer"],
        negative_context: IDENTIFIER_WORDS,
        normalize: Normalize::Alphanumeric,
    },
    BuiltinSpec {
        name: "IBAN",
        pattern: r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
        validate: iban,
        context: &["iban", "bank", "account", "transfer", "sepa"],
        negative_context: &[],
        normalize: Normalize::Alphanumeric,
    },
    BuiltinSpec {
        name: "EMAIL",
        pattern: r"(?-u:\b)[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?-u:\b)",
        validate: email,
        context: &["email", "e-mail", "mail", "contact"],
        negative_context: &[],
        normalize: Normalize::Lowercase,
    },
    BuiltinSpec {
        name: "PHONE",
        pattern: concat!(
            // International: + or 00, country code, 8 to 15 digits with the usual separators,
            // "(0)" for the trunk prefix: +44 (0)20 7946 0018, 0049 30 1234567.
            r"(?:\+|(?-u:\b)00)[1-9][0-9]{0,3}(?:[ .\-/]?(?:\([0-9]{1,4}\)|[0-9]{1,6})){1,7}",
            r"(?:[ ]?(?:[xX]|[eE][xX][tT]\.?)[ ]?[0-9]{1,6}(?-u:\b))?",
            // North American shape: (212) 555-0123, 212-555-0123, 1 (555) 012-3456 x12.
            r"|(?:(?-u:\b)1[ .-]?)?(?:\([0-9]{3}\)[ .-]?|(?-u:\b)[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}",
            r"(?:[ ]?(?:[xX]|[eE][xX][tT]\.?)[ ]?[0-9]{1,6})?(?-u:\b)",
            // Trunk prefix in parentheses: (020) 7946 0018, (0161) 4960066, (08)-8690-7366.
            r"|\(0[0-9]{1,5}\)[ .\-/]?[0-9]{2,8}(?:[ .\-/][0-9]{2,8}){0,3}(?-u:\b)",
            // Trunk prefix, grouped: 020 7946 0018, 04 15 39 15 00, 030/1234567, 07700 900123.
            r"|(?-u:\b)0[1-9][0-9]{0,4}",
            r"(?:[ .\-/][0-9]{3,8}(?:[ .\-/][0-9]{2,8}){0,3}|(?:[ .\-/][0-9]{2}){3,4})(?-u:\b)",
            // Trunk prefix, bare: 02079460018.
            r"|(?-u:\b)0[1-9][0-9]{7,10}(?-u:\b)",
            // No trunk prefix, grouped with spaces: 612 34 56 78, 98765 43210, 22 331 67 41.
            r"|(?-u:\b)[1-9][0-9]{1,4}(?: [0-9]{2,5}){1,4}(?-u:\b)",
            // Nine to eleven bare digits: 2125550123, 9876543210 (only with a context word).
            r"|(?-u:\b)[1-9][0-9]{8,10}(?-u:\b)",
            // A local number without area code: 4177 7631, 4177-7631, 41777631 (only with
            // context). It must follow a space, `:`, `=` or the start, which the validator
            // trims: `ORD-20240115-000123` should not make the phone detector run at all.
            r"|(?:^|[ :=])[0-9]{4}[ .-]?[0-9]{4}(?-u:\b)",
        ),
        validate: phone,
        context: &[
            "phone", "tel", "mobile", "cell", "call", "sms", "fax", "contact", "whatsapp",
        ],
        negative_context: IDENTIFIER_WORDS,
        normalize: Normalize::Alphanumeric,
    },
    BuiltinSpec {
        name: "IP_ADDRESS",
        pattern: concat!(
            r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)",
            r"|(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
            r"|(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::",
            r"(?:(?:[0-9A-Fa-f]{1,4}:){0,5}(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?",
        ),
        validate: ip_address,
        context: &["ip", "addr", "host", "client", "remote", "server", "peer"],
        negative_context: &["version", "ver.", "release", "build", "firmware", "oid"],
        normalize: Normalize::Lowercase,
    },
    BuiltinSpec {
        name: "AWS_ACCESS_KEY",
        pattern: r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}(?-u:\b)",
        validate: aws_access_key,
        context: &["aws", "access key", "access_key", "credential"],
        negative_context: &[],
        normalize: Normalize::Verbatim,
    },
    BuiltinSpec {
        name: "JWT",
        pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        validate: jwt,
        context: &["token", "jwt", "authorization"],
        negative_context: &[],
        normalize: Normalize::Verbatim,
    },
    BuiltinSpec {
        name: "BEARER_TOKEN",
        pattern: r"(?i:bearer)[ \t]+[A-Za-z0-9._~+/-]{16,}=*",
        validate: bearer_token,
        context: &["authorization", "auth", "header"],
        negative_context: &[],
        normalize: Normalize::Verbatim,
    },
    BuiltinSpec {
        name: "PRIVATE_KEY",
        pattern: concat!(
            // PEM ("RSA PRIVATE KEY") and OpenPGP armour ("PGP PRIVATE KEY BLOCK").
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
            // A truncated block still leaks key material: mask what is there.
            r"|-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s\\:,-]*",
        ),
        validate: private_key,
        context: &[],
        negative_context: &[],
        normalize: Normalize::Verbatim,
    },
];

fn accept(start: usize, end: usize, confidence: f32) -> Option<Accepted> {
    Some(Accepted {
        start,
        end,
        confidence,
    })
}

/// True when `text[start..end]` is a piece of a longer token: glued to a letter or digit,
/// or continued by a separator and another digit (`12-555-0123-99`, `1.2.3.4.5`).
fn is_embedded(text: &[u8], start: usize, end: usize) -> bool {
    let is_joiner = |b: u8| matches!(b, b'-' | b'.' | b'/' | b':' | b'_');
    if let Some(&before) = start.checked_sub(1).and_then(|i| text.get(i)) {
        if before.is_ascii_alphanumeric() || before == b'_' {
            return true;
        }
        if is_joiner(before) && start >= 2 && text[start - 2].is_ascii_digit() {
            return true;
        }
    }
    if let Some(&after) = text.get(end) {
        if after.is_ascii_alphanumeric() || after == b'_' {
            return true;
        }
        if is_joiner(after) && text.get(end + 1).is_some_and(u8::is_ascii_digit) {
            return true;
        }
    }
    false
}

/// Digits and separators of a number-like match: digits go to `digits`, the separators
/// must all be the same byte, and group lengths are recorded.
struct DigitGroups {
    digits: [u8; 20],
    n_digits: usize,
    separator: Option<u8>,
    groups: [u8; 20],
    n_groups: usize,
}

impl DigitGroups {
    /// `None` when the separators differ or there are more than 20 digits.
    fn parse(candidate: &[u8]) -> Option<DigitGroups> {
        let mut parsed = DigitGroups {
            digits: [0; 20],
            n_digits: 0,
            separator: None,
            groups: [0; 20],
            n_groups: 1,
        };
        for &byte in candidate {
            if byte.is_ascii_digit() {
                *parsed.digits.get_mut(parsed.n_digits)? = byte;
                parsed.n_digits += 1;
                parsed.groups[parsed.n_groups - 1] += 1;
            } else {
                match parsed.separator {
                    Some(separator) if separator != byte => return None,
                    _ => parsed.separator = Some(byte),
                }
                parsed.n_groups += 1;
            }
        }
        Some(parsed)
    }

    fn digits(&self) -> &[u8] {
        &self.digits[..self.n_digits]
    }

    fn groups(&self) -> &[u8] {
        &self.groups[..self.n_groups]
    }
}

/// Most groups a card candidate can have: 19 digits, each its own group.
const MAX_CARD_GROUPS: usize = 19;

fn credit_card(text: &str, start: usize, end: usize) -> Option<Accepted> {
    let bytes = text.as_bytes();
    // "+4917284853448" is a phone number whatever its checksum.
    if start > 0 && bytes[start - 1] == b'+' {
        return None;
    }
    // Digit groups of the candidate: (offset in `text`, length). The pattern puts at most
    // one separator between two digits, so a group ends at every non-digit.
    let mut groups = [(0usize, 0usize); MAX_CARD_GROUPS];
    let mut n_groups = 0;
    for (offset, &byte) in bytes[start..end].iter().enumerate() {
        if !byte.is_ascii_digit() {
            continue;
        }
        let at = start + offset;
        if n_groups > 0 && groups[n_groups - 1].0 + groups[n_groups - 1].1 == at {
            groups[n_groups - 1].1 += 1;
        } else {
            *groups.get_mut(n_groups)? = (at, 1);
            n_groups += 1;
        }
    }
    let groups = &groups[..n_groups];
    // The greedy pattern can swallow a neighbouring number: an expiry date or CVV after the
    // card ("4111 1111 1111 1111 12/26"), an item number before it ("item 3 4111 ..."). So
    // when the whole candidate fails, its runs of whole groups are tried too, longest first.
    for width in (1..=groups.len()).rev() {
        for window in groups.windows(width) {
            if let Some(accepted) = card_window(bytes, window) {
                return Some(accepted);
            }
        }
    }
    None
}

/// Whether the consecutive digit groups `window` (offsets in `text`, lengths) are a card
/// number on their own.
fn card_window(text: &[u8], window: &[(usize, usize)]) -> Option<Accepted> {
    let (first, last) = (window.first()?, window.last()?);
    let (start, end) = (first.0, last.0 + last.1);
    let n_digits: usize = window.iter().map(|g| g.1).sum();
    if !(13..=19).contains(&n_digits) {
        return None;
    }
    let lengths = || window.iter().map(|g| g.1);
    // Cards are printed as one block, in fours (the last group shorter), or 4-6-5 / 4-6-4.
    let in_fours = window.len() > 1
        && lengths().take(window.len() - 1).all(|len| len == 4)
        && (1..=4).contains(&last.1);
    let well_grouped =
        window.len() == 1 || in_fours || lengths().eq([4, 6, 5]) || lengths().eq([4, 6, 4]);
    if !well_grouped {
        return None;
    }
    if window.len() > 1 {
        // One separator kind throughout ("4111-1111 1111-1111" is not a card)...
        let separator = text[first.0 + first.1];
        if window.windows(2).any(|pair| {
            pair[1].0 != pair[0].0 + pair[0].1 + 1 || text[pair[0].0 + pair[0].1] != separator
        }) {
            return None;
        }
        // ...and, when in fours, not the middle of a longer number in fours ("FR27 4646
        // 5640 ...", a reference). A short neighbour (CVV, expiry, item number) is fine, and
        // so is any neighbour of 4-6-5 (Amex prints a four-digit CID next to it).
        // Two cards in a row are not one long number: a card that starts right after this
        // one does not count (the fixpoint pass then masks it, its neighbour now a token).
        if in_fours
            && continues_grouped(text, start, end, separator)
            && !card_follows(text, end, separator)
        {
            return None;
        }
    }
    let mut digits = [0u8; 19];
    let mut n = 0;
    for &byte in text[start..end].iter().filter(|b| b.is_ascii_digit()) {
        digits[n] = byte;
        n += 1;
    }
    let digits = &digits[..n];
    (known_issuer(digits) && luhn(digits)).then_some(Accepted {
        start,
        end,
        confidence: 0.9,
    })
}

/// True when `text[start..end]` is joined by `separator` to a neighbouring group of at least
/// four letters or digits, one of them a digit: the next (or previous) block of a longer
/// grouped number rather than an expiry date, a CVV or an item count.
fn continues_grouped(text: &[u8], start: usize, end: usize, separator: u8) -> bool {
    let before =
        start >= 2 && text[start - 1] == separator && is_long_group(text[..start - 1].iter().rev());
    let after = text.get(end) == Some(&separator) && is_long_group(text[end + 1..].iter());
    before || after
}

/// True when the text after `end` is `separator` and then a valid card printed in fours
/// with the same separator.
fn card_follows(text: &[u8], end: usize, separator: u8) -> bool {
    let mut groups = [(0usize, 0usize); 5];
    let mut n_groups = 0;
    let mut at = end;
    while n_groups < groups.len() && text.get(at) == Some(&separator) {
        let len = text[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if len == 0 {
            break;
        }
        groups[n_groups] = (at + 1, len);
        n_groups += 1;
        at += 1 + len;
    }
    (2..=n_groups).any(|width| {
        let window = &groups[..width];
        let lengths_ok =
            window[..width - 1].iter().all(|g| g.1 == 4) && (1..=4).contains(&window[width - 1].1);
        let n_digits: usize = window.iter().map(|g| g.1).sum();
        let next = window[width - 1].0 + window[width - 1].1;
        lengths_ok
            && (13..=19).contains(&n_digits)
            && !text.get(next).is_some_and(u8::is_ascii_alphanumeric)
            && {
                let mut digits = [0u8; 19];
                let mut n = 0;
                for &byte in text[window[0].0..next]
                    .iter()
                    .filter(|b| b.is_ascii_digit())
                {
                    digits[n] = byte;
                    n += 1;
                }
                known_issuer(&digits[..n]) && luhn(&digits[..n])
            }
    })
}

/// Whether the letters and digits at the head of `group` are at least four, one a digit.
fn is_long_group<'a>(group: impl Iterator<Item = &'a u8>) -> bool {
    let (mut n_alnum, mut has_digit) = (0, false);
    for byte in group.take_while(|b| b.is_ascii_alphanumeric()) {
        n_alnum += 1;
        has_digit |= byte.is_ascii_digit();
    }
    n_alnum >= 4 && has_digit
}

/// Issuer identification number ranges and the lengths each issuer uses.
fn known_issuer(digits: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 {
        digits[..n]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let len = digits.len();
    if len < 13 {
        return false;
    }
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    match () {
        // Visa
        _ if p1 == 4 => matches!(len, 13 | 16 | 19),
        // Mastercard, old and 2-series ranges
        _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) => len == 16,
        // American Express
        _ if p2 == 34 || p2 == 37 => len == 15,
        // Discover
        _ if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 => (16..=19).contains(&len),
        // Diners Club
        _ if p2 == 36 || (300..=305).contains(&p3) || p2 == 38 || p2 == 39 => {
            (14..=19).contains(&len)
        }
        // JCB
        _ if (3528..=3589).contains(&p4) => (16..=19).contains(&len),
        // UnionPay
        _ if p2 == 62 => (16..=19).contains(&len),
        // Mir
        _ if (2200..=2204).contains(&p4) => (16..=19).contains(&len),
        // Maestro
        _ if matches!(p4, 5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761..=6763) => {
            (13..=19).contains(&len)
        }
        _ => false,
    }
}

fn us_ssn(text: &str, start: usize, end: usize) -> Option<Accepted> {
    let bytes = text.as_bytes();
    let parsed = DigitGroups::parse(&bytes[start..end])?;
    let digits = parsed.digits();
    let consistent = matches!(parsed.groups(), [9] | [3, 2, 4]);
    if !consistent || is_embedded(bytes, start, end) {
        return None;
    }
    let area = &digits[0..3];
    if area == b"000" || area == b"666" || area[0] == b'9' {
        return None;
    }
    if &digits[3..5] == b"00" || &digits[5..9] == b"0000" {
        return None;
    }
    // Dashes are how SSNs are written; nine bare digits are usually something else.
    let confidence = match parsed.separator {
        Some(b'-') => 0.85,
        Some(_) => 0.6,
        None => 0.35,
    };
    accept(start, end, confidence)
}

/// IBAN length by country (SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    // Added to the registry since 2016: Burundi, Djibouti, Falklands, Libya, Mongolia,
    // Nicaragua, Oman, Russia, Sudan, Somalia, Yemen.
    (b"BI", 27),
    (b"DJ", 27),
    (b"FK", 18),
    (b"LY", 25),
    (b"MN", 20),
    (b"NI", 28),
    (b"OM", 23),
    (b"RU", 33),
    (b"SD", 18),
    (b"SO", 23),
    (b"YE", 30),
];

fn iban(text: &str, start: usize, end: usize) -> Option<Accepted> {
    let bytes = text.as_bytes();
    let country = &bytes[start..start + 2];
    let &(_, length) = IBAN_LENGTHS.iter().find(|(code, _)| code[..] == *country)?;
    // The pattern is greedy and may run into a following word ("DE89… EUR"): cut the match
    // at the country's length, which must then end on a token boundary.
    let mut n_alnum = 0;
    let mut cut = None;
    for (offset, &byte) in bytes[start..end].iter().enumerate() {
        if byte != b' ' {
            n_alnum += 1;
            if n_alnum == length {
                cut = Some(start + offset + 1);
                break;
            }
        }
    }
    let cut = cut?;
    if bytes.get(cut).is_some_and(u8::is_ascii_alphanumeric) || !mod97(&bytes[start..cut]) {
        return None;
    }
    accept(start, cut, 0.95)
}

fn email(text: &str, start: usize, end: usize) -> Option<Accepted> {
    let candidate = &text[start..end];
    let (local, domain) = candidate.rsplit_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain_ok = candidate.len() <= 254
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    (local_ok && domain_ok).then_some(Accepted {
        start,
        end,
        confidence: 0.9,
    })
}

/// Confidence of a phone candidate that needs a context word (or a phone-like JSON key) to be
/// masked: bare digits, thousands-shaped groups, numbers no plan knows.
const PHONE_NEEDS_CONTEXT: f32 = 0.3;

fn phone(text: &str, start: usize, end: usize) -> Option<Accepted> {
    let bytes = text.as_bytes();
    // The local-number pattern takes the byte before the number with it.
    let start = start
        + bytes[start..end]
            .iter()
            .take_while(|&&b| matches!(b, b' ' | b':' | b'='))
            .count();
    let candidate = &bytes[start..end];
    if is_embedded(bytes, start, end) || is_in_identifier(bytes, start, end) {
        return None;
    }
    let shape = Shape::parse(candidate)?;
    if shape.is_one_digit_repeated() || shape.is_date() {
        return None;
    }
    let n_digits = shape.n_digits;
    let digits = shape.digits();
    let confidence = if shape.plus {
        if !(8..=15).contains(&n_digits) {
            return None;
        }
        0.8
    } else if let Some(international) = digits.strip_prefix("00") {
        if !(8..=15).contains(&international.len()) {
            return None;
        }
        // 0018305565636 is as likely a zero-padded number or an EAN, and 0033 5774 3796 2416
        // a reference grouped in fours, as numbers dialled from abroad.
        if shape.n_groups > 1 && phone::is_valid_international(international) {
            0.7
        } else {
            PHONE_NEEDS_CONTEXT
        }
    } else {
        if !(8..=12).contains(&n_digits) {
            return None;
        }
        let is_valid = || n_digits >= 9 && phone::is_valid_national(digits);
        let trunk = digits.starts_with('0');
        match shape.nanp_groups() {
            // A valid NANP shape: area code and exchange both start with 2-9.
            Some((area, exchange)) if area >= b'2' && exchange >= b'2' => 0.7,
            _ if shape.n_groups == 1 => PHONE_NEEDS_CONTEXT,
            // Parentheses around an area code: (555) 012-3456, (020) 7946 0018.
            _ if shape.paren_group.is_some() => {
                if is_valid() {
                    0.7
                } else {
                    0.6
                }
            }
            _ if trunk => {
                if is_valid() {
                    0.6
                } else {
                    0.45
                }
            }
            _ if !shape.is_thousands()
                && phone::is_valid_national_as_grouped(digits, shape.groups()) =>
            {
                0.6
            }
            _ => PHONE_NEEDS_CONTEXT,
        }
    };
    // One piece of a longer run of digit groups ("3727 071378 11152", a reference or a card
    // that failed its checks) is a phone number only if a context word says so.
    let confidence = if next_to_digit_group(bytes, start, end) {
        confidence.min(PHONE_NEEDS_CONTEXT)
    } else {
        confidence
    };
    accept(start, end, confidence)
}

/// True when the number is joined to a word by `-`, `/`, `_` or `#`: a piece of an
/// identifier such as `ORD-20240115-000123`, `INV/2024/000123` or a UUID
/// (`03517681-a0cf-...`).
fn is_in_identifier(text: &[u8], start: usize, end: usize) -> bool {
    let is_joiner = |b: u8| matches!(b, b'-' | b'/' | b'_' | b'#');
    let before =
        start >= 2 && is_joiner(text[start - 1]) && text[start - 2].is_ascii_alphanumeric();
    let after = text.get(end).is_some_and(|&b| is_joiner(b))
        && text.get(end + 1).is_some_and(u8::is_ascii_alphanumeric);
    before || after
}

/// True when a space and another group of digits come right before or after the match, or
/// the match continues a code printed in blocks of four (`NL78 BLLE 0311 0803 44`, an IBAN
/// whose check failed).
fn next_to_digit_group(text: &[u8], start: usize, end: usize) -> bool {
    let before = start >= 2 && text[start - 1] == b' ' && text[start - 2].is_ascii_digit();
    let after = text.get(end) == Some(&b' ') && text.get(end + 1).is_some_and(u8::is_ascii_digit);
    before || after || continues_code_in_fours(&text[..start])
}

/// Whether `before` ends with two blocks of four upper-case letters or digits, each followed
/// by a space, the first holding a digit: `NL78 BLLE `.
fn continues_code_in_fours(before: &[u8]) -> bool {
    let Some(head) = before.len().checked_sub(10) else {
        return false;
    };
    let blocks = &before[head..];
    let is_code = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    blocks[4] == b' '
        && blocks[9] == b' '
        && blocks[..4].iter().all(is_code)
        && blocks[5..9].iter().all(is_code)
        && blocks[..4].iter().any(u8::is_ascii_digit)
        && (head == 0 || !before[head - 1].is_ascii_alphanumeric())
}

/// Confidence of a compressed IPv6 candidate with one or two groups: a context word
/// (+0.35) lifts it over the default threshold (0.5), nothing else does.
const SHORT_IPV6_CONFIDENCE: f32 = 0.3;

fn ip_address(text: &str, start: usize, end: usize) -> Option<Accepted> {
    let bytes = text.as_bytes();
    let candidate = &text[start..end];
    if !candidate.contains(':') {
        // IPv4: four decimal octets, no leading zeros, not part of a longer dotted number.
        if is_embedded(bytes, start, end) {
            return None;
        }
        let valid_octets = candidate.split('.').all(|octet| {
            (octet.len() == 1 || !octet.starts_with('0')) && octet.parse::<u8>().is_ok()
        });
        return valid_octets.then_some(Accepted {
            start,
            end,
            confidence: 0.75,
        });
    }
    // IPv6: the standard library parser is the validator; the pattern only finds candidates.
    let is_glue = |b: u8| b.is_ascii_alphanumeric() || b == b':' || b == b'_';
    let glued_before = start.checked_sub(1).is_some_and(|i| is_glue(bytes[i]));
    let glued_after = bytes.get(end).is_some_and(|&b| is_glue(b));
    if glued_before || glued_after || Ipv6Addr::from_str(candidate).is_err() {
        return None;
    }
    let n_groups = candidate.split(':').filter(|g| !g.is_empty()).count();
    // A bare "::" is punctuation ("x :: Int"), not the unspecified address.
    if n_groups == 0 {
        return None;
    }
    // "a::b", "dead::beef", "::1" in prose or code are more often paths or type syntax than
    // addresses: below the default threshold unless a context word ("ip", "host") vouches.
    let confidence = if n_groups >= 3 {
        0.75
    } else {
        SHORT_IPV6_CONFIDENCE
    };
    accept(start, end, confidence)
}

fn aws_access_key(text: &str, start: usize, end: usize) -> Option<Accepted> {
    // Real key IDs are random base32; placeholders like AKIAXXXXXXXXXXXXXXXX are not secrets.
    let suffix = &text.as_bytes()[start + 4..end];
    let mut seen = [false; 256];
    let n_distinct = suffix
        .iter()
        .filter(|&&b| !std::mem::replace(&mut seen[usize::from(b)], true))
        .count();
    (n_distinct >= 6).then_some(Accepted {
        start,
        end,
        confidence: 0.95,
    })
}

fn jwt(text: &str, start: usize, end: usize) -> Option<Accepted> {
    let mut parts = text[start..end].split('.');
    let (header, payload) = (parts.next()?, parts.next()?);
    let decodes_to_object = |part: &str, required_key: Option<&str>| {
        let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part) else {
            return false;
        };
        match serde_json::from_slice::<serde_json::Value>(&json) {
            Ok(serde_json::Value::Object(map)) => required_key.is_none_or(|k| map.contains_key(k)),
            _ => false,
        }
    };
    (decodes_to_object(header, Some("alg")) && decodes_to_object(payload, None)).then_some(
        Accepted {
            start,
            end,
            confidence: 0.95,
        },
    )
}

fn bearer_token(text: &str, start: usize, end: usize) -> Option<Accepted> {
    let bytes = text.as_bytes();
    if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
        return None;
    }
    // Mask the credential, keep the scheme: "Bearer [REDACTED:BEARER_TOKEN]".
    let token_start = start
        + 6
        + bytes[start + 6..end]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let token = &bytes[token_start..end];
    let has_digit = token.iter().any(u8::is_ascii_digit);
    let has_letter = token.iter().any(u8::is_ascii_alphabetic);
    if !(has_digit && has_letter) || bytes.get(end).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    accept(token_start, end, 0.85)
}

fn private_key(text: &str, start: usize, end: usize) -> Option<Accepted> {
    let terminated = text[start..end].contains("-----END ");
    accept(start, end, if terminated { 1.0 } else { 0.9 })
}

/// Confidence of a card-number candidate held in a JSON number, `None` if it is not one.
pub(crate) fn card_number(digits: &[u8]) -> Option<f32> {
    (known_issuer(digits) && luhn(digits)).then_some(0.9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(validate: ValidateFn, text: &str) -> Option<(usize, usize)> {
        validate(text, 0, text.len()).map(|a| (a.start, a.end))
    }

    #[test]
    fn credit_card_requires_luhn_issuer_and_grouping() {
        assert!(check(credit_card, "4111 1111 1111 1111").is_some());
        assert!(check(credit_card, "3782-822463-10005").is_some());
        assert!(check(credit_card, "4111111111111112").is_none());
        assert!(check(credit_card, "4111-1111 1111-1111").is_none());
        assert!(check(credit_card, "41 1111 1111 1111 11").is_none());
        // Luhn-valid but no issuer starts with 1.
        assert!(check(credit_card, "1000000000000008").is_none());
    }

    /// What `spec`'s pattern and validator accept in `text`, as the masker runs them
    /// (confidence before context words).
    fn accepted<'t>(spec: &str, text: &'t str) -> Vec<(&'t str, f32)> {
        let spec = BUILTINS.iter().find(|b| b.name == spec).unwrap();
        regex::Regex::new(spec.pattern)
            .unwrap()
            .find_iter(text)
            .filter_map(|m| (spec.validate)(text, m.start(), m.end()))
            .map(|a| (&text[a.start..a.end], a.confidence))
            .collect()
    }

    fn cards(text: &str) -> Vec<&str> {
        accepted("CREDIT_CARD", text)
            .into_iter()
            .map(|(card, _)| card)
            .collect()
    }

    #[test]
    fn cards_next_to_other_numbers_are_found() {
        assert_eq!(
            cards("card 4111 1111 1111 1111 12/26"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            cards("4111 1111 1111 1111 123 thanks"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(cards("item 3 4111 1111 1111 1111"), ["4111 1111 1111 1111"]);
        assert_eq!(
            cards("item 12 4111-1111-1111-1111"),
            ["4111-1111-1111-1111"]
        );
        assert_eq!(cards("4111111111111111 123"), ["4111111111111111"]);
        assert_eq!(cards("qty 2 3782 822463 10005 exp"), ["3782 822463 10005"]);
        assert_eq!(cards("3782 822463 10005 1234"), ["3782 822463 10005"]);
        // The first of two cards in a row (the masker's next pass finds the second).
        assert_eq!(
            cards("4111 1111 1111 1111 5500 0000 0000 0004"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(cards("4111-1111-1111-1111 12/26"), ["4111-1111-1111-1111"]);
    }

    #[test]
    fn card_windows_keep_precision() {
        // The middle of a longer number grouped in fours (an IBAN, a reference).
        assert!(cards("FR76 4111 1111 1111 1111 189").is_empty());
        assert!(cards("ref 1234 4111 1111 1111 1111").is_empty());
        assert!(cards("ref 4111 1111 1111 1111 5678").is_empty());
        // Followed by a Luhn-failing "card": still one long number.
        assert!(cards("4111 1111 1111 1111 5500 0000 0000 0005").is_empty());
        // A Luhn-failing card stays unmasked whatever follows it.
        assert!(cards("card 4111 1111 1111 1112 12/26").is_empty());
        assert!(cards("item 3 4111 1111 1111 1112 123").is_empty());
        // Timestamps and order IDs.
        assert!(cards("2024-01-15 10:30:00 1705312200123").is_empty());
        assert!(cards("ORD-20240115-000123 4 items").is_empty());
        // Mixed separators inside the card.
        assert!(cards("4111-1111 1111-1111").is_empty());
        // A phone number, whatever its checksum.
        assert!(cards("+49 1512 3456 7890 12").is_empty());
    }

    #[test]
    fn bare_double_colon_is_not_an_ipv6_address() {
        assert!(accepted("IP_ADDRESS", "x :: Int").is_empty());
        assert!(accepted("IP_ADDRESS", "a :: b :: c").is_empty());
        for short in ["a::b", "dead::beef", "::1", "fe80::"] {
            let found = accepted("IP_ADDRESS", short);
            assert_eq!(found.len(), 1, "{short}");
            assert!(found[0].1 < 0.5, "{short}: {found:?}");
        }
        let found = accepted("IP_ADDRESS", "2001:db8::1");
        assert!(found[0].1 >= 0.5, "{found:?}");
    }

    #[test]
    fn iban_countries_added_to_the_registry_are_known() {
        for (country, length) in [
            ("RU", 33),
            ("LY", 25),
            ("OM", 23),
            ("YE", 30),
            ("SD", 18),
            ("NI", 28),
            ("MN", 20),
            ("BI", 27),
            ("DJ", 27),
            ("FK", 18),
            ("SO", 23),
        ] {
            let bban: String = (0..length - 4)
                .map(|i| char::from(b'0' + (i * 7 % 10) as u8))
                .collect();
            let check = (0..100)
                .map(|check| format!("{country}{check:02}{bban}"))
                .find(|candidate| mod97(candidate.as_bytes()))
                .unwrap();
            assert_eq!(check.len(), length);
            assert!(check_iban(&check), "{check}");
            // One character short is not that country's IBAN.
            assert!(
                !check_iban(&format!("{}{}", &check[..4], &bban[1..])),
                "{check}"
            );
        }
    }

    fn check_iban(text: &str) -> bool {
        accepted("IBAN", text).first().map(|(found, _)| *found) == Some(text)
    }

    #[test]
    fn pgp_private_key_blocks_are_private_keys() {
        let block = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGXYZ0123+/abc\n=AbCd\n-----END PGP PRIVATE KEY BLOCK-----";
        let text = format!("key: {block} end");
        assert_eq!(accepted("PRIVATE_KEY", &text), [(block, 1.0)]);
        let truncated = "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGXYZ0123";
        assert_eq!(accepted("PRIVATE_KEY", truncated), [(truncated, 0.9)]);
        assert!(
            accepted(
                "PRIVATE_KEY",
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQINBF"
            )
            .is_empty()
        );
    }

    #[test]
    fn ssn_rules() {
        assert!(check(us_ssn, "123-45-6789").is_some());
        assert!(check(us_ssn, "923-45-6789").is_none());
        assert!(check(us_ssn, "666-45-6789").is_none());
        assert!(check(us_ssn, "000-45-6789").is_none());
        assert!(check(us_ssn, "123-00-6789").is_none());
        assert!(check(us_ssn, "123-45-0000").is_none());
        assert!(check(us_ssn, "123-45 6789").is_none());
    }

    #[test]
    fn iban_is_cut_at_country_length() {
        let text = "DE89370400440532013000 EUR";
        assert_eq!(iban(text, 0, text.len()).map(|a| a.end), Some(22));
        assert!(check(iban, "DE89370400440532013001").is_none());
        assert!(check(iban, "ZZ89370400440532013000").is_none());
    }

    #[test]
    fn ip_addresses() {
        assert!(check(ip_address, "192.168.1.20").is_some());
        assert!(check(ip_address, "256.1.1.1").is_none());
        assert!(check(ip_address, "01.2.3.4").is_none());
        assert!(check(ip_address, "2001:db8::8a2e:370:7334").is_some());
        assert!(check(ip_address, "00:1a:2b:3c:4d:5e").is_none());
    }

    #[test]
    fn bearer_masks_only_the_token() {
        let text = "Bearer abcdef0123456789xyz";
        assert_eq!(bearer_token(text, 0, text.len()).map(|a| a.start), Some(7));
    }
}
