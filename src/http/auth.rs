//! Bearer-key authentication: who is calling, and may they call this endpoint.
//!
//! Keys come only from the environment variables `[server] api_keys_env` and `admin_keys_env`
//! name, each at least [`MIN_KEY_CHARS`] characters (a shorter one is refused at start, naming
//! the variable). ferry keeps a SHA-256 digest of each key and its owner id (HMAC-SHA256 under
//! the store's secret, see [`crate::store::owner`]), never the key, and compares the digest of a
//! presented key with every stored digest in constant time, so neither timing nor a stray log
//! line can give a key away. Admin keys may call everything; inference keys everything but the
//! admin endpoints (`/api/v1/config*`, `/v1/settings`). With no key configured everyone is an
//! admin — `ferry serve` allows that only on a loopback address.
//!
//! [`authenticate`] is the middleware; handlers read the identity it leaves with the [`Caller`]
//! extractor.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::{ServerConfig, TenantConfig};
use crate::store::{OwnerSecret, legacy_key_id};
use crate::tenants::owner_of;

/// Shortest key accepted from the environment, in characters.
pub const MIN_KEY_CHARS: usize = 16;

/// A key set in the environment that ferry refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key is too short to resist guessing.
    #[error(
        "a key in the environment variable {var} is shorter than {MIN_KEY_CHARS} characters; \
         use long random keys (e.g. `openssl rand -hex 24`)"
    )]
    Short {
        /// The variable holding it.
        var: String,
    },
    /// A tenant's key is also set in another variable, so whose it is would be a guess.
    #[error(
        "a key in the environment variable {var} is also in {other}; a tenant's keys must be its \
         own (give each tenant and the server keys of their own)"
    )]
    Shared {
        /// The tenant's variable.
        var: String,
        /// The other variable holding the same key.
        other: String,
    },
}

/// Domain separation: the id shown in logs and stores is not the digest used for comparison.
const KEY_DIGEST_PREFIX: &str = "ferry-key-check:";

/// Who made a request, as the auth middleware established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The owner id of the caller's key ([`OwnerSecret::owner_id`]); `None` when no keys are
    /// configured.
    pub key_id: Option<String>,
    /// Whether the caller may use the admin endpoints.
    pub admin: bool,
    /// The tenant the key belongs to (`[[tenants]]`), whose name its work is owned by.
    pub tenant: Option<Arc<str>>,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Absent only when the middleware is not installed: refuse rather than guess.
        let caller = req.extensions().get::<Caller>().cloned();
        ready(caller.ok_or_else(|| ApiError::Unauthorized("no credentials were checked".into())))
    }
}

fn check_digest(key: &str) -> [u8; 32] {
    Sha256::digest(format!("{KEY_DIGEST_PREFIX}{key}").as_bytes()).into()
}

struct Key {
    digest: [u8; 32],
    /// The tenant the key belongs to; its owner id is then the tenant's, not the key's.
    tenant: Option<Arc<str>>,
    /// A tenant key's own owner id (what it owned before it joined the tenant), once identified.
    key_owner: Option<String>,
    /// The owner id: the legacy id until [`Keys::identify`] keys it with the store's secret.
    id: String,
    legacy_id: String,
    admin: bool,
}

/// The configured API keys, held as digests. `Debug` shows only how many there are.
#[derive(Default)]
pub struct Keys {
    keys: Vec<Key>,
    /// The keys themselves, only until [`Keys::identify`] has made their owner ids.
    plain: Vec<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let admin = self.keys.iter().filter(|k| k.admin).count();
        write!(f, "Keys {{ inference: {}, admin: {admin} }}", self.keys.len() - admin)
    }
}

impl Keys {
    /// No keys: every caller is an admin (loopback only).
    pub fn none() -> Keys {
        Keys::default()
    }

    /// Inference and admin keys given directly (tests, embedding).
    pub fn new<S: AsRef<str>>(inference: &[S], admin: &[S]) -> Keys {
        let mut keys = Keys::default();
        for key in admin {
            keys.add(key.as_ref(), true);
        }
        for key in inference {
            keys.add(key.as_ref(), false);
        }
        keys
    }

