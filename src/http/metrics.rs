//! `GET /metrics`: the engine's counters in the Prometheus text format 0.0.4, for scraping.
//!
//! [`render`] is a pure function of a metrics [`Snapshot`]; lanes and upstreams that have not
//! reported yet are listed with zeros so every series exists from the first scrape.

use std::fmt::Write as _;

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::{ApiError, AppState, Caller};
use crate::engine::{BATCH_SECONDS_BUCKETS, LaneTotals, Snapshot, UpstreamStatus};
use crate::tenants::{Cost, Tenant};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(metrics)));
}

async fn metrics(state: web::Data<AppState>, _: Caller) -> Result<HttpResponse, ApiError> {
    let snapshot = state.engine.snapshot().await?;
    let upstreams: Vec<String> = state.config.upstreams.iter().map(|u| u.name.clone()).collect();
    let mut body = render(&snapshot, &state.engine.lanes(), &upstreams);
    let tenants = state.engine.tenants();
    if !tenants.is_empty() {
        let mut figures = Vec::new();
        for tenant in tenants.all() {
            figures.push(TenantFigures::of(tenant, tenants.used(tenant).await));
        }
        body.push_str(&render_tenants(&figures));
    }
    Ok(HttpResponse::Ok().insert_header((header::CONTENT_TYPE, CONTENT_TYPE)).body(body))
}

/// The exposition text for `snapshot`, with a series for each of `lanes` and `upstreams`.
pub fn render(snapshot: &Snapshot, lanes: &[String], upstreams: &[String]) -> String {
    let mut out = Exposition::default();
    let lane_totals: Vec<(&str, LaneTotals)> =
        lanes.iter().map(|l| (l.as_str(), snapshot.lanes.get(l).cloned().unwrap_or_default())).collect();

    out.family("ferry_queue_depth", "gauge", "Items waiting in a lane.");
    for lane in lanes {
        let depth = snapshot.lane_depths.get(lane).copied().unwrap_or(0);
        out.sample("ferry_queue_depth", &[("lane", lane)], depth as f64);
    }
    out.family("ferry_queue_owners", "gauge", "Owners with items waiting in a lane.");
    for lane in lanes {
        let owners = snapshot.lane_owners.get(lane).map_or(0, |(n, _)| *n);
        out.sample("ferry_queue_owners", &[("lane", lane)], owners as f64);
    }
    out.family("ferry_queue_depth_by_owner", "gauge", "Items waiting in a lane, for its deepest owners.");
    for lane in lanes {
        for owner in snapshot.lane_owners.get(lane).map_or(&[][..], |(_, top)| top.as_slice()) {
            out.sample(
                "ferry_queue_depth_by_owner",
                &[("lane", lane), ("owner", &owner.owner)],
                owner.depth as f64,
            );
        }
    }
    out.family(
        "ferry_items_withdrawn_total",
        "counter",
        "Items taken out unsent because their job was cancelled, expired, or its caller went away.",
    );
    for reason in ["cancelled", "expired", "caller_gone", "timed_out"] {
        let n = snapshot.withdrawn.get(reason).copied().unwrap_or(0);
        out.sample("ferry_items_withdrawn_total", &[("reason", reason)], n as f64);
    }
    out.family("ferry_batches_total", "counter", "Batches completed.");
    for (lane, totals) in &lane_totals {
        out.sample("ferry_batches_total", &[("lane", lane)], totals.batches as f64);
    }
    out.family("ferry_items_total", "counter", "Items finished, by outcome.");
    for (lane, totals) in &lane_totals {
        out.sample("ferry_items_total", &[("lane", lane), ("outcome", "ok")], totals.items_ok as f64);
        out.sample("ferry_items_total", &[("lane", lane), ("outcome", "failed")], totals.items_failed as f64);
    }
    render_histogram(&mut out, &lane_totals);
    render_upstreams(&mut out, snapshot, upstreams);
    render_fidelity(&mut out, snapshot);
    out.family("ferry_actor_restarts_total", "counter", "Engine actors restarted after a panic.");
    out.sample("ferry_actor_restarts_total", &[], snapshot.restarts as f64);
    out.text
}

