//! API keys: read from the environment variable an upstream names, never from the file, and
//! shown only masked.

use super::{ConfigError, ProviderKind, UpstreamConfig};

impl UpstreamConfig {
    /// The API key from the environment variable named by `api_key_env`.
    ///
    /// `Ok(None)` when no variable is named, or when it is unset but the upstream is a mock or a
    /// loopback server (llama.cpp, vLLM) that needs no key. A remote `openai`/`gemini` upstream
    /// whose variable is unset or empty is an error naming the variable.
    pub fn api_key(&self) -> Result<Option<String>, ConfigError> {
        self.api_key_with(|name| std::env::var(name).ok())
    }

    /// [`UpstreamConfig::api_key`] with the environment lookup injected.
    pub fn api_key_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        let Some(var) = &self.api_key_env else { return Ok(None) };
        // A key pasted with a trailing newline would otherwise be sent as is and fail upstream.
        let key = lookup(var).map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        match key {
            Some(key) => Ok(Some(key)),
            None if self.needs_key() => {
                Err(ConfigError::MissingApiKey { upstream: self.name.clone(), var: var.clone() })
            }
            None => Ok(None),
        }
    }

    /// Whether calls can only succeed with a key: a remote server of a real API.
    fn needs_key(&self) -> bool {
        match self.provider {
            ProviderKind::Mock => false,
            ProviderKind::Openai | ProviderKind::Gemini => {
                !self.base_url.as_deref().and_then(url_host).is_some_and(is_loopback_host)
            }
        }
    }
}

/// `***` plus the last four characters of a secret (just `***` for four or fewer), so an operator
/// can tell keys apart without the key being shown.
pub fn mask_secret(s: &str) -> String {
    let count = s.chars().count();
    if count <= 4 {
        return "***".into();
    }
    let last4: String = s.chars().skip(count - 4).collect();
    format!("***{last4}")
}

/// The host of an `http(s)://` URL (`[::1]` keeps its brackets), or `None` if it has none.
pub(super) fn url_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.split_inclusive(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then_some(host)
}

pub(super) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn remote(provider: ProviderKind, base_url: Option<&str>) -> UpstreamConfig {
        UpstreamConfig {
            provider,
            base_url: base_url.map(str::to_string),
            api_key_env: Some("FERRY_TEST_KEY".into()),
            ..UpstreamConfig::mock("remote")
        }
    }

    #[test]
    fn api_key_is_read_and_trimmed() {
        let upstream = remote(ProviderKind::Openai, Some("https://api.openai.com/v1"));
        let key = upstream.api_key_with(|name| (name == "FERRY_TEST_KEY").then(|| "sk-abc\n".into()));
        assert_eq!(key.ok().flatten().as_deref(), Some("sk-abc"));
    }

    #[test]
    fn missing_key_for_remote_upstream_names_the_variable() {
        for upstream in [
            remote(ProviderKind::Openai, Some("https://api.openai.com/v1")),
            remote(ProviderKind::Gemini, None),
        ] {
            let err = upstream.api_key_with(no_env).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("FERRY_TEST_KEY") && err.contains("\"remote\""), "{err}");
            assert!(upstream.api_key_with(|_| Some("  ".into())).is_err());
        }
    }

    #[test]
    fn missing_key_for_loopback_server_is_fine() {
        for url in ["http://127.0.0.1:8080/v1", "http://localhost:8000/v1", "http://[::1]:8080/v1"] {
            let upstream = remote(ProviderKind::Openai, Some(url));
            assert_eq!(upstream.api_key_with(no_env).ok(), Some(None), "{url}");
        }
        let none_named =
            UpstreamConfig { api_key_env: None, ..remote(ProviderKind::Openai, Some("https://x.io")) };
        assert_eq!(none_named.api_key_with(no_env).ok(), Some(None));
    }

    #[test]
    fn api_key_reads_the_process_environment() {
        let upstream = remote(ProviderKind::Openai, Some("http://127.0.0.1:1/v1"));
        let upstream =
            UpstreamConfig { api_key_env: Some("FERRY_SURELY_UNSET_VARIABLE_4F2A9C".into()), ..upstream };
        assert_eq!(upstream.api_key().ok(), Some(None));
    }

    #[test]
    fn url_host_handles_ports_paths_and_brackets() {
        assert_eq!(url_host("https://api.openai.com/v1"), Some("api.openai.com"));
        assert_eq!(url_host("http://user@127.0.0.1:8080"), Some("127.0.0.1"));
        assert_eq!(url_host("http://[::1]:8080/v1"), Some("[::1]"));
        assert_eq!(url_host("ftp://host"), None);
        assert_eq!(url_host("http:///v1"), None);
        assert!(is_loopback_host("127.0.0.2") && is_loopback_host("LOCALHOST"));
        assert!(!is_loopback_host("10.0.0.1"));
    }

    #[test]
    fn mask_secret_keeps_only_the_last_four() {
        assert_eq!(mask_secret("sk-1234567890"), "***7890");
        assert_eq!(mask_secret("abcd"), "***");
        assert_eq!(mask_secret(""), "***");
        assert_eq!(mask_secret("ключ-ключ"), "***ключ");
    }
}
