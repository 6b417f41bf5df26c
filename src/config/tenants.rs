//! `[[tenants]]`: named groups of API keys with limits of their own.
//!
//! A tenant's keys come from the environment variable it names (comma-separated, like
//! `[server] api_keys_env`). Every key of a tenant acts as the tenant: its chats, files, batches
//! and analytics are the tenant's, the engine serves it as one owner, and its limits hold for all
//! its keys together. Without `[[tenants]]` every key is its own owner with no limits of its own.

use serde::{Deserialize, Serialize};

use super::validate::is_env_name;

/// Longest tenant name, in bytes.
pub const MAX_TENANT_NAME: usize = 64;

/// One `[[tenants]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Shown in metrics and logs and used as the owner of the tenant's work: letters, digits,
    /// `-`, `_` and `.`, at most [`MAX_TENANT_NAME`] bytes.
    pub name: String,
    /// Environment variable holding the tenant's keys, comma-separated.
    pub keys_env: String,
    /// Prompts per minute, all the tenant's keys together. Interactive requests over it get 429
    /// with `Retry-After`; batch jobs are paced to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Estimated tokens per minute (prompt plus `max_tokens`, or 256 when unset), like `rpm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Prompts the tenant may have accepted and not yet answered at once, across its requests
    /// and batch jobs. Interactive requests over it get 429; batch jobs wait for room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<usize>,
    /// The lanes the tenant may use; absent: all. A request for another lane gets 403, and a
    /// batch job needs `[jobs] lane` among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanes: Option<Vec<String>>,
}

impl TenantConfig {
    /// Tenant `name` with its keys in `keys_env` and no limits (set the fields for some).
    pub fn new(name: &str, keys_env: &str) -> TenantConfig {
        TenantConfig {
            name: name.into(),
            keys_env: keys_env.into(),
            rpm: None,
            tpm: None,
            max_queued: None,
            lanes: None,
        }
    }

    /// Whether the tenant may use `lane`.
    pub fn allows_lane(&self, lane: &str) -> bool {
        self.lanes.as_ref().is_none_or(|lanes| lanes.iter().any(|l| l == lane))
    }
}

/// Whether `name` is a valid tenant name.
fn is_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TENANT_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The checks serde cannot make, added to `problems`.
pub(super) fn check_tenants(config: &super::Config, problems: &mut Vec<String>) {
    let mut names: Vec<&str> = Vec::new();
    let mut vars: Vec<&str> = vec![&config.server.api_keys_env, &config.server.admin_keys_env];
    for (i, tenant) in config.tenants.iter().enumerate() {
        let at = format!("tenants[{i}]");
        if !is_tenant_name(&tenant.name) {
            problems.push(format!(
                "{at}.name: must be 1 to {MAX_TENANT_NAME} letters, digits, '-', '_' or '.' (e.g. \"acme\")"
            ));
        } else if names.contains(&tenant.name.as_str()) {
            problems.push(format!("{at}.name: \"{}\" is used by an earlier tenant", tenant.name));
        } else {
            names.push(&tenant.name);
        }
        if !is_env_name(&tenant.keys_env) {
            // Not echoed: what was pasted here may be a key.
            problems.push(format!(
                "{at}.keys_env: must be the name of an environment variable like FERRY_TENANT_ACME_KEYS \
                 (letters, digits and '_'), not a key; the keys themselves never go in the file"
            ));
        } else if vars.contains(&tenant.keys_env.as_str()) {
            problems.push(format!(
                "{at}.keys_env: {} is already read for other keys (server or an earlier tenant); \
                 each tenant needs a variable of its own",
                tenant.keys_env
            ));
        } else {
            vars.push(&tenant.keys_env);
        }
        for (field, value) in
            [("rpm", tenant.rpm), ("tpm", tenant.tpm), ("max_queued", tenant.max_queued.map(|n| n as u64))]
        {
            if value == Some(0) {
                problems.push(format!("{at}.{field}: must be at least 1 (leave it out for no limit)"));
            }
        }
        if let Some(lanes) = &tenant.lanes {
            if lanes.is_empty() {
                problems.push(format!("{at}.lanes: must name at least one lane (leave it out for all)"));
            }
            for lane in lanes.iter().filter(|lane| !config.lanes.contains_key(*lane)) {
                let known: Vec<&str> = config.lanes.keys().map(String::as_str).collect();
                problems.push(format!(
                    "{at}.lanes: lane \"{lane}\" is not configured; lanes are: {}",
                    known.join(", ")
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn tenant(name: &str, var: &str) -> TenantConfig {
        TenantConfig::new(name, var)
    }

    fn problems(tenants: Vec<TenantConfig>) -> Vec<String> {
        let config = Config { tenants, ..Config::default() };
        let mut problems = Vec::new();
        check_tenants(&config, &mut problems);
        problems
    }

    #[test]
    fn good_tenants_pass() {
        let mut a = tenant("acme", "FERRY_TENANT_ACME_KEYS");
        a.rpm = Some(60);
        a.lanes = Some(vec!["low".into()]);
        assert_eq!(problems(vec![a, tenant("b.corp", "FERRY_TENANT_B_KEYS")]), Vec::<String>::new());
    }

    #[test]
    fn names_variables_limits_and_lanes_are_checked() {
        let mut zero = tenant("zero", "FERRY_ZERO");
        zero.rpm = Some(0);
        zero.max_queued = Some(0);
        zero.lanes = Some(vec!["nowhere".into()]);
        let found = problems(vec![
            tenant("bad name", "FERRY_A"),
            tenant("dup", "FERRY_B"),
            tenant("dup", "FERRY_C"),
            tenant("samevar", "FERRY_B"),
            tenant("server", "FERRY_API_KEYS"),
            tenant("pasted", "sk-0123456789abcdef"),
            zero,
        ]);
        let all = found.join("\n");
        for needle in [
            "tenants[0].name",
            "tenants[2].name: \"dup\" is used",
            "tenants[3].keys_env: FERRY_B is already read",
            "tenants[4].keys_env: FERRY_API_KEYS is already read",
            "tenants[5].keys_env: must be the name",
            "tenants[6].rpm: must be at least 1",
            "tenants[6].max_queued: must be at least 1",
            "tenants[6].lanes: lane \"nowhere\"",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(!all.contains("sk-0123456789abcdef"), "a pasted key is not echoed");
        assert_eq!(found.len(), 8, "{all}");
    }

    #[test]
    fn lanes_allowed() {
        let mut t = tenant("a", "FERRY_A");
        assert!(t.allows_lane("high"));
        t.lanes = Some(vec!["low".into()]);
        assert!(t.allows_lane("low") && !t.allows_lane("high"));
    }
}
