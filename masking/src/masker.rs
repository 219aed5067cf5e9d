//! The compiled engine.
//!
//! One `RegexSet` holding every detector's pattern (plus the pattern of our own replacement
//! tokens) answers "is there anything at all in this string?" in a single pass. Only when it
//! says yes do the matching detectors' own regexes run to find spans, and validators (Luhn,
//! mod 97, SSN rules, ...) and context words decide. A string without candidates costs one
//! DFA scan and no allocation.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use aho_corasick::AhoCorasick;
use hmac::{Hmac, Mac};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde_json::Value;
use sha2::Sha256;

use crate::config::{CustomDetector, MaskingConfig, Replacement, Validator};
use crate::detectors::{self, Accepted, BUILTINS, Normalize, ValidateFn};
use crate::fields::{FieldRules, JsonPath};
use crate::{FIELD_DETECTOR, Finding, MaskingError, checksum};

const FIELD_TOKEN: &str = "[REDACTED:FIELD]";

const MAX_CUSTOM_DETECTORS: usize = 32;
/// Detector slots for the per-string counters kept on the stack.
const MAX_DETECTORS: usize = BUILTINS.len() + MAX_CUSTOM_DETECTORS;
const MAX_CUSTOM_PATTERN_LEN: usize = 4096;
/// Compiled-program budget of one custom pattern: `(a{1000}){1000}` is refused at load.
const CUSTOM_PATTERN_SIZE_LIMIT: usize = 1 << 20;
const SET_SIZE_LIMIT: usize = 64 << 20;
const MAX_DEPTH_LIMIT: usize = 1024;
/// Bytes before a match searched for context words.
const CONTEXT_WINDOW: usize = 48;
const CONTEXT_BOOST: f32 = 0.35;
const CONTEXT_PENALTY: f32 = 0.35;
/// Confidence of a phone-shaped value under a phone-like key.
const PHONE_KEY_CONFIDENCE: f32 = 0.9;
/// Masking passes over one string. Replacing a value can un-glue a neighbour that was
/// rejected as part of a longer number; the next pass then masks it, so the result is a
/// fixpoint. Each pass replaces at least one span, so few passes are ever needed.
const MAX_PASSES: usize = 8;

/// The compiled masking engine. Build once with [`Masker::new`], share in an `Arc`.
pub struct Masker {
    detectors: Vec<Detector>,
    /// Detector patterns in `detectors` order, then the pattern of our own tokens.
    prefilter: RegexSet,
    /// Exactly the tokens this engine writes; see `token_pattern`.
    token: Regex,
    /// Index of `CREDIT_CARD` in `detectors`, used for JSON numbers.
    credit_card: Option<usize>,
    /// Index of `PHONE` in `detectors`: any phone-shaped value of a phone-like key is masked.
    phone: Option<usize>,
    threshold: f32,
    scan_keys: bool,
    max_depth: usize,
    partial_keep: usize,
    hmac: Option<Hmac<Sha256>>,
    hmac_token_len: usize,
}

struct Detector {
    name: Box<str>,
    regex: Regex,
    validation: Validation,
    /// Positive words first, then negative ones; `n_positive` tells them apart.
    context: Option<AhoCorasick>,
    n_positive: usize,
    normalize: Normalize,
    replacement: Replacement,
}

enum Validation {
    Builtin(ValidateFn),
    Custom {
        validator: Option<Validator>,
        confidence: f32,
    },
}

/// A span some detector wants to mask, or one of our tokens (`detector == None`).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    detector: Option<usize>,
    start: usize,
    end: usize,
    confidence: f32,
}

