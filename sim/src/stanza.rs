//! Helpers for the binary-XML stanzas (`wacore-binary` nodes) the simulator reads and writes.

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Node, NodeContent};

pub use wacore_binary::SERVER_JID;

/// The string value of an attribute (JID-typed values are rendered).
pub fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.as_str().into_owned())
}

pub fn child<'a>(node: &'a Node, tag: &str) -> Option<&'a Node> {
    node.get_optional_child(tag)
}

pub fn children<'a>(node: &'a Node, tag: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
    node.get_children_by_tag(tag)
}

pub fn bytes(node: &Node) -> Option<&[u8]> {
    match &node.content {
        Some(NodeContent::Bytes(b)) => Some(b),
        Some(NodeContent::String(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The first child's tag, which with `xmlns` and `type` identifies an iq.
pub fn first_child_tag(node: &Node) -> Option<&str> {
    node.children()
        .and_then(|c| c.first())
        .map(|c| c.tag.as_ref())
}

/// `<iq type="result">` answering `req`, addressed back to its sender.
pub fn iq_result(req: &Node) -> NodeBuilder {
    let mut b = NodeBuilder::new("iq")
        .attr("from", SERVER_JID)
        .attr("type", "result")
        .attr("id", attr(req, "id").unwrap_or_default());
    if let Some(to) = attr(req, "from") {
        b = b.attr("to", to);
    }
    b
}

/// `<iq type="error">` answering `req`.
pub fn iq_error(req: &Node, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER_JID)
        .attr("type", "error")
        .attr("id", attr(req, "id").unwrap_or_default())
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text)
            .build()])
        .build()
}

/// The server's `<ack>` for a stanza the client sent (message, receipt, notification).
pub fn ack_for(stanza: &Node, from: Option<&str>) -> Node {
    let mut b = NodeBuilder::new("ack")
        .attr("id", attr(stanza, "id").unwrap_or_default())
        .attr("class", stanza.tag.to_string());
    if let Some(from) = from {
        b = b.attr("from", from);
    }
    if let Some(t) = attr(stanza, "type").filter(|_| stanza.tag != "message") {
        b = b.attr("type", t);
    }
    b.build()
}

/// Encodes a stanza as the client expects a frame's plaintext (flag byte + binary XML).
pub fn encode(node: &Node) -> Result<Vec<u8>, wacore_binary::BinaryError> {
    wacore_binary::marshal::marshal(node)
}

/// Decodes a frame's plaintext (flag byte, optional zlib, binary XML).
pub fn decode(plaintext: &[u8]) -> Result<Node, wacore_binary::BinaryError> {
    let unpacked = wacore_binary::util::unpack(plaintext)?;
    Ok(wacore_binary::marshal::unmarshal_ref(&unpacked)?.to_owned())
}

/// Renders a stanza compactly for logs.
pub fn describe(node: &Node) -> String {
    let mut s = format!("<{}", node.tag);
    for (k, v) in node.attrs.iter() {
        s.push_str(&format!(" {k}={:?}", v.as_str()));
    }
    match &node.content {
        Some(NodeContent::Nodes(kids)) => {
            s.push('>');
            for k in kids {
                s.push_str(&describe(k));
            }
            s.push_str(&format!("</{}>", node.tag));
        }
        Some(NodeContent::Bytes(b)) => s.push_str(&format!(">[{} bytes]</{}>", b.len(), node.tag)),
        Some(NodeContent::String(t)) => s.push_str(&format!(">{t}</{}>", node.tag)),
        None => s.push_str("/>"),
    }
    s
}

/// `<failure reason=…/>`, the login refusal.
pub fn failure(reason: &str) -> Node {
    NodeBuilder::new("failure")
        .attr("reason", reason)
        .attr("location", "sim")
        .build()
}

/// `<failure reason code expire/>`: a refusal with its details (a ban's code and duration).
pub fn failure_of(f: &crate::faults::LoginFailure) -> Node {
    let mut b = NodeBuilder::new("failure")
        .attr("reason", f.reason.as_str())
        .attr("location", "sim");
    if let Some(code) = f.code {
        b = b.attr("code", code.to_string());
    }
    if let Some(expire) = f.expire {
        b = b.attr("expire", expire.to_string());
    }
    b.build()
}

pub fn stream_error_code(code: &str) -> Node {
    NodeBuilder::new("stream:error").attr("code", code).build()
}

pub fn stream_conflict(kind: &str, code: Option<&str>) -> Node {
    let mut b = NodeBuilder::new("stream:error");
    if let Some(code) = code {
        b = b.attr("code", code);
    }
    b.children([NodeBuilder::new("conflict").attr("type", kind).build()])
        .build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let n = NodeBuilder::new("iq")
            .attr("id", "1")
            .attr("to", "123@s.whatsapp.net")
            .children([NodeBuilder::new("ref").bytes(b"abc".to_vec()).build()])
            .build();
        let back = decode(&encode(&n).unwrap()).unwrap();
        assert_eq!(attr(&back, "id").as_deref(), Some("1"));
        assert_eq!(attr(&back, "to").as_deref(), Some("123@s.whatsapp.net"));
        assert_eq!(bytes(child(&back, "ref").unwrap()), Some(&b"abc"[..]));
    }

    #[test]
    fn iq_result_echoes_the_id() {
        let req = NodeBuilder::new("iq")
            .attr("id", "x7")
            .attr("type", "get")
            .build();
        let res = iq_result(&req).build();
        assert_eq!(attr(&res, "id").as_deref(), Some("x7"));
        assert_eq!(attr(&res, "type").as_deref(), Some("result"));
    }
}
