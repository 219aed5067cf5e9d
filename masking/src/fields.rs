//! Policy field rules and the JSON path the walker keeps while it descends.

use std::fmt::Write as _;

use crate::MaskingError;

/// Fields a policy masks whatever they hold. Each rule is either a JSON pointer (RFC 6901,
/// starting with `/`, where a `*` segment stands for any key or array index) or a bare key
/// name matched at any depth.
///
/// ```
/// # use callproof_masking::FieldRules;
/// let rules = FieldRules::parse(&["/user/password", "/cards/*/number", "api_key"]).unwrap();
/// assert!(!rules.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldRules {
    pointers: Vec<Vec<RuleSegment>>,
    key_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RuleSegment {
    Any,
    Exact(String),
}

/// Longest pointer accepted; deeper rules could never match a document within `max_depth`.
const MAX_RULE_SEGMENTS: usize = 256;

impl FieldRules {
    /// Parses policy rules; an empty rule or a malformed `~` escape is an error.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<FieldRules, MaskingError> {
        let mut parsed = FieldRules::default();
        for rule in rules {
            let rule = rule.as_ref();
            let invalid = |reason: &str| MaskingError::InvalidFieldRule {
                rule: rule.to_owned(),
                reason: reason.to_owned(),
            };
            if rule.is_empty() {
                return Err(invalid("must be a JSON pointer or a key name, not empty"));
            }
            let Some(pointer) = rule.strip_prefix('/') else {
                parsed.key_names.push(rule.to_owned());
                continue;
            };
            let segments = pointer
                .split('/')
                .map(|segment| match segment {
                    "*" => Ok(RuleSegment::Any),
                    _ => unescape(segment)
                        .map(RuleSegment::Exact)
                        .ok_or_else(|| invalid("`~` must be followed by `0` or `1`")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if segments.len() > MAX_RULE_SEGMENTS {
                return Err(invalid("has too many segments"));
            }
            parsed.pointers.push(segments);
        }
        Ok(parsed)
    }

    /// No rules: nothing is masked by field.
    pub fn empty() -> Self {
        FieldRules::default()
    }

    pub fn is_empty(&self) -> bool {
        self.pointers.is_empty() && self.key_names.is_empty()
    }

    pub(crate) fn matches(&self, path: &JsonPath<'_>) -> bool {
        if let Segment::Key(key) = path.segment
            && self.key_names.iter().any(|name| name == key)
        {
            return true;
        }
        self.pointers
            .iter()
            .any(|rule| rule.len() == path.depth && path_matches(rule, path))
    }
}

fn path_matches(rule: &[RuleSegment], path: &JsonPath<'_>) -> bool {
    // Compare from the leaf up; `rule.len() == path.depth` was checked by the caller.
    let mut node = path;
    for rule_segment in rule.iter().rev() {
        let matched = match (rule_segment, node.segment) {
            (RuleSegment::Any, _) => true,
            (RuleSegment::Exact(want), Segment::Key(key)) => want == key,
            (RuleSegment::Exact(want), Segment::Index(index)) => {
                want.parse::<usize>().is_ok_and(|want| want == index)
            }
            (_, Segment::Root) => false,
        };
        if !matched {
            return false;
        }
        match node.parent {
            Some(parent) => node = parent,
            None => return false,
        }
    }
    true
}

fn unescape(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next()? {
                '0' => out.push('~'),
                '1' => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Segment<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

/// The path from the document root to the value being visited, as a linked list on the
/// stack: descending costs no allocation, and the pointer string is only built for a value
/// that produced a finding.
#[derive(Debug)]
pub(crate) struct JsonPath<'a> {
    pub parent: Option<&'a JsonPath<'a>>,
    pub segment: Segment<'a>,
    pub depth: usize,
    /// The nearest object key above the value (array elements inherit their array's key):
    /// "card_number" is context for whatever it holds.
    pub context_key: Option<&'a str>,
}

impl<'a> JsonPath<'a> {
    pub const ROOT: JsonPath<'static> = JsonPath {
        parent: None,
        segment: Segment::Root,
        depth: 0,
        context_key: None,
    };

    pub fn key(&'a self, key: &'a str) -> JsonPath<'a> {
        JsonPath {
            parent: Some(self),
            segment: Segment::Key(key),
            depth: self.depth + 1,
            context_key: Some(key),
        }
    }

    pub fn index(&'a self, index: usize) -> JsonPath<'a> {
        JsonPath {
            parent: Some(self),
            segment: Segment::Index(index),
            depth: self.depth + 1,
            context_key: self.context_key,
        }
    }

    /// The RFC 6901 pointer of this value ("" for the root).
    pub fn to_pointer(&self) -> String {
        let mut segments = Vec::with_capacity(self.depth);
        let mut node = Some(self);
        while let Some(current) = node {
            segments.push(current.segment);
            node = current.parent;
        }
        let mut pointer = String::new();
        for segment in segments.iter().rev() {
            match segment {
                Segment::Root => {}
                Segment::Index(index) => {
                    let _ = write!(pointer, "/{index}");
                }
                Segment::Key(key) => {
                    pointer.push('/');
                    for c in key.chars() {
                        match c {
                            '~' => pointer.push_str("~0"),
                            '/' => pointer.push_str("~1"),
                            c => pointer.push(c),
                        }
                    }
                }
            }
        }
        pointer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_wildcards_and_key_names() {
        let rules = FieldRules::parse(&["/a/*/b", "secret", "/x~1y"]).unwrap();
        let root = JsonPath::ROOT;
        let a = root.key("a");
        let a0 = a.index(0);
        let a0b = a0.key("b");
        assert!(rules.matches(&a0b));
        assert!(!rules.matches(&a0));
        let deep = a0b.key("secret");
        assert!(rules.matches(&deep));
        let slash = root.key("x/y");
        assert!(rules.matches(&slash));
        assert_eq!(slash.to_pointer(), "/x~1y");
        assert_eq!(a0b.to_pointer(), "/a/0/b");
    }

    #[test]
    fn bad_rules_are_rejected() {
        assert!(FieldRules::parse(&[""]).is_err());
        assert!(FieldRules::parse(&["/a~2"]).is_err());
        assert!(FieldRules::empty().is_empty());
    }
}