impl Masker {
    /// Compiles the configuration; every problem is reported with the key it comes from.
    pub fn new(config: &MaskingConfig) -> Result<Masker, MaskingError> {
        let invalid = |key: &'static str, reason: &str| MaskingError::InvalidConfig {
            key,
            reason: reason.to_owned(),
        };
        if !(0.0..=1.0).contains(&config.threshold) {
            return Err(invalid("threshold", "must be between 0.0 and 1.0"));
        }
        if !(1..=8).contains(&config.partial_keep) {
            return Err(invalid("partial_keep", "must be between 1 and 8"));
        }
        if !(8..=64).contains(&config.hmac_token_len) {
            return Err(invalid("hmac_token_len", "must be between 8 and 64"));
        }
        if !(1..=MAX_DEPTH_LIMIT).contains(&config.max_depth) {
            return Err(invalid("max_depth", "must be between 1 and 1024"));
        }
        if config.custom.len() > MAX_CUSTOM_DETECTORS {
            return Err(invalid("custom", "holds more than 32 detectors"));
        }
        if let Some(enabled) = &config.detectors {
            let custom_names: Vec<&str> = config.custom.iter().map(|c| c.name.as_str()).collect();
            for name in enabled {
                if !crate::BUILTIN_DETECTORS.contains(&name.as_str())
                    && !custom_names.contains(&name.as_str())
                {
                    return Err(MaskingError::UnknownDetector {
                        key: "detectors",
                        name: name.clone(),
                    });
                }
            }
        }

        let mut detectors = Vec::new();
        for spec in BUILTINS {
            let enabled = config
                .detectors
                .as_ref()
                .is_none_or(|enabled| enabled.iter().any(|name| name == spec.name));
            if !enabled {
                continue;
            }
            let regex = Regex::new(spec.pattern).map_err(|error| MaskingError::InvalidConfig {
                key: "detectors",
                reason: format!(
                    "built-in detector `{}` failed to compile: {error}",
                    spec.name
                ),
            })?;
            let (context, n_positive) = context_automaton(spec.context, spec.negative_context)
                .map_err(|reason| MaskingError::InvalidConfig {
                    key: "detectors",
                    reason,
                })?;
            detectors.push(Detector {
                name: spec.name.into(),
                regex,
                validation: Validation::Builtin(spec.validate),
                context,
                n_positive,
                normalize: spec.normalize,
                replacement: config.replacement,
            });
        }
        for custom in &config.custom {
            detectors.push(compile_custom(custom, config)?);
        }
        for (name, replacement) in &config.detector_replacement {
            let detector = detectors
                .iter_mut()
                .find(|d| *d.name == **name)
                .ok_or_else(|| MaskingError::UnknownDetector {
                    key: "detector_replacement",
                    name: name.clone(),
                })?;
            detector.replacement = *replacement;
        }

        let hmac = if detectors.iter().any(|d| d.replacement == Replacement::Hmac) {
            let key = config.hmac_key.as_deref().unwrap_or_default();
            if key.len() < 16 {
                return Err(invalid(
                    "hmac_key",
                    "must be set, at least 16 bytes, when a detector uses `hmac` replacement",
                ));
            }
            Some(
                Hmac::<Sha256>::new_from_slice(key.as_bytes())
                    .map_err(|_| invalid("hmac_key", "is not a usable HMAC key"))?,
            )
        } else {
            None
        };

        let token_pattern = token_pattern(&detectors, config);
        let patterns = detectors
            .iter()
            .map(|d| d.regex.as_str())
            .chain([token_pattern.as_str()]);
        let prefilter = RegexSetBuilder::new(patterns)
            .size_limit(SET_SIZE_LIMIT)
            .build()
            .map_err(|error| {
                invalid(
                    "custom",
                    &format!("patterns together are too large: {error}"),
                )
            })?;
        let token = Regex::new(&token_pattern)
            .map_err(|error| invalid("replacement", &error.to_string()))?;
        let credit_card = detectors.iter().position(|d| &*d.name == "CREDIT_CARD");
        let phone = detectors.iter().position(|d| &*d.name == "PHONE");
        if phone.is_some() {
            // Compile the numbering plans now, not on the first request that needs them.
            crate::phone::warm_up();
        }
        debug_assert!(detectors.len() <= MAX_DETECTORS);