fn render_histogram(out: &mut Exposition, lanes: &[(&str, LaneTotals)]) {
    let name = "ferry_batch_duration_seconds";
    out.family(name, "histogram", "Time from a batch's release to its last item's outcome.");
    for (lane, totals) in lanes {
        for (bound, count) in BATCH_SECONDS_BUCKETS.iter().zip(totals.duration_buckets) {
            let le = bound.to_string();
            out.sample(&format!("{name}_bucket"), &[("lane", lane), ("le", &le)], count as f64);
        }
        out.sample(&format!("{name}_bucket"), &[("lane", lane), ("le", "+Inf")], totals.batches as f64);
        out.sample(&format!("{name}_sum"), &[("lane", lane)], totals.duration_sum);
        out.sample(&format!("{name}_count"), &[("lane", lane)], totals.batches as f64);
    }
}

type Counter = fn(&UpstreamStatus) -> f64;

fn render_upstreams(out: &mut Exposition, snapshot: &Snapshot, upstreams: &[String]) {
    let families: [(&str, &str, &str, Counter); 13] = [
        ("ferry_upstream_calls_total", "counter", "Upstream calls started.", |u| u.calls as f64),
        ("ferry_upstream_failures_total", "counter", "Upstream calls that failed.", |u| u.failed as f64),
        ("ferry_upstream_retries_total", "counter", "Upstream calls retried.", |u| u.retries as f64),
        ("ferry_upstream_rate_limited_total", "counter", "Upstream 429 answers.", |u| u.rate_limited as f64),
        (
            "ferry_upstream_backpressure_total",
            "counter",
            "Upstream 503 answers taken as backpressure.",
            |u| u.backpressure as f64,
        ),
        (
            "ferry_upstream_limit_waits_total",
            "counter",
            "Times calls waited for a rate window (RPM/TPM/RPD or an announced limit).",
            |u| u.limit_waits as f64,
        ),
        ("ferry_upstream_in_flight", "gauge", "Upstream calls running now.", |u| u.in_flight as f64),
        (
            "ferry_upstream_concurrency",
            "gauge",
            "Calls allowed in flight now (lowered by 503s; searched for with concurrency = \"auto\").",
            |u| u.concurrency as f64,
        ),
        ("ferry_upstream_combined_calls_total", "counter", "Combined upstream calls started.", |u| {
            u.combined_calls as f64
        }),
        (
            "ferry_upstream_split_failures_total",
            "counter",
            "Combined replies that left items unanswered (not an object of answers by id, or ids missing, \
             duplicated or unknown).",
            |u| u.split_failures as f64,
        ),
        (
            "ferry_upstream_resent_alone_total",
            "counter",
            "Items of combined calls sent again alone (split failures and failed combined calls).",
            |u| u.resent_alone as f64,
        ),
        ("ferry_upstream_prompt_tokens_total", "counter", "Prompt tokens the upstream reported.", |u| {
            u.prompt_tokens as f64
        }),
        (
            "ferry_upstream_completion_tokens_total",
            "counter",
            "Completion tokens the upstream reported.",
            |u| u.completion_tokens as f64,
        ),
    ];
    for (name, kind, help, value) in families {
        out.family(name, kind, help);
        for upstream in upstreams {
            let v = snapshot.upstreams.get(upstream).map_or(0.0, value);
            out.sample(name, &[("upstream", upstream)], v);
        }
    }
    let name = "ferry_upstream_budget_remaining";
    out.family(name, "gauge", "What an upstream's rate windows still allow (windows with a limit only).");
    for upstream in upstreams {
        let Some(limits) = snapshot.upstreams.get(upstream).map(|u| u.limits) else { continue };
        let windows = [
            ("rpm", limits.rpm_used, limits.rpm_limit),
            ("tpm", limits.tpm_used, limits.tpm_limit),
            ("rpd", limits.rpd_used, limits.rpd_limit),
        ];
        for (window, used, limit) in windows {
            if let Some(limit) = limit {
                out.sample(
                    name,
                    &[("upstream", upstream), ("window", window)],
                    limit.saturating_sub(used) as f64,
                );
            }
        }
    }
    out.family("ferry_upstream_exhausted", "gauge", "1 while an upstream's daily budget is spent.");
    for upstream in upstreams {
        let exhausted = snapshot
            .upstreams
            .get(upstream)
            .is_some_and(|u| matches!(u.state, crate::engine::UpstreamState::Exhausted { .. }));
        out.sample("ferry_upstream_exhausted", &[("upstream", upstream)], f64::from(u8::from(exhausted)));
    }
}

