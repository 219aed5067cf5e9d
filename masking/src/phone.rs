//! Phone numbers: the shapes people write them in, and the numbering plans of the countries
//! callers come from, taken from libphonenumber's metadata (the `phonenumber` crate) rather
//! than kept by hand.
//!
//! The plans are compiled once per process into our own anchored regexes: the `phonenumber`
//! crate's own matching goes through a global mutex and a 100-entry LRU of compiled regexes,
//! which is too slow and too contended for a validator on the request path.

use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};

/// Regions whose national formats (no country code) are recognised: North America, the UK,
/// the EU's large countries, India and Australia.
pub(crate) const REGIONS: [&str; 11] = [
    "US", "CA", "GB", "DE", "FR", "IT", "ES", "NL", "PL", "IN", "AU",
];

/// Regions where national numbers are commonly written without the trunk prefix.
const PREFIX_OPTIONAL: [&str; 3] = ["US", "CA", "IN"];

/// Most digits a phone number has (E.164), and most a national number without country
/// code has in the plans above.
const MAX_DIGITS: usize = 15;

/// One region's plan.
struct Plan {
    country_code: String,
    /// Trunk prefix dialled before a national number (`0` in most of Europe, `1` in NANP).
    national_prefix: Option<String>,
    /// Whether numbers are commonly written without the trunk prefix.
    prefix_optional: bool,
    general: NumberPattern,
    /// Fixed line, mobile, toll free, ...: a valid number matches one of them.
    types: Vec<NumberPattern>,
    /// How numbers are written at home: the digits each group takes, for the numbers whose
    /// leading digits match (`612 34 56 78` in Spain, `98765 43210` in India).
    formats: Vec<NationalFormat>,
}

struct NationalFormat {
    leading_digits: Option<Regex>,
    pattern: Regex,
}

fn compile(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .ignore_whitespace(true)
        .unicode(false)
        .build()
        .ok()
}

struct NumberPattern {
    regex: Regex,
    lengths: Vec<u16>,
}

impl NumberPattern {
    fn from_descriptor(descriptor: &phonenumber::metadata::Descriptor) -> Option<NumberPattern> {
        // libphonenumber patterns are written for the whole national significant number.
        let regex = compile(&format!("^(?:{})$", descriptor.national_number().as_str()))?;
        Some(NumberPattern {
            regex,
            lengths: descriptor.possible_length().to_vec(),
        })
    }

    fn matches(&self, national: &str, general_lengths: &[u16]) -> bool {
        let lengths = if self.lengths.is_empty() {
            general_lengths
        } else {
            &self.lengths
        };
        let length = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (lengths.is_empty() || lengths.contains(&length)) && self.regex.is_match(national)
    }
}

impl Plan {
    fn load(region: &str) -> Option<Plan> {
        let metadata = phonenumber::metadata::DATABASE.by_id(region)?;
        let descriptors = metadata.descriptors();
        let general = NumberPattern::from_descriptor(descriptors.general())?;
        // The types `phonenumber::is_valid` accepts (not short codes or emergency numbers).
        let types = [
            descriptors.fixed_line(),
            descriptors.mobile(),
            descriptors.toll_free(),
            descriptors.premium_rate(),
            descriptors.shared_cost(),
            descriptors.personal_number(),
            descriptors.voip(),
            descriptors.pager(),
            descriptors.uan(),
            descriptors.voicemail(),
        ]
        .into_iter()
        .flatten()
        .filter_map(NumberPattern::from_descriptor)
        .collect();
        let formats = metadata
            .formats()
            .iter()
            .filter_map(|format| {
                Some(NationalFormat {
                    // The last pattern is the most specific, as libphonenumber reads them.
                    leading_digits: match format.leading_digits().last() {
                        Some(leading) => Some(compile(&format!("^(?:{})", leading.as_str()))?),
                        None => None,
                    },
                    pattern: compile(&format!("^(?:{})$", format.pattern().as_str()))?,
                })
            })
            .collect();
        Some(Plan {
            formats,
            country_code: metadata.country_code().to_string(),
            national_prefix: metadata.national_prefix().map(str::to_owned),
            prefix_optional: PREFIX_OPTIONAL.contains(&region),
            general,
            types,
        })
    }

    /// Whether `national` (significant number, no trunk prefix) is a valid number here.
    fn is_valid(&self, national: &str) -> bool {
        self.general.matches(national, &[])
            && self
                .types
                .iter()
                .any(|t| t.matches(national, &self.general.lengths))
    }