        Ok(Masker {
            detectors,
            prefilter,
            token,
            credit_card,
            phone,
            threshold: config.threshold,
            scan_keys: config.scan_keys,
            max_depth: config.max_depth,
            partial_keep: config.partial_keep,
            hmac,
            hmac_token_len: config.hmac_token_len,
        })
    }

    /// Masks a JSON document in place: field rules first (they mask whatever the field holds,
    /// with `[REDACTED:FIELD]`), then, when `detect` is true, the detectors over every string,
    /// over keys if `scan_keys` is set, and over integers that are valid card numbers.
    ///
    /// Errs only when the document nests deeper than `max_depth`; the document may then be
    /// partly masked and must not be used.
    pub fn mask_json(
        &self,
        doc: &mut Value,
        fields: &FieldRules,
        detect: bool,
    ) -> Result<Vec<Finding>, MaskingError> {
        let mut findings = Vec::new();
        let walk = Walk {
            masker: self,
            fields,
            detect,
        };
        walk.value(doc, &JsonPath::ROOT, &mut findings)?;
        Ok(findings)
    }

    /// Masks free text. Borrows the input when nothing was found.
    pub fn mask_text<'a>(&self, text: &'a str) -> (Cow<'a, str>, Vec<Finding>) {
        let mut counts = [0u32; MAX_DETECTORS];
        let masked = self.mask_str(text, None, &mut counts);
        let mut findings = Vec::new();
        self.push_findings(&counts, &JsonPath::ROOT, &mut findings);
        match masked {
            Some(masked) => (Cow::Owned(masked), findings),
            None => (Cow::Borrowed(text), findings),
        }
    }

    /// Masks free text given as bytes: invalid UTF-8 is an error, never passed through.
    pub fn mask_bytes<'a>(
        &self,
        bytes: &'a [u8],
    ) -> Result<(Cow<'a, str>, Vec<Finding>), MaskingError> {
        let text = std::str::from_utf8(bytes).map_err(|error| MaskingError::InvalidUtf8 {
            offset: error.valid_up_to(),
        })?;
        Ok(self.mask_text(text))
    }

    /// Names of the enabled detectors, built-ins first, in reporting order.
    pub fn detector_names(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|d| &*d.name)
    }

    /// Masks one string to a fixpoint; `None` when nothing was found (and nothing allocated).
    fn mask_str(
        &self,
        text: &str,
        context_key: Option<&str>,
        counts: &mut [u32],
    ) -> Option<String> {
        let mut masked: Option<String> = None;
        for _ in 0..MAX_PASSES {
            let current = masked.as_deref().unwrap_or(text);
            let (spans, settled) = self.find_spans(current, context_key);
            if spans.is_empty() {
                break;
            }
            let mut out = String::with_capacity(current.len());
            let mut copied_up_to = 0;
            for span in spans {
                let detector_index = span.detector.unwrap_or_default();
                out.push_str(&current[copied_up_to..span.start]);
                self.write_token(&mut out, detector_index, &current[span.start..span.end]);
                copied_up_to = span.end;
                counts[detector_index] += 1;
            }
            out.push_str(&current[copied_up_to..]);
            masked = Some(out);
            if settled {
                // Every pattern match was masked: nothing left that a new neighbour could
                // turn into a match, so this output is already a fixpoint.
                break;
            }
        }
        masked
    }

    /// Spans to replace, sorted and non-overlapping; empty (unallocated) when none. The flag
    /// is true when every pattern match became a span (none was rejected or overlapped).
    fn find_spans(&self, text: &str, context_key: Option<&str>) -> (Vec<Candidate>, bool) {
        if let Some(span) = self.phone_value(text, context_key) {
            return (vec![span], true);
        }
        if !self.prefilter.is_match(text) {
            return (Vec::new(), true);
        }
        let mut n_pattern_matches = 0;
        let mut candidates = Vec::new();
        let token_index = self.detectors.len();
        // Which patterns matched? Ask the set (one small allocation for its match list) so
        // that only those detectors scan the string. Short values too: running every detector
        // over an e-mail address or a phone number (what a JSON body is full of) made masking
        // a quarter slower on the processor's benchmark events than this allocation does.
        let matched = self.prefilter.matches(text);
        for index in matched.into_iter() {
            if index == token_index {
                let genuine = self
                    .token
                    .find_iter(text)
                    .filter(|m| is_genuine_token(m.as_str()));
                candidates.extend(genuine.map(|m| Candidate {
                    detector: None,
                    start: m.start(),
                    end: m.end(),
                    confidence: f32::INFINITY,
                }));
                continue;
            }
            let detector = &self.detectors[index];
            for m in detector.regex.find_iter(text) {
                n_pattern_matches += 1;
                let Some(accepted) = detector.validate(text, m.start(), m.end()) else {
                    continue;
                };
                let confidence = accepted.confidence
                    + detector.context_adjustment(text, accepted.start, context_key);
                if confidence >= self.threshold {
                    candidates.push(Candidate {
                        detector: Some(index),
                        start: accepted.start,
                        end: accepted.end,
                        confidence,
                    });
                }
            }
        }
        if candidates.iter().all(|c| c.detector.is_none()) {
            return (Vec::new(), n_pattern_matches == 0);
        }
        let spans = resolve_overlaps(candidates);
        let settled = spans.len() == n_pattern_matches;
        (spans, settled)
    }

    /// The whole value, when it is phone-shaped and its JSON key names a phone number
    /// (`phone`, `mobile`, `tel`, `fax`, ...): there, bare digits and local formats that need
    /// a context word in free text are phone numbers too.
    fn phone_value(&self, text: &str, context_key: Option<&str>) -> Option<Candidate> {
        let phone = self.phone?;
        let (start, end) = crate::phone::whole_value(text)?;
        if !context_key.is_some_and(crate::phone::is_phone_key)
            || PHONE_KEY_CONFIDENCE < self.threshold
        {
            return None;
        }
        Some(Candidate {
            detector: Some(phone),
            start,
            end,
            confidence: PHONE_KEY_CONFIDENCE,
        })
    }

    fn write_token(&self, out: &mut String, detector_index: usize, value: &str) {
        let detector = &self.detectors[detector_index];
        let name = &detector.name;
        match (detector.replacement, &self.hmac) {
            (Replacement::Hmac, Some(hmac)) => {
                let normalized = normalize(value, detector.normalize);
                let _ = write!(out, "[HMAC:{name}:");
                out.push_str(&hmac_digest(hmac, name, &normalized, self.hmac_token_len));
                out.push(']');
            }
            (Replacement::Partial, _) => {
                // Never keep more than half of a value: "...20" of an IP, not all of it.
                let n_alnum = value.bytes().filter(u8::is_ascii_alphanumeric).count();
                let keep = self.partial_keep.min(n_alnum / 2);
                if keep == 0 {
                    let _ = write!(out, "[REDACTED:{name}]");
                    return;
                }
                let tail_start = value
                    .char_indices()
                    .rev()
                    .filter(|(_, c)| c.is_ascii_alphanumeric())
                    .nth(keep - 1)
                    .map_or(0, |(i, _)| i);
                let _ = write!(out, "[REDACTED:{name}:...");
                out.extend(
                    value[tail_start..]
                        .chars()
                        .filter(char::is_ascii_alphanumeric),
                );
                out.push(']');
            }
            _ => {
                let _ = write!(out, "[REDACTED:{name}]");
            }
        }
    }

    fn push_findings(&self, counts: &[u32], path: &JsonPath<'_>, findings: &mut Vec<Finding>) {
        if counts.iter().all(|&c| c == 0) {
            return;
        }
        let pointer = path.to_pointer();
        for (detector, &count) in self.detectors.iter().zip(counts).filter(|(_, c)| **c > 0) {
            findings.push(Finding {
                detector: detector.name.to_string(),
                path: pointer.clone(),
                count,
            });
        }
    }

    /// A JSON integer that is a valid card number (Luhn and issuer) becomes a token string.
    fn mask_number(
        &self,
        number: &serde_json::Number,
        context_key: Option<&str>,
    ) -> Option<(usize, String)> {
        let index = self.credit_card?;
        let mut value = number.as_u64()?;
        if value < 1_000_000_000_000 {
            return None;
        }
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        while value > 0 {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        let digits = &digits[start..];
        let detector = &self.detectors[index];
        let confidence =
            detectors::card_number(digits)? + detector.context_adjustment("", 0, context_key);
        if confidence < self.threshold {
            return None;
        }
        let text = std::str::from_utf8(digits).ok()?;
        let mut token = String::new();
        self.write_token(&mut token, index, text);
        Some((index, token))
    }
}

