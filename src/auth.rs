//! Service tokens. Every token is kept only as its SHA-256 digest, compared in
//! constant time against every service, and never logged. A token can be
//! given inline, as a digest, or read at start from an environment variable
//! or a file, so that no secret needs to be baked into an image.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::settings::{blank, Settings, SettingsError, DEMO_TOKEN};
use crate::{GroupName, ServiceName};

/// One service allowed to identify.
#[derive(Debug)]
pub struct Service {
    /// The name stamped into `source.service`.
    pub name: ServiceName,
    /// SHA-256 of the token.
    digest: [u8; 32],
    /// True when `"*"` is among the groups: any group name is allowed.
    any_group: bool,
    /// The named groups; joined when `IDENTIFY` names none.
    groups: Vec<GroupName>,
}

/// Why an `IDENTIFY` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token")]
    BadToken,
    #[error("group {0:?} is not allowed for this service")]
    ForbiddenGroup(String),
    #[error("more than {0} groups asked for (limits.max_groups_per_session)")]
    TooManyGroups(usize),
}

/// The services of the settings, ready to check tokens against.
#[derive(Debug, Default)]
pub struct Auth {
    services: Vec<Arc<Service>>,
    demo_active: bool,
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    /// Resolves every token source. A token from an unset variable or an
    /// unreadable file is a settings error naming the key.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        let mut auth = Auth::default();
        for (i, s) in settings.services.iter().enumerate() {
            let key = |field: &str| format!("services[{i}].{field}");
            let (digest, is_demo) = if let Some(token) = &s.token {
                (sha256(token), token == DEMO_TOKEN)
            } else if let Some(hex_digest) = &s.token_sha256 {
                let bytes = hex::decode(hex_digest.trim()).ok().filter(|b| b.len() == 32);
                let bytes =
                    bytes.ok_or_else(|| SettingsError::new(key("token_sha256"), "must be 64 hex characters"))?;
                let mut digest = [0u8; 32];
                digest.copy_from_slice(&bytes);
                if digest == sha256("") {
                    return Err(SettingsError::new(
                        key("token_sha256"),
                        "is the digest of the empty token",
                    ));
                }
                (digest, digest == sha256(DEMO_TOKEN))
            } else if let Some(var) = &s.token_env {
                let token = match std::env::var(var) {
                    Ok(token) if !blank(&token) => token,
                    Ok(_) | Err(std::env::VarError::NotPresent) => {
                        return Err(SettingsError::new(
                            key("token_env"),
                            format!("environment variable {var} is unset or empty"),
                        ))
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        return Err(SettingsError::new(
                            key("token_env"),
                            format!("environment variable {var} is not valid UTF-8 (not shown)"),
                        ))
                    }
                };
                (sha256(&token), token == DEMO_TOKEN)
            } else if let Some(path) = &s.token_file {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SettingsError::new(key("token_file"), format!("{}: {e}", path.display())))?;
                let token = text.trim_end_matches(['\n', '\r']);
                if blank(token) {
                    return Err(SettingsError::new(
                        key("token_file"),
                        format!("{} is empty", path.display()),
                    ));
                }
                (sha256(token), token == DEMO_TOKEN)
            } else {
                return Err(SettingsError::new(key("token"), "no token source"));
            };
            if is_demo && !settings.demo_token_allowed() {
                log::warn!(
                    "service {:?} uses the demo token, which is refused with HUB_ENV=production; it is disabled",
                    s.name
                );
                continue;
            }
            auth.demo_active |= is_demo;
            let groups = s
                .groups
                .iter()
                .filter(|g| *g != "*")
                .filter_map(|g| GroupName::parse(g).ok())
                .collect();
            auth.services.push(Arc::new(Service {
                name: s.name.as_str().into(),
                digest,
                any_group: s.groups.iter().any(|g| g == "*"),
                groups,
            }));
        }
        Ok(auth)
    }

    /// True while a service accepts the well-known demo token.
    pub fn demo_active(&self) -> bool {
        self.demo_active
    }

    /// How many services can identify.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The service whose token this is. Every service is compared, each in
    /// constant time, so the time taken says nothing about the token.
    pub fn check(&self, token: &str) -> Result<Arc<Service>, AuthError> {
        let digest = sha256(token);
        let mut found = u32::MAX;
        for (i, service) in self.services.iter().enumerate() {
            let hit = service.digest.ct_eq(&digest);
            found = u32::conditional_select(&found, &(i as u32), hit);
        }
        self.services.get(found as usize).cloned().ok_or(AuthError::BadToken)
    }
}

impl Service {
    /// The groups to join: those requested, each checked against the
    /// service's list, or all named groups when none are requested.
    ///
    /// A client may ask for at most `max` groups (duplicates included); the
    /// service's own list, when it asks for none, is the operator's.
    pub fn resolve_groups(&self, requested: Option<&[String]>, max: usize) -> Result<Vec<GroupName>, AuthError> {
        let Some(requested) = requested else {
            return Ok(self.groups.clone());
        };
        if requested.len() > max {
            return Err(AuthError::TooManyGroups(max));
        }
        let mut out: Vec<GroupName> = Vec::with_capacity(requested.len());
        let mut seen = std::collections::HashSet::with_capacity(requested.len());
        for name in requested {
            let group = GroupName::parse(name).map_err(|_| AuthError::ForbiddenGroup(name.clone()))?;
            if !(self.any_group || self.groups.contains(&group)) {
                return Err(AuthError::ForbiddenGroup(name.clone()));
            }
            if seen.insert(group.clone()) {
                out.push(group);
            }
        }
        Ok(out)
    }
}

