//! REST v1 as the controller serves it:
//!
//! | call | fault operation |
//! | --- | --- |
//! | `GET /v1/controller/version` | `controller-version` |
//! | `GET /v1/resource-definitions` | `resource-definition-list` |
//! | `GET /v1/resource-definitions/{rd}` | `resource-definition-get` |
//! | `GET /v1/resource-definitions/{rd}/snapshots` | `snapshot-list` |
//! | `POST /v1/resource-definitions/{rd}/snapshots` | `snapshot-create` |
//! | `GET /v1/resource-definitions/{rd}/snapshots/{snap}` | `snapshot-get` |
//! | `DELETE /v1/resource-definitions/{rd}/snapshots/{snap}` | `snapshot-delete` |
//! | `POST /v1/resource-definitions/{rd}/snapshot-rollback/{snap}` | `snapshot-rollback` |
//!
//! plus `GET /health` (no auth, as on the controller). An injected failure
//! answers `FAIL_NOT_CONNECTED` (a satellite is away), HTTP 500 unless the
//! rule says otherwise.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::LinstorSim;
use super::rc::{self, ApiCallRc, Context};
use super::store::FLAG_SUCCESSFUL;
use super::views;

type Sim = State<Arc<LinstorSim>>;

pub(super) fn routes(sim: Arc<LinstorSim>) -> Router {
    let v1 = Router::new()
        .route("/v1/controller/version", get(controller_version))
        .route("/v1/resource-definitions", get(list_resource_definitions))
        .route(
            "/v1/resource-definitions/{rd}",
            get(get_resource_definition),
        )
        .route(
            "/v1/resource-definitions/{rd}/snapshots",
            get(list_snapshots).post(create_snapshot),
        )
        .route(
            "/v1/resource-definitions/{rd}/snapshots/{snap}",
            get(get_snapshot).delete(delete_snapshot),
        )
        .route(
            "/v1/resource-definitions/{rd}/snapshot-rollback/{snap}",
            post(rollback),
        )
        .route_layer(middleware::from_fn_with_state(sim.clone(), require_token))
        .with_state(sim);
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .merge(v1)
}

/// The controller's token filter: without a valid `Bearer` token, 401 with
/// `FAIL_ACC_DENIED_COMMAND` and a `WWW-Authenticate` challenge.
async fn require_token(State(sim): Sim, request: Request, next: Next) -> Response {
    let Some(expected) = sim.config().bearer_token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case("bearer ").then(|| token.trim())
        });
    if given.is_some_and(|token| constant_time_eq(token.as_bytes(), expected.as_bytes())) {
        return next.run(request).await;
    }
    let entry = ApiCallRc::new(
        rc::FAIL_ACC_DENIED_COMMAND,
        "Unauthorized: token invalid or not provided",
    );
    let mut response = rc::answer_with(StatusCode::UNAUTHORIZED, vec![entry]);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"linstor-controller\""),
    );
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Applies the fault rules of `operation`: waits the injected latency (or
/// forever), then answers the injected failure if there is one.
async fn inject(sim: &LinstorSim, operation: &str) -> Option<Response> {
    let decision = sim.faults().decide(operation);
    decision.delay().await;
    let status = decision.fail?.unwrap_or(500);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    tracing::info!(
        operation,
        status = status.as_u16(),
        "linstor simulator: injected failure"
    );
    let entry = ApiCallRc::new(
        rc::FAIL_NOT_CONNECTED,
        "No active connection to satellite 'linstor-sat-1'.",
    )
    .with_details(format!(
        "Injected by a /sim/faults rule for operation '{operation}'."
    ));
    Some(rc::answer_with(status, vec![entry]))
}

/// The controller's answer to a GET of something that does not exist: one
/// entry without context masks, HTTP 404.
fn not_found(ret_code: i64, message: String) -> Response {
    rc::answer(
        StatusCode::NOT_FOUND,
        vec![ApiCallRc::new(ret_code, message)],
    )
}

/// `limit` / `offset` paging as the controller applies it (limit 0: all).
fn page<T>(items: Vec<T>, query: &[(String, String)]) -> Vec<T> {
    let number = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let (limit, offset) = (number("limit"), number("offset"));
    if limit == 0 {
        return items;
    }
    items.into_iter().skip(offset).take(limit).collect()
}

fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    raw.and_then(|q| serde_urlencoded::from_str(&q).ok())
        .unwrap_or_default()
}

