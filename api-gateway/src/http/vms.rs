//! The replicated-VM inventory: `PUT/GET/DELETE /api/v1/vms/{vm_id}`, `GET /api/v1/vms`.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::correlation::CorrelationId;
use super::error::ApiError;
use super::extract::ApiJson;
use failover_core::inventory::VmRegistration;

fn vm_id(raw: &str, correlation: CorrelationId) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        ApiError::invalid(format!("vm_id {raw:?} is not a VMware VM UUID"))
            .with_correlation(correlation.0)
    })
}

pub async fn put(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(raw): Path<String>,
    ApiJson(spec): ApiJson<VmRegistration>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = vm_id(&raw, correlation)?;
    let problems = spec.problems();
    if !problems.is_empty() {
        return Err(
            ApiError::invalid(format!("Invalid VM registration: {}", problems.join("; ")))
                .with_problems(problems)
                .with_vm(id)
                .with_correlation(correlation.0),
        );
    }
    let (record, created) = state
        .service
        .register_vm(id, &spec)
        .await
        .map_err(|e| ApiError::from(e).with_correlation(correlation.0))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"success": true, "data": record}))))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = vm_id(&raw, correlation)?;
    let record = state
        .service
        .get_vm(id)
        .await
        .map_err(|e| ApiError::from(e).with_correlation(correlation.0))?;
    Ok(Json(json!({"success": true, "data": record})))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
) -> Result<Json<Value>, ApiError> {
    let records = state
        .service
        .list_vms()
        .await
        .map_err(|e| ApiError::from(e).with_correlation(correlation.0))?;
    Ok(Json(
        json!({"success": true, "data": records, "total": records.len()}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = vm_id(&raw, correlation)?;
    state.service.remove_vm(id).await.map_err(|e| {
        ApiError::from(e)
            .with_vm(id)
            .with_correlation(correlation.0)
    })?;
    Ok(Json(
        json!({"success": true, "message": "VM removed from the inventory"}),
    ))
}
