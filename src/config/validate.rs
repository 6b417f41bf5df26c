//! [`Config::validate`]: the checks serde cannot make, one function per section. Every problem
//! is collected, each naming its key and saying what would be valid.

use super::api_key::{is_loopback_host, url_host};
use super::{
    BatchingConfig, Config, LaneConfig, LoggingConfig, MockConfig, ProviderKind, ServerConfig,
    UpstreamConfig, provider_name,
};

impl Config {
    /// Checks values that serde cannot: returns every problem found, each naming its key and
    /// saying what would be valid.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        check_server(&self.server, &mut problems);
        if self.storage.path.as_os_str().is_empty() {
            problems.push("storage.path: must not be empty (e.g. \"data/ferry.db\")".into());
        }
        at_least_one(&mut problems, "files.max_bytes", self.files.max_bytes);
        at_least_one(&mut problems, "files.max_lines", self.files.max_lines);
        check_logging(&self.logging, &mut problems);
        check_batching(&self.batching, &mut problems);
        if self.lanes.is_empty() {
            problems.push("lanes: at least one lane is required, e.g. [lanes.default] rank = 0".into());
        }
        for (name, lane) in &self.lanes {
            check_lane(name, lane, self, &mut problems);
        }
        if self.upstreams.is_empty() {
            problems.push(
                "upstreams: at least one upstream is required, e.g. [[upstreams]] name = \"mock\" \
                 provider = \"mock\""
                    .into(),
            );
        }
        for (index, upstream) in self.upstreams.iter().enumerate() {
            check_upstream(index, upstream, &mut problems);
        }
        check_unique_upstream_names(&self.upstreams, &mut problems);
        if let Some(lane) = &self.jobs.lane
            && !self.lanes.contains_key(lane)
        {
            let names: Vec<&str> = self.lanes.keys().map(String::as_str).collect();
            problems.push(format!(
                "jobs.lane: lane \"{lane}\" is not configured; lanes are: {}",
                names.join(", ")
            ));
        }
        super::tenants::check_tenants(self, &mut problems);
        if self.jobs.max_in_flight == 0 {
            problems.push("jobs.max_in_flight: must be at least 1 (e.g. 1000)".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

fn check_server(server: &ServerConfig, problems: &mut Vec<String>) {
    let valid = server
        .bind
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid {
        problems
            .push(format!("server.bind: must be HOST:PORT like \"127.0.0.1:8000\" (got {:?})", server.bind));
    }
    for (field, var) in [("api_keys_env", &server.api_keys_env), ("admin_keys_env", &server.admin_keys_env)] {
        if !is_env_name(var) {
            // The value is not echoed: what was pasted here may be a key.
            problems.push(format!(
                "server.{field}: must be the name of an environment variable like FERRY_API_KEYS \
                 (letters, digits and '_'), not a key; the keys themselves never go in the file"
            ));
        }
    }
    if server.api_keys_env == server.admin_keys_env {
        problems.push(format!(
            "server.admin_keys_env: must differ from server.api_keys_env (both are {:?}), so admin \
             keys stay apart from inference keys",
            server.admin_keys_env
        ));
    }
    at_least_one(problems, "server.max_body_bytes", server.max_body_bytes as u64);
    for (i, origin) in server.cors_origins.iter().enumerate() {
        if !is_origin(origin) {
            problems.push(format!(
                "server.cors_origins[{i}]: {origin:?} must be an origin like \"https://app.example.com\" \
                 or \"http://localhost:3000\" (scheme and host, no path)"
            ));
        }
    }
}

/// Whether `name` can be an environment variable: a letter or '_' first, then letters, digits, '_'.
pub(super) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `origin` is a browser origin: `http(s)://host[:port]`, nothing after.
fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['/', '?', '#', '@', ' ', '*'])
}

fn check_logging(logging: &LoggingConfig, problems: &mut Vec<String>) {
    if logging.dir.as_os_str().is_empty() {
        problems.push("logging.dir: must not be empty (e.g. \"logs\")".into());
    }
    let file = logging.file.as_str();
    if file.is_empty() || file == "." || file == ".." || file.contains(['/', '\\']) {
        problems.push(format!(
            "logging.file: must be a plain file name like \"ferry.log\" (got {file:?}); \
             put the directory in logging.dir"
        ));
    }
    if let Err(reason) = check_level(&logging.level) {
        problems.push(format!("logging.level: {reason}"));
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `tracing` filter. A bare word that is not a level is refused although EnvFilter would
/// read it as a target name: `inof` is far more often a typo than a target filter.
fn check_level(level: &str) -> Result<(), String> {
    let hint = "use trace, debug, info, warn, error or off, or directives like \"info,ferry=debug\"";
    if level.trim().is_empty() {
        return Err(format!("must not be empty; {hint}"));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        return Err(format!("{level:?} is not a valid filter ({e}); {hint}"));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare_word = !directive.contains(['=', '[', ':']);
        if bare_word && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!("{directive:?} is not a level; {hint}"));
        }
    }
    Ok(())
}

fn check_batching(batching: &BatchingConfig, problems: &mut Vec<String>) {
    at_least_one(problems, "batching.batch_size", batching.batch_size as u64);
    at_least_one(problems, "batching.queue_capacity", batching.queue_capacity as u64);
    if batching.aging_ms.is_some() {
        problems.push(
            "batching.aging_ms: no longer used; waiting lower lanes now get `batching.lower_share` of \
             the dispatches (default 0.1: one in ten) — remove aging_ms"
                .into(),
        );
    }
    let share = batching.lower_share;
    if !(0.0..=0.5).contains(&share) {
        problems
            .push(format!("batching.lower_share: must be between 0 (strict priority) and 0.5 (got {share})"));
    }
}

fn check_lane(name: &str, lane: &LaneConfig, config: &Config, problems: &mut Vec<String>) {
    let key = |field: &str| format!("lanes.{name}.{field}");
    let name_ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        problems.push(format!("lanes.{name}: lane names must use only a-z, 0-9, '_' and '-' (got {name:?})"));
    }
    if let Some(n) = lane.max_batch {
        at_least_one(problems, &key("max_batch"), n as u64);
    }
    if let Some(n) = lane.queue_capacity {
        at_least_one(problems, &key("queue_capacity"), n as u64);
    }
    if let Some(n) = lane.max_tokens {
        at_least_one(problems, &key("max_tokens"), u64::from(n));
    }
    at_least_one(problems, &key("latency_ms"), lane.latency_ms);
    for (field, share) in [("verify_share", lane.verify_share), ("min_fidelity", lane.min_fidelity)] {
        if !(0.0..=1.0).contains(&share) {
            problems.push(format!("{}: must be between 0.0 and 1.0 (got {share})", key(field)));
        }
    }
    if let Some(t) = lane.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        problems.push(format!("{}: must be between 0.0 and 2.0 (got {t})", key("temperature")));
    }
    if let Some(p) = lane.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        problems.push(format!("{}: must be above 0.0 and at most 1.0 (got {p})", key("top_p")));
    }
    let settings = lane.effective(&config.batching);
    if settings.max_batch > settings.queue_capacity && settings.queue_capacity > 0 {
        problems.push(format!(
            "{}: {} is more than the lane's queue_capacity ({}), so a full batch could never form",
            key("max_batch"),
            settings.max_batch,
            settings.queue_capacity
        ));
    }
    if let Some(model) = &lane.model {
        check_lane_model(&key("model"), model, &config.upstreams, problems);
    }
}

