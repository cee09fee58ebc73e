//! Every answer of the LINSTOR simulator, success and error, validates
//! against LINBIT's OpenAPI document (`shared/reference/linstor`).
//!
//! The document is read as plain YAML (it is not strictly valid OpenAPI)
//! and each response is checked with the JSON Schema found at
//! `paths[path][method].responses[status]` (`#/components/responses/...`
//! followed), its `#/components/schemas/...` references resolved against
//! the document. OpenAPI 3.0 `nullable` becomes a `null` type, and objects
//! refuse properties the document does not list, so a misspelt field fails.
//! Where the controller and the document disagree, the controller wins (as
//! WIRE.md says): an error answer is always an `ApiCallRc` array, also
//! where the document names a single `ApiCallRc` or no schema, and
//! `GET /v1/resource-definitions/{resource}` answers a `ResourceDefinition`.

use std::sync::Arc;

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use failover_platform::config::LinstorSettings;
use jsonschema::{Draft, Validator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use simulators::linstor::{DEMO_RD_PGTEST1_DISK0, LinstorSim, LinstorSimConfig, router};
use step_worker::linstor::LinstorClient;

const DOC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/reference/linstor/rest_v1_openapi.yaml"
);
const API_CALL_RC: &str = "#/components/schemas/ApiCallRc";

struct OpenApi {
    doc: Value,
    /// `components`, with `nullable` and strict objects applied.
    components: Value,
}

impl OpenApi {
    fn load() -> Self {
        let text =
            std::fs::read_to_string(DOC).unwrap_or_else(|err| panic!("cannot read {DOC}: {err}"));
        let doc: Value = serde_yaml::from_str(&text).expect("the OpenAPI document is valid YAML");
        let mut components = doc["components"].clone();
        let schemas = components["schemas"]
            .as_object_mut()
            .expect("components.schemas");
        for schema in schemas.values_mut() {
            tighten(schema);
        }
        Self { doc, components }
    }

    /// The schema a `status` answer of `method path` must follow.
    fn response_schema(&self, path: &str, method: &str, status: u16) -> Value {
        if path == "/v1/resource-definitions/{resource}" && method == "get" {
            return match status {
                200 => json!({ "$ref": "#/components/schemas/ResourceDefinition" }),
                _ => json!({ "$ref": "#/components/schemas/ApiCallRcList" }),
            };
        }
        let operation = &self.doc["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is not in the document"
        );
        let responses = &operation["responses"];
        let documented = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .map(|r| self.follow(r)["content"]["application/json"]["schema"].clone())
            .filter(|s| !s.is_null());
        match documented {
            Some(schema) if status >= 400 && schema["$ref"] == API_CALL_RC => {
                json!({ "type": "array", "items": schema })
            }
            Some(schema) => schema,
            None if status >= 400 => json!({ "$ref": "#/components/schemas/ApiCallRcList" }),
            None => panic!("{method} {path} documents no {status} answer"),
        }
    }

    /// Follows a `#/components/...` reference of a response object.
    fn follow<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("a local reference");
                self.doc
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {reference}"))
            }
            None => value,
        }
    }

    /// The document's path template matching a concrete `path`.
    fn template_of(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        paths
            .keys()
            .filter(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                parts.len() == segments.len()
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t == s || t.starts_with('{'))
            })
            .min_by_key(|template| template.matches('{').count())
            .cloned()
    }

    /// The reasons a request `body` does not fit the request schema of
    /// `method template`.
    fn request_violations(&self, template: &str, method: &str, body: &Value) -> Vec<String> {
        let request = self.follow(&self.doc["paths"][template][method]["requestBody"]);
        let schema = &request["content"]["application/json"]["schema"];
        if schema.is_null() {
            return vec![format!("{method} {template} takes no JSON body")];
        }
        self.validator(schema)
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    fn validator(&self, schema: &Value) -> Validator {
        let mut schema = schema.clone();
        tighten(&mut schema);
        let root = json!({ "allOf": [schema], "components": self.components });
        jsonschema::options()
            .with_draft(Draft::Draft4)
            .build(&root)
            .expect("the document's schema compiles")
    }

    /// The reasons `body` does not fit the `status` answer of `method path`.
    fn violations(&self, path: &str, method: &str, status: u16, body: &Value) -> Vec<String> {
        let validator = self.validator(&self.response_schema(path, method, status));
        validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }
}

