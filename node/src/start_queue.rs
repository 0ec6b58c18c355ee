//! Turns to start a pod: at most `n` pods are being started at once (status written, Secrets
//! and ConfigMaps read, processes spawned), strictly in the order they were queued.
//!
//! A semaphore alone would serve pods in the order their tasks first ran, which the runtime
//! does not keep (a freshly spawned task may run before older ones); one dispatcher task hands
//! the permits out in queue order instead.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// The permit to start one pod; dropping it gives the turn to the next.
pub(crate) type StartPermit = OwnedSemaphorePermit;

pub(crate) struct StartQueue {
    waiters: mpsc::UnboundedSender<oneshot::Sender<StartPermit>>,
}

impl StartQueue {
    /// A queue with `n` (at least 1) starts at once; its dispatcher ends with the queue.
    pub(crate) fn new(n: usize) -> Self {
        let (waiters, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<StartPermit>>();
        let permits = Arc::new(Semaphore::new(n.max(1)));
        tokio::spawn(async move {
            while let Some(waiter) = rx.recv().await {
                if waiter.is_closed() {
                    continue;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                // A waiter that went away meanwhile drops the permit again.
                let _ = waiter.send(permit);
            }
        });
        Self { waiters }
    }

    /// Queues a pod; the receiver yields its permit when its turn comes.
    pub(crate) fn enqueue(&self) -> oneshot::Receiver<StartPermit> {
        let (tx, rx) = oneshot::channel();
        let _ = self.waiters.send(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `n` queued holders, spawned newest first (so that task order cannot be what orders
    /// the turns); each holds its permit a moment. The order of the turns and the most held
    /// at once.
    async fn run(queue: &StartQueue, n: usize) -> (Vec<usize>, usize) {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let turns: Vec<_> = (0..n).map(|_| queue.enqueue()).collect();
        let (held, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (done_tx, mut done) = mpsc::unbounded_channel();
        for (i, turn) in turns.into_iter().enumerate().rev() {
            let (done_tx, held, most) = (done_tx.clone(), held.clone(), most.clone());
            tokio::spawn(async move {
                let permit = turn.await.expect("a turn");
                most.fetch_max(held.fetch_add(1, SeqCst) + 1, SeqCst);
                done_tx.send(i).expect("collector");
                tokio::time::sleep(Duration::from_millis(20)).await;
                held.fetch_sub(1, SeqCst);
                drop(permit);
            });
        }
        drop(done_tx);
        let mut order = Vec::new();
        while let Some(i) = done.recv().await {
            order.push(i);
        }
        (order, most.load(SeqCst))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_come_in_queue_order() {
        let (order, most) = run(&StartQueue::new(1), 6).await;
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);
        assert_eq!(most, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_n_start_at_once() {
        let (order, most) = run(&StartQueue::new(3), 12).await;
        assert_eq!(order.len(), 12);
        assert_eq!(most, 3);
    }

    #[tokio::test]
    async fn a_waiter_that_left_does_not_keep_its_turn() {
        let queue = StartQueue::new(1);
        let first = queue.enqueue();
        drop(queue.enqueue());
        let third = queue.enqueue();
        let permit = first.await.expect("first turn");
        drop(permit);
        let _third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third gets the turn the second gave up")
            .expect("a permit");
    }
}
