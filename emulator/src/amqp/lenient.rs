//! Encodings the spec frowns on but Service Bus accepts, made acceptable before strict decoding.
//!
//! The performatives' maps (`fields` such as attach `properties`, filter sets, error `info`,
//! annotations) are keyed by symbols. Microsoft's C stack (uamqp) writes some keys as *strings*
//! (`com.microsoft:receiver-name` in its attach `properties`), and the service takes them; a strict
//! decoder refuses the frame with `amqp:decode-error` and closes the connection. No map inside a
//! performative is keyed by strings in the spec (application-properties, the one string-keyed map, is
//! in the message payload, which is decoded elsewhere), so turning every string key into the symbol of
//! the same bytes only changes the constructor byte (0xa1 → 0xa3, 0xb1 → 0xb3) and loses nothing.
//!
//! The engine decodes strictly first and uses this only when that fails, so well-formed frames pay
//! nothing.

/// Deeper nesting than this is refused rather than walked (no real performative comes close).
const MAX_DEPTH: u32 = 32;

/// A copy of `body` in which every string key of a map inside its first encoded value is a symbol;
/// `None` when there is no such key or the value cannot be walked (the strict error then stands).
/// Bytes after the first value (a transfer's payload) are copied unchanged.
pub fn symbol_keys(body: &[u8]) -> Option<Vec<u8>> {
    let mut copy = body.to_vec();
    let mut changed = false;
    walk(&mut copy, 0, 0, &mut changed)?;
    changed.then_some(copy)
}

/// Walk the value at `pos`, rewriting string map keys; returns the offset just past it.
fn walk(buf: &mut [u8], pos: usize, depth: u32, changed: &mut bool) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let code = *buf.get(pos)?;
    let at = pos + 1;
    let end = match code {
        // described: descriptor, then the value
        0x00 => {
            let after = walk(buf, at, depth + 1, changed)?;
            return walk(buf, after, depth + 1, changed);
        }
        0x40..=0x45 => at,
        0x50..=0x56 => at + 1,
        0x60 | 0x61 => at + 2,
        0x70..=0x74 => at + 4,
        0x80..=0x84 => at + 8,
        0x94 | 0x98 => at + 16,
        0xa0 | 0xa1 | 0xa3 => at + 1 + usize::from(*buf.get(at)?),
        0xb0 | 0xb1 | 0xb3 => at + 4 + be_u32(buf, at)?,
        0xc0 | 0xc1 => {
            let size = usize::from(*buf.get(at)?);
            let count = u32::from(*buf.get(at + 1)?);
            compound(
                buf,
                at + 2,
                at + 1 + size,
                count,
                code == 0xc1,
                depth,
                changed,
            )?
        }
        0xd0 | 0xd1 => {
            let size = be_u32(buf, at)?;
            let count = u32::try_from(be_u32(buf, at + 4)?).ok()?;
            compound(
                buf,
                at + 8,
                at + 4 + size,
                count,
                code == 0xd1,
                depth,
                changed,
            )?
        }
        // arrays hold no maps with string keys in any performative: skipped whole
        0xe0 => at + 1 + usize::from(*buf.get(at)?),
        0xf0 => at + 4 + be_u32(buf, at)?,
        _ => return None,
    };
    (end <= buf.len()).then_some(end)
}

/// The `count` items of a list or map starting at `first` and ending at `end`; in a map every even
/// item is a key.
fn compound(
    buf: &mut [u8],
    first: usize,
    end: usize,
    count: u32,
    is_map: bool,
    depth: u32,
    changed: &mut bool,
) -> Option<usize> {
    let mut pos = first;
    for i in 0..count {
        if is_map && i % 2 == 0 {
            match buf.get(pos) {
                Some(0xa1) => {
                    buf[pos] = 0xa3;
                    *changed = true;
                }
                Some(0xb1) => {
                    buf[pos] = 0xb3;
                    *changed = true;
                }
                _ => {}
            }
        }
        pos = walk(buf, pos, depth + 1, changed)?;
        if pos > end {
            return None;
        }
    }
    (pos == end).then_some(end)
}

fn be_u32(buf: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(bytes)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A map8 `{key: "v"}` whose key is written with `key_code` (0xa1 string or 0xa3 symbol).
    fn map_with(key_code: u8, key: &str) -> Vec<u8> {
        let mut items = vec![key_code, key.len() as u8];
        items.extend_from_slice(key.as_bytes());
        items.extend_from_slice(&[0xa1, 1, b'v']);
        let mut out = vec![0xc1, (items.len() + 1) as u8, 2];
        out.extend(items);
        out
    }

    #[test]
    fn string_keys_become_symbols_and_values_and_payload_stay() {
        // described list (attach-like): [string "name", map {string key: string value}] + payload
        let map = map_with(0xa1, "com.microsoft:receiver-name");
        let mut list_items = vec![0xa1, 4];
        list_items.extend_from_slice(b"name");
        list_items.extend_from_slice(&map);
        let mut body = vec![0x00, 0x53, 0x12, 0xc0, (list_items.len() + 1) as u8, 2];
        body.extend(&list_items);
        let payload = [0xa1, 3, b'p', b'a', b'y'];
        body.extend_from_slice(&payload);

        let fixed = symbol_keys(&body).expect("a string key was rewritten");
        assert_eq!(fixed.len(), body.len());
        let key_at = body.len() - payload.len() - map.len() + 3;
        assert_eq!(
            (body[key_at], fixed[key_at]),
            (0xa1, 0xa3),
            "the key is a symbol now"
        );
        let differing = body.iter().zip(&fixed).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1, "only the key's constructor changed");
        assert_eq!(symbol_keys(&fixed), None, "symbol keys are left alone");
    }

    proptest! {
        /// Any bytes: never a panic, and a rewrite keeps the length.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Some(out) = symbol_keys(&bytes) {
                prop_assert_eq!(out.len(), bytes.len());
            }
        }

        /// A map of symbol and string keys, in their 8- and 32-bit forms: every key comes out a
        /// symbol of the same bytes, and nothing else changes.
        #[test]
        fn every_key_encoding_comes_out_a_symbol(
            keys in proptest::collection::vec(("[a-z:.-]{1,20}", 0u8..4), 1..6)
        ) {
            let mut items = Vec::new();
            for (key, form) in &keys {
                let (code, long) = [(0xa1, false), (0xa3, false), (0xb1, true), (0xb3, true)][usize::from(*form)];
                items.push(code);
                if long {
                    items.extend_from_slice(&(key.len() as u32).to_be_bytes());
                } else {
                    items.push(key.len() as u8);
                }
                items.extend_from_slice(key.as_bytes());
                items.push(0x43); // uint0 value
            }
            let mut map = vec![0xd1];
            map.extend_from_slice(&((items.len() + 4) as u32).to_be_bytes());
            map.extend_from_slice(&((keys.len() * 2) as u32).to_be_bytes());
            map.extend(&items);
            let out = symbol_keys(&map).unwrap_or_else(|| map.clone());
            let decoded: std::collections::BTreeMap<serde_amqp::primitives::Symbol, u32> =
                serde_amqp::from_slice::<fe2o3_amqp_types::primitives::OrderedMap<serde_amqp::primitives::Symbol, u32>>(&out)
                    .expect("symbol keys decode strictly")
                    .into_iter()
                    .collect();
            for (key, _) in &keys {
                prop_assert!(decoded.contains_key(&serde_amqp::primitives::Symbol::from(key.as_str())));
            }
        }
    }
}