/// OpenAPI 3.0 to JSON Schema: `nullable: true` admits `null`; an object
/// with listed properties refuses unlisted ones.
fn tighten(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if object.remove("nullable") == Some(Value::Bool(true))
        && let Some(kind) = object.get("type").cloned()
    {
        object.insert("type".into(), json!([kind, "null"]));
    }
    let composed = ["allOf", "anyOf", "oneOf"]
        .iter()
        .any(|k| object.contains_key(*k));
    if object.contains_key("properties")
        && !object.contains_key("additionalProperties")
        && !composed
    {
        object.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(tighten);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(inner) = object.get_mut(key) {
            tighten(inner);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(parts)) = object.get_mut(key) {
            parts.iter_mut().for_each(tighten);
        }
    }
}

/// The requests the simulator received: method, path, body.
type Journal = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

async fn record(State(journal): State<Journal>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let entry = (
        parts.method.to_string(),
        parts.uri.path().to_owned(),
        bytes.to_vec(),
    );
    journal.lock().unwrap().push(entry);
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

struct Harness {
    api: OpenApi,
    base: String,
    http: reqwest::Client,
    sim: Arc<LinstorSim>,
    journal: Journal,
}

impl Harness {
    async fn start(config: LinstorSimConfig) -> Self {
        let sim = Arc::new(LinstorSim::new(config));
        sim.seed_demo();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let journal = Journal::default();
        let app =
            router(sim.clone()).layer(middleware::from_fn_with_state(journal.clone(), record));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            api: OpenApi::load(),
            base,
            http: reqwest::Client::new(),
            sim,
            journal,
        }
    }

    async fn call(&self, method: Method, url: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{url}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json().await.expect("every answer is JSON");
        (status, body)
    }

    /// Calls `url` and asserts the answer has `status` and fits the
    /// document's `template` entry; answers the body.
    async fn check(
        &self,
        method: Method,
        template: &str,
        url: &str,
        body: Option<&str>,
        status: u16,
    ) -> Value {
        let verb = method.as_str().to_ascii_lowercase();
        let (got, answer) = self.call(method, url, body).await;
        assert_eq!(got.as_u16(), status, "{verb} {url}: {answer}");
        let violations = self.api.violations(template, &verb, status, &answer);
        assert!(
            violations.is_empty(),
            "{verb} {url} ({status}) does not fit the document: {violations:#?}\n{answer}"
        );
        answer
    }
}

const RDS: &str = "/v1/resource-definitions";
const RD: &str = "/v1/resource-definitions/{resource}";
const SNAPS: &str = "/v1/resource-definitions/{resource}/snapshots";
const SNAP: &str = "/v1/resource-definitions/{resource}/snapshots/{snapshot}";
const ROLLBACK: &str = "/v1/resource-definitions/{resource}/snapshot-rollback/{snapshot}";

fn error_code(body: &Value) -> i64 {
    body[0]["ret_code"].as_i64().expect("an ApiCallRc array") & 0x7FFF
}