    /// The keys in the environment variables `server` and each of `tenants` name; refuses a key
    /// shorter than [`MIN_KEY_CHARS`], or a tenant's key found in another variable too, naming the
    /// variables (never the key).
    pub fn from_env(server: &ServerConfig, tenants: &[TenantConfig]) -> Result<Keys, KeyError> {
        Keys::from_lookup(server, tenants, |name| std::env::var(name).ok())
    }

    /// [`Keys::from_env`] with the environment lookup injected. Each variable holds keys separated
    /// by commas; blanks around them are ignored, empty entries skipped.
    pub fn from_lookup(
        server: &ServerConfig,
        tenants: &[TenantConfig],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Keys, KeyError> {
        let split = |var: &str| -> Result<Vec<String>, KeyError> {
            let keys: Vec<String> = lookup(var)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect();
            if keys.iter().any(|k| k.chars().count() < MIN_KEY_CHARS) {
                return Err(KeyError::Short { var: var.to_string() });
            }
            Ok(keys)
        };
        let mut seen: Vec<([u8; 32], &str)> = Vec::new();
        let mut keys = Keys::new(&split(&server.api_keys_env)?, &split(&server.admin_keys_env)?);
        for (key, var) in keys
            .keys
            .iter()
            .map(|k| (k.digest, if k.admin { &server.admin_keys_env } else { &server.api_keys_env }))
        {
            seen.push((key, var));
        }
        for tenant in tenants {
            for key in split(&tenant.keys_env)? {
                let digest = check_digest(&key);
                if let Some((_, other)) = seen.iter().find(|(d, var)| *d == digest && *var != tenant.keys_env)
                {
                    return Err(KeyError::Shared { var: tenant.keys_env.clone(), other: other.to_string() });
                }
                seen.push((digest, &tenant.keys_env));
                keys.add_tenant_key(&key, &tenant.name);
            }
        }
        Ok(keys)
    }

    /// Adds `keys` as keys of tenant `name` (tests, embedding).
    pub fn with_tenant<S: AsRef<str>>(mut self, name: &str, keys: &[S]) -> Keys {
        for key in keys {
            self.add_tenant_key(key.as_ref(), name);
        }
        self
    }

    fn add_tenant_key(&mut self, key: &str, tenant: &str) {
        let digest = check_digest(key);
        if !self.keys.iter().any(|k| k.digest == digest) {
            let legacy_id = legacy_key_id(key);
            let tenant: Arc<str> = Arc::from(tenant);
            self.keys.push(Key {
                digest,
                id: owner_of(&tenant),
                legacy_id,
                admin: false,
                tenant: Some(tenant),
                key_owner: None,
            });
            self.plain.push(key.to_string());
        }
    }

    fn add(&mut self, key: &str, admin: bool) {
        let digest = check_digest(key);
        // A key listed as both stays an admin key (admins are added first).
        if !self.keys.iter().any(|k| k.digest == digest) {
            let legacy_id = legacy_key_id(key);
            self.keys.push(Key {
                digest,
                id: legacy_id.clone(),
                legacy_id,
                admin,
                tenant: None,
                key_owner: None,
            });
            self.plain.push(key.to_string());
        }
    }

    /// Gives every key its owner id under `secret` and forgets the keys themselves. The server
    /// does this when it binds, with the store's secret.
    pub fn identify(mut self, secret: &OwnerSecret) -> Keys {
        for (key, plain) in self.keys.iter_mut().zip(&self.plain) {
            let own = secret.owner_id(plain);
            match key.tenant {
                // A tenant key's earlier rows (from before it joined the tenant) become the
                // tenant's: see [`Keys::legacy_pairs`].
                Some(_) => key.key_owner = Some(own),
                None => key.id = own,
            }
        }
        self.plain = Vec::new();
        self
    }

    /// `(earlier id, owner id)` of every key, to re-own rows written under an id the key no
    /// longer has: the legacy id of a database written before keyed owner ids, and a tenant
    /// key's own id from before it joined its tenant (call after [`Keys::identify`]).
    pub fn legacy_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for key in &self.keys {
            if key.id != key.legacy_id {
                pairs.push((key.legacy_id.clone(), key.id.clone()));
            }
            if let Some(own) = &key.key_owner {
                pairs.push((own.clone(), key.id.clone()));
            }
        }
        pairs
    }

