//! Checksums shared by the built-in detectors and the custom `validator` choices.

/// Luhn (mod 10) over ASCII digits; any other byte is ignored. At least two digits required.
pub(crate) fn luhn(text: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut n_digits = 0usize;
    // Walk from the right: every second digit, starting with the next-to-last, is doubled.
    for &byte in text.iter().rev().filter(|b| b.is_ascii_digit()) {
        let mut digit = u32::from(byte - b'0');
        if !n_digits.is_multiple_of(2) {
            digit *= 2;
            if digit > 9 {
                digit -= 9;
            }
        }
        sum += digit;
        n_digits += 1;
    }
    n_digits >= 2 && sum.is_multiple_of(10)
}

/// ISO 7064 MOD 97-10 with the IBAN rearrangement: the first four alphanumerics move to the
/// end, letters count as 10–35, and the remainder must be 1. Spaces are ignored; any other
/// byte fails. At least five alphanumerics required.
pub(crate) fn mod97(text: &[u8]) -> bool {
    let alnum = || text.iter().copied().filter(|b| *b != b' ');
    if alnum().count() < 5 || !alnum().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let rearranged = alnum().skip(4).chain(alnum().take(4));
    let mut remainder = 0u32;
    for byte in rearranged {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            _ => u32::from(byte.to_ascii_uppercase() - b'A') + 10,
        };
        // Letters expand to two digits; fold them in one at a time to stay within u32.
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_known_cards_and_rejects_one_digit_off() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"0"));
    }

    #[test]
    fn mod97_accepts_iban_examples() {
        assert!(mod97(b"GB82WEST12345698765432"));
        assert!(mod97(b"DE89 3704 0044 0532 0130 00"));
        assert!(!mod97(b"DE89370400440532013001"));
        assert!(!mod97(b"DE89-3704"));
    }
}
