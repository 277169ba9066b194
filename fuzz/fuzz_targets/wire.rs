//! Any bytes as a received frame: decode must refuse them without panicking. And any body and
//! header built from the bytes must survive encode then decode unchanged, while a one-bit change
//! to that frame must be refused.
#![no_main]

use cl_wire::{decode, encode, frame_len, ClusterKey, Header, Kind};
use libfuzzer_sys::fuzz_target;

/// The body type the round trip carries: text, raw bytes and a number, all exact in JSON.
type Body = (String, Vec<u8>, u64);

fn key() -> ClusterKey {
    ClusterKey::from_bytes(b"linuxha-fuzz-key-0123456789abcdef").expect("33 bytes is long enough")
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    for (slot, byte) in word.iter_mut().zip(bytes.iter().skip(at)) {
        *slot = *byte;
    }
    u64::from_be_bytes(word)
}

fuzz_target!(|data: &[u8]| {
    let key = key();

    // 1. Arbitrary bytes: never a panic, and without the key nothing authenticates.
    let _ = frame_len(data);
    assert!(decode::<Body>(&key, "alpha", data).is_err());

    // 2. A frame built from the input round-trips exactly.
    let first = data.first().copied().unwrap_or(0);
    let kind = Kind::from_byte(first % 4 + 1).expect("1..=4 are all kinds");
    let split = data.len() / 2;
    let (left, right) = data.split_at(split);
    let cluster = String::from_utf8_lossy(left.get(..left.len().min(40)).unwrap_or(left));
    let sender = String::from_utf8_lossy(right.get(..right.len().min(40)).unwrap_or(right));
    let header = Header {
        kind,
        cluster: cluster.into_owned(),
        sender: sender.into_owned(),
        epoch: word(data, 1),
        seq: word(data, 9),
    };
    let body: Body = (String::from_utf8_lossy(data).into_owned(), data.to_vec(), word(data, 17));
    let Ok(frame) = encode(&key, &header, &body) else {
        // Empty names or an oversized body: the encoder refuses, which is its job.
        return;
    };
    assert_eq!(frame_len(&frame), Ok(Some(frame.len())));
    let (got_header, got_body) =
        decode::<Body>(&key, &header.cluster, &frame).expect("an encoded frame decodes");
    assert_eq!(got_header, header);
    assert_eq!(got_body, body);

    // 3. Any single flipped bit of that frame is refused.
    let at = usize::try_from(word(data, 25)).unwrap_or(0) % frame.len();
    let mut flipped = frame;
    if let Some(byte) = flipped.get_mut(at) {
        *byte ^= 1 << (first % 8);
    }
    assert!(decode::<Body>(&key, &header.cluster, &flipped).is_err());
});
