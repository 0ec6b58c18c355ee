//! The control API's group routes.

use buffa::Message as _;
use waproto::whatsapp as wa;

use super::{ClientError, SimClient};
use crate::control_api::Sent;
use crate::control_api::groups::{CreateGroup, SendGroup};
use crate::groups::GroupInfo;

impl SimClient {
    /// `owner`'s account creates a group with `participants` (contacts' phone numbers).
    pub async fn create_group(
        &self,
        owner: &str,
        subject: &str,
        participants: &[&str],
    ) -> Result<GroupInfo, ClientError> {
        let body = CreateGroup {
            owner: owner.to_owned(),
            subject: subject.to_owned(),
            participants: participants.iter().map(|p| (*p).to_owned()).collect(),
        };
        self.post("/v1/groups", &body).await
    }

    pub async fn groups(&self) -> Result<Vec<GroupInfo>, ClientError> {
        self.get("/v1/groups").await
    }

    /// One group, by JID (`…@g.us`) or id.
    pub async fn group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        self.get(&format!("/v1/groups/{group}")).await
    }

    /// A member contact sends `text` to the group; returns the message id.
    pub async fn contact_send_group_text(
        &self,
        contact: &str,
        group: &str,
        text: &str,
    ) -> Result<String, ClientError> {
        self.send_group(
            group,
            SendGroup {
                contact: contact.to_owned(),
                text: Some(text.to_owned()),
                message: None,
            },
        )
        .await
    }

    /// A member contact sends any `wa::Message` to the group; returns the message id.
    pub async fn contact_send_group_message(
        &self,
        contact: &str,
        group: &str,
        message: &wa::Message,
    ) -> Result<String, ClientError> {
        self.send_group(
            group,
            SendGroup {
                contact: contact.to_owned(),
                text: None,
                message: Some(data_encoding::BASE64.encode(&message.encode_to_vec())),
            },
        )
        .await
    }

    async fn send_group(&self, group: &str, body: SendGroup) -> Result<String, ClientError> {
        let sent: Sent = self
            .post(&format!("/v1/groups/{group}/send"), &body)
            .await?;
        Ok(sent.id)
    }
}
