//! The RabbitMQ topology of step dispatch, shared by the gateway (which
//! publishes) and the workers (which consume), so both declare the same
//! durable objects with the same arguments:
//!
//! - `<prefix>.steps`: a durable direct exchange, routing key = step name;
//! - `<prefix>.step.<step-name>`: one durable queue per step name, so a worker
//!   consumes only the kinds it can run, dead-lettering to
//! - `<prefix>.dead` (fanout) → `<prefix>.dead-letter`: messages that cannot
//!   be decoded or name an unknown step or job, kept with their reason.

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::{AmqpSettings, QueueType};
use failover_core::pipeline::StepName;

/// Header names carried by every step message.
pub mod headers {
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const JOB_ID: &str = "job_id";
    pub const STEP: &str = "step";
    pub const ATTEMPT: &str = "attempt";
    pub const TRACEPARENT: &str = "traceparent";
    /// Why a message was dead-lettered.
    pub const DEAD_LETTER_REASON: &str = "x-failover-dead-letter-reason";
}

pub const CONTENT_TYPE: &str = "application/x-protobuf";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
}

#[derive(Debug, Clone)]
pub struct StepTopology {
    prefix: String,
    queue_type: QueueType,
}

impl StepTopology {
    pub fn new(settings: &AmqpSettings) -> Self {
        StepTopology {
            prefix: settings.prefix.clone(),
            queue_type: settings.queue_type,
        }
    }

    pub fn with_prefix(prefix: impl Into<String>, queue_type: QueueType) -> Self {
        StepTopology {
            prefix: prefix.into(),
            queue_type,
        }
    }

    pub fn exchange(&self) -> String {
        format!("{}.steps", self.prefix)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    pub fn queue(&self, step: StepName) -> String {
        format!("{}.step.{}", self.prefix, step.as_str())
    }

    /// Declares the exchanges, the dead-letter queue and the queues of `steps`.
    /// Declaring is idempotent; every process declares what it uses.
    pub async fn declare(&self, channel: &Channel, steps: &[StepName]) -> Result<(), QueueError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.dead_letter_queue().into(),
                QueueDeclareOptions::durable(),
                self.queue_arguments(false),
            )
            .await?;
        channel
            .queue_bind(
                self.dead_letter_queue().into(),
                self.dead_letter_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        for step in steps {
            channel
                .queue_declare(
                    self.queue(*step).into(),
                    QueueDeclareOptions::durable(),
                    self.queue_arguments(true),
                )
                .await?;
            channel
                .queue_bind(
                    self.queue(*step).into(),
                    self.exchange().into(),
                    step.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    fn queue_arguments(&self, dead_letter: bool) -> FieldTable {
        let mut args = FieldTable::default();
        let kind = match self.queue_type {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        };
        args.insert("x-queue-type".into(), long_string(kind));
        if dead_letter {
            args.insert(
                "x-dead-letter-exchange".into(),
                long_string(&self.dead_letter_exchange()),
            );
        }
        args
    }
}

pub fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

/// Reads a string header.
pub fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// Opens a connection named after the process, for the broker's UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, QueueError> {
    let properties = ConnectionProperties::default()
        .with_connection_name(LongString::from(name.as_bytes().to_vec()));
    Ok(Connection::connect(url, properties).await?)
}

/// A channel in confirm mode: every publish waits for the broker's ack, so a
/// message counts as sent only once the broker holds it.
#[derive(Debug, Clone)]
pub struct ConfirmedPublisher {
    channel: Channel,
}

/// One persistent message.
#[derive(Debug, Clone)]
pub struct OutgoingMessage<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub payload: &'a [u8],
    pub message_id: &'a str,
    pub headers: Vec<(&'static str, String)>,
}

impl ConfirmedPublisher {
    pub async fn new(connection: &Connection) -> Result<Self, QueueError> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(ConfirmedPublisher { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `message` and waits for the broker's confirm.
    pub async fn publish(&self, message: OutgoingMessage<'_>) -> Result<(), QueueError> {
        self.send(message).await?.confirmed().await
    }

    /// Sends `message` without waiting for its confirm: many can be in
    /// flight at once; each [`Pending`] resolves when the broker holds it.
    pub async fn send(&self, message: OutgoingMessage<'_>) -> Result<Pending, QueueError> {
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert((*name).into(), long_string(value));
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(CONTENT_TYPE.into())
            .with_message_id(message.message_id.into())
            .with_headers(headers);
        let confirm = self
            .channel
            .basic_publish(
                message.exchange.into(),
                message.routing_key.into(),
                BasicPublishOptions::default(),
                message.payload,
                properties,
            )
            .await?;
        Ok(Pending(confirm))
    }
}

/// A message sent, its confirm not in yet.
#[derive(Debug)]
pub struct Pending(lapin::PublisherConfirm);

impl Pending {
    /// Waits for the broker's answer: held (ack) or refused (nack).
    pub async fn confirmed(self) -> Result<(), QueueError> {
        if self.0.await?.is_ack() {
            Ok(())
        } else {
            Err(QueueError::Nacked)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = StepTopology::with_prefix("failover", QueueType::Classic);
        assert_eq!(t.exchange(), "failover.steps");
        assert_eq!(
            t.queue(StepName::VirtioInjection),
            "failover.step.virtio-injection"
        );
        assert_eq!(t.dead_letter_queue(), "failover.dead-letter");
        assert_eq!(t.dead_letter_exchange(), "failover.dead");
    }
}