    /// Whether `national` (a valid significant number) written in digit groups of `groups`
    /// lengths is grouped as one of this plan's national formats groups it.
    fn is_grouped_as_at_home(&self, national: &str, groups: &[u8]) -> bool {
        self.formats.iter().any(|format| {
            format
                .leading_digits
                .as_ref()
                .is_none_or(|leading| leading.is_match(national))
                && format.pattern.captures(national).is_some_and(|captures| {
                    captures
                        .iter()
                        .skip(1)
                        .flatten()
                        .map(|group| group.len())
                        .eq(groups.iter().map(|&g| usize::from(g)))
                })
        })
    }

    /// Whether `digits`, as written inside the country, is a valid number here: after the
    /// trunk prefix where the plan has one (Italy keeps its leading 0; Spain and Poland have
    /// no trunk prefix). Without it only where people leave it out: North America (`1`) and
    /// India, whose mobile numbers are written as ten digits. A German or British number
    /// is never written without its `0` at home, and their plans are loose enough that
    /// twelve random digits often fit them.
    fn is_valid_national(&self, digits: &str) -> bool {
        match self.national_prefix.as_deref() {
            Some(prefix) => match digits.strip_prefix(prefix) {
                Some(national) => self.is_valid(national),
                None => self.prefix_optional && self.is_valid(digits),
            },
            None => self.is_valid(digits),
        }
    }
}

fn plans() -> &'static [Plan] {
    static PLANS: OnceLock<Vec<Plan>> = OnceLock::new();
    PLANS.get_or_init(|| REGIONS.iter().filter_map(|r| Plan::load(r)).collect())
}

/// Compiles the plans now rather than on the first phone-shaped candidate (once per process).
pub(crate) fn warm_up() {
    plans();
}

/// Whether `digits` (ASCII digits, written without country code) is a valid national number
/// in one of [`REGIONS`].
pub(crate) fn is_valid_national(digits: &str) -> bool {
    digits.len() <= MAX_DIGITS && plans().iter().any(|plan| plan.is_valid_national(digits))
}

/// Whether `digits`, written without trunk prefix in digit groups of `groups` lengths, is a
/// valid national number of one of [`REGIONS`] grouped the way that country groups it:
/// `612 34 56 78` is a Spanish mobile number, `2076 0015 93` is not an American one.
pub(crate) fn is_valid_national_as_grouped(digits: &str, groups: &[u8]) -> bool {
    digits.len() <= MAX_DIGITS
        && plans().iter().any(|plan| {
            let national = match plan.national_prefix.as_deref() {
                Some(prefix) if digits.starts_with(prefix) => return false,
                Some(_) if !plan.prefix_optional => return false,
                _ => digits,
            };
            plan.is_valid(national) && plan.is_grouped_as_at_home(national, groups)
        })
}

/// Whether `digits` (country code first, as after `+` or `00`) is a valid number of one of
/// [`REGIONS`]. A trunk `0` written after the country code (`+44 (0)20 ...`) must already be
/// left out.
pub(crate) fn is_valid_international(digits: &str) -> bool {
    digits.len() <= MAX_DIGITS
        && plans().iter().any(|plan| {
            digits
                .strip_prefix(plan.country_code.as_str())
                .is_some_and(|national| plan.is_valid(national))
        })
}

/// A candidate parsed into its parts: digits, digit groups, parentheses, extension.
pub(crate) struct Shape {
    /// Written with a leading `+`.
    pub(crate) plus: bool,
    /// The digits, the `(0)` trunk marker and the extension left out.
    digits: [u8; MAX_DIGITS + 5],
    pub(crate) n_digits: usize,
    /// Lengths of the digit groups (the extension left out).
    groups: [u8; 16],
    pub(crate) n_groups: usize,
    /// Index of the group written in parentheses, if any.
    pub(crate) paren_group: Option<usize>,
    /// The separator bytes used between groups (`b' '`, `b'-'`, `b'.'`, `b'/'`).
    separators: [bool; 4],
}

const SEPARATORS: [u8; 4] = [b' ', b'-', b'.', b'/'];

