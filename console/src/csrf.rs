//! CSRF protection for every form: a random token kept in the session (renewed at sign-in),
//! written into each form as a hidden field and compared in constant time on every POST. With
//! `SameSite=Lax` cookies a cross-site POST carries no session anyway; the token also covers a
//! same-site attacker (another app on a sibling subdomain).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use crate::error::ConsoleError;

const CSRF_TOKEN: &str = "csrf_token";

/// This session's token, made on first use.
pub async fn token(session: &Session) -> Result<String, ConsoleError> {
    if let Some(token) = session
        .get::<String>(CSRF_TOKEN)
        .await
        .map_err(|_| ConsoleError::Internal)?
    {
        return Ok(token);
    }
    renew(session).await
}

/// Replaces this session's token (at sign-in).
pub async fn renew(session: &Session) -> Result<String, ConsoleError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    session
        .insert(CSRF_TOKEN, &token)
        .await
        .map_err(|_| ConsoleError::Internal)?;
    Ok(token)
}

/// Refuses a form whose token is missing or is not this session's.
pub async fn verify(session: &Session, submitted: Option<&str>) -> Result<(), ConsoleError> {
    let expected = session
        .get::<String>(CSRF_TOKEN)
        .await
        .map_err(|_| ConsoleError::Internal)?;
    match (expected, submitted) {
        (Some(expected), Some(submitted)) if matches(&expected, submitted) => Ok(()),
        (_, None) | (_, Some("")) => {
            tracing::warn!("form without its CSRF token refused");
            Err(ConsoleError::Csrf)
        }
        _ => {
            tracing::warn!("form with a CSRF token that is not this session's refused");
            Err(ConsoleError::Csrf)
        }
    }
}

fn matches(expected: &str, submitted: &str) -> bool {
    expected.len() == submitted.len() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_match_only_exactly() {
        assert!(super::matches("abc", "abc"));
        assert!(!super::matches("abc", "abd"));
        assert!(!super::matches("abc", "ab"));
        assert!(!super::matches("abc", ""));
    }
}
