//! The SubscriberService server side with events passed through as stored bytes.
//!
//! Redis holds each event as its encoded CloudEvent. The regular generated `ReceivedEvent` would
//! make the server decode those bytes only for tonic to encode them again. A protobuf embedded
//! message is a length-delimited field, exactly like a `bytes` field, so this module's
//! [`ReceivedEvent`] writes the stored bytes as field 2 verbatim: clients see the regular
//! `eventflow.v1.ReceivedEvent`. `build.rs` compiles `subscriber.proto` a second time with this
//! type in place of the generated one; only the subscriber service uses this module.

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType},
};

/// Generated messages and server of `subscriber.proto`, using [`ReceivedEvent`].
pub mod generated {
    #![allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
    include!(concat!(env!("OUT_DIR"), "/wire/eventflow.v1.rs"));
}

/// `eventflow.v1.ReceivedEvent` with the event kept encoded.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ReceivedEvent {
    /// Field 1: opaque handle to settle this delivery.
    pub ack_id: String,
    /// Field 2: the encoded `CloudEvent`, as stored.
    pub event: Vec<u8>,
    /// Field 3: 1 on first delivery, then incremented.
    pub delivery_attempt: i32,
    /// Field 4: when the event was stored.
    pub publish_time: Option<prost_types::Timestamp>,
    /// Field 5: the stream entry id.
    pub entry_id: String,
    /// Field 6: the partition the entry is in.
    pub partition: i32,
}

impl Message for ReceivedEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.ack_id.is_empty() {
            encoding::string::encode(1, &self.ack_id, buf);
        }
        if !self.event.is_empty() {
            encoding::bytes::encode(2, &self.event, buf);
        }
        if self.delivery_attempt != 0 {
            encoding::int32::encode(3, &self.delivery_attempt, buf);
        }
        if let Some(time) = &self.publish_time {
            encoding::message::encode(4, time, buf);
        }
        if !self.entry_id.is_empty() {
            encoding::string::encode(5, &self.entry_id, buf);
        }
        if self.partition != 0 {
            encoding::int32::encode(6, &self.partition, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.ack_id, buf, ctx),
            2 => encoding::bytes::merge(wire_type, &mut self.event, buf, ctx),
            3 => encoding::int32::merge(wire_type, &mut self.delivery_attempt, buf, ctx),
            4 => encoding::message::merge(wire_type, self.publish_time.get_or_insert_with(Default::default), buf, ctx),
            5 => encoding::string::merge(wire_type, &mut self.entry_id, buf, ctx),
            6 => encoding::int32::merge(wire_type, &mut self.partition, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if !self.ack_id.is_empty() {
            len += encoding::string::encoded_len(1, &self.ack_id);
        }
        if !self.event.is_empty() {
            len += encoding::bytes::encoded_len(2, &self.event);
        }
        if self.delivery_attempt != 0 {
            len += encoding::int32::encoded_len(3, &self.delivery_attempt);
        }
        if let Some(time) = &self.publish_time {
            len += encoding::message::encoded_len(4, time);
        }
        if !self.entry_id.is_empty() {
            len += encoding::string::encoded_len(5, &self.entry_id);
        }
        if self.partition != 0 {
            len += encoding::int32::encoded_len(6, &self.partition);
        }
        len
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{self, CloudEvent};

    #[test]
    fn clients_read_the_regular_message() {
        let event = CloudEvent {
            id: "e1".into(),
            source: "/s".into(),
            spec_version: "1.0".into(),
            r#type: "t".into(),
            data: Some(v1::cloud_event::Data::TextData("{}".into())),
            ..Default::default()
        };
        let wire = generated::SubscribeResponse {
            events: vec![ReceivedEvent {
                ack_id: "a".into(),
                event: event.encode_to_vec(),
                delivery_attempt: 2,
                publish_time: Some(prost_types::Timestamp { seconds: 5, nanos: 6 }),
                entry_id: "1-0".into(),
                partition: 3,
            }],
        };
        let regular = v1::SubscribeResponse::decode(wire.encode_to_vec().as_slice()).unwrap();
        let expected = v1::ReceivedEvent {
            ack_id: "a".into(),
            event: Some(event),
            delivery_attempt: 2,
            publish_time: Some(prost_types::Timestamp { seconds: 5, nanos: 6 }),
            entry_id: "1-0".into(),
            partition: 3,
        };
        assert_eq!(regular.events, vec![expected.clone()]);
        // And back: the regular encoding decodes into the wire type with the same bytes.
        let back = generated::SubscribeResponse::decode(regular.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, wire);
        assert_eq!(wire.encoded_len(), v1::SubscribeResponse { events: vec![expected] }.encoded_len());
    }
}