impl Shape {
    /// `None` when the candidate is not written like a phone number at all: another byte,
    /// doubled separators, unbalanced or nested parentheses, too many digits or groups.
    pub(crate) fn parse(candidate: &[u8]) -> Option<Shape> {
        let mut shape = Shape {
            plus: false,
            digits: [0; MAX_DIGITS + 5],
            n_digits: 0,
            groups: [0; 16],
            n_groups: 0,
            paren_group: None,
            separators: [false; 4],
        };
        let mut at = 0;
        if candidate.first() == Some(&b'+') {
            shape.plus = true;
            at = 1;
        }
        let mut in_group = false;
        let mut in_parens = false;
        let mut last_was_separator = false;
        while at < candidate.len() {
            let byte = candidate[at];
            match byte {
                b'0'..=b'9' => {
                    if !in_group {
                        *shape.groups.get_mut(shape.n_groups)? = 0;
                        shape.n_groups += 1;
                        in_group = true;
                    }
                    *shape.digits.get_mut(shape.n_digits)? = byte;
                    shape.n_digits += 1;
                    shape.groups[shape.n_groups - 1] += 1;
                    last_was_separator = false;
                }
                b'(' => {
                    if in_parens || shape.paren_group.is_some() {
                        return None;
                    }
                    in_parens = true;
                    in_group = false;
                    last_was_separator = false;
                }
                b')' => {
                    if !in_parens || !in_group {
                        return None;
                    }
                    in_parens = false;
                    in_group = false;
                    let group = shape.n_groups - 1;
                    // "+44 (0)20": the trunk prefix in parentheses is not part of the number.
                    if group > 0
                        && shape.groups[group] == 1
                        && shape.digits[shape.n_digits - 1] == b'0'
                    {
                        shape.n_digits -= 1;
                        shape.n_groups -= 1;
                    } else {
                        shape.paren_group = Some(group);
                    }
                    last_was_separator = false;
                }
                b'x' | b'X' | b'e' | b'E' => {
                    // An extension ends the number: "x123", "ext. 123", "ext 123".
                    if in_parens || shape.n_digits == 0 {
                        return None;
                    }
                    let rest = &candidate[at..];
                    let prefix_len = if byte == b'x' || byte == b'X' {
                        1
                    } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"ext") {
                        if rest.get(3) == Some(&b'.') { 4 } else { 3 }
                    } else {
                        return None;
                    };
                    let digits = &rest[prefix_len..];
                    let digits = digits.strip_prefix(b" ").unwrap_or(digits);
                    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                        return None;
                    }
                    break;
                }
                _ => {
                    let separator = SEPARATORS.iter().position(|&s| s == byte)?;
                    if last_was_separator {
                        return None;
                    }
                    shape.separators[separator] = true;
                    in_group = false;
                    last_was_separator = true;
                }
            }
            at += 1;
        }
        if in_parens || shape.n_digits == 0 {
            return None;
        }
        Some(shape)
    }

    pub(crate) fn digits(&self) -> &str {
        // Only ASCII digits were stored.
        std::str::from_utf8(&self.digits[..self.n_digits]).unwrap_or_default()
    }

    pub(crate) fn groups(&self) -> &[u8] {
        &self.groups[..self.n_groups]
    }

    /// Whether every digit is the same one (`000-000-0000`, a placeholder).
    pub(crate) fn is_one_digit_repeated(&self) -> bool {
        let digits = &self.digits[..self.n_digits];
        digits.iter().all(|&d| d == digits[0])
    }

    /// Whether the value is written like a date: `2024-01-15`, `15.01.2024`, `01/15/2024`.
    pub(crate) fn is_date(&self) -> bool {
        if self.paren_group.is_some() || self.plus || self.n_groups != 3 {
            return false;
        }
        let digits = self.digits().as_bytes();
        let number = |from: usize, len: usize| {
            digits[from..from + len]
                .iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
        };
        let is_year = |n: u32| (1900..=2099).contains(&n);
        let is_day_or_month = |n: u32| (1..=31).contains(&n);
        match self.groups() {
            [4, 2, 2] => is_year(number(0, 4)) && number(4, 2) <= 12,
            [2, 2, 4] => {
                is_year(number(4, 4))
                    && is_day_or_month(number(0, 2))
                    && is_day_or_month(number(2, 2))
            }
            _ => false,
        }
    }

    /// Whether the groups read as thousands of an amount: `233 516 020`, `1.234.567`.
    pub(crate) fn is_thousands(&self) -> bool {
        let groups = self.groups();
        let one_separator = self.separators.iter().filter(|&&s| s).count() == 1;
        let separator_ok = self.separators[0] || self.separators[2];
        self.paren_group.is_none()
            && groups.len() >= 2
            && one_separator
            && separator_ok
            && (1..=3).contains(&groups[0])
            && groups[1..].iter().all(|&g| g == 3)
    }

    /// Whether it is written `NXX NXX XXXX` (NANP), optionally after a `1`.
    pub(crate) fn nanp_groups(&self) -> Option<(u8, u8)> {
        let digits = self.digits().as_bytes();
        let (area, exchange) = match self.groups() {
            [3, 3, 4] => (digits[0], digits[3]),
            [1, 3, 3, 4] if digits[0] == b'1' => (digits[1], digits[4]),
            _ => return None,
        };
        // Parentheses, if any, go around the area code.
        let area_group = usize::from(self.groups()[0] == 1);
        if self.paren_group.is_some_and(|g| g != area_group) {
            return None;
        }
        Some((area, exchange))
    }
}

