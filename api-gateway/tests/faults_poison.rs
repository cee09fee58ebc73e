//! Poison published straight to a step queue — bytes that are not a step
//! task, a task naming a step that does not exist, a task of a job that
//! does not exist — ends in the dead-letter queue once, with its reason,
//! and the worker goes on with real work.

mod common;
mod harness;

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use prost::Message as _;
use serde_json::json;

use common::{AMQP_URL, LINUX_VM_ID, Stack};
use failover_core::pipeline::StepName;
use failover_platform::queue::{self, ConfirmedPublisher, OutgoingMessage, StepTopology};
use failover_proto::v1 as pb;
use harness::services::queue_depths;

const UNKNOWN_JOB: &str = "enhanced-test-failover-42000000-0000-4000-8000-00000000dead-1700000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_goes_to_the_dead_letter_queue_once_with_its_reason() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_worker();
    let topology = StepTopology::new(&stack.settings.amqp);
    let connection = queue::connect(AMQP_URL, "poison-test").await.unwrap();
    let publisher = ConfirmedPublisher::new(&connection).await.unwrap();
    topology
        .declare(publisher.channel(), &StepName::ALL)
        .await
        .unwrap();

    let unknown_step = pb::StepTask {
        job_id: UNKNOWN_JOB.into(),
        step_name: "defragment-the-disk".into(),
        attempt: 1,
        ..Default::default()
    }
    .encode_to_vec();
    let unknown_job = pb::StepTask {
        job_id: UNKNOWN_JOB.into(),
        correlation_id: uuid::Uuid::new_v4().to_string(),
        step_name: "validation".into(),
        attempt: 1,
        ..Default::default()
    }
    .encode_to_vec();
    // Wire type 7 does not exist: this cannot decode.
    let undecodable = b"\x0f\x0f\x0f not a step task".to_vec();
    let exchange = topology.exchange();
    for (id, payload) in [
        ("undecodable", &undecodable),
        ("unknown-step", &unknown_step),
        ("unknown-job", &unknown_job),
    ] {
        publisher
            .publish(OutgoingMessage {
                exchange: &exchange,
                routing_key: "validation",
                payload,
                message_id: id,
                headers: vec![(queue::headers::JOB_ID, UNKNOWN_JOB.to_owned())],
            })
            .await
            .unwrap();
    }

    let prefix = stack.settings.amqp.prefix.clone();
    let dead_letter_queue = topology.dead_letter_queue();
    harness::eventually(Duration::from_secs(30), "three dead letters", || async {
        queue_depths(&prefix)
            .iter()
            .any(|(name, ready, _)| *name == dead_letter_queue && *ready == 3)
            .then_some(())
    })
    .await;
    // Nothing loops: a while later the dead letters are still three, and the
    // step queue holds nothing, delivered or not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, ready, unacked) in queue_depths(&prefix) {
        if name == dead_letter_queue {
            assert_eq!((ready, unacked), (3, 0), "{name}");
        } else {
            assert_eq!((ready, unacked), (0, 0), "{name}");
        }
    }

    let channel = connection.create_channel().await.unwrap();
    let mut reasons = std::collections::BTreeMap::new();
    while let Some(message) = channel
        .basic_get(
            dead_letter_queue.as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .unwrap()
    {
        let props = &message.delivery.properties;
        let id = props.message_id().as_ref().unwrap().to_string();
        let reason = queue::header(props, queue::headers::DEAD_LETTER_REASON)
            .unwrap_or_else(|| panic!("{id} has no reason header"));
        assert_eq!(
            queue::header(props, queue::headers::JOB_ID).as_deref(),
            Some(UNKNOWN_JOB),
            "{id} keeps its headers"
        );
        assert!(
            queue::header(props, "x-death").is_none(),
            "{id} was not bounced by the broker"
        );
        message
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        reasons.insert(id, reason);
    }
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons["undecodable"].starts_with("undecodable step task"),
        "{reasons:?}"
    );
    assert!(
        reasons["unknown-step"].contains("unknown step \"defragment-the-disk\""),
        "{reasons:?}"
    );
    assert!(
        reasons["unknown-job"].contains(UNKNOWN_JOB)
            && reasons["unknown-job"].contains("does not exist"),
        "{reasons:?}"
    );
    let _ = connection.close(200, "done".into()).await;

    // The worker goes on with real work.
    let job_id = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    let job = stack.wait_terminal(&job_id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    stack.stop().await;
}
