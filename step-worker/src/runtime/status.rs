//! The worker's small HTTP listener (`worker.metrics_listen`):
//! `GET /metrics` (Prometheus), `GET /health/live` and `GET /health/ready`
//! (ready while the worker consumes from RabbitMQ).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::WorkerMetrics;

pub fn router(metrics: WorkerMetrics) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(metrics)
}

/// Serves the router on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: WorkerMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn render(State(metrics): State<WorkerMetrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            failover_platform::metrics::CONTENT_TYPE,
        )],
        metrics.render(),
    )
}

async fn live() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn ready(State(metrics): State<WorkerMetrics>) -> impl IntoResponse {
    if metrics.broker_connected() {
        (
            StatusCode::OK,
            axum::Json(json!({"status": "ready", "broker": "ok"})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "broker": "not consuming from RabbitMQ"})),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_only_while_consuming_and_metrics_in_openmetrics() {
        let metrics = WorkerMetrics::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, metrics.clone(), stop.clone()));
        let http = reqwest::Client::new();
        let status = |path: &'static str| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move { http.get(url).send().await.unwrap().status().as_u16() }
        };
        assert_eq!(status("/health/live").await, 200);
        assert_eq!(status("/health/ready").await, 503);
        metrics.set_broker_connected(true);
        assert_eq!(status("/health/ready").await, 200);
        let scrape = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert!(
            scrape.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = scrape.text().await.unwrap();
        assert!(
            text.contains("failover_worker_broker_connected 1"),
            "{text}"
        );
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