fn check_lane_model(key: &str, model: &str, upstreams: &[UpstreamConfig], problems: &mut Vec<String>) {
    if model.trim().is_empty() {
        problems.push(format!("{key}: must not be empty; remove it to use the upstream's first model"));
    } else if !upstreams.is_empty() && !upstreams.iter().any(|u| u.serves(model)) {
        let served: Vec<&str> = upstreams.iter().flat_map(|u| u.models.iter().map(String::as_str)).collect();
        problems.push(format!(
            "{key}: {model:?} is not served by any upstream; add it to an upstream's models \
             (served: {})",
            served.join(", ")
        ));
    }
}

fn check_upstream(index: usize, upstream: &UpstreamConfig, problems: &mut Vec<String>) {
    let key = |field: &str| format!("upstreams[{index}].{field}");
    if upstream.name.trim().is_empty() {
        problems.push(format!("{}: must not be empty; it names the upstream in logs", key("name")));
    }
    check_endpoint(index, upstream, problems);
    check_key_named(index, upstream, problems);
    check_models(index, &upstream.models, problems);
    for (field, value) in [("rpm", upstream.rpm), ("tpm", upstream.tpm), ("rpd", upstream.rpd)] {
        if value == Some(0) {
            problems
                .push(format!("{}: must be at least 1 when set (got 0); remove it for no limit", key(field)));
        }
    }
    if upstream.concurrency == super::Concurrency::Fixed(0) {
        problems.push(format!("{}: must be at least 1, or \"auto\" (got 0)", key("concurrency")));
    }
    at_least_one(problems, &key("timeout_ms"), upstream.timeout_ms);
    // A zero base would keep every backoff at zero: retries would hammer a failing upstream.
    at_least_one(problems, &key("backoff_base_ms"), upstream.backoff_base_ms);
    if upstream.backoff_base_ms > upstream.backoff_max_ms {
        problems.push(format!(
            "{}: must be at least backoff_base_ms ({}) (got {})",
            key("backoff_max_ms"),
            upstream.backoff_base_ms,
            upstream.backoff_max_ms
        ));
    }
    at_least_one(problems, &key("retry_after_max_ms"), upstream.retry_after_max_ms);
    at_least_one(problems, &key("cooldown_failures"), u64::from(upstream.cooldown_failures));
    if upstream.provider == ProviderKind::Mock {
        check_mock(index, &upstream.mock, problems);
    } else if upstream.mock != MockConfig::default() {
        problems.push(format!(
            "{}: only valid with provider = \"mock\" (this upstream is {:?})",
            key("mock"),
            provider_name(upstream.provider)
        ));
    }
}

