//! Wire framing: the 8-byte protocol headers and AMQP/SASL frames, as a `tokio_util` codec.
//!
//! One [`FrameCodec`] lives for the whole socket. It starts in the header phase; the connection task
//! switches it to frames after each header exchange, so bytes a client pipelines behind a header
//! (SASL init, or Open/Begin/Attach after the second header) stay in the same read buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// `AMQP 0 1 0 0`: plain AMQP.
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// `AMQP 3 1 0 0`: SASL layer.
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// An empty frame (heartbeat) on channel 0.
pub const EMPTY_FRAME: [u8; 8] = [0, 0, 0, 8, 2, 0, 0, 0];

/// Frame type byte for AMQP frames.
pub const TYPE_AMQP: u8 = 0x00;
/// Frame type byte for SASL frames.
pub const TYPE_SASL: u8 = 0x01;

/// Before Open, peers may only send frames up to 512 bytes; we are lenient (long PLAIN keys) and accept
/// this much until Open has fixed the real limit.
pub const PRE_OPEN_MAX_FRAME: u32 = 64 * 1024;

/// What the decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The 8 protocol header bytes, as sent.
    Header([u8; 8]),
    /// One frame. `body` starts at the performative (extended header skipped); empty for heartbeats.
    Frame(Frame),
}

/// One AMQP or SASL frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub frame_type: u8,
    pub channel: u16,
    pub body: Bytes,
}

/// Why the byte stream is not valid framing. Maps to `amqp:connection:framing-error`.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame size {0} is below the 8-byte minimum")]
    SizeTooSmall(u32),
    #[error("frame size {size} exceeds the negotiated maximum of {max} bytes")]
    SizeTooLarge { size: u32, max: u32 },
    #[error("data offset {0} is below the minimum of 2 words or beyond the frame")]
    BadDataOffset(u8),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Which unit the decoder expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Header,
    Frames,
}

/// Decoder and encoder for headers and frames.
#[derive(Debug)]
pub struct FrameCodec {
    phase: Phase,
    max_frame_size: u32,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            phase: Phase::Header,
            max_frame_size: PRE_OPEN_MAX_FRAME,
        }
    }
}

impl FrameCodec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Expect a protocol header next (after SASL outcome) or frames (after a header exchange).
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The largest inbound frame accepted (what we advertised in Open).
    pub fn set_max_frame_size(&mut self, max: u32) {
        self.max_frame_size = max.max(512);
    }
}

impl Decoder for FrameCodec {
    type Item = Item;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        match self.phase {
            Phase::Header => {
                if src.len() < 8 {
                    return Ok(None);
                }
                let mut header = [0u8; 8];
                header.copy_from_slice(&src[..8]);
                src.advance(8);
                // A header is always followed by the peer's answer; frames come only once the
                // connection switches the phase explicitly.
                Ok(Some(Item::Header(header)))
            }
            Phase::Frames => {
                if src.len() < 8 {
                    return Ok(None);
                }
                let size = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
                if size < 8 {
                    return Err(CodecError::SizeTooSmall(size));
                }
                if size > self.max_frame_size {
                    return Err(CodecError::SizeTooLarge {
                        size,
                        max: self.max_frame_size,
                    });
                }
                let doff = src[4];
                if doff < 2 || u32::from(doff) * 4 > size {
                    return Err(CodecError::BadDataOffset(doff));
                }
                let size = size as usize;
                if src.len() < size {
                    src.reserve(size - src.len());
                    return Ok(None);
                }
                let mut frame = src.split_to(size).freeze();
                let frame_type = frame[5];
                let channel = u16::from_be_bytes([frame[6], frame[7]]);
                frame.advance(usize::from(doff) * 4);
                Ok(Some(Item::Frame(Frame {
                    frame_type,
                    channel,
                    body: frame,
                })))
            }
        }
    }
}

/// What the encoder writes.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Header([u8; 8]),
    /// A frame from an already encoded performative body plus an optional payload (transfers).
    Frame {
        frame_type: u8,
        channel: u16,
        body: Bytes,
        payload: Bytes,
    },
}