impl Detector {
    fn validate(&self, text: &str, start: usize, end: usize) -> Option<Accepted> {
        match &self.validation {
            Validation::Builtin(validate) => validate(text, start, end),
            Validation::Custom {
                validator,
                confidence,
            } => {
                let candidate = &text.as_bytes()[start..end];
                let valid = match validator {
                    None => true,
                    Some(Validator::Luhn) => checksum::luhn(candidate),
                    Some(Validator::Mod97) => checksum::mod97(candidate),
                };
                valid.then_some(Accepted {
                    start,
                    end,
                    confidence: *confidence,
                })
            }
        }
    }

    /// Context words in the bytes before the match decide, the closest one winning; when
    /// there are none, the JSON key holding the value decides.
    fn context_adjustment(&self, text: &str, start: usize, context_key: Option<&str>) -> f32 {
        let Some(context) = &self.context else {
            return 0.0;
        };
        let window_start = start.saturating_sub(CONTEXT_WINDOW);
        let window = clause_tail(&text.as_bytes()[window_start..start]);
        let closest = |haystack: &[u8]| {
            context
                .find_iter(haystack)
                .filter(|m| starts_word(haystack, m.start()) && ends_short_word(haystack, m))
                .last()
                .map(|m| m.pattern().as_usize() < self.n_positive)
        };
        let positive =
            closest(window).or_else(|| context_key.and_then(|key| closest(key.as_bytes())));
        match positive {
            Some(true) => CONTEXT_BOOST,
            Some(false) => -CONTEXT_PENALTY,
            None => 0.0,
        }
    }
}

