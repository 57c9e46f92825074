//! The store's own threads (the writers, the checkpointers): each fed by a channel, run at a
//! lower priority, and joined when the store is dropped, so that a store dropped has closed
//! its files.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

/// A thread that takes messages of type `M` until its channel closes. Dropped, it closes the
/// channel (the thread finishes what was sent) and waits for the thread.
pub(super) struct StoreThread<M> {
    sender: Option<Sender<M>>,
    thread: Option<JoinHandle<()>>,
}

impl<M: Send + 'static> StoreThread<M> {
    /// Starts a thread called `name` that runs `body` with the channel's receiving end.
    pub(super) fn spawn(
        name: &str,
        body: impl FnOnce(Receiver<M>) + Send + 'static,
    ) -> Result<StoreThread<M>> {
        let (sender, receiver) = channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                lower_thread_priority();
                body(receiver)
            })
            .with_context(|| format!("starting the {name} thread"))?;
        Ok(StoreThread {
            sender: Some(sender),
            thread: Some(thread),
        })
    }
}

impl<M> StoreThread<M> {
    /// Sends `message`; gives it back when the thread has stopped.
    pub(super) fn send(&self, message: M) -> Result<(), M> {
        let sender = self
            .sender
            .as_ref()
            .expect("a store thread's channel, until dropped");
        sender.send(message).map_err(|unsent| unsent.0)
    }
}

impl<M> Drop for StoreThread<M> {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Indexing yields the CPU to acknowledging, so when both want it, new events are made
/// durable first and indexed in the time left over. The index backlog is bounded
/// (`--max-index-backlog`), so this cannot starve indexing for long.
fn lower_thread_priority() {
    // SAFETY: plain system calls on the calling thread; on Linux a nice value is per thread.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if result != 0 {
        tracing::debug!("could not lower a store thread's priority");
    }
}