/// Fidelity samples of combined answers, per lane, model and upstream.
fn render_fidelity(out: &mut Exposition, snapshot: &Snapshot) {
    let counts = || {
        snapshot
            .upstreams
            .iter()
            .flat_map(|(upstream, status)| status.fidelity.iter().map(move |f| (upstream, f)))
    };
    type Of = fn(&crate::engine::FidelityCount) -> f64;
    let families: [(&str, &str, &str, Of); 3] = [
        (
            "ferry_combined_fidelity_samples_total",
            "counter",
            "Combined answers also asked alone (lane verify_share).",
            |f| f.samples as f64,
        ),
        (
            "ferry_combined_fidelity_agreed_total",
            "counter",
            "Sampled combined answers that agreed with the answer alone (normalised text).",
            |f| f.agreed as f64,
        ),
        ("ferry_combined_fidelity", "gauge", "Share of sampled combined answers that agreed.", |f| {
            if f.samples == 0 { 1.0 } else { f.agreed as f64 / f.samples as f64 }
        }),
    ];
    for (name, kind, help, value) in families {
        out.family(name, kind, help);
        for (upstream, f) in counts() {
            out.sample(name, &[("lane", &f.lane), ("model", &f.model), ("upstream", upstream)], value(f));
        }
    }
}

