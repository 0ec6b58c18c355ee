//! [`SimClient`] methods for conversing contacts.

use std::time::Duration;

use super::{
    ChatState, ChatStateSeen, ContactEdit, ContactReact, ContactRead, ContactReply, ContactRevoke,
    ProfilePictureInfo, ReadKind, SendChatState, SetPicture, api::Reached,
};
use crate::client::{ClientError, SimClient};
use crate::control_api::Sent;

impl SimClient {
    /// The contact replies to `quoted_id` (a message of its chat with `to`); returns the id.
    pub async fn contact_reply(
        &self,
        contact: &str,
        to: &str,
        quoted_id: &str,
        text: &str,
    ) -> Result<String, ClientError> {
        let body = ContactReply {
            to: to.to_owned(),
            quoted_id: quoted_id.to_owned(),
            text: text.to_owned(),
        };
        let sent: Sent = self
            .post(&format!("/v1/contacts/{contact}/reply"), &body)
            .await?;
        Ok(sent.id)
    }

    /// The contact reacts to `target_id` with `emoji` (`""` removes it); returns the id.
    pub async fn contact_react(
        &self,
        contact: &str,
        to: &str,
        target_id: &str,
        emoji: &str,
    ) -> Result<String, ClientError> {
        let body = ContactReact {
            to: to.to_owned(),
            target_id: target_id.to_owned(),
            emoji: emoji.to_owned(),
        };
        let sent: Sent = self
            .post(&format!("/v1/contacts/{contact}/react"), &body)
            .await?;
        Ok(sent.id)
    }

    /// The contact edits its own message `target_id` to `text`; returns the edit's id.
    pub async fn contact_edit(
        &self,
        contact: &str,
        to: &str,
        target_id: &str,
        text: &str,
    ) -> Result<String, ClientError> {
        let body = ContactEdit {
            to: to.to_owned(),
            target_id: target_id.to_owned(),
            text: text.to_owned(),
        };
        let sent: Sent = self
            .post(&format!("/v1/contacts/{contact}/edit"), &body)
            .await?;
        Ok(sent.id)
    }

    /// The contact deletes its own message `target_id` for everyone; returns the revoke's id.
    pub async fn contact_revoke(
        &self,
        contact: &str,
        to: &str,
        target_id: &str,
    ) -> Result<String, ClientError> {
        let body = ContactRevoke {
            to: to.to_owned(),
            target_id: target_id.to_owned(),
        };
        let sent: Sent = self
            .post(&format!("/v1/contacts/{contact}/revoke"), &body)
            .await?;
        Ok(sent.id)
    }

    /// The contact's phone sends a read (or played) receipt for `ids` (messages it got
    /// from `to`) to every linked device of `to`.
    pub async fn contact_read(
        &self,
        contact: &str,
        to: &str,
        ids: &[&str],
        kind: ReadKind,
    ) -> Result<(), ClientError> {
        let body = ContactRead {
            to: to.to_owned(),
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            kind,
        };
        self.post(&format!("/v1/contacts/{contact}/read"), &body)
            .await
    }

    /// The contact types / records / pauses in its chat with `to`; returns how many live
    /// devices got the chat state.
    pub async fn contact_chatstate(
        &self,
        contact: &str,
        to: &str,
        state: ChatState,
    ) -> Result<usize, ClientError> {
        let body = SendChatState {
            to: to.to_owned(),
            state,
        };
        let reached: Reached = self
            .post(&format!("/v1/contacts/{contact}/chatstate"), &body)
            .await?;
        Ok(reached.devices)
    }

    /// Waits (server-side, up to `timeout`) until devices sent the contact `min` chat
    /// states; returns them all.
    pub async fn contact_chatstates(
        &self,
        contact: &str,
        min: usize,
        timeout: Duration,
    ) -> Result<Vec<ChatStateSeen>, ClientError> {
        self.get(&format!(
            "/v1/contacts/{contact}/chatstates?min={min}&timeout_ms={}",
            timeout.as_millis()
        ))
        .await
    }

    /// The contact's profile picture, if it has one.
    pub async fn contact_picture(
        &self,
        contact: &str,
    ) -> Result<Option<ProfilePictureInfo>, ClientError> {
        self.get(&format!("/v1/contacts/{contact}/picture")).await
    }

    /// Gives the contact a profile picture or takes it away.
    pub async fn set_contact_picture(
        &self,
        contact: &str,
        present: bool,
    ) -> Result<(), ClientError> {
        self.put(
            &format!("/v1/contacts/{contact}/picture"),
            &SetPicture { present },
        )
        .await
    }
}
