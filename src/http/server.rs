//! The HTTP server: binds `[server] bind`, installs the extractor limits, CORS, the access log and
//! authentication around [`routes`](super::routes), and refuses to expose an unprotected API.
//!
//! Middleware, outermost first: access log (method, path, status, latency at debug; never query
//! strings, bodies or keys; it also counts requests in flight for the daemon's shutdown) → JSON bodies for bare 404/405 answers → CORS (only for configured
//! origins) → authentication ([`auth::authenticate`]) → the route.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::{Condition, Next, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};

use super::auth::{self, Keys};
use super::error::{json_error, path_error, query_error};
use super::{ApiError, AppState};
use crate::config::ServerConfig;

/// The API would be reachable beyond this machine with no key to protect it.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve on {bind} without API keys: an address beyond loopback needs keys. \
     Export {api_keys_env} (inference keys) and/or {admin_keys_env} (admin keys), comma-separated, \
     or bind to 127.0.0.1"
)]
pub struct Unprotected {
    /// The configured bind address.
    pub bind: String,
    /// Where inference keys are read from.
    pub api_keys_env: String,
    /// Where admin keys are read from.
    pub admin_keys_env: String,
}

/// Refuses a non-loopback `bind` when no key is configured.
pub fn check_exposure(server: &ServerConfig, keys: &Keys) -> Result<(), Unprotected> {
    if keys.is_empty() && !is_loopback_bind(&server.bind) {
        return Err(Unprotected {
            bind: server.bind.clone(),
            api_keys_env: server.api_keys_env.clone(),
            admin_keys_env: server.admin_keys_env.clone(),
        });
    }
    Ok(())
}

/// Whether `HOST:PORT` names a loopback host. A host name other than `localhost` counts as
/// exposed: what it resolves to is not ours to trust.
fn is_loopback_bind(bind: &str) -> bool {
    let host = bind.rsplit_once(':').map_or(bind, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Binds the API and returns the server (a future to spawn or await; stop it through its
/// handle) and the address it listens on. Port 0 picks a free port. OS signals are left to the
/// caller (see [`crate::daemon`]).
pub fn build(state: AppState, server: &ServerConfig, keys: Keys) -> io::Result<(Server, SocketAddr)> {
    let bound = bind(state, server, keys)?;
    Ok((bound.server, bound.addr))
}

/// A bound API server.
pub struct Bound {
    /// The server future; spawn it, stop it through `server.handle()`.
    pub server: Server,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Requests being handled now, so a shutdown can wait for their replies.
    pub in_flight: InFlight,
}

/// Counts requests between their arrival and their response.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Requests being handled now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Waits until no request is being handled, at most `limit`; true if none is.
    pub async fn settle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.count() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    fn enter(&self) -> Entered {
        self.0.fetch_add(1, Ordering::AcqRel);
        Entered(Arc::clone(&self.0))
    }
}

/// Leaves the count when dropped, so an error or a dropped connection leaves it too.
struct Entered(Arc<AtomicUsize>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// [`build`], also returning the in-flight request count (for [`crate::daemon`]).
pub fn bind(state: AppState, server: &ServerConfig, keys: Keys) -> io::Result<Bound> {
    check_exposure(server, &keys).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
    let keys = keys.identify(state.store.owner_secret());
    // Rows an older ferry recorded under a key's legacy id are given its owner id, once.
    match crate::store::adopt_legacy_owners(&state.config.storage.path, &keys.legacy_pairs()) {
        Ok(0) => {}
        Ok(rows) => tracing::info!(event = "owner_ids_migrated", rows),
        Err(error) => tracing::warn!(event = "store_failed", what = "adopt_legacy_owners", error = %error),
    }
    let in_flight = InFlight::default();
    let counter = web::Data::new(in_flight.clone());
    let state = web::Data::new(state);
    let keys = web::Data::new(keys);
    let limit = server.max_body_bytes;
    let origins = server.cors_origins.clone();
    let workers = if server.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        server.workers
    };
    let http = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(keys.clone())
            .app_data(counter.clone())
            // Bodies are read with `JsonBody`; this keeps any `web::Json` extractor to the same rules.
            .app_data(
                web::JsonConfig::default().limit(limit).content_type_required(true).error_handler(json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(web::PayloadConfig::new(limit))
            .configure(super::routes)
            .default_service(web::to(not_found))
            .wrap(from_fn(auth::authenticate))
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap(from_fn(json_fallback))
            .wrap(from_fn(access_log))
    })
    .disable_signals()
    .on_connect(super::peer::on_connect)
    .workers(workers)
    // A graceful stop waits this long for open connections (the daemon stops forcibly once
    // every request has its reply, so idle keep-alive connections do not hold it).
    .shutdown_timeout(server.shutdown_grace_ms.div_ceil(1000) + 5)
    .bind(&server.bind)?;
    let addr = http
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "bound to no address"))?;
    Ok(Bound { server: http.run(), addr, in_flight })
}

/// CORS for exactly the configured origins, with the headers ferry's clients send.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("x-ferry-priority"),
        ])
        .max_age(3600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no endpoint {}", request_line(&req))))
}

/// The method and path of a request without the caller's text: the method when it is a standard
/// one, the path's length (it may carry an id or a secret pasted by mistake). docs/api.md lists
/// the endpoints.
fn request_line(req: &HttpRequest) -> String {
    let method = req.method();
    let standard = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    let method = if standard.contains(method) { method.as_str() } else { "(a non-standard method)" };
    format!("{method} for this path (of {} bytes); docs/api.md lists the endpoints", req.path().len())
}

/// Gives bodiless 404 and 405 answers (actix's own, e.g. a known path with another method) the
/// JSON error shape every other error has.
async fn json_fallback(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let status = res.status();
    let bare = matches!(res.response().body().size(), BodySize::None | BodySize::Sized(0));
    if !bare || !(status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED) {
        return Ok(res.map_into_boxed_body());
    }
    let (req, _) = res.into_parts();
    let what = request_line(&req);
    let error = if status == StatusCode::NOT_FOUND {
        ApiError::NotFound(format!("no endpoint {what}"))
    } else {
        ApiError::MethodNotAllowed(format!("method not allowed: {what}"))
    };
    Ok(ServiceResponse::new(req, error.error_response()))
}

/// One debug line per request: method, path (no query string), status, latency.
async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let _entered = req.app_data::<web::Data<InFlight>>().map(|count| count.enter());
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.match_info().as_str().to_string();
    let result = next.call(req).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    tracing::debug!(
        event = "http_request",
        method = %method,
        path = %path,
        status = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_binds_may_go_without_keys() {
        for bind in ["127.0.0.1:8000", "localhost:0", "[::1]:8000", "127.0.0.2:1"] {
            assert!(is_loopback_bind(bind), "{bind}");
        }
        for bind in ["0.0.0.0:8000", "[::]:8000", "10.0.0.5:80", "example.com:80"] {
            assert!(!is_loopback_bind(bind), "{bind}");
        }
    }

    #[test]
    fn exposure_is_refused_naming_bind_and_variables() {
        let server = ServerConfig { bind: "0.0.0.0:8000".into(), ..ServerConfig::default() };
        let message = check_exposure(&server, &Keys::none()).map(|_| ()).unwrap_err().to_string();
        for part in ["0.0.0.0:8000", "FERRY_API_KEYS", "FERRY_ADMIN_KEYS"] {
            assert!(message.contains(part), "{message}");
        }
        assert!(check_exposure(&server, &Keys::new(&["k"], &[])).is_ok());
    }
}
