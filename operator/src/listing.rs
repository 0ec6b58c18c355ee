//! Every watched session, read a page at a time, for the tasks that look at all of them now and
//! then (the stale sweeper, the ACL keeper after a Redis restart). The controller caches only
//! sessions' names; a full list of 10,000 sessions at once would be tens of MiB.

use futures::{Stream, TryStreamExt};
use kube::Api;
use kube::api::ListParams;
use wasp_crds::WhatsAppSession;

/// Sessions per page: the same page size as the controller's watches.
pub const PAGE: u32 = 100;

/// The sessions of `api`, one page per item.
fn session_pages(
    api: Api<WhatsAppSession>,
) -> impl Stream<Item = kube::Result<Vec<WhatsAppSession>>> + Send {
    // State: `Some(continue token)` while there is a page to read (`None` token: the first).
    futures::stream::try_unfold(Some(None::<String>), move |state| {
        let api = api.clone();
        async move {
            let Some(token) = state else {
                return Ok(None);
            };
            let mut params = ListParams::default().limit(PAGE);
            if let Some(token) = &token {
                params = params.continue_token(token);
            }
            let list = api.list(&params).await?;
            let next = list.metadata.continue_.filter(|t| !t.is_empty());
            Ok(Some((list.items, next.map(Some))))
        }
    })
}

/// Every session of `api`, as a flat stream.
pub fn sessions(
    api: Api<WhatsAppSession>,
) -> impl Stream<Item = kube::Result<WhatsAppSession>> + Send {
    session_pages(api)
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
}