/// The end of `window` after its last clause break (`;`, `|`, a newline, `,` `.` `!` `?`
/// followed by a space, or a piece of another value: a digit, the `@` of an e-mail address,
/// the `]` of one of our tokens): in "order #12 and call 212-555-0123" the word "order" is
/// about another value, and so is "contact" in "contact ann@example.com and 2125550123".
fn clause_tail(window: &[u8]) -> &[u8] {
    let is_break = |i: usize| match window[i] {
        // Another value, which the words before it were about. Our tokens count too: they
        // hold a value, and their names ("[REDACTED:PHONE]") are not context words.
        b';' | b'|' | b'\n' | b'0'..=b'9' | b'@' | b']' => true,
        b',' | b'!' | b'?' => window.get(i + 1).is_some_and(|&b| b == b' '),
        // A full stop ends a sentence, unless it ends an abbreviation ("no.", "tel.").
        b'.' => {
            let word = &window[..i];
            let word = &word[word.len()
                - word
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_alphanumeric())
                    .count()..];
            let abbreviation =
                (1..=3).contains(&word.len()) && word.iter().all(u8::is_ascii_alphabetic);
            window.get(i + 1).is_some_and(|&b| b == b' ') && !abbreviation
        }
        _ => false,
    };
    match (0..window.len()).rev().find(|&i| is_break(i)) {
        Some(i) => &window[i + 1..],
        None => window,
    }
}

/// A context word must start a word: "ip" in "client_ip" or "clientIp", not in "zip".
fn starts_word(haystack: &[u8], at: usize) -> bool {
    match at.checked_sub(1).map(|i| haystack[i]) {
        None => true,
        Some(before) => {
            !before.is_ascii_alphabetic()
                || (before.is_ascii_lowercase() && haystack[at].is_ascii_uppercase())
        }
    }
}