async fn controller_version(State(sim): Sim) -> Response {
    if let Some(failure) = inject(&sim, "controller-version").await {
        return failure;
    }
    Json(views::controller_version()).into_response()
}

async fn list_resource_definitions(State(sim): Sim, RawQuery(raw): RawQuery) -> Response {
    if let Some(failure) = inject(&sim, "resource-definition-list").await {
        return failure;
    }
    let query = query_pairs(raw);
    let with_volumes = query
        .iter()
        .any(|(k, v)| k == "with_volume_definitions" && v.eq_ignore_ascii_case("true"));
    let wanted: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "resource_definitions")
        .flat_map(|(_, v)| v.split(','))
        .filter(|v| !v.is_empty())
        .collect();
    let store = sim.store();
    let rds: Vec<_> = store
        .all()
        .enumerate()
        .filter(|(_, rd)| {
            wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(&rd.name))
        })
        .map(|(index, rd)| views::resource_definition(rd, index, with_volumes))
        .collect();
    Json(page(rds, &query)).into_response()
}

async fn get_resource_definition(State(sim): Sim, Path(rd): Path<String>) -> Response {
    if let Some(failure) = inject(&sim, "resource-definition-get").await {
        return failure;
    }
    let store = sim.store();
    match store.get(&rd) {
        Some(found) => Json(views::resource_definition(
            found,
            store.index_of(&rd),
            false,
        ))
        .into_response(),
        None => not_found(
            rc::FAIL_NOT_FOUND_RSC_DFN,
            format!("Resource definition '{rd}' not found."),
        ),
    }
}

async fn list_snapshots(
    State(sim): Sim,
    Path(rd): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(failure) = inject(&sim, "snapshot-list").await {
        return failure;
    }
    let store = sim.store();
    let Some(found) = store.get(&rd) else {
        return not_found(
            rc::FAIL_NOT_FOUND_RSC_DFN,
            format!("Resource definition '{rd}' not found."),
        );
    };
    let snapshots: Vec<_> = found
        .snapshots
        .iter()
        .map(|s| views::snapshot(found, s))
        .collect();
    Json(page(snapshots, &query_pairs(raw))).into_response()
}

async fn get_snapshot(State(sim): Sim, Path((rd, snap)): Path<(String, String)>) -> Response {
    if let Some(failure) = inject(&sim, "snapshot-get").await {
        return failure;
    }
    let store = sim.store();
    let Some(found) = store.get(&rd) else {
        return not_found(
            rc::FAIL_NOT_FOUND_RSC_DFN,
            format!("Resource definition '{rd}' not found."),
        );
    };
    match found
        .snapshots
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(&snap))
    {
        Some(snapshot) => Json(views::snapshot(found, snapshot)).into_response(),
        None => not_found(
            rc::FAIL_NOT_FOUND_SNAPSHOT,
            format!("Snapshot '{snap}' not found."),
        ),
    }
}

/// The fields of the `Snapshot` schema, the body of a snapshot create. The
/// controller reads `name` and `nodes`; a field outside the schema is
/// refused, as Jackson does by default.
const SNAPSHOT_FIELDS: [&str; 10] = [
    "name",
    "resource_name",
    "nodes",
    "props",
    "snapshot_definition_props",
    "resource_definition_props",
    "flags",
    "volume_definitions",
    "uuid",
    "snapshots",
];

/// The snapshot name and nodes of a create body.
fn parse_create_body(body: &[u8]) -> Result<(String, Vec<String>), String> {
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|err| err.to_string())?;
    if let Some(unknown) = fields
        .keys()
        .find(|k| !SNAPSHOT_FIELDS.contains(&k.as_str()))
    {
        return Err(format!("Unrecognized field \"{unknown}\""));
    }
    let name = match fields.get("name") {
        Some(serde_json::Value::String(name)) => name.clone(),
        Some(_) => return Err("field \"name\" must be a string".to_owned()),
        None => return Err("missing field \"name\"".to_owned()),
    };
    let nodes = match fields.get("nodes") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(nodes) => serde_json::from_value(nodes.clone())
            .map_err(|err| format!("field \"nodes\": {err}"))?,
    };
    Ok((name, nodes))
}

