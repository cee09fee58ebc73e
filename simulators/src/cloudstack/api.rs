//! `/client/api`: parameters from the query and a form body (merged, the
//! query wins), faults, the signature check, the command.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use failover_platform::cloudstack_signature::{self, EXPIRES_FORMAT};
use serde_json::json;

use super::CloudStackSim;
use super::commands::{self, Params, Request};
use super::errors::{ApiError, json_response};
use super::jobs::JobTiming;

/// The parameters as received (for the signature, which sorts the names
/// as sent) and normalized (lower-case names) for the handlers.
struct Received {
    raw: Vec<(String, String)>,
    params: Params,
}

fn normalize(name: &str) -> String {
    // `details[0].cpuNumber`: the map key after the brackets keeps its case.
    match name.find("].") {
        Some(pos) if name[..pos].contains('[') => {
            format!(
                "{}{}",
                name[..pos + 2].to_ascii_lowercase(),
                &name[pos + 2..]
            )
        }
        _ => name.to_ascii_lowercase(),
    }
}

fn receive(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Received, String> {
    let mut raw: Vec<(String, String)> = match query {
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form && !body.is_empty() {
        let form: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|e| e.to_string())?;
        for (name, value) in form {
            if !raw.iter().any(|(n, _)| *n == name) {
                raw.push((name, value));
            }
        }
    }
    let mut params = Params::new();
    for (name, value) in &raw {
        params
            .entry(normalize(name))
            .or_insert_with(|| value.clone());
    }
    Ok(Received { raw, params })
}

/// The check of `ApiServer.verifyRequest`: a known API key, a valid
/// HMAC-SHA1 signature over all other parameters, and for signature
/// version 3 an `expires` that parses and lies in the future.
fn authenticate(sim: &CloudStackSim, received: &Received) -> Result<(), ApiError> {
    let params = &received.params;
    let api_key = params.get("apikey").ok_or_else(ApiError::unauthorized)?;
    let signature = params.get("signature").ok_or_else(ApiError::unauthorized)?;
    let secret = sim.secret_of(api_key).ok_or_else(ApiError::unauthorized)?;
    if params.get("signatureversion").map(String::as_str) == Some("3") {
        let expires = params.get("expires").ok_or_else(ApiError::unauthorized)?;
        let expires = DateTime::parse_from_str(expires, EXPIRES_FORMAT)
            .map_err(|_| ApiError::unauthorized())?;
        if expires.with_timezone(&Utc) < Utc::now() {
            return Err(ApiError::unauthorized());
        }
    }
    let pairs = received.raw.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    if !cloudstack_signature::verify(pairs, &secret, signature) {
        return Err(ApiError::unauthorized());
    }
    Ok(())
}

pub async fn handle(
    State(sim): State<Arc<CloudStackSim>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let received = match receive(query.as_deref(), &headers, &body) {
        Ok(r) => r,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "errorresponse": { "uuidList": [], "errorcode": 400, "errortext": format!("malformed request: {e}") } }),
            );
        }
    };
    let requested = received.params.get("command").cloned().unwrap_or_default();
    let known = commands::find(&requested);
    let response_name = known.map_or_else(
        || "errorresponse".to_owned(),
        |(name, _)| format!("{}response", name.to_ascii_lowercase()),
    );
    let decision = sim.faults().decide(&requested);
    decision.delay().await;
    if let Some(status) = decision.fail {
        let err = ApiError::injected(status.unwrap_or(530));
        tracing::info!(
            command = requested.as_str(),
            status = err.code,
            "injected failure"
        );
        return err.into_response(&response_name);
    }
    if let Err(err) = authenticate(&sim, &received) {
        tracing::info!(
            command = requested.as_str(),
            status = 401,
            "request refused"
        );
        return err.into_response(&response_name);
    }
    let Some((command, handler)) = known else {
        return ApiError::unsupported().into_response("errorresponse");
    };
    let request = Request {
        command,
        params: &received.params,
        timing: JobTiming {
            duration: sim.async_job_duration(),
            inject_failure: decision.fail_async_job,
        },
    };
    let outcome = sim.with_world(|world| {
        world.advance(Instant::now());
        handler(world, &request)
    });
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(value) => {
            tracing::debug!(command, status = 200, elapsed_ms, "api call");
            json_response(StatusCode::OK, &json!({ response_name: value }))
        }
        Err(err) => {
            tracing::debug!(
                command,
                status = err.code,
                elapsed_ms,
                error = err.text.as_str(),
                "api call refused"
            );
            err.into_response(&response_name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn names_are_lower_cased_except_map_keys() {
        assert_eq!(normalize("Command"), "command");
        assert_eq!(normalize("details[0].cpuNumber"), "details[0].cpuNumber");
        assert_eq!(normalize("Details[0].cpuNumber"), "details[0].cpuNumber");
    }
}
