//! Event streams: long operations respond with one JSON event per line.

use std::future::Future;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use banger_api::{AcceptedVm, Event, OPERATION_HEADER};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::error::ApiResult;

/// The sending side of an operation's progress events.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<Event>,
    operation_id: String,
    /// The operation gives up a boot when the client disconnects.
    abandon_on_disconnect: bool,
}

impl Events {
    /// The id of the operation these events belong to, for log lines and
    /// requests to other processes.
    pub fn operation_id(&self) -> &str {
        &self.operation_id
    }

    /// Sends a progress line; a client that went away does not stop the operation.
    pub async fn progress(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(%message, "progress");
        let _ = self.tx.send(Event::Progress { message }).await;
    }

    /// Tells the client what a create request resolved to.
    pub async fn accepted(&self, vm: AcceptedVm) {
        tracing::info!(vm = %vm.name, image = %vm.image, kernel = %vm.kernel, "request accepted");
        let _ = self.tx.send(Event::Accepted { vm }).await;
    }

    /// Events for an operation whose progress goes only to the daemon log,
    /// with the receiver, which the caller may drop.
    pub fn detached() -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(1);
        let events = Events {
            tx,
            operation_id: new_operation_id(),
            abandon_on_disconnect: false,
        };
        (events, rx)
    }

    /// Returns the same events for an operation that gives up waiting for a guest
    /// once its client disconnects (the create of an ephemeral VM).
    pub fn abandoning_on_disconnect(&self) -> Self {
        Self {
            abandon_on_disconnect: true,
            ..self.clone()
        }
    }

    /// Whether the operation should stop waiting: it gives up on disconnect
    /// and its client has disconnected.
    pub fn abandoned(&self) -> bool {
        self.abandon_on_disconnect && self.client_gone()
    }

    /// Returns whether the client stopped reading the events (it disconnected).
    pub fn client_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Sends a progress line from a blocking thread.
    pub fn progress_blocking(&self, message: &str) {
        tracing::info!(%message, "progress");
        let _ = self.tx.blocking_send(Event::Progress {
            message: message.to_string(),
        });
    }
}

/// Runs `operation` in its own task and streams its events, then its result.
/// The operation goes on to the end even when the client disconnects.
pub fn stream<T, F, Fut>(operation_id: String, operation: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(Events) -> Fut + Send + 'static,
    Fut: Future<Output = ApiResult<T>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Event>(64);
    let events = Events {
        tx: tx.clone(),
        operation_id: operation_id.clone(),
        abandon_on_disconnect: false,
    };
    let span = tracing::info_span!("op", op_id = %operation_id);
    let op = operation_id.clone();
    tokio::spawn(
        async move {
            let last = match operation(events).await {
                Ok(result) => Event::Done {
                    result: serde_json::to_value(result).unwrap_or_default(),
                },
                Err(error) => {
                    let error = error.with_operation(&op);
                    tracing::warn!(error = %error, "operation failed");
                    Event::Error { error: error.0 }
                }
            };
            let _ = tx.send(last).await;
        }
        .instrument(span),
    );
    let lines = ReceiverStream::new(rx).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    let mut response = Response::new(Body::from_stream(lines));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(value) = HeaderValue::from_str(&operation_id) {
        headers.insert(OPERATION_HEADER, value);
    }
    response
}

/// A short random id that ties a request to its log lines.
pub fn new_operation_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}
