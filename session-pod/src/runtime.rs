//! The client library's runtime on the pod's single-threaded tokio runtime.
//!
//! `whatsapp_rust::TokioRuntime` assumes a multi-thread runtime: its `yield_now` is `None`
//! ("other tasks run on separate threads"), so the library's long loops (batch decrypts,
//! cache sweeps) would never give the control API, the lease renewal or the Redis commits a
//! turn on one thread. This one yields.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use wacore::runtime::{AbortHandle, Runtime};

pub struct PodRuntime;

impl Runtime for PodRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) -> AbortHandle {
        let handle = tokio::spawn(future);
        AbortHandle::new(move || handle.abort())
    }

    fn spawn_detached(&self, future: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        tokio::spawn(future);
    }

    /// The library's keepalive sleeps 15–30 s between pings: on a timerfd, one wakeup each.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(crate::wake_timer::sleep(duration))
    }

    fn spawn_blocking(
        &self,
        f: Box<dyn FnOnce() + Send + 'static>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {
            let _ = tokio::task::spawn_blocking(f).await;
        })
    }

    fn yield_now(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        Some(Box::pin(tokio::task::yield_now()))
    }
}