/// One tenant's figures, as [`render_tenants`] shows them.
#[derive(Debug, Clone, Default)]
pub struct TenantFigures {
    /// The tenant's name.
    pub name: String,
    /// Prompts accepted and not yet answered.
    pub queued: usize,
    /// Prompts accepted since start.
    pub accepted: u64,
    /// Requests refused since start, per reason.
    pub refused: Vec<(&'static str, u64)>,
    /// Times a batch job of the tenant waited for room.
    pub paced: u64,
    /// Used of the current windows.
    pub used: Cost,
    /// The limits: `rpm`, `tpm`, `max_queued`.
    pub limits: [(&'static str, Option<u64>); 3],
}

impl TenantFigures {
    /// The figures of `tenant` with `used` of its windows.
    pub fn of(tenant: &Tenant, used: Cost) -> TenantFigures {
        let config = tenant.config();
        TenantFigures {
            name: tenant.name().to_string(),
            queued: tenant.queued(),
            accepted: tenant.accepted(),
            refused: tenant.refused().collect(),
            paced: tenant.paced(),
            used,
            limits: [
                ("rpm", config.rpm),
                ("tpm", config.tpm),
                ("max_queued", config.max_queued.map(|n| n as u64)),
            ],
        }
    }
}

/// The exposition text of every tenant's figures.
pub fn render_tenants(tenants: &[TenantFigures]) -> String {
    let mut out = Exposition::default();
    let mut each = |name: &str, kind: &str, help: &str, value: fn(&TenantFigures) -> f64| {
        out.family(name, kind, help);
        for t in tenants {
            out.sample(name, &[("tenant", &t.name)], value(t));
        }
    };
    each("ferry_tenant_queued", "gauge", "Prompts of a tenant accepted and not yet answered.", |t| {
        t.queued as f64
    });
    each("ferry_tenant_accepted_total", "counter", "Prompts of a tenant admitted.", |t| t.accepted as f64);
    each(
        "ferry_tenant_paced_total",
        "counter",
        "Times a tenant's batch job waited for its budget or queue room.",
        |t| t.paced as f64,
    );
    out.family(
        "ferry_tenant_refused_total",
        "counter",
        "Requests of a tenant refused, by the limit that refused them.",
    );
    for t in tenants {
        for (reason, n) in &t.refused {
            out.sample("ferry_tenant_refused_total", &[("tenant", &t.name), ("reason", reason)], *n as f64);
        }
    }
    out.family(
        "ferry_tenant_window_used",
        "gauge",
        "Prompts and estimated tokens a tenant used in the last minute.",
    );
    for t in tenants {
        out.sample(
            "ferry_tenant_window_used",
            &[("tenant", &t.name), ("window", "rpm")],
            t.used.prompts as f64,
        );
        out.sample(
            "ferry_tenant_window_used",
            &[("tenant", &t.name), ("window", "tpm")],
            t.used.tokens as f64,
        );
    }
    out.family("ferry_tenant_limit", "gauge", "A tenant's configured limits (absent: none).");
    for t in tenants {
        for (limit, value) in t.limits.iter().filter_map(|(k, v)| v.map(|v| (k, v))) {
            out.sample("ferry_tenant_limit", &[("tenant", &t.name), ("limit", limit)], value as f64);
        }
    }
    out.text
}

/// Exposition text built family by family.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value escaped as the format requires: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_labelled_samples() {
        let mut snapshot = Snapshot::default();
        snapshot.lane_depths.insert("bulk".into(), 3);
        let mut totals = LaneTotals { batches: 2, items_ok: 19, items_failed: 1, ..LaneTotals::default() };
        totals.duration_buckets = [0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2];
        totals.duration_sum = 0.125;
        snapshot.lanes.insert("bulk".into(), totals);
        snapshot.restarts = 1;
        let top = vec![
            crate::engine::metrics::OwnerDepth { owner: "a".into(), depth: 2 },
            crate::engine::metrics::OwnerDepth { owner: "b".into(), depth: 1 },
        ];
        snapshot.lane_owners.insert("bulk".into(), (2, top));
        snapshot.withdrawn.insert("cancelled".into(), 7);
        let limits =
            crate::core::limits::LimitsSnapshot { rpm_used: 3, rpm_limit: Some(10), ..Default::default() };
        let status = crate::engine::UpstreamStatus {
            name: "mock".into(),
            state: crate::engine::UpstreamState::Ok,
            in_flight: 0,
            queued: 0,
            concurrency: 1,
            concurrency_auto: false,
            combined_calls: 0,
            split_failures: 0,
            resent_alone: 0,
            limits,
            calls: 0,
            ok: 0,
            failed: 0,
            retries: 0,
            duplicate_risk: 0,
            rate_limited: 0,
            backpressure: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            limit_waits: 0,
            last_error: None,
            fidelity: Vec::new(),
        };
        snapshot.upstreams.insert("mock".into(), status);
        let text = render(&snapshot, &["bulk".into(), "high".into()], &["mock".into()]);
        for line in [
            "# TYPE ferry_queue_depth gauge",
            "ferry_queue_depth{lane=\"bulk\"} 3",
            "ferry_queue_depth{lane=\"high\"} 0",
            "ferry_batches_total{lane=\"bulk\"} 2",
            "ferry_items_total{lane=\"bulk\",outcome=\"ok\"} 19",
            "ferry_items_total{lane=\"bulk\",outcome=\"failed\"} 1",
            "# TYPE ferry_batch_duration_seconds histogram",
            "ferry_batch_duration_seconds_bucket{lane=\"bulk\",le=\"0.05\"} 1",
            "ferry_batch_duration_seconds_bucket{lane=\"bulk\",le=\"+Inf\"} 2",
            "ferry_batch_duration_seconds_sum{lane=\"bulk\"} 0.125",
            "ferry_batch_duration_seconds_count{lane=\"bulk\"} 2",
            "ferry_upstream_calls_total{upstream=\"mock\"} 0",
            "# TYPE ferry_upstream_in_flight gauge",
            "ferry_upstream_concurrency{upstream=\"mock\"} 1",
            "ferry_upstream_split_failures_total{upstream=\"mock\"} 0",
            "ferry_actor_restarts_total 1",
            "ferry_queue_owners{lane=\"bulk\"} 2",
            "ferry_queue_depth_by_owner{lane=\"bulk\",owner=\"a\"} 2",
            "ferry_queue_depth_by_owner{lane=\"bulk\",owner=\"b\"} 1",
            "ferry_items_withdrawn_total{reason=\"cancelled\"} 7",
            "ferry_items_withdrawn_total{reason=\"caller_gone\"} 0",
            "ferry_upstream_budget_remaining{upstream=\"mock\",window=\"rpm\"} 7",
            "ferry_upstream_exhausted{upstream=\"mock\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!((helps, types), (26, 26));
    }

    #[test]
    fn tenant_figures_are_labelled_by_tenant() {
        let figures = TenantFigures {
            name: "acme".into(),
            queued: 3,
            accepted: 40,
            refused: vec![("rpm", 2), ("lane", 0)],
            paced: 5,
            used: Cost { prompts: 7, tokens: 900 },
            limits: [("rpm", Some(60)), ("tpm", None), ("max_queued", Some(100))],
        };
        let text = render_tenants(&[figures]);
        for line in [
            "ferry_tenant_queued{tenant=\"acme\"} 3",
            "ferry_tenant_accepted_total{tenant=\"acme\"} 40",
            "ferry_tenant_refused_total{tenant=\"acme\",reason=\"rpm\"} 2",
            "ferry_tenant_paced_total{tenant=\"acme\"} 5",
            "ferry_tenant_window_used{tenant=\"acme\",window=\"tpm\"} 900",
            "ferry_tenant_limit{tenant=\"acme\",limit=\"rpm\"} 60",
            "ferry_tenant_limit{tenant=\"acme\",limit=\"max_queued\"} 100",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("limit=\"tpm\""), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
