//! The admin API under `/sim/` (JSON, no signature): seed, inspect, inject
//! faults, reset, tune the async-job duration.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::CloudStackSim;
use super::errors::json_response;
use super::seed::SeedRequest;
use crate::faults::FaultRule;

type Sim = State<Arc<CloudStackSim>>;

/// `GET/PUT /sim/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// How long an async job runs, in milliseconds.
    pub async_job_ms: u64,
}

pub fn routes() -> Router<Arc<CloudStackSim>> {
    Router::new()
        .route("/sim/seed", post(seed))
        .route("/sim/seed/demo", post(seed_demo))
        .route("/sim/state", get(state))
        .route(
            "/sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/sim/reset", post(reset))
        .route("/sim/config", get(get_config).put(put_config))
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "error": message.to_string() }),
    )
}

fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

/// The JSON body as `T`, or the reason it is not one.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.is_empty() {
        return Err("a JSON body is required".to_owned());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn seed(State(sim): Sim, body: Bytes) -> Response {
    let request: SeedRequest = match parse(&body) {
        Ok(r) => r,
        Err(reason) => return bad_request(reason),
    };
    match sim.seed(&request) {
        Ok(report) => ok(&json!(report)),
        Err(e) => bad_request(e),
    }
}

async fn seed_demo(State(sim): Sim) -> Response {
    match sim.seed_demo() {
        Ok(report) => ok(&json!(report)),
        Err(e) => bad_request(e),
    }
}

async fn state(State(sim): Sim) -> Response {
    ok(&sim.state_json())
}

async fn list_faults(State(sim): Sim) -> Response {
    ok(&json!(sim.faults().list()))
}

async fn add_fault(State(sim): Sim, body: Bytes) -> Response {
    let rule: FaultRule = match parse(&body) {
        Ok(r) => r,
        Err(reason) => return bad_request(reason),
    };
    match sim.faults().add(rule.clone()) {
        Ok(()) => ok(&json!(rule)),
        Err(e) => bad_request(e),
    }
}

async fn clear_faults(State(sim): Sim) -> Response {
    sim.faults().clear();
    ok(&json!({ "cleared": true }))
}

async fn reset(State(sim): Sim) -> Response {
    sim.reset();
    ok(&json!({ "reset": true }))
}

async fn get_config(State(sim): Sim) -> Response {
    ok(&json!(ConfigBody {
        async_job_ms: sim.async_job_duration().as_millis() as u64,
    }))
}

async fn put_config(State(sim): Sim, body: Bytes) -> Response {
    let config: ConfigBody = match parse(&body) {
        Ok(c) => c,
        Err(reason) => return bad_request(reason),
    };
    if config.async_job_ms > 24 * 3600 * 1000 {
        return bad_request("async_job_ms must be at most one day");
    }
    sim.set_async_job_duration(Duration::from_millis(config.async_job_ms));
    ok(&json!(config))
}