#[tokio::test]
async fn every_answer_fits_the_document() {
    let h = Harness::start(LinstorSimConfig::default()).await;
    let rd = format!("{RDS}/{DEMO_RD_PGTEST1_DISK0}");
    let snaps = format!("{rd}/snapshots");

    h.check(
        Method::GET,
        "/v1/controller/version",
        "/v1/controller/version",
        None,
        200,
    )
    .await;
    let all = h
        .check(
            Method::GET,
            RDS,
            &format!("{RDS}?with_volume_definitions=true"),
            None,
            200,
        )
        .await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert!(
        all[0]["volume_definitions"][0]["size_kib"]
            .as_u64()
            .unwrap()
            > 0
    );
    h.check(Method::GET, RDS, RDS, None, 200).await;
    h.check(Method::GET, RD, &rd, None, 200).await;
    let missing = h
        .check(Method::GET, RD, &format!("{RDS}/pvc-nope"), None, 404)
        .await;
    assert_eq!(error_code(&missing), 301);

    h.check(Method::GET, SNAPS, &snaps, None, 200).await;
    h.check(
        Method::GET,
        SNAPS,
        &format!("{RDS}/pvc-nope/snapshots"),
        None,
        404,
    )
    .await;
    let created = h
        .check(
            Method::POST,
            SNAPS,
            &snaps,
            Some(r#"{"name":"snap1"}"#),
            201,
        )
        .await;
    assert!(created.as_array().unwrap().len() > 1);
    let exists = h
        .check(
            Method::POST,
            SNAPS,
            &snaps,
            Some(r#"{"name":"SNAP1"}"#),
            500,
        )
        .await;
    assert_eq!(error_code(&exists), 514);
    let invalid = h
        .check(
            Method::POST,
            SNAPS,
            &snaps,
            Some(r#"{"name":"1-bad"}"#),
            500,
        )
        .await;
    assert_eq!(error_code(&invalid), 218);
    h.check(Method::POST, SNAPS, &snaps, Some("{not json"), 400)
        .await;
    h.check(Method::POST, SNAPS, &snaps, Some(r#"{"nodes":[]}"#), 400)
        .await;
    let nope = format!("{RDS}/pvc-nope/snapshots");
    let no_rd = h
        .check(Method::POST, SNAPS, &nope, Some(r#"{"name":"s"}"#), 404)
        .await;
    assert_eq!(error_code(&no_rd), 301);

    let snap = h
        .check(Method::GET, SNAP, &format!("{snaps}/snap1"), None, 200)
        .await;
    assert_eq!(snap["flags"], json!(["SUCCESSFUL"]));
    let gone = h
        .check(Method::GET, SNAP, &format!("{snaps}/nope"), None, 404)
        .await;
    assert_eq!(error_code(&gone), 315);
    h.check(Method::GET, SNAPS, &snaps, None, 200).await;

    h.sim.set_in_use(DEMO_RD_PGTEST1_DISK0, None);
    let in_use = h
        .check(
            Method::POST,
            ROLLBACK,
            &format!("{rd}/snapshot-rollback/snap1"),
            None,
            500,
        )
        .await;
    assert_eq!(error_code(&in_use), 997);
    h.sim.clear_in_use(DEMO_RD_PGTEST1_DISK0);
    h.check(
        Method::POST,
        ROLLBACK,
        &format!("{rd}/snapshot-rollback/snap1"),
        Some("{}"),
        200,
    )
    .await;
    let unknown = h
        .check(
            Method::POST,
            ROLLBACK,
            &format!("{rd}/snapshot-rollback/nope"),
            None,
            404,
        )
        .await;
    assert_eq!(error_code(&unknown), 313);
    h.check(
        Method::POST,
        SNAPS,
        &snaps,
        Some(r#"{"name":"snap2"}"#),
        201,
    )
    .await;
    let older = h
        .check(
            Method::POST,
            ROLLBACK,
            &format!("{rd}/snapshot-rollback/snap1"),
            None,
            500,
        )
        .await;
    assert_eq!(error_code(&older), 514);
    h.check(
        Method::POST,
        ROLLBACK,
        &format!("{rd}/snapshot-rollback/snap2"),
        Some("[1]"),
        400,
    )
    .await;

    h.check(Method::DELETE, SNAP, &format!("{snaps}/snap2"), None, 200)
        .await;
    let warn = h
        .check(Method::DELETE, SNAP, &format!("{snaps}/snap2"), None, 200)
        .await;
    assert_eq!(error_code(&warn), 3000);
    h.check(
        Method::DELETE,
        SNAP,
        &format!("{RDS}/pvc-nope/snapshots/snap1"),
        None,
        404,
    )
    .await;
    h.check(Method::DELETE, SNAP, &format!("{snaps}/-bad"), None, 500)
        .await;
}

#[tokio::test]
async fn injected_failures_and_auth_refusals_fit_the_document() {
    let h = Harness::start(LinstorSimConfig {
        bearer_token: Some("s3cret".into()),
        ..LinstorSimConfig::default()
    })
    .await;
    let refused = h.check(Method::GET, RDS, RDS, None, 401).await;
    assert_eq!(error_code(&refused), 412);

    let h = Harness::start(LinstorSimConfig::default()).await;
    let snaps = format!("{RDS}/{DEMO_RD_PGTEST1_DISK0}/snapshots");
    for (operation, status) in [("snapshot-create", None), ("snapshot-list", Some(503))] {
        let rule = json!({ "operation": operation, "failure_rate": 1.0, "failure_status": status, "remaining": 1 });
        let (added, _) = h
            .call(Method::POST, "/sim/faults", Some(&rule.to_string()))
            .await;
        assert_eq!(added, StatusCode::CREATED);
    }
    let failed = h
        .check(Method::POST, SNAPS, &snaps, Some(r#"{"name":"s1"}"#), 500)
        .await;
    assert_eq!(error_code(&failed), 995);
    h.check(Method::GET, SNAPS, &snaps, None, 503).await;
}

/// The requests the real client sends are documented, and their bodies fit
/// the document's request schemas.
#[tokio::test]
async fn the_clients_requests_fit_the_document() {
    let h = Harness::start(LinstorSimConfig::default()).await;
    let client = LinstorClient::new(&LinstorSettings {
        endpoint: h.base.parse().unwrap(),
        bearer_token: None,
        request_timeout: Duration::from_secs(5),
        max_retries: 0,
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(10),
        ca_cert_path: None,
    })
    .unwrap();
    let rd = DEMO_RD_PGTEST1_DISK0;
    client.controller_version().await.unwrap();
    client.list_resource_definitions().await.unwrap();
    client.get_resource_definition(rd).await.unwrap();
    client.create_snapshot(rd, "snap1").await.unwrap();
    client.create_snapshot(rd, "snap1").await.unwrap();
    client.list_snapshots(rd).await.unwrap();
    client.rollback_snapshot(rd, "snap1").await.unwrap();
    client.delete_snapshot(rd, "snap1").await.unwrap();

    let journal = h.journal.lock().unwrap().clone();
    let with_body = journal
        .iter()
        .filter(|(_, _, body)| !body.is_empty())
        .count();
    assert_eq!((journal.len(), with_body), (10, 3), "{journal:?}");
    for (method, path, body) in &journal {
        let method = method.to_ascii_lowercase();
        let template = h
            .api
            .template_of(path)
            .unwrap_or_else(|| panic!("{path} is not documented"));
        let undocumented_get = template == RD && method == "get";
        assert!(
            undocumented_get || h.api.doc["paths"][&template][&method].is_object(),
            "{method} {template} is not documented"
        );
        if body.is_empty() {
            continue;
        }
        let body: Value = serde_json::from_slice(body).expect("the client sends JSON");
        let violations = h.api.request_violations(&template, &method, &body);
        assert!(
            violations.is_empty(),
            "{method} {path}: {violations:#?}\n{body}"
        );
    }
}

#[test]
fn the_validator_rejects_malformed_bodies() {
    let api = OpenApi::load();
    let entry = json!({ "ret_code": -4611686018427387390_i64, "message": "exists" });
    assert!(
        api.violations(SNAPS, "post", 500, &json!([entry]))
            .is_empty()
    );

    // A required field missing, a wrong type, a single object for an array.
    assert!(
        !api.violations(SNAPS, "post", 500, &json!([{ "ret_code": 1 }]))
            .is_empty()
    );
    assert!(
        !api.violations(
            SNAPS,
            "post",
            201,
            &json!([{ "ret_code": "1", "message": "m" }])
        )
        .is_empty()
    );
    assert!(!api.violations(SNAP, "get", 404, &entry).is_empty());

    let snapshot =
        json!({ "name": "s", "flags": ["SUCCESSFUL"], "snapshots": [{ "node_name": "n1" }] });
    assert!(api.violations(SNAP, "get", 200, &snapshot).is_empty());
    let wrong_type = json!({ "name": "s", "flags": "SUCCESSFUL" });
    assert!(!api.violations(SNAP, "get", 200, &wrong_type).is_empty());
    let misspelt = json!({ "name": "s", "flag": ["SUCCESSFUL"] });
    assert!(!api.violations(SNAP, "get", 200, &misspelt).is_empty());
    let volume_without_size =
        json!({ "name": "rd", "volume_definitions": [{ "volume_number": 0 }] });
    assert!(
        !api.violations(RD, "get", 200, &volume_without_size)
            .is_empty()
    );

    assert!(
        api.request_violations(SNAPS, "post", &json!({ "name": "s1" }))
            .is_empty()
    );
    assert!(
        !api.request_violations(SNAPS, "post", &json!({ "name": 5 }))
            .is_empty()
    );
    assert!(
        !api.request_violations(SNAPS, "post", &json!({ "nme": "s1" }))
            .is_empty()
    );
    let strategy = json!({ "zfs_rollback_strategy": "x" });
    assert!(
        !api.request_violations(ROLLBACK, "post", &strategy)
            .is_empty()
    );

    let nullable =
        json!({ "type": "object", "properties": { "a": { "type": "string", "nullable": true } } });
    let validator = api.validator(&nullable);
    assert!(validator.is_valid(&json!({ "a": null })));
    assert!(!validator.is_valid(&json!({ "a": 1 })));
}