/// `base_url` and `api_key_env`: what each provider needs to reach its server.
fn check_endpoint(index: usize, upstream: &UpstreamConfig, problems: &mut Vec<String>) {
    let key = |field: &str| format!("upstreams[{index}].{field}");
    let provider = provider_name(upstream.provider);
    match (&upstream.base_url, upstream.provider) {
        (None, ProviderKind::Openai) => problems.push(format!(
            "{}: required for provider \"openai\", e.g. \"https://api.openai.com/v1\" or \
             \"http://127.0.0.1:8080/v1\"",
            key("base_url")
        )),
        (Some(_), ProviderKind::Mock) => problems.push(format!(
            "{}: not used by provider \"mock\", which runs in-process; to call `ferry mock-upstream` \
             over HTTP use provider = \"openai\"",
            key("base_url")
        )),
        (Some(url), _) if url_host(url).is_none() => problems.push(format!(
            "{}: must start with http:// or https:// and name a host (got {url:?})",
            key("base_url")
        )),
        _ => {}
    }
    let Some(var) = &upstream.api_key_env else { return };
    if !is_env_name(var) {
        problems.push(format!(
            "{}: {var:?} must be an environment variable name like OPENAI_API_KEY \
             (letters, digits and '_'); the key itself never goes in the file",
            key("api_key_env")
        ));
    } else if upstream.provider == ProviderKind::Mock {
        problems.push(format!("{}: not used by provider {provider:?}; remove it", key("api_key_env")));
    }
}

/// A hosted API refuses every call without a key, so a missing `api_key_env` is caught at load
/// rather than at the first request. Self-hosted servers may run without one.
fn check_key_named(index: usize, upstream: &UpstreamConfig, problems: &mut Vec<String>) {
    if upstream.api_key_env.is_some() {
        return;
    }
    let host = upstream.base_url.as_deref().and_then(url_host);
    let (hosted, example) = match upstream.provider {
        ProviderKind::Gemini => (!host.is_some_and(is_loopback_host), "GEMINI_API_KEY"),
        ProviderKind::Openai => (host.is_some_and(|h| h.ends_with("openai.com")), "OPENAI_API_KEY"),
        ProviderKind::Mock => (false, ""),
    };
    if hosted {
        problems.push(format!(
            "upstreams[{index}].api_key_env: required for provider {:?} at this base_url, \
             e.g. api_key_env = {example:?}",
            provider_name(upstream.provider)
        ));
    }
}

