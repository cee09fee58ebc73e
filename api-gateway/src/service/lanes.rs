//! Lanes that take requests in batches: a lane collects what waits (up to
//! a batch), answers it in one transaction, and collects again; while one
//! lane runs its batch, another collects the next. Alone, a request is a
//! batch of one; under load, the round trips and the commit are shared.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};

/// The entrance of a set of lanes.
#[derive(Debug)]
pub struct Lanes<R> {
    sender: mpsc::UnboundedSender<R>,
}

impl<R> Clone for Lanes<R> {
    fn clone(&self) -> Self {
        Lanes {
            sender: self.sender.clone(),
        }
    }
}

impl<R: Send + 'static> Lanes<R> {
    /// Starts `count` lanes that answer batches of up to `max_batch` with
    /// `answer`; they end when every [`Lanes`] handle is dropped.
    pub fn start<A, Fut>(count: usize, max_batch: usize, answer: A) -> Self
    where
        A: Fn(Vec<R>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..count {
            let (receiver, answer) = (receiver.clone(), answer.clone());
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut receiver = receiver.lock().await;
                        let Some(first) = receiver.recv().await else {
                            return;
                        };
                        let mut batch = vec![first];
                        while batch.len() < max_batch {
                            match receiver.try_recv() {
                                Ok(request) => batch.push(request),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    answer(batch).await;
                }
            });
        }
        Lanes { sender }
    }

    /// Queues `request` for the next batch; gives it back when the lanes stopped.
    pub fn send(&self, request: R) -> Result<(), R> {
        self.sender.send(request).map_err(|e| e.0)
    }
}