/// Whether `value`, once trimmed, is a phone number and nothing else: used for the values of
/// phone-like keys, where any phone-shaped value is masked. Returns the trimmed span.
pub(crate) fn whole_value(value: &str) -> Option<(usize, usize)> {
    let bytes = value.as_bytes();
    // Cheap rejection first: most values are words.
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    if !matches!(bytes[start], b'0'..=b'9' | b'+' | b'(') {
        return None;
    }
    let end = bytes.len() - bytes.iter().rev().position(|b| !b.is_ascii_whitespace())?;
    if end - start > 40 {
        return None;
    }
    let shape = Shape::parse(&bytes[start..end])?;
    let plausible = (7..=MAX_DIGITS).contains(&shape.n_digits)
        && !shape.is_one_digit_repeated()
        && !shape.is_date()
        && bytes[end - 1].is_ascii_digit();
    plausible.then_some((start, end))
}

/// Whether a JSON key names a phone number: one of its words (split at `_`, `-`, `.`,
/// spaces and lower-to-upper case changes) is a phone word, or starts or ends with `phone`.
pub(crate) fn is_phone_key(key: &str) -> bool {
    const WORDS: [&str; 14] = [
        "tel",
        "telephone",
        "telefon",
        "telefono",
        "mobile",
        "mob",
        "cell",
        "fax",
        "msisdn",
        "whatsapp",
        "landline",
        "sms",
        "handynummer",
        "gsm",
    ];
    let bytes = key.as_bytes();
    let mut word_start = 0;
    for at in 0..=bytes.len() {
        let boundary = at == bytes.len()
            || !bytes[at].is_ascii_alphanumeric()
            || (at > word_start
                && bytes[at].is_ascii_uppercase()
                && bytes[at - 1].is_ascii_lowercase());
        if !boundary {
            continue;
        }
        // Bytes, not `str` slices: a boundary may fall inside a multi-byte character of a key
        // such as `téléphone` or `電話`.
        let word = &bytes[word_start..at];
        if !word.is_empty() {
            let has_phone = word.len() >= 5
                && (word[..5].eq_ignore_ascii_case(b"phone")
                    || word[word.len() - 5..].eq_ignore_ascii_case(b"phone"));
            if has_phone
                || WORDS
                    .iter()
                    .any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
            {
                return true;
            }
        }
        word_start = if at < bytes.len() && bytes[at].is_ascii_alphanumeric() {
            at
        } else {
            at + 1
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_loaded_for_every_region() {
        assert_eq!(plans().len(), REGIONS.len());
    }

    #[test]
    fn national_numbers_are_checked_against_the_plans() {
        for valid in [
            "02079460018", // GB London
            "07911123456", // GB mobile
            "03012345678", // DE Berlin
            "0612345678",  // FR and NL mobile
            "0142685300",  // FR Paris
            "0201234567",  // NL Amsterdam
            "3123456789",  // IT mobile
            "0212345678",  // IT Milan
            "612345678",   // ES mobile
            "512345678",   // PL mobile
            "9876543210",  // IN mobile
            "0412345678",  // AU mobile
            "2125550123",  // US
        ] {
            assert!(is_valid_national(valid), "{valid}");
        }
        for invalid in ["0000000000", "1234", "0999999999999"] {
            assert!(!is_valid_national(invalid), "{invalid}");
        }
        assert!(is_valid_international("442079460018"));
        assert!(!is_valid_international("4420794600"));
    }

    #[test]
    fn phone_keys() {
        for key in [
            "phone",
            "Phone",
            "phone_number",
            "phoneNumber",
            "mobile-phone",
            "contactPhone",
            "tel",
            "telephone",
            "fax",
            "homephone",
            "customer.mobile",
            "cell",
            "phones",
        ] {
            assert!(is_phone_key(key), "{key}");
        }
        for key in [
            "telemetry",
            "hotel",
            "excellent",
            "order_id",
            "cellar",
            "symphony_id",
        ] {
            assert!(!is_phone_key(key), "{key}");
        }
        // Keys with multi-byte characters are split on bytes: no word ends inside a character.
        assert!(is_phone_key("téléphone_mobile"));
        assert!(is_phone_key("電話.phone"));
        for key in ["téléphone", "電話", "número", "ñ", "é"] {
            let _ = is_phone_key(key);
        }
    }

    #[test]
    fn whole_values() {
        for value in [
            "4177 7631",
            "00008063608",
            "(555) 012-3456",
            "+44 (0)20 7946 0018",
            " 212-555-0123 x12 ",
            "1133234709",
        ] {
            assert!(whole_value(value).is_some(), "{value}");
        }
        for value in [
            "2024-01-15",
            "15.01.2024",
            "n/a",
            "123",
            "12:30",
            "1111111",
            "0)1(",
        ] {
            assert!(whole_value(value).is_none(), "{value}");
        }
    }
}
