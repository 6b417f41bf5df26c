//! [`Config::render`]: the configuration as `ferry check` prints it, TOML with every default
//! filled in, each value commented where it helps, and API keys shown only as their variable.

use super::{Config, LaneSettings, LogFormat, Mode, ProviderKind, Rotation, UpstreamConfig, provider_name};

impl Config {
    /// The configuration as `ferry check` prints it: TOML with every default filled in and each
    /// lane's effective values. API keys appear only as their variable's name and whether it is
    /// set, never their value.
    pub fn render(&self) -> String {
        self.render_with(|name| std::env::var(name).ok())
    }

    /// [`Config::render`] with the environment lookup injected, so output is testable.
    pub fn render_with(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        let mut out = Render::default();
        out.comment("ferry configuration as resolved: defaults filled in, lanes as they run.");
        render_sections(self, &mut out);
        render_lanes(self, &mut out);
        for upstream in &self.upstreams {
            render_upstream(upstream, &lookup, &mut out);
        }
        for tenant in &self.tenants {
            render_tenant(tenant, &lookup, &mut out);
        }
        out.text
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Fanout => "fanout",
        Mode::Combined => "combined",
    }
}

/// A TOML document built line by line, so values can carry explanatory comments.
#[derive(Default)]
struct Render {
    text: String,
}

impl Render {
    fn comment(&mut self, comment: &str) {
        self.text.push_str(&format!("# {comment}\n"));
    }

    fn table(&mut self, header: &str) {
        self.text.push_str(&format!("\n{header}\n"));
    }

    fn value(&mut self, key: &str, value: impl std::fmt::Display) {
        self.text.push_str(&format!("{key} = {value}\n"));
    }

    fn noted(&mut self, key: &str, value: impl std::fmt::Display, note: &str) {
        self.text.push_str(&format!("{key} = {value}  # {note}\n"));
    }

