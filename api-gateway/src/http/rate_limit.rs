//! The reference's request limits, per client IP, with governor's GCRA: the
//! endpoints that start or change operations allow a burst (20) and then a
//! sustained rate (10 per minute); reads are limited separately and far more
//! generously so dashboards can poll. A refused request gets 429, the error
//! envelope and `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use failover_core::ErrorCode;
use failover_platform::config::GatewaySettings;

use super::error::ApiError;
use crate::metrics::GatewayMetrics;

#[derive(Debug)]
pub struct RateLimits {
    writes: DefaultKeyedRateLimiter<IpAddr>,
    reads: DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<IpAddr>,
    metrics: GatewayMetrics,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let period = Duration::from_secs(60) / per_minute.max(1);
    Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("a positive burst"))
}

impl RateLimits {
    pub fn new(settings: &GatewaySettings) -> Self {
        RateLimits {
            writes: RateLimiter::keyed(quota(
                settings.rate_limit_per_minute,
                settings.rate_limit_burst,
            )),
            reads: RateLimiter::keyed(quota(
                settings.read_rate_limit_per_minute,
                settings.read_rate_limit_burst,
            )),
            trusted_proxies: settings.trusted_proxies.clone(),
            metrics: GatewayMetrics::default(),
        }
    }

    /// Counts refusals into `metrics`.
    pub fn with_metrics(mut self, metrics: GatewayMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Forgets clients whose limits are back at their start, bounding memory.
    pub fn forget_idle_clients(&self) {
        self.writes.retain_recent();
        self.reads.retain_recent();
    }

    /// The client: the socket's peer, or, behind a trusted proxy, the
    /// nearest untrusted address of `X-Forwarded-For`.
    fn client(&self, peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        forwarded
            .into_iter()
            .flat_map(|v| v.split(','))
            .rev()
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer)
    }
}

/// Whether a request starts or changes an operation.
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub async fn enforce(
    State(limits): State<Arc<RateLimits>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/health/") || request.uri().path() == "/metrics" {
        return next.run(request).await;
    }
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let client = limits.client(peer.ip(), forwarded);
    let write = is_write(request.method());
    let limiter = if write { &limits.writes } else { &limits.reads };
    match limiter.check_key(&client) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            limits.metrics.rate_limited(write);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::warn!(client = %client, retry_after_s = seconds, path = %request.uri().path(), "rate limit exceeded");
            let mut response = ApiError::new(
                ErrorCode::RateLimited,
                format!("Rate limit exceeded for {client}; retry in {seconds}s"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

/// Forgets idle clients of the rate limiter once a minute, until `shutdown`.
pub async fn run_upkeep(limits: Arc<RateLimits>, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        limits.forget_idle_clients();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> RateLimits {
        let mut settings = failover_platform::Settings::load(None).unwrap().gateway;
        settings.trusted_proxies = trusted.iter().map(|s| s.parse().unwrap()).collect();
        RateLimits::new(&settings)
    }

    #[test]
    fn the_reference_numbers_bursts_of_20_then_10_per_minute() {
        let l = limits(&[]);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for n in 0..20 {
            assert!(l.writes.check_key(&ip).is_ok(), "request {n} of the burst");
        }
        let refused = l.writes.check_key(&ip).unwrap_err();
        let wait = refused.wait_time_from(DefaultClock::default().now());
        assert!(
            wait > Duration::from_secs(5) && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        // Another client is not affected, and reads have their own budget.
        assert!(l.writes.check_key(&"10.0.0.2".parse().unwrap()).is_ok());
        assert!(l.reads.check_key(&ip).is_ok());
    }

    #[test]
    fn the_client_behind_a_trusted_proxy_is_the_forwarded_one() {
        let l = limits(&["127.0.0.1"]);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            l.client(proxy, Some("203.0.113.9, 127.0.0.1")),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(l.client(proxy, None), proxy);
        let untrusted: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(l.client(untrusted, Some("203.0.113.9")), untrusted);
    }
}