/// A context word of up to three letters must also end a word, or be followed by a plural
/// `s` that does: "tel" in "tel:" or "tels", not in "telemetry"; "ip" in "ips", not in
/// "ipsum"; "pan" not in "panel". Longer words may start a longer one ("phone" in "phones",
/// "card" in "cardholder").
fn ends_short_word(haystack: &[u8], m: &aho_corasick::Match) -> bool {
    if m.end() - m.start() > 3 {
        return true;
    }
    // A lower-case letter continues the word; so does an upper-case one after an upper-case
    // match ("TELEMETRY"), but not after a lower-case one ("telNumber").
    let last_is_upper = haystack[m.end() - 1].is_ascii_uppercase();
    let continues = |at: usize| {
        haystack
            .get(at)
            .is_some_and(|&b| b.is_ascii_lowercase() || (last_is_upper && b.is_ascii_uppercase()))
    };
    match haystack.get(m.end()) {
        Some(b's' | b'S') => !continues(m.end() + 1),
        _ => !continues(m.end()),
    }
}

fn context_automaton(
    positive: &[impl AsRef<str>],
    negative: &[impl AsRef<str>],
) -> Result<(Option<AhoCorasick>, usize), String> {
    if positive.is_empty() && negative.is_empty() {
        return Ok((None, 0));
    }
    let words = positive
        .iter()
        .map(AsRef::as_ref)
        .chain(negative.iter().map(AsRef::as_ref));
    let automaton = AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(words)
        .map_err(|error| format!("context words: {error}"))?;
    Ok((Some(automaton), positive.len()))
}

fn compile_custom(
    custom: &CustomDetector,
    config: &MaskingConfig,
) -> Result<Detector, MaskingError> {
    let invalid = |reason: String| MaskingError::InvalidCustomDetector {
        name: custom.name.clone(),
        reason,
    };
    let name = &custom.name;
    let well_formed = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(invalid(
            "name must be [A-Z][A-Z0-9_]*, at most 64 characters".into(),
        ));
    }
    if crate::BUILTIN_DETECTORS.contains(&name.as_str()) || name == FIELD_DETECTOR {
        return Err(invalid("name is taken by a built-in detector".into()));
    }
    if config.custom.iter().filter(|c| c.name == *name).count() > 1 {
        return Err(invalid("name is defined more than once".into()));
    }
    if custom.pattern.len() > MAX_CUSTOM_PATTERN_LEN {
        return Err(invalid("pattern is longer than 4096 bytes".into()));
    }
    if !(0.0..=1.0).contains(&custom.confidence) {
        return Err(invalid("confidence must be between 0.0 and 1.0".into()));
    }
    if custom
        .context
        .iter()
        .chain(&custom.negative_context)
        .any(|w| w.trim().is_empty())
    {
        return Err(invalid("context words must not be empty".into()));
    }
    let regex = RegexBuilder::new(&custom.pattern)
        .size_limit(CUSTOM_PATTERN_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|error| invalid(format!("pattern rejected: {error}")))?;
    if regex.is_match("") {
        // It would "find" an empty secret between every two characters.
        return Err(invalid("pattern matches the empty string".into()));
    }
    let (context, n_positive) =
        context_automaton(&custom.context, &custom.negative_context).map_err(invalid)?;
    Ok(Detector {
        name: name.as_str().into(),
        regex,
        validation: Validation::Custom {
            validator: custom.validator,
            confidence: custom.confidence,
        },
        context,
        n_positive,
        normalize: Normalize::Verbatim,
        replacement: config.replacement,
    })
}