    fn string(&mut self, key: &str, value: &str) {
        self.value(key, quote(value));
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn render_sections(config: &Config, out: &mut Render) {
    let server = &config.server;
    out.table("[server]");
    out.string("bind", &server.bind);
    out.string("api_keys_env", &server.api_keys_env);
    out.string("admin_keys_env", &server.admin_keys_env);
    out.value("max_body_bytes", server.max_body_bytes);
    let origins: Vec<String> = server.cors_origins.iter().map(|o| quote(o)).collect();
    out.value("cors_origins", format!("[{}]", origins.join(", ")));
    out.value("shutdown_grace_ms", server.shutdown_grace_ms);
    out.noted("workers", server.workers, "HTTP worker threads; 0: one per core");
    out.table("[storage]");
    out.string("path", &config.storage.path.display().to_string());
    out.noted("chat_retention_days", config.storage.chat_retention_days, "0: keep chats");
    out.noted("max_chats", config.storage.max_chats, "0: no cap");
    out.table("[jobs]");
    out.string("lane", config.jobs_lane());
    out.value("max_in_flight", config.jobs.max_in_flight);
    out.table("[files]");
    out.noted("max_bytes", config.files.max_bytes, "largest upload; larger gets 413");
    out.noted("max_lines", config.files.max_lines, "most lines in a batch input file");
    out.noted("max_bytes_per_owner", config.files.max_bytes_per_owner, "files one key may hold; 0: no quota");
    out.noted(
        "output_lifetime_secs",
        config.files.output_lifetime_secs,
        "batch output files expire; 0: never",
    );
    let logging = &config.logging;
    out.table("[logging]");
    out.string("dir", &logging.dir.display().to_string());
    out.string("file", &logging.file);
    out.string("level", &logging.level);
    out.string(
        "format",
        match logging.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
    );
    out.string(
        "rotation",
        match logging.rotation {
            Rotation::Never => "never",
            Rotation::Hourly => "hourly",
            Rotation::Daily => "daily",
        },
    );
    out.value("log_payloads", logging.log_payloads);
    out.noted("keep_files", logging.keep_files, "rotated log files kept; 0: all");
    let batching = &config.batching;
    out.table("[batching]");
    out.value("batch_size", batching.batch_size);
    out.value("batch_delay_ms", batching.batch_delay_ms);
    out.value("queue_capacity", batching.queue_capacity);
    out.value("lower_share", batching.lower_share);
    out.value("max_requeues", batching.max_requeues);
}

/// Lanes in the order they are served (highest rank first), each with its effective values.
fn render_lanes(config: &Config, out: &mut Render) {
    let mut lanes: Vec<(String, LaneSettings)> = config.resolved_lanes().into_iter().collect();
    lanes.sort_by(|a, b| b.1.rank.cmp(&a.1.rank).then_with(|| a.0.cmp(&b.0)));
    for (name, lane) in lanes {
        out.table(&format!("[lanes.{}]", table_key(&name)));
        out.value("rank", lane.rank);
        out.value("window_ms", lane.window_ms);
        // Followed values stay comments so the rendered file, loaded again, still follows.
        if lane.max_batch_follows_global {
            out.comment(&format!("max_batch = {}: follows [batching] batch_size", lane.max_batch));
        } else {
            out.value("max_batch", lane.max_batch);
        }
        if lane.delay_follows_global {
            out.comment(&format!("delay_ms = {}: follows [batching] batch_delay_ms", lane.delay_ms));
        } else {
            out.value("delay_ms", lane.delay_ms);
        }
        match lane.max_tokens {
            Some(tokens) => out.value("max_tokens", tokens),
            None => out.comment("max_tokens: not set (the item's own, else the upstream's default)"),
        }
        out.value("latency_ms", lane.latency_ms);
        out.string("mode", mode_name(lane.mode));
        match config.lanes.get(&name).and_then(|l| l.queue_capacity) {
            Some(capacity) => out.value("queue_capacity", capacity),
            None => out.comment(&format!(
                "queue_capacity = {}: from [batching] queue_capacity",
                lane.queue_capacity
            )),
        }
        match &lane.model {
            Some(model) => out.string("model", model),
            None => out.comment("model: not set (the serving upstream's first model)"),
        }
        if lane.mix_owners {
            out.value("mix_owners", true);
        }
        match lane.temperature {
            Some(t) => out.value("temperature", float32(t)),
            None => out.comment("temperature: not set (the item's own, else the upstream's default)"),
        }
        if let Some(p) = lane.top_p {
            out.value("top_p", float32(p));
        }
        if let Some(seed) = lane.seed {
            out.value("seed", seed);
        }
        out.value("verify_share", toml::Value::Float(lane.verify_share));
        out.value("min_fidelity", toml::Value::Float(lane.min_fidelity));
        out.string("on_low_fidelity", lane.on_low_fidelity.name());
    }
}

/// An f32 as TOML writes its shortest form (0.7, not 0.699999988079071).
fn float32(value: f32) -> toml::Value {
    toml::Value::Float(value.to_string().parse().unwrap_or(f64::from(value)))
}

/// A lane name as a TOML table key: bare when it can be, quoted otherwise.
fn table_key(name: &str) -> String {
    let bare = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { name.to_string() } else { quote(name) }
}

fn render_tenant(tenant: &super::TenantConfig, lookup: &impl Fn(&str) -> Option<String>, out: &mut Render) {
    out.table("[[tenants]]");
    out.string("name", &tenant.name);
    let keys = lookup(&tenant.keys_env)
        .map_or(0, |value| value.split(',').filter(|key| !key.trim().is_empty()).count());
    out.noted("keys_env", quote(&tenant.keys_env), &format!("{keys} key(s) set"));
    let limits =
        [("rpm", tenant.rpm), ("tpm", tenant.tpm), ("max_queued", tenant.max_queued.map(|n| n as u64))];
    for (key, value) in limits {
        match value {
            Some(value) => out.value(key, value),
            None => out.comment(&format!("{key}: no limit")),
        }
    }
    match &tenant.lanes {
        Some(lanes) => {
            let quoted: Vec<String> = lanes.iter().map(|lane| quote(lane)).collect();
            out.value("lanes", format!("[{}]", quoted.join(", ")));
        }
        None => out.comment("lanes: all"),
    }
}

fn render_upstream(upstream: &UpstreamConfig, lookup: &impl Fn(&str) -> Option<String>, out: &mut Render) {
    out.table("[[upstreams]]");
    out.string("name", &upstream.name);
    out.string("provider", provider_name(upstream.provider));
    match &upstream.base_url {
        Some(url) => out.string("base_url", url),
        None if upstream.provider == ProviderKind::Gemini => {
            out.comment("base_url: not set (Google's Gemini API)")
        }
        None => {}
    }
    if let Some(var) = &upstream.api_key_env {
        let set = lookup(var).is_some_and(|value| !value.trim().is_empty());
        out.noted("api_key_env", quote(var), if set { "set" } else { "NOT set" });
    }
    let models: Vec<String> = upstream.models.iter().map(|m| quote(m)).collect();
    if models.is_empty() {
        out.noted("models", "[]", "serves any model asked for");
    } else {
        out.value("models", format!("[{}]", models.join(", ")));
    }
    for (key, limit) in [("rpm", upstream.rpm), ("tpm", upstream.tpm), ("rpd", upstream.rpd)] {
        match limit {
            Some(limit) => out.value(key, limit),
            None => out.comment(&format!("{key}: not set (unlimited)")),
        }
    }
    out.value("concurrency", upstream.concurrency);
    out.string("structured_output", upstream.structured_output.name());
    out.value("timeout_ms", upstream.timeout_ms);
    out.value("max_retries", upstream.max_retries);
    out.value("retry_after_send", upstream.retry_after_send);
    out.value("backoff_base_ms", upstream.backoff_base_ms);
    out.value("backoff_max_ms", upstream.backoff_max_ms);
    out.value("retry_after_max_ms", upstream.retry_after_max_ms);
    out.value("cooldown_failures", upstream.cooldown_failures);
    out.value("cooldown_ms", upstream.cooldown_ms);
    if upstream.provider == ProviderKind::Mock {
        let mock = &upstream.mock;
        out.table("[upstreams.mock]");
        out.value("latency_ms", mock.latency_ms);
        out.value("latency_jitter_ms", mock.latency_jitter_ms);
        out.value("output_tokens", mock.output_tokens);
        out.value("error_rate", toml::Value::Float(mock.error_rate));
        out.value("rate_limit_rate", toml::Value::Float(mock.rate_limit_rate));
        out.value("overload_rate", toml::Value::Float(mock.overload_rate));
        out.value("malformed_rate", toml::Value::Float(mock.malformed_rate));
        out.value("drop_rate", toml::Value::Float(mock.drop_rate));
        out.value("timeout_rate", toml::Value::Float(mock.timeout_rate));
        out.value("garble_rate", toml::Value::Float(mock.garble_rate));
        out.value("misalign_rate", toml::Value::Float(mock.misalign_rate));
        out.value("wrong_answer_rate", toml::Value::Float(mock.wrong_answer_rate));
        out.noted("capacity", mock.capacity, "calls served at once; 0: no limit");
        out.noted("queue_limit", mock.queue_limit, "calls that may wait for a slot, then 503; 0: no limit");
        out.value("retry_after_ms", mock.retry_after_ms);
        out.value("seed", mock.seed);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn render_is_toml_that_loads_back_with_the_same_lanes() {
        let config = Config::default();
        let text = config.render_with(no_env);
        let back = Config::parse(&text, Path::new("rendered.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.resolved_lanes(), config.resolved_lanes());
        assert_eq!(back.upstreams, config.upstreams);
        assert!(text.contains("# max_batch = 10: follows [batching] batch_size"), "{text}");
    }

    #[test]
    fn tenants_render_and_load_back_with_their_key_count_only() {
        let mut config = Config::default();
        config.tenants.push(crate::config::TenantConfig {
            rpm: Some(60),
            max_queued: Some(500),
            lanes: Some(vec!["low".into()]),
            ..crate::config::TenantConfig::new("acme", "FERRY_TENANT_ACME_KEYS")
        });
        let text = config.render_with(|name| {
            (name == "FERRY_TENANT_ACME_KEYS").then(|| "tenant-key-000000001,tenant-key-000000002".into())
        });
        assert!(text.contains("keys_env = \"FERRY_TENANT_ACME_KEYS\"  # 2 key(s) set"), "{text}");
        assert!(!text.contains("tenant-key-0000"), "keys are not shown: {text}");
        let back = Config::parse(&text, Path::new("rendered.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.tenants, config.tenants);
    }

    #[test]
    fn auto_concurrency_renders_and_loads_back() {
        let mut config = Config::default();
        config.upstreams[0].concurrency = crate::config::Concurrency::Auto;
        let text = config.render_with(no_env);
        assert!(text.contains("concurrency = \"auto\"\n"), "{text}");
        assert!(text.contains("structured_output = \"json_schema\"\n"), "{text}");
        let back = Config::parse(&text, Path::new("rendered.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.upstreams, config.upstreams);
    }

    #[test]
    fn render_shows_whether_the_key_variable_is_set_but_never_the_key() {
        let mut config = Config::default();
        let mut openai = UpstreamConfig::mock("openai");
        openai.provider = ProviderKind::Openai;
        openai.base_url = Some("https://api.openai.com/v1".into());
        openai.api_key_env = Some("OPENAI_API_KEY".into());
        config.upstreams.push(openai);
        let set = config.render_with(|_| Some("sk-secret-value".into()));
        assert!(set.contains("api_key_env = \"OPENAI_API_KEY\"  # set"), "{set}");
        assert!(!set.contains("sk-secret"));
        let unset = config.render_with(no_env);
        assert!(unset.contains("api_key_env = \"OPENAI_API_KEY\"  # NOT set"), "{unset}");
    }
}