/// Checks the optional body of a rollback (`SnapshotRollback`).
fn check_rollback_body(body: &[u8]) -> Result<(), String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|err| err.to_string())?;
    for (key, value) in &fields {
        let allowed = key == "zfs_rollback_strategy"
            && (value.is_null()
                || matches!(value.as_str(), Some("rollback" | "clone" | "dynamic")));
        if !allowed {
            return Err(format!("unexpected field \"{key}\" = {value}"));
        }
    }
    Ok(())
}

async fn create_snapshot(State(sim): Sim, Path(rd): Path<String>, body: Bytes) -> Response {
    if let Some(failure) = inject(&sim, "snapshot-create").await {
        return failure;
    }
    let (snap, nodes) = match parse_create_body(&body) {
        Ok(parsed) => parsed,
        Err(details) => return rc::parse_error(details),
    };
    let context = Context::snapshot(rc::MASK_CRT, &rd, &snap);
    let duration = sim.config().snapshot_duration;
    let flags = if duration.is_zero() {
        vec![FLAG_SUCCESSFUL.to_owned()]
    } else {
        Vec::new()
    };
    let created = sim.store().create_snapshot(&rd, &snap, &nodes, flags);
    let (uuid, entries) = match created {
        Ok(created) => created,
        Err(entry) => return rc::answer(StatusCode::CREATED, vec![context.apply(*entry)]),
    };
    if !duration.is_zero() {
        // The satellites finish even when the client stops waiting.
        let (sim, rd) = (sim.clone(), rd.clone());
        let taking = tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            sim.store().complete_snapshot(&rd, uuid);
        });
        let _ = taking.await;
    }
    rc::answer(StatusCode::CREATED, context.apply_all(entries))
}

async fn delete_snapshot(State(sim): Sim, Path((rd, snap)): Path<(String, String)>) -> Response {
    if let Some(failure) = inject(&sim, "snapshot-delete").await {
        return failure;
    }
    let context = Context::snapshot(rc::MASK_DEL, &rd, &snap);
    let entries = sim
        .store()
        .delete_snapshot(&rd, &snap)
        .unwrap_or_else(|entry| vec![*entry]);
    rc::answer(StatusCode::OK, context.apply_all(entries))
}

async fn rollback(
    State(sim): Sim,
    Path((rd, snap)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(failure) = inject(&sim, "snapshot-rollback").await {
        return failure;
    }
    if let Err(details) = check_rollback_body(&body) {
        return rc::parse_error(details);
    }
    let context = Context::snapshot(rc::MASK_MOD, &rd, &snap);
    let require_most_recent = sim.config().rollback_requires_most_recent;
    let entries = sim
        .store()
        .rollback(&rd, &snap, require_most_recent)
        .unwrap_or_else(|entry| vec![*entry]);
    rc::answer(StatusCode::OK, context.apply_all(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_and_token_comparison() {
        let query = vec![
            ("limit".to_owned(), "2".to_owned()),
            ("offset".to_owned(), "1".to_owned()),
        ];
        assert_eq!(page(vec![1, 2, 3, 4], &query), vec![2, 3]);
        assert_eq!(page(vec![1, 2], &[]), vec![1, 2]);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn request_bodies() {
        assert_eq!(
            parse_create_body(br#"{"name":"s1","nodes":["n1"]}"#),
            Ok(("s1".to_owned(), vec!["n1".to_owned()]))
        );
        assert!(parse_create_body(br#"{"nodes":[]}"#).is_err());
        assert!(parse_create_body(br#"{"name":"s1","bogus":1}"#).is_err());
        assert!(parse_create_body(b"{").is_err());
        assert_eq!(check_rollback_body(b""), Ok(()));
        assert_eq!(
            check_rollback_body(br#"{"zfs_rollback_strategy":"clone"}"#),
            Ok(())
        );
        assert!(check_rollback_body(br#"{"zfs_rollback_strategy":"x"}"#).is_err());
    }
}