/// The tokens this engine writes, and nothing else: `[REDACTED:<NAME>]` for an enabled
/// detector or `FIELD`, `[REDACTED:<NAME>:...<tail>]` for a detector in `partial` mode (1 to
/// `partial_keep` letters or digits), `[HMAC:<NAME>:<hex>]` for a detector in `hmac` mode
/// (exactly `hmac_token_len` lowercase hex digits).
///
/// Text inside a token is never matched again, which (with the fixpoint loop in `mask_str`)
/// makes masking idempotent. So the pattern must be exact: a looser one would let input such
/// as `[HMAC:X:4111111111111111]` pass as a token and hide a real card from the detectors.
/// Matches are checked once more by `is_genuine_token`: an HMAC digest of decimal digits
/// only is not ours.
fn token_pattern(detectors: &[Detector], config: &MaskingConfig) -> String {
    let with_mode = |mode: Replacement| {
        alternation(
            detectors
                .iter()
                .filter(move |d| d.replacement == mode)
                .map(|d| &*d.name),
        )
    };
    let all_names = alternation(detectors.iter().map(|d| &*d.name).chain([FIELD_DETECTOR]));
    let mut pattern = format!(r"\[(?:REDACTED:(?:{all_names})");
    let partial = with_mode(Replacement::Partial);
    if !partial.is_empty() {
        let keep = config.partial_keep;
        let _ = write!(
            pattern,
            r"|REDACTED:(?:{partial}):\.\.\.[A-Za-z0-9]{{1,{keep}}}"
        );
    }
    let hmac = with_mode(Replacement::Hmac);
    if !hmac.is_empty() {
        let len = config.hmac_token_len;
        let _ = write!(pattern, r"|HMAC:(?:{hmac}):[0-9a-f]{{{len}}}");
    }
    pattern.push_str(r")\]");
    pattern
}

/// The hex digest of an HMAC token: the first `len` hex digits of HMAC-SHA-256 over the
/// detector name, a zero byte and the normalized value.
///
/// A digest of decimal digits only would read like a phone number, an SSN or a card number,
/// so `is_genuine_token` does not trust such a token (a caller could otherwise hide
/// `[HMAC:PHONE:2125550123]` in plain sight). The few values whose digest starts with `len`
/// decimal digits (2 % at 8 digits, 1 % at 10) are keyed again with a round counter until one
/// holds a letter: still deterministic, so equal values keep equal tokens.
fn hmac_digest(hmac: &Hmac<Sha256>, name: &str, normalized: &str, len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for round in 0..=u8::MAX {
        let mut mac = hmac.clone();
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(normalized.as_bytes());
        if round > 0 {
            mac.update(&[0, round]);
        }
        hex.clear();
        for byte in mac.finalize().into_bytes() {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        hex.truncate(len);
        if hex.bytes().any(|b| b.is_ascii_alphabetic()) {
            break;
        }
    }
    hex
}

/// Whether a match of the token pattern is one this engine can have written: an HMAC digest
/// holds at least one hex letter (see `hmac_digest`). `[HMAC:PHONE:2125550123]` is text.
fn is_genuine_token(token: &str) -> bool {
    let Some(rest) = token.strip_prefix("[HMAC:") else {
        return true;
    };
    let digest = rest.rsplit_once(':').map_or("", |(_, digest)| digest);
    digest.bytes().any(|b| b.is_ascii_alphabetic())
}

/// `A|B|C` of detector names, for a regex.
fn alternation<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(regex::escape).collect::<Vec<_>>().join("|")
}

/// Keeps our tokens first, then the most confident, then the longest span; drops whatever
/// overlaps a kept span. Returns the kept detector spans sorted by position.
fn resolve_overlaps(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: BTreeMap<usize, Candidate> = BTreeMap::new();
    for candidate in candidates {
        let overlaps_before = kept
            .range(..=candidate.start)
            .next_back()
            .is_some_and(|(_, k)| k.end > candidate.start);
        let overlaps_after = kept
            .range(candidate.start..)
            .next()
            .is_some_and(|(&start, _)| start < candidate.end);
        if !overlaps_before && !overlaps_after {
            kept.insert(candidate.start, candidate);
        }
    }
    kept.into_values()
        .filter(|c| c.detector.is_some())
        .collect()
}