    /// Whether no key is configured (authentication off).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller holding `presented`, if it is a configured key. Every stored digest is compared,
    /// in constant time, whether or not an earlier one matched.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        let digest = check_digest(presented);
        let mut found: Option<&Key> = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found.map(|key| Caller { key_id: Some(key.id.clone()), admin: key.admin, tenant: key.tenant.clone() })
    }
}

/// Whether `path` (decoded, as routing sees it) is an admin endpoint: configuration and
/// settings, and the engine-wide observability endpoints (`/metrics`, `/api/v1/stats`,
/// `/api/v1/events`), which count every key's work — an inference key sees only its own
/// (`/v1/chat`, `/v1/analytics`, its files and batches).
pub fn is_admin_path(path: &str) -> bool {
    let under =
        |prefix: &str| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    under("/api/v1/config")
        || under("/v1/settings")
        || under("/metrics")
        || under("/api/v1/stats")
        || under("/api/v1/events")
}

/// Whether a request may pass without a key: the liveness probe.
fn is_public(req: &ServiceRequest, path: &str) -> bool {
    path == "/health" && (req.method() == Method::GET || req.method() == Method::HEAD)
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(req: &ServiceRequest) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::Unauthorized(
            "missing API key: send an `Authorization: Bearer <key>` header with a key from the \
             server's configured key variables"
                .into(),
        )
    };
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