/// Compares two secrets in constant time (for the HTTP bearer tokens).
pub fn secret_eq(given: &str, expected: &str) -> bool {
    bool::from(sha256(given).ct_eq(&sha256(expected)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn auth(extra: &str, env: Option<&str>) -> Result<Auth, SettingsError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("extra.toml");
        std::fs::write(&path, extra).expect("write");
        let settings = Settings::load_from(Path::new("/nonexistent"), env, Some(&path), Vec::new())?;
        Auth::from_settings(&settings)
    }

    #[test]
    fn a_blank_token_from_any_source_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("blank");
        std::fs::write(&file, " \n").expect("write");
        std::env::set_var("SOCKET_HUB_TEST_BLANK_TOKEN", "  ");
        let empty_digest = hex::encode(sha256(""));
        for (source, key) in [
            (format!("token_sha256=\"{empty_digest}\""), "services[0].token_sha256"),
            (
                "token_env=\"SOCKET_HUB_TEST_BLANK_TOKEN\"".to_owned(),
                "services[0].token_env",
            ),
            (format!("token_file=\"{}\"", file.display()), "services[0].token_file"),
        ] {
            let e = auth(&format!("[[services]]\nname=\"x\"\n{source}\n"), None).expect_err(&source);
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn every_token_source_is_accepted_and_a_wrong_token_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tok");
        std::fs::write(&file, "from-file\n").expect("write");
        std::env::set_var("SOCKET_HUB_TEST_TOKEN", "from-env");
        let digest = hex::encode(sha256("hashed"));
        let a = auth(
            &format!(
                "[[services]]\nname=\"inline\"\ntoken=\"plain\"\n[[services]]\nname=\"hash\"\ntoken_sha256=\"{digest}\"\n\
                 [[services]]\nname=\"env\"\ntoken_env=\"SOCKET_HUB_TEST_TOKEN\"\n[[services]]\nname=\"file\"\ntoken_file=\"{}\"\n",
                file.display()
            ),
            None,
        )
        .expect("loads");
        for (token, name) in [
            ("plain", "inline"),
            ("hashed", "hash"),
            ("from-env", "env"),
            ("from-file", "file"),
        ] {
            assert_eq!(&*a.check(token).expect(token).name, name);
        }
        assert_eq!(a.check("nope").err(), Some(AuthError::BadToken));
        assert_eq!(a.check("").err(), Some(AuthError::BadToken));
        assert!(!a.demo_active());
    }

    #[test]
    fn a_missing_token_env_var_names_the_key() {
        let e = auth(
            "[[services]]\nname=\"x\"\ntoken_env=\"SOCKET_HUB_SURELY_UNSET\"\n",
            None,
        )
        .expect_err("unset");
        assert_eq!(e.key, "services[0].token_env");
    }

    #[test]
    fn the_demo_token_works_by_default_but_never_in_production() {
        let dev = auth("", None).expect("loads");
        assert!(dev.demo_active());
        assert_eq!(&*dev.check(DEMO_TOKEN).expect("demo").name, "demo");
        let prod = auth("", Some("production")).expect("loads");
        assert!(!prod.demo_active());
        assert_eq!(prod.check(DEMO_TOKEN).err(), Some(AuthError::BadToken));
    }

    #[test]
    fn groups_are_checked_against_the_service() {
        let a = auth("[[services]]\nname=\"s\"\ntoken=\"t\"\ngroups=[\"a\",\"b\"]\n[[services]]\nname=\"any\"\ntoken=\"u\"\ngroups=[\"*\"]\n", None)
            .expect("loads");
        let s = a.check("t").expect("s");
        let names = |v: Vec<GroupName>| v.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        assert_eq!(names(s.resolve_groups(None, 128).expect("default")), vec!["a", "b"]);
        assert_eq!(names(s.resolve_groups(Some(&["b".into()]), 128).expect("b")), vec!["b"]);
        assert_eq!(
            s.resolve_groups(Some(&["c".into()]), 128),
            Err(AuthError::ForbiddenGroup("c".into()))
        );
        let any = a.check("u").expect("any");
        assert!(any.resolve_groups(None, 128).expect("none").is_empty());
        assert_eq!(
            names(any.resolve_groups(Some(&["zz".into()]), 128).expect("any")),
            vec!["zz"]
        );
        assert!(any.resolve_groups(Some(&["bad name".into()]), 128).is_err());
    }

    #[test]
    fn secret_eq_compares_whole_strings() {
        assert!(secret_eq("abc", "abc"));
        assert!(!secret_eq("abc", "abd"));
        assert!(!secret_eq("ab", "abc"));
    }
}