fn normalize(value: &str, normalize: Normalize) -> Cow<'_, str> {
    match normalize {
        Normalize::Verbatim => Cow::Borrowed(value),
        Normalize::Lowercase => Cow::Owned(value.to_lowercase()),
        Normalize::Alphanumeric => Cow::Owned(
            value
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        ),
    }
}

/// One traversal of a document.
struct Walk<'m> {
    masker: &'m Masker,
    fields: &'m FieldRules,
    detect: bool,
}

impl Walk<'_> {
    fn value(
        &self,
        value: &mut Value,
        path: &JsonPath<'_>,
        findings: &mut Vec<Finding>,
    ) -> Result<(), MaskingError> {
        if path.depth > self.masker.max_depth {
            return Err(MaskingError::TooDeep {
                max_depth: self.masker.max_depth,
            });
        }
        if path.depth > 0 && self.fields.matches(path) {
            if value.as_str() != Some(FIELD_TOKEN) {
                *value = Value::String(FIELD_TOKEN.to_owned());
                findings.push(Finding {
                    detector: FIELD_DETECTOR.to_owned(),
                    path: path.to_pointer(),
                    count: 1,
                });
            }
            return Ok(());
        }
        match value {
            Value::String(text) if self.detect => self.string(text, path, findings),
            Value::Number(number) if self.detect => {
                if let Some((index, token)) = self.masker.mask_number(number, path.context_key) {
                    *value = Value::String(token);
                    let mut counts = [0u32; MAX_DETECTORS];
                    counts[index] = 1;
                    self.masker.push_findings(&counts, path, findings);
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    self.value(item, &path.index(index), findings)?;
                }
            }
            Value::Object(map) => {
                if self.detect && self.masker.scan_keys {
                    self.mask_keys(map, path, findings);
                }
                for (key, item) in map.iter_mut() {
                    self.value(item, &path.key(key), findings)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    // Kept out of `value` so the counters do not sit in every recursion frame.
    #[inline(never)]
    fn string(&self, text: &mut String, path: &JsonPath<'_>, findings: &mut Vec<Finding>) {
        let mut counts = [0u32; MAX_DETECTORS];
        if let Some(masked) = self.masker.mask_str(text, path.context_key, &mut counts) {
            *text = masked;
            self.masker.push_findings(&counts, path, findings);
        }
    }

    /// Renames keys holding PII. Runs before the values are visited so that no finding's
    /// path carries an unmasked key. Two keys masked to the same token stay distinct with a
    /// `#2`, `#3`... suffix rather than one overwriting the other.
    #[inline(never)]
    fn mask_keys(
        &self,
        map: &mut serde_json::Map<String, Value>,
        path: &JsonPath<'_>,
        findings: &mut Vec<Finding>,
    ) {
        let mut renames = Vec::new();
        for key in map.keys() {
            let mut counts = [0u32; MAX_DETECTORS];
            if let Some(masked) = self.masker.mask_str(key, None, &mut counts) {
                renames.push((key.clone(), masked, counts));
            }
        }
        for (old_key, masked_key, counts) in renames {
            let Some(item) = map.remove(&old_key) else {
                continue;
            };
            let mut new_key = masked_key.clone();
            let mut n = 1;
            while map.contains_key(&new_key) {
                n += 1;
                new_key = format!("{masked_key}#{n}");
            }
            self.masker
                .push_findings(&counts, &path.key(&new_key), findings);
            map.insert(new_key, item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_matches_public_names() {
        let names: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
        assert_eq!(names, crate::BUILTIN_DETECTORS);
    }

    // Regression: on the second fixpoint pass, "PHONE" inside a token (and "call" before it)
    // became the context of the next bare number.
    #[test]
    fn tokens_and_email_addresses_end_a_clause() {
        assert_eq!(clause_tail(b"call [REDACTED:PHONE] and see "), b" and see ");
        assert_eq!(
            clause_tail(b"contact ann@example.com and "),
            b"example.com and "
        );
        assert_eq!(clause_tail(b"order #12 and call "), b" and call ");
    }

    #[test]
    fn masker_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Masker>();
    }
}
