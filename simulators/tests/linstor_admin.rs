//! The LINSTOR simulator's `/sim/` admin API: seeding, inspection, in-use
//! marks, fault rules, reset, and 400 answers to bad input.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use simulators::linstor::{DEMO_RD_WIN2019_APP_DISK0, LinstorSim, LinstorSimConfig, router};

struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    async fn start() -> Self {
        let sim = Arc::new(LinstorSim::new(LinstorSimConfig::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(sim);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

#[tokio::test]
async fn seed_inspect_mark_and_reset() {
    let admin = Admin::start().await;
    let seed = json!({ "resource_definitions": [{
        "name": "pvc-db-disk0",
        "nodes": ["n1", "n2"],
        "volume_definitions": [{ "size_kib": 1024 }, { "size_kib": 2048 }],
        "snapshots": [{ "name": "old" }, { "name": "broken", "flags": ["FAILED_DEPLOYMENT"] }],
    }]});
    assert_eq!(
        admin.call(Method::POST, "/sim/seed", Some(seed)).await,
        (StatusCode::OK, json!({ "seeded": 1 }))
    );

    let (_, state) = admin.call(Method::GET, "/sim/state", None).await;
    let rd = &state["resource_definitions"][0];
    assert_eq!(rd["name"], "pvc-db-disk0");
    assert_eq!(
        rd["volume_definitions"][1],
        json!({ "volume_number": 1, "size_kib": 2048 })
    );
    assert_eq!(rd["snapshots"][0]["flags"], json!(["SUCCESSFUL"]));
    assert_eq!(rd["snapshots"][1]["flags"], json!(["FAILED_DEPLOYMENT"]));
    assert_eq!(
        (rd["in_use"].clone(), rd["rollback_count"].clone()),
        (json!(false), json!(0))
    );

    let mark = admin
        .call(
            Method::POST,
            "/sim/resource-definitions/PVC-DB-DISK0/in-use",
            Some(json!({ "node": "n2" })),
        )
        .await;
    assert_eq!(mark.0, StatusCode::OK);
    let (_, state) = admin.call(Method::GET, "/sim/state", None).await;
    assert_eq!(state["resource_definitions"][0]["in_use_on"], "n2");
    let unmark = admin
        .call(
            Method::DELETE,
            "/sim/resource-definitions/pvc-db-disk0/in-use",
            None,
        )
        .await;
    assert_eq!(unmark.0, StatusCode::OK);
    let unknown = admin
        .call(
            Method::POST,
            "/sim/resource-definitions/pvc-nope/in-use",
            None,
        )
        .await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);

    let rule = json!({ "operation": "snapshot-create", "latency_ms": 5 });
    assert_eq!(
        admin.call(Method::POST, "/sim/faults", Some(rule)).await.0,
        StatusCode::CREATED
    );
    let (_, faults) = admin.call(Method::GET, "/sim/faults", None).await;
    assert_eq!(faults["faults"][0]["operation"], "snapshot-create");
    assert_eq!(
        admin.call(Method::DELETE, "/sim/faults", None).await.1,
        json!({ "faults": [] })
    );

    assert_eq!(
        admin.call(Method::POST, "/sim/reset", None).await.0,
        StatusCode::OK
    );
    let (_, state) = admin.call(Method::GET, "/sim/state", None).await;
    assert_eq!(state["resource_definitions"], json!([]));
}

#[tokio::test]
async fn bad_admin_input_is_a_400_with_a_reason() {
    let admin = Admin::start().await;
    let bad = [
        (
            "/sim/seed",
            json!({ "resource_definitions": [{ "name": "1bad" }] }),
        ),
        (
            "/sim/seed",
            json!({ "resource_definitions": [{ "name": "ok", "volume_definitions": [{ "size_kib": 0 }] }] }),
        ),
        (
            "/sim/seed",
            json!({ "resource_definitions": [{ "name": "ok" }, { "name": "OK" }] }),
        ),
        (
            "/sim/seed",
            json!({ "resource_definitions": [{ "name": "ok", "bogus": 1 }] }),
        ),
        ("/sim/seed", json!({ "rds": [] })),
        (
            "/sim/faults",
            json!({ "operation": "snapshot-create", "failure_rate": 2.0 }),
        ),
        ("/sim/faults", json!({ "operation": "" })),
        (
            "/sim/faults",
            json!({ "operation": "x", "failure_status": 200 }),
        ),
        (
            &format!("/sim/resource-definitions/{DEMO_RD_WIN2019_APP_DISK0}/in-use"),
            json!({ "nod": "n1" }),
        ),
    ];
    for (path, body) in bad {
        let (status, answer) = admin.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let response = admin
        .http
        .post(format!("{}/sim/seed", admin.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
