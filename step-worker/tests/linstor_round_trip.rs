//! The real LINSTOR client against the LINSTOR simulator on 127.0.0.1:0.

use std::sync::Arc;
use std::time::Duration;

use failover_platform::config::LinstorSettings;
use secrecy::SecretString;
use simulators::faults::FaultRule;
use simulators::linstor::{
    DEMO_RD_PGTEST1_DISK0, DEMO_RD_WIN2019_APP_DISK0, DEMO_RD_WIN2019_APP_DISK1, LinstorSim,
    LinstorSimConfig, SeedRequest, SeedResourceDefinition, SeedSnapshot, SeedVolume, router,
};
use step_worker::linstor::{
    ApiErrorKind, LinstorClient, LinstorError, NameKind, SnapshotCreation, SnapshotDeletion,
};
use url::Url;

const RD: &str = DEMO_RD_PGTEST1_DISK0;

async fn start(config: LinstorSimConfig) -> (Arc<LinstorSim>, Url) {
    let sim = Arc::new(LinstorSim::new(config));
    sim.seed_demo();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let app = router(sim.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (sim, endpoint)
}

fn settings(endpoint: &Url) -> LinstorSettings {
    LinstorSettings {
        endpoint: endpoint.clone(),
        bearer_token: None,
        request_timeout: Duration::from_secs(5),
        max_retries: 3,
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(50),
        ca_cert_path: None,
    }
}

async fn client_for(config: LinstorSimConfig) -> (Arc<LinstorSim>, LinstorClient) {
    let (sim, endpoint) = start(config).await;
    let client = LinstorClient::new(&settings(&endpoint)).unwrap();
    (sim, client)
}

fn fault(operation: &str, remaining: Option<u32>) -> FaultRule {
    FaultRule {
        operation: operation.into(),
        latency_ms: 0,
        failure_rate: 1.0,
        failure_status: None,
        hang: false,
        fail_async_job: false,
        remaining,
    }
}

/// The HTTP status and error kind of an API error.
fn api(err: &LinstorError) -> (u16, ApiErrorKind) {
    match err {
        LinstorError::Api { http_status, .. } => {
            (*http_status, err.api_kind().expect("an error entry"))
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshot_round_trip() {
    let (sim, client) = client_for(LinstorSimConfig::default()).await;

    let version = client.controller_version().await.unwrap();
    assert_eq!(version.rest_api_version, "1.28.0");
    let rds = client.list_resource_definitions().await.unwrap();
    let names: Vec<_> = rds.iter().map(|rd| rd.name.as_str()).collect();
    assert_eq!(
        names,
        [RD, DEMO_RD_WIN2019_APP_DISK0, DEMO_RD_WIN2019_APP_DISK1]
    );
    assert_eq!(rds[0].volume_definitions[0].size_kib, 20 * 1024 * 1024);
    let rd = client
        .get_resource_definition("PVC-PGTEST1-DISK0")
        .await
        .unwrap();
    assert_eq!(rd.name, RD);

    let created = client.create_snapshot(RD, "snap1").await.unwrap();
    assert_eq!(created.outcome, SnapshotCreation::Created);
    assert!(created.snapshot.is_successful());
    assert_eq!(created.snapshot.nodes.len(), 2);
    assert_eq!(
        created.snapshot.volume_definitions[0].size_kib,
        Some(20 * 1024 * 1024)
    );

    // A retried step creates again: no duplicate, the existing one is accepted.
    let again = client.create_snapshot(RD, "snap1").await.unwrap();
    assert_eq!(again.outcome, SnapshotCreation::AlreadyPresent);
    assert_eq!(again.snapshot.uuid, created.snapshot.uuid);
    let other_case = client.create_snapshot(RD, "SNAP1").await.unwrap();
    assert_eq!(other_case.outcome, SnapshotCreation::AlreadyPresent);
    assert_eq!(client.list_snapshots(RD).await.unwrap().len(), 1);
    assert_eq!(
        client.get_snapshot(RD, "snap1").await.unwrap().uuid,
        created.snapshot.uuid
    );

    let entries = client.rollback_snapshot(RD, "snap1").await.unwrap();
    assert!(entries.iter().all(|e| !e.is_error()));
    let state = sim.state();
    let rd_state = state.resource_definition(RD).unwrap();
    assert_eq!(rd_state.rollback_count, 1);
    assert_eq!(rd_state.rollbacks[0].snapshot, "snap1");

    assert_eq!(
        client.delete_snapshot(RD, "snap1").await.unwrap(),
        SnapshotDeletion::Deleted
    );
    assert_eq!(
        client.delete_snapshot(RD, "snap1").await.unwrap(),
        SnapshotDeletion::AlreadyAbsent
    );
    assert!(client.list_snapshots(RD).await.unwrap().is_empty());
}

#[tokio::test]
async fn rollback_while_in_use_is_a_typed_error() {
    let (sim, client) = client_for(LinstorSimConfig::default()).await;
    client.create_snapshot(RD, "before-test").await.unwrap();
    assert!(sim.set_in_use(RD, Some("linstor-sat-2")));

    let err = client
        .rollback_snapshot(RD, "before-test")
        .await
        .unwrap_err();
    assert_eq!(api(&err), (500, ApiErrorKind::InUse));
    assert_eq!(err.code_low_bits(), Some(997));
    assert!(err.first_error().unwrap().message.contains("linstor-sat-2"));
    assert!(!err.is_retryable());
    assert_eq!(
        sim.state().resource_definition(RD).unwrap().rollback_count,
        0
    );

    assert!(sim.clear_in_use(RD));
    client.rollback_snapshot(RD, "before-test").await.unwrap();
    assert_eq!(
        sim.state().resource_definition(RD).unwrap().rollback_count,
        1
    );
}

#[tokio::test]
async fn rollback_to_an_older_snapshot_is_refused() {
    let (_sim, client) = client_for(LinstorSimConfig::default()).await;
    client.create_snapshot(RD, "first").await.unwrap();
    client.create_snapshot(RD, "second").await.unwrap();
    let err = client.rollback_snapshot(RD, "first").await.unwrap_err();
    assert_eq!(api(&err), (500, ApiErrorKind::SnapshotExists));
    assert!(!err.is_retryable());
    client.rollback_snapshot(RD, "second").await.unwrap();
}

#[tokio::test]
async fn missing_objects_are_typed_errors() {
    let (_sim, client) = client_for(LinstorSimConfig::default()).await;
    let rd_missing = (404, ApiErrorKind::ResourceDefinitionNotFound);
    let snap_missing = (404, ApiErrorKind::SnapshotNotFound);

    assert_eq!(
        api(&client
            .get_resource_definition("pvc-nope")
            .await
            .unwrap_err()),
        rd_missing
    );
    assert_eq!(
        api(&client.list_snapshots("pvc-nope").await.unwrap_err()),
        rd_missing
    );
    assert_eq!(
        api(&client.get_snapshot("pvc-nope", "s1").await.unwrap_err()),
        rd_missing
    );
    assert_eq!(
        api(&client.create_snapshot("pvc-nope", "s1").await.unwrap_err()),
        rd_missing
    );
    assert_eq!(
        api(&client.delete_snapshot("pvc-nope", "s1").await.unwrap_err()),
        rd_missing
    );
    let err = client.get_snapshot(RD, "nope").await.unwrap_err();
    assert_eq!(api(&err), snap_missing);
    assert!(!err.is_retryable());
    assert_eq!(
        api(&client.rollback_snapshot(RD, "nope").await.unwrap_err()),
        snap_missing
    );
}

#[tokio::test]
async fn invalid_names_are_refused_before_sending() {
    let (sim, client) = client_for(LinstorSimConfig::default()).await;
    // Any call that reached the simulator would fail differently.
    sim.faults().add(fault("*", None)).unwrap();
    for (rd, snap, kind) in [
        (RD, "1-starts-with-a-digit", NameKind::Snapshot),
        (RD, "x", NameKind::Snapshot),
        (RD, "has space", NameKind::Snapshot),
        ("pvc/../etc", "snap1", NameKind::ResourceDefinition),
    ] {
        match client.create_snapshot(rd, snap).await.unwrap_err() {
            LinstorError::InvalidName(err) => assert_eq!(err.kind, kind),
            other => panic!("expected an invalid name, got {other:?}"),
        }
    }
    let err = client
        .rollback_snapshot(RD, &"s".repeat(49))
        .await
        .unwrap_err();
    assert!(matches!(err, LinstorError::InvalidName(_)));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let (sim, client) = client_for(LinstorSimConfig::default()).await;
    sim.faults().add(fault("snapshot-create", Some(2))).unwrap();
    sim.faults()
        .add(FaultRule {
            failure_status: Some(503),
            ..fault("snapshot-get", Some(1))
        })
        .unwrap();
    let created = client.create_snapshot(RD, "snap1").await.unwrap();
    assert_eq!(created.outcome, SnapshotCreation::Created);
    assert!(
        sim.faults().list().is_empty(),
        "every injected failure was met"
    );

    // More failures than retries: the last error is returned, still typed.
    sim.faults().add(fault("snapshot-list", Some(10))).unwrap();
    let err = client.list_snapshots(RD).await.unwrap_err();
    assert_eq!(api(&err), (500, ApiErrorKind::NotConnected));
    assert!(err.is_retryable());
    let left = sim.faults().list()[0].remaining;
    assert_eq!(left, Some(6), "one try and three retries");
}

#[tokio::test]
async fn timeouts_are_typed_and_retried() {
    let (sim, endpoint) = start(LinstorSimConfig::default()).await;
    let client = LinstorClient::new(&LinstorSettings {
        request_timeout: Duration::from_millis(200),
        ..settings(&endpoint)
    })
    .unwrap();
    sim.faults()
        .add(FaultRule {
            hang: true,
            failure_rate: 0.0,
            ..fault("controller-version", Some(1))
        })
        .unwrap();
    client.controller_version().await.unwrap();

    let impatient = LinstorClient::new(&LinstorSettings {
        request_timeout: Duration::from_millis(200),
        max_retries: 0,
        ..settings(&endpoint)
    })
    .unwrap();
    sim.faults()
        .add(FaultRule {
            hang: true,
            failure_rate: 0.0,
            ..fault("resource-definition-list", None)
        })
        .unwrap();
    let err = impatient.list_resource_definitions().await.unwrap_err();
    assert!(matches!(err, LinstorError::Timeout(_)), "{err:?}");
    assert!(err.is_retryable());
}

/// The first create times out while the controller is still taking the
/// snapshot; the retry meets "exists" on a snapshot not yet successful,
/// waits, and accepts it once it is.
#[tokio::test]
async fn a_create_retried_during_a_slow_snapshot_accepts_it() {
    let (sim, endpoint) = start(LinstorSimConfig {
        snapshot_duration: Duration::from_millis(600),
        ..LinstorSimConfig::default()
    })
    .await;
    let client = LinstorClient::new(&LinstorSettings {
        request_timeout: Duration::from_millis(200),
        max_retries: 10,
        retry_initial_backoff: Duration::from_millis(100),
        retry_max_backoff: Duration::from_millis(200),
        ..settings(&endpoint)
    })
    .unwrap();
    let created = client.create_snapshot(RD, "slow").await.unwrap();
    assert_eq!(created.outcome, SnapshotCreation::AlreadyPresent);
    assert!(created.snapshot.is_successful());
    assert_eq!(
        sim.state().resource_definition(RD).unwrap().snapshots.len(),
        1
    );
}

#[tokio::test]
async fn an_existing_failed_snapshot_is_reported() {
    let (sim, client) = client_for(LinstorSimConfig::default()).await;
    sim.seed(SeedRequest {
        resource_definitions: vec![SeedResourceDefinition {
            name: "pvc-broken-disk0".into(),
            nodes: vec!["linstor-sat-1".into()],
            volume_definitions: vec![SeedVolume {
                volume_number: None,
                size_kib: 1024,
            }],
            snapshots: vec![SeedSnapshot {
                name: "snap1".into(),
                flags: vec!["FAILED_DEPLOYMENT".into()],
            }],
            in_use_on: None,
        }],
    })
    .unwrap();
    let err = client
        .create_snapshot("pvc-broken-disk0", "snap1")
        .await
        .unwrap_err();
    match &err {
        LinstorError::SnapshotNotSuccessful { flags, .. } => {
            assert_eq!(flags, &["FAILED_DEPLOYMENT"])
        }
        other => panic!("expected a failed snapshot, got {other:?}"),
    }
    assert!(!err.is_retryable());
    let err = client
        .rollback_snapshot("pvc-broken-disk0", "snap1")
        .await
        .unwrap_err();
    assert_eq!(api(&err), (500, ApiErrorKind::Other(998)));
}

#[tokio::test]
async fn the_bearer_token_is_required_when_configured() {
    let (_sim, endpoint) = start(LinstorSimConfig {
        bearer_token: Some("t0ken".into()),
        ..LinstorSimConfig::default()
    })
    .await;
    let anonymous = LinstorClient::new(&settings(&endpoint)).unwrap();
    let err = anonymous.controller_version().await.unwrap_err();
    assert_eq!(api(&err), (401, ApiErrorKind::AccessDenied));
    assert!(!err.is_retryable());

    let wrong = LinstorClient::new(&LinstorSettings {
        bearer_token: Some(SecretString::from("guess")),
        ..settings(&endpoint)
    })
    .unwrap();
    assert_eq!(api(&wrong.list_snapshots(RD).await.unwrap_err()).0, 401);

    let client = LinstorClient::new(&LinstorSettings {
        bearer_token: Some(SecretString::from("t0ken")),
        ..settings(&endpoint)
    })
    .unwrap();
    assert!(!format!("{client:?}").contains("t0ken"));
    client.create_snapshot(RD, "snap1").await.unwrap();
}

#[tokio::test]
async fn an_unreachable_controller_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let client = LinstorClient::new(&LinstorSettings {
        max_retries: 1,
        ..settings(&endpoint)
    })
    .unwrap();
    let err = client.controller_version().await.unwrap_err();
    assert!(matches!(err, LinstorError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
}