impl Encoder<Outgoing> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Outgoing::Header(h) => dst.extend_from_slice(&h),
            Outgoing::Frame {
                frame_type,
                channel,
                body,
                payload,
            } => {
                write_frame(dst, frame_type, channel, &body, &payload);
            }
        }
        Ok(())
    }
}

/// Append one frame with DOFF 2 (peers such as pyamqp mis-skip larger offsets).
pub fn write_frame(dst: &mut BytesMut, frame_type: u8, channel: u16, body: &[u8], payload: &[u8]) {
    let size = 8 + body.len() + payload.len();
    dst.reserve(size);
    dst.put_u32(size as u32);
    dst.put_u8(2);
    dst.put_u8(frame_type);
    dst.put_u16(channel);
    dst.extend_from_slice(body);
    dst.extend_from_slice(payload);
}

/// Append a frame whose body is a serialisable performative.
pub fn write_performative<T: serde::Serialize>(
    dst: &mut BytesMut,
    frame_type: u8,
    channel: u16,
    body: &T,
    payload: &[u8],
) -> Result<(), serde_amqp::Error> {
    let body = serde_amqp::to_vec(body)?;
    write_frame(dst, frame_type, channel, &body, payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(codec: &mut FrameCodec, bytes: &[u8]) -> Vec<Item> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn header_then_frames_keeps_pipelined_bytes() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(&AMQP_HEADER[..]);
        buf.extend_from_slice(&EMPTY_FRAME);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Item::Header(AMQP_HEADER))
        );
        assert_eq!(
            buf.len(),
            8,
            "the frame behind the header must stay buffered"
        );
        codec.set_phase(Phase::Frames);
        let items = frames(&mut codec, &buf);
        assert_eq!(
            items,
            vec![Item::Frame(Frame {
                frame_type: 0,
                channel: 0,
                body: Bytes::new()
            })]
        );
    }

    #[test]
    fn extended_header_is_skipped() {
        let mut codec = FrameCodec::new();
        codec.set_phase(Phase::Frames);
        // size 16, doff 3 (12 bytes header), type 0, channel 5, 4 bytes extended header, body 0x45 0x46 0x47 0x48
        let bytes = [
            0, 0, 0, 16, 3, 0, 0, 5, 0xEE, 0xEE, 0xEE, 0xEE, 0x45, 0x46, 0x47, 0x48,
        ];
        let items = frames(&mut codec, &bytes);
        assert_eq!(
            items,
            vec![Item::Frame(Frame {
                frame_type: 0,
                channel: 5,
                body: Bytes::from_static(&[0x45, 0x46, 0x47, 0x48])
            })]
        );
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let mut codec = FrameCodec::new();
        codec.set_phase(Phase::Frames);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 10, 2, 0, 0, 0, 1][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.put_u8(2);
        let item = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            item,
            Item::Frame(Frame {
                frame_type: 0,
                channel: 0,
                body: Bytes::from_static(&[1, 2])
            })
        );
    }

    #[test]
    fn malformed_sizes_and_offsets_are_errors() {
        let mut codec = FrameCodec::new();
        codec.set_phase(Phase::Frames);
        let mut small = BytesMut::from(&[0u8, 0, 0, 4, 2, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut small),
            Err(CodecError::SizeTooSmall(4))
        ));
        let mut doff = BytesMut::from(&[0u8, 0, 0, 8, 1, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut doff),
            Err(CodecError::BadDataOffset(1))
        ));
        let mut doff_beyond = BytesMut::from(&[0u8, 0, 0, 8, 3, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut doff_beyond),
            Err(CodecError::BadDataOffset(3))
        ));
        codec.set_max_frame_size(1024);
        let mut big = BytesMut::from(&[0u8, 0, 0x10, 0, 2, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut big),
            Err(CodecError::SizeTooLarge {
                size: 4096,
                max: 1024
            })
        ));
    }

    #[test]
    fn encoder_writes_doff_two_and_total_size() {
        let mut dst = BytesMut::new();
        write_frame(&mut dst, TYPE_SASL, 7, &[0xAA], &[0xBB, 0xCC]);
        assert_eq!(&dst[..], &[0, 0, 0, 11, 2, 1, 0, 7, 0xAA, 0xBB, 0xCC]);
    }
}