fn check_models(index: usize, models: &[String], problems: &mut Vec<String>) {
    for (i, model) in models.iter().enumerate() {
        if model.trim().is_empty() {
            problems.push(format!("upstreams[{index}].models[{i}]: must not be empty"));
        } else if models[..i].contains(model) {
            problems.push(format!("upstreams[{index}].models[{i}]: {model:?} is listed twice"));
        }
    }
}

fn check_mock(index: usize, mock: &MockConfig, problems: &mut Vec<String>) {
    let key = |field: &str| format!("upstreams[{index}].mock.{field}");
    let faults = [
        ("error_rate", mock.error_rate),
        ("rate_limit_rate", mock.rate_limit_rate),
        ("overload_rate", mock.overload_rate),
        ("malformed_rate", mock.malformed_rate),
        ("drop_rate", mock.drop_rate),
        ("timeout_rate", mock.timeout_rate),
    ];
    let mut rates_ok = true;
    let apart = [
        ("garble_rate", mock.garble_rate),
        ("misalign_rate", mock.misalign_rate),
        ("wrong_answer_rate", mock.wrong_answer_rate),
    ];
    for (field, rate) in faults.iter().copied().chain(apart) {
        if !(0.0..=1.0).contains(&rate) {
            rates_ok = false;
            problems.push(format!("{}: must be between 0.0 and 1.0 (got {rate})", key(field)));
        }
    }
    // One draw picks at most one fault, so the fault rates share the unit interval (garble_rate
    // is drawn apart). The tolerance keeps shares such as 0.7 + 0.3 from failing on float rounding.
    let total: f64 = faults.iter().map(|(_, rate)| rate).sum();
    if rates_ok && total > 1.0 + 1e-9 {
        problems.push(format!(
            "{}: the fault rates error_rate + rate_limit_rate + overload_rate + malformed_rate + \
             drop_rate + timeout_rate must be at most 1.0 (got {total})",
            key("rate_limit_rate"),
        ));
    }
}

fn check_unique_upstream_names(upstreams: &[UpstreamConfig], problems: &mut Vec<String>) {
    for (i, upstream) in upstreams.iter().enumerate() {
        if let Some(first) = upstreams[..i].iter().position(|u| u.name == upstream.name) {
            problems.push(format!(
                "upstreams[{i}].name: {:?} is used by upstreams[{first}] too; names must be unique",
                upstream.name
            ));
        }
    }
}

fn at_least_one(problems: &mut Vec<String>, key: &str, value: u64) {
    if value == 0 {
        problems.push(format!("{key}: must be at least 1 (got 0)"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn mock_fault_rates_are_checked_each_and_together() {
        let mut config = Config::default();
        config.upstreams[0].mock =
            MockConfig { drop_rate: 0.6, timeout_rate: 0.5, garble_rate: 1.0, ..MockConfig::default() };
        let problems = config.validate().expect_err("0.6 + 0.5 is over 1.0");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("must be at most 1.0 (got 1.1"), "{problems:?}");
        config.upstreams[0].mock = MockConfig { overload_rate: 1.5, ..MockConfig::default() };
        let problems = config.validate().expect_err("1.5 is not a rate");
        assert_eq!(problems, ["upstreams[0].mock.overload_rate: must be between 0.0 and 1.0 (got 1.5)"]);
    }

    #[test]
    fn level_accepts_filters_and_refuses_typos() {
        for ok in ["info", "WARN", "info,ferry=debug", "ferry::engine=trace", "off"] {
            assert_eq!(check_level(ok), Ok(()), "{ok}");
        }
        for bad in ["inof", "", "ferry=loud"] {
            assert!(check_level(bad).is_err(), "{bad}");
        }
    }
}