/// Decides who the caller is and whether the endpoint is theirs to call; leaves a [`Caller`] in
/// the request's extensions. Needs `web::Data<Keys>` in the app data.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // The decoded path routing uses, so `/api/v1/%63onfig` is seen as the admin path it reaches.
    let path = req.match_info().as_str().to_string();
    let decision = match req.app_data::<web::Data<Keys>>() {
        _ if is_public(&req, &path) => Ok(None),
        None => Err(ApiError::Internal("authentication is not configured".into())),
        Some(keys) if keys.is_empty() => Ok(Some(Caller { key_id: None, admin: true, tenant: None })),
        Some(keys) => match bearer(&req) {
            Err(error) => Err(error),
            Ok(token) => match keys.caller(token) {
                None => Err(ApiError::Unauthorized("unknown API key".into())),
                Some(caller) if is_admin_path(&path) && !caller.admin => Err(ApiError::Forbidden(
                    "this endpoint needs an admin key; inference keys may not change configuration or \
                     see engine-wide figures"
                        .into(),
                )),
                Some(caller) => Ok(Some(caller)),
            },
        },
    };
    match decision {
        Ok(caller) => {
            if let Some(caller) = caller {
                req.extensions_mut().insert(caller);
            }
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(error) => Ok(req.error_response(error).map_into_right_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identified_keys_carry_keyed_owner_ids() {
        let secret = OwnerSecret::from_bytes([3; 32]);
        let keys = Keys::new(&["inference-key-0001"], &["admin-key-00000001"]).identify(&secret);
        let caller = keys.caller("inference-key-0001").and_then(|c| c.key_id);
        assert_eq!(caller, Some(secret.owner_id("inference-key-0001")));
        assert_eq!(caller.map(|id| id.len()), Some(64));
        let pairs = keys.legacy_pairs();
        assert!(
            pairs.contains(&(legacy_key_id("admin-key-00000001"), secret.owner_id("admin-key-00000001")))
        );
        assert_eq!(pairs.len(), 2);
    }

    #[test]
    fn short_keys_are_refused_naming_the_variable() {
        let server = ServerConfig::default();
        let refused = Keys::from_lookup(&server, &[], |name| match name {
            "FERRY_ADMIN_KEYS" => Some("long-enough-admin-key, tiny-1".into()),
            _ => None,
        });
        let message = refused.map(|_| ()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("FERRY_ADMIN_KEYS") && message.contains("16"), "{message}");
        assert!(!message.contains("tiny-1"), "the key is not echoed: {message}");
    }

    #[test]
    fn keys_are_read_from_the_named_variables() {
        let server = ServerConfig::default();
        let keys = Keys::from_lookup(&server, &[], |name| match name {
            "FERRY_API_KEYS" => Some(" inference-key-01 , ,inference-key-02".into()),
            "FERRY_ADMIN_KEYS" => Some("admin-key-000001".into()),
            _ => None,
        })
        .unwrap_or_default();
        assert_eq!(format!("{keys:?}"), "Keys { inference: 2, admin: 1 }");
        assert_eq!(keys.caller("inference-key-02").map(|c| c.admin), Some(false));
        assert_eq!(keys.caller("admin-key-000001").map(|c| c.admin), Some(true));
        assert!(keys.caller("inference-key-03").is_none());
        assert!(keys.caller("").is_none());
        assert!(Keys::from_lookup(&server, &[], |_| None).is_ok_and(|k| k.is_empty()));
    }

    fn tenant(name: &str, var: &str) -> TenantConfig {
        TenantConfig::new(name, var)
    }

    #[test]
    fn tenant_keys_act_as_their_tenant_and_bring_their_earlier_rows() {
        let server = ServerConfig::default();
        let tenants = [tenant("acme", "FERRY_TENANT_ACME_KEYS")];
        let keys = Keys::from_lookup(&server, &tenants, |name| match name {
            "FERRY_API_KEYS" => Some("inference-key-01".into()),
            "FERRY_TENANT_ACME_KEYS" => Some("acme-key-0000001,acme-key-0000002".into()),
            _ => None,
        })
        .map(|keys| keys.identify(&OwnerSecret::from_bytes([5; 32])));
        let Ok(keys) = keys else { panic!("tenant keys load") };
        for key in ["acme-key-0000001", "acme-key-0000002"] {
            let caller = keys.caller(key);
            assert_eq!(caller.as_ref().and_then(|c| c.key_id.as_deref()), Some("tenant:acme"));
            assert_eq!(caller.and_then(|c| c.tenant).as_deref(), Some("acme"));
        }
        assert_eq!(keys.caller("inference-key-01").and_then(|c| c.tenant), None);
        let own = OwnerSecret::from_bytes([5; 32]).owner_id("acme-key-0000001");
        assert!(keys.legacy_pairs().contains(&(own, "tenant:acme".to_string())));
    }

    #[test]
    fn a_tenant_key_in_another_variable_is_refused_naming_both() {
        let server = ServerConfig::default();
        let tenants = [tenant("acme", "FERRY_TENANT_ACME_KEYS"), tenant("beta", "FERRY_TENANT_BETA_KEYS")];
        for (other, value) in
            [("FERRY_API_KEYS", "shared-key-000001"), ("FERRY_TENANT_ACME_KEYS", "shared-key-000001")]
        {
            let refused = Keys::from_lookup(&server, &tenants, |name| match name {
                "FERRY_TENANT_BETA_KEYS" => Some("shared-key-000001".into()),
                name if name == other => Some(value.into()),
                _ => None,
            });
            let message = refused.map(|_| ()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("FERRY_TENANT_BETA_KEYS") && message.contains(other), "{message}");
            assert!(!message.contains("shared-key"), "{message}");
        }
    }

    #[test]
    fn a_key_in_both_lists_is_an_admin_key() {
        let keys = Keys::new(&["both"], &["both"]);
        assert_eq!(keys.caller("both").map(|c| c.admin), Some(true));
    }

    #[test]
    fn admin_paths_are_config_settings_and_observability() {
        for path in [
            "/api/v1/config",
            "/api/v1/config/batch-size",
            "/v1/settings",
            "/metrics",
            "/api/v1/stats",
            "/api/v1/events",
        ] {
            assert!(is_admin_path(path), "{path}");
        }
        for path in
            ["/api/v1/configs", "/api/v1/prompts", "/v1/settingsx", "/health", "/metricsx", "/v1/analytics"]
        {
            assert!(!is_admin_path(path), "{path}");
        }
    }
}
