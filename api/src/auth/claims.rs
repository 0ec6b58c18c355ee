//! What a verified token's claims say about the caller: the user id (`sub`, then `userId`, then
//! `user_id`, as seed 003 reads them) and whether a configurable role claim makes them an admin.

use serde_json::{Map, Value};

/// Longest accepted user id (the CRD's `spec.userId` limit).
pub const MAX_USER_ID_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("token has no user id (sub, userId or user_id)")]
    NoUserId,
    #[error("token's user id is too long")]
    UserIdTooLong,
    #[error("token's user id contains control characters")]
    UserIdControlChars,
}

/// The first non-empty of `sub`, `userId`, `user_id`. Strings and integers are accepted (seed 000's
/// users have numeric ids).
pub fn user_id(claims: &Map<String, Value>) -> Result<String, ClaimsError> {
    let id = ["sub", "userId", "user_id"]
        .iter()
        .filter_map(|k| claims.get(*k))
        .find_map(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        })
        .ok_or(ClaimsError::NoUserId)?;
    validate_user_id(&id)?;
    Ok(id)
}

pub fn validate_user_id(id: &str) -> Result<(), ClaimsError> {
    if id.trim().is_empty() {
        return Err(ClaimsError::NoUserId);
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(ClaimsError::UserIdTooLong);
    }
    if id.chars().any(char::is_control) {
        return Err(ClaimsError::UserIdControlChars);
    }
    Ok(())
}

/// A dotted claim path such as `role` or `app_metadata.role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleClaim {
    path: Vec<String>,
    admin_roles: Vec<String>,
}

impl RoleClaim {
    pub fn new(path: &str, admin_roles: &[String]) -> Self {
        Self {
            path: path
                .split('.')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            admin_roles: admin_roles
                .iter()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect(),
        }
    }

    /// The role values at the path: a string, or the strings of an array.
    pub fn roles<'a>(&self, claims: &'a Map<String, Value>) -> Vec<&'a str> {
        let Some((first, rest)) = self.path.split_first() else {
            return Vec::new();
        };
        let mut value = claims.get(first);
        for key in rest {
            value = value.and_then(|v| v.get(key));
        }
        match value {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    pub fn is_admin(&self, claims: &Map<String, Value>) -> bool {
        self.roles(claims)
            .iter()
            .any(|r| self.admin_roles.iter().any(|a| a == r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn user_id_comes_from_sub_then_user_id_claims() {
        assert_eq!(
            user_id(&map(json!({"sub": "a", "userId": "b"}))),
            Ok("a".into())
        );
        assert_eq!(
            user_id(&map(json!({"userId": "b", "user_id": "c"}))),
            Ok("b".into())
        );
        assert_eq!(user_id(&map(json!({"user_id": "c"}))), Ok("c".into()));
        assert_eq!(
            user_id(&map(json!({"sub": "", "userId": 42}))),
            Ok("42".into())
        );
        assert_eq!(
            user_id(&map(json!({"sub": null, "user_id": "c"}))),
            Ok("c".into())
        );
    }

    #[test]
    fn missing_or_odd_user_ids_are_refused() {
        assert_eq!(user_id(&map(json!({}))), Err(ClaimsError::NoUserId));
        assert_eq!(
            user_id(&map(json!({"sub": "  "}))),
            Err(ClaimsError::NoUserId)
        );
        assert_eq!(
            user_id(&map(json!({"sub": {"x": 1}}))),
            Err(ClaimsError::NoUserId)
        );
        assert_eq!(
            user_id(&map(json!({"sub": 1.5}))),
            Err(ClaimsError::NoUserId)
        );
        assert_eq!(
            user_id(&map(json!({"sub": "x".repeat(513)}))),
            Err(ClaimsError::UserIdTooLong)
        );
        assert_eq!(
            user_id(&map(json!({"sub": "a\nb"}))),
            Err(ClaimsError::UserIdControlChars)
        );
    }

    #[test]
    fn role_claim_is_a_configurable_path() {
        let admins = vec!["admin".to_owned(), "owner".to_owned()];
        let top = RoleClaim::new("role", &admins);
        assert!(top.is_admin(&map(json!({"role": "admin"}))));
        assert!(!top.is_admin(&map(json!({"role": "authenticated"}))));
        assert!(top.is_admin(&map(json!({"role": ["user", "owner"]}))));
        assert!(!top.is_admin(&map(json!({"app_metadata": {"role": "admin"}}))));

        let nested = RoleClaim::new("app_metadata.role", &admins);
        assert!(nested.is_admin(&map(json!({"app_metadata": {"role": "admin"}}))));
        assert!(!nested.is_admin(&map(json!({"role": "admin"}))));
        assert!(!nested.is_admin(&map(json!({"app_metadata": "admin"}))));
        assert!(!nested.is_admin(&map(json!({"app_metadata": {"role": 1}}))));

        let none = RoleClaim::new("", &admins);
        assert!(!none.is_admin(&map(json!({"role": "admin"}))));
    }
}
