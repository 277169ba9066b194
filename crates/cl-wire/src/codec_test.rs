//! Codec tests: round trips, one crafted frame per error, the golden layout, and hostile input.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Beat {
    up: bool,
}

fn key() -> ClusterKey {
    let bytes: Vec<u8> = (0u8..32).collect();
    ClusterKey::from_bytes(&bytes).expect("valid key")
}

fn header() -> Header {
    Header {
        kind: Kind::Heartbeat,
        cluster: "alpha".into(),
        sender: "node1".into(),
        epoch: 0x0102_0304_0506_0708,
        seq: 42,
        echo: 99,
    }
}

fn frame() -> Vec<u8> {
    encode(&key(), &header(), &Beat { up: true }).expect("encoded")
}

/// A frame laid out by hand, independently of `seal`, with a correct tag over whatever is given.
fn raw_frame(kind: u8, cluster: &[u8], sender: &[u8], body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![b'L', b'H', 2, kind, u8::try_from(cluster.len()).expect("fits")];
    bytes.extend_from_slice(cluster);
    bytes.push(u8::try_from(sender.len()).expect("fits"));
    bytes.extend_from_slice(sender);
    bytes.extend_from_slice(&7u64.to_be_bytes());
    bytes.extend_from_slice(&3u64.to_be_bytes());
    bytes.extend_from_slice(&99u64.to_be_bytes());
    bytes.extend_from_slice(&u32::try_from(body.len()).expect("fits").to_be_bytes());
    bytes.extend_from_slice(body);
    let tag = key().sign(&bytes);
    bytes.extend_from_slice(&tag);
    bytes
}

fn decode_beat(bytes: &[u8]) -> Result<(Header, Beat), DecodeError> {
    decode(&key(), "alpha", bytes)
}

/// Deterministic xorshift64* so the hostile-input tests need no extra crate and never flake.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).expect("fits")).expect("fits")
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_be_bytes()[0]).collect()
    }
}

#[test]
fn round_trip_keeps_header_and_body() {
    for kind in [Kind::Heartbeat, Kind::NodeManager, Kind::Lock, Kind::AdminPeer, Kind::Arbitrator]
    {
        let header = Header { kind, ..header() };
        let body = serde_json::json!({"apps": ["web", "db"], "view": {"node2": "up"}, "n": 3});
        let bytes = encode(&key(), &header, &body).expect("encoded");
        let (got_header, got_body): (Header, Value) =
            decode(&key(), "alpha", &bytes).expect("decoded");
        assert_eq!(got_header, header);
        assert_eq!(got_body, body);
    }
}

/// Golden frame: the layout must not change by accident.
/// - Input: key 00 01 .. 1f, heartbeat, cluster "alpha", sender "node1", epoch 0x0102030405060708,
///   seq 42, echo 99, body `{"up":true}`.
/// - Output: exactly these bytes; the tag was computed independently (Python `hmac` module).
#[test]
fn golden_frame_bytes() {
    let expected: Vec<u8> = [
        "4c48",                                                             // magic "LH"
        "02",                                                               // version
        "01",                                                               // kind: heartbeat
        "05616c706861",                                                     // "alpha"
        "056e6f646531",                                                     // "node1"
        "0102030405060708",                                                 // epoch
        "000000000000002a",                                                 // seq 42
        "0000000000000063",                                                 // echo 99
        "0000000b",                                                         // body length 11
        "7b227570223a747275657d",                                           // {"up":true}
        "752677edb35a07b11a4a4972832815a1eab77df356e86f46845d668c9fa9bae9", // HMAC-SHA256
    ]
    .iter()
    .flat_map(|part| hex::decode(part).expect("hex literal"))
    .collect();
    assert_eq!(hex::encode(frame()), hex::encode(&expected));
    assert_eq!(decode_beat(&expected).expect("decoded"), (header(), Beat { up: true }));
}

#[test]
fn hand_built_frame_matches_the_encoder() {
    let header = Header { epoch: 7, seq: 3, ..header() };
    let bytes = encode(&key(), &header, &Beat { up: true }).expect("encoded");
    assert_eq!(bytes, raw_frame(1, b"alpha", b"node1", br#"{"up":true}"#));
}

#[test]
fn oversized_input_is_refused_before_anything_else() {
    assert_eq!(decode_beat(&vec![0u8; MAX_FRAME + 1]), Err(DecodeError::Oversized));
    assert_eq!(decode_beat(&vec![0u8; 1 << 20]), Err(DecodeError::Oversized));
    // Even a real frame with junk appended past the limit.
    let mut long = frame();
    long.resize(MAX_FRAME + 1, 0);
    assert_eq!(decode_beat(&long), Err(DecodeError::Oversized));
}

#[test]
fn short_input_is_truncated() {
    assert_eq!(decode_beat(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode_beat(b"LH"), Err(DecodeError::Truncated));
    assert_eq!(decode_beat(&[0u8; MIN_FRAME - 1]), Err(DecodeError::Truncated));
    let good = frame();
    assert_eq!(decode_beat(&good[..good.len() - 1]), Err(DecodeError::Truncated));
}

#[test]
fn a_frame_cut_at_every_length_is_refused() {
    let good = frame();
    for len in 0..good.len() {
        let got = decode_beat(&good[..len]);
        assert!(matches!(got, Err(DecodeError::Truncated)), "cut at {len}: {got:?}");
    }
}

#[test]
fn wrong_magic_is_bad_magic() {
    let mut bytes = frame();
    bytes[1] = b'h';
    assert_eq!(decode_beat(&bytes), Err(DecodeError::BadMagic));
    assert_eq!(decode_beat(&[0u8; MIN_FRAME]), Err(DecodeError::BadMagic));
}

#[test]
fn another_version_is_unsupported() {
    let mut bytes = frame();
    bytes[2] = 1;
    assert_eq!(decode_beat(&bytes), Err(DecodeError::UnsupportedVersion(1)));
}

#[test]
fn wrong_key_is_bad_mac() {
    let other = ClusterKey::from_bytes(&[0xee; 32]).expect("valid key");
    let bytes = encode(&other, &header(), &Beat { up: true }).expect("encoded");
    assert_eq!(decode_beat(&bytes), Err(DecodeError::BadMac));
}

#[test]
fn another_cluster_with_the_same_key_is_wrong_cluster() {
    let header = Header { cluster: "beta".into(), ..header() };
    let bytes = encode(&key(), &header, &Beat { up: true }).expect("encoded");
    assert_eq!(decode_beat(&bytes), Err(DecodeError::WrongCluster));
    assert_eq!(decode::<Beat>(&key(), "beta", &bytes).expect("decoded").0, header);
}

#[test]
fn authentic_but_malformed_contents_are_garbled() {
    let garbled = |bytes: &[u8]| match decode_beat(bytes) {
        Err(DecodeError::Garbled(why)) => why,
        other => panic!("expected garbled, got {other:?}"),
    };
    assert!(garbled(&raw_frame(1, b"alpha", b"node1", b"{not json")).contains("body from node1"));
    assert!(garbled(&raw_frame(1, b"alpha", b"node1", br#"{"up":1}"#)).contains("body"));
    assert!(garbled(&raw_frame(1, b"alpha", b"node1", br#"{"up":true} x"#)).contains("body"));
    assert_eq!(garbled(&raw_frame(9, b"alpha", b"node1", b"{}")), "unknown channel kind 9");
    assert_eq!(garbled(&raw_frame(0, b"alpha", b"node1", b"{}")), "unknown channel kind 0");
    assert_eq!(garbled(&raw_frame(1, b"alpha", b"\xff\xfe", b"{}")), "sender name is not UTF-8");
    assert_eq!(garbled(&raw_frame(1, b"alpha", b"", b"{}")), "empty sender name");
    let mut trailing = frame();
    trailing.extend_from_slice(b"xy");
    assert_eq!(garbled(&trailing), "2 bytes after the end of the frame");
}

#[test]
fn the_mac_is_checked_before_the_cluster_and_body() {
    // Each of these would be WrongCluster or Garbled if its tag were right.
    for mut bytes in [
        raw_frame(1, b"alpha", b"node1", b"{not json"),
        raw_frame(9, b"alpha", b"node1", b"{}"),
        raw_frame(1, b"beta", b"node1", br#"{"up":true}"#),
    ] {
        *bytes.last_mut().expect("non-empty") ^= 0x80;
        assert_eq!(decode_beat(&bytes), Err(DecodeError::BadMac));
    }
}

#[test]
fn every_single_bit_flip_is_refused() {
    let good = frame();
    for at in 0..good.len() {
        for bit in 0..8 {
            let mut bytes = good.clone();
            bytes[at] ^= 1 << bit;
            let got = decode_beat(&bytes);
            assert!(got.is_err(), "flip of bit {bit} at byte {at} was accepted: {got:?}");
        }
    }
}

#[test]
fn random_bytes_never_decode() {
    let mut rng = Prng(0x5eed_1234_abcd_0001);
    let good = frame();
    for round in 0..10_000 {
        let len = rng.below(2 * good.len());
        let mut bytes = rng.bytes(len);
        // Half the time keep a valid magic, version and kind so the length walk and MAC run.
        if round % 2 == 0 && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&good[..4]);
        }
        assert!(decode::<Value>(&key(), "alpha", &bytes).is_err(), "round {round} accepted");
        let _ = frame_len(&bytes);
    }
}

#[test]
fn random_changes_to_a_real_frame_never_decode() {
    let mut rng = Prng(42);
    let good = frame();
    for round in 0..2_000 {
        let mut bytes = good.clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] = bytes[at].wrapping_add(1 + u8::try_from(rng.below(255)).expect("fits"));
        }
        assert!(decode::<Value>(&key(), "alpha", &bytes).is_err(), "round {round} accepted");
    }
}

#[test]
fn names_must_fit_their_length_byte() {
    let long = "n".repeat(256);
    let err = encode(&key(), &Header { sender: long, ..header() }, &1).expect_err("refused");
    assert_eq!(err, EncodeError::NameLength { field: "sender", len: 256 });
    let err =
        encode(&key(), &Header { cluster: String::new(), ..header() }, &1).expect_err("refused");
    assert_eq!(err, EncodeError::NameLength { field: "cluster", len: 0 });
    let longest = "n".repeat(255);
    let header = Header { cluster: longest.clone(), sender: longest.clone(), ..header() };
    let bytes = encode(&key(), &header, &1).expect("encoded");
    assert_eq!(decode::<u8>(&key(), &longest, &bytes).expect("decoded"), (header, 1));
}

#[test]
fn the_frame_limit_is_exact() {
    // A string body of n characters serialises as n + 2 bytes (the quotes).
    let overhead = MIN_FRAME + "alpha".len() + "node1".len() + 2;
    let fits = "x".repeat(MAX_FRAME - overhead);
    let bytes = encode(&key(), &header(), &fits).expect("encoded");
    assert_eq!(bytes.len(), MAX_FRAME);
    assert_eq!(decode::<String>(&key(), "alpha", &bytes).expect("decoded").1, fits);
    let too_big = "x".repeat(MAX_FRAME - overhead + 1);
    assert_eq!(
        encode(&key(), &header(), &too_big).expect_err("refused"),
        EncodeError::TooLarge { len: MAX_FRAME + 1 }
    );
}

#[test]
fn a_body_json_cannot_represent_is_an_encode_error() {
    let mut map = std::collections::HashMap::new();
    map.insert((1, 2), "tuple keys are not JSON");
    assert!(matches!(encode(&key(), &header(), &map), Err(EncodeError::Body(_))));
}

#[test]
fn frame_len_finds_the_end_once_the_lengths_have_arrived() {
    let good = frame();
    // Magic, version, kind, cluster len + 5, sender len + 5, epoch, seq, echo, body len.
    let lengths_known = 4 + 6 + 6 + 8 + 8 + 8 + 4;
    for len in 0..=good.len() {
        let expected = if len < lengths_known { None } else { Some(good.len()) };
        assert_eq!(frame_len(&good[..len]), Ok(expected), "prefix of {len}");
    }
    let mut stream = good.clone();
    stream.extend_from_slice(&good);
    assert_eq!(frame_len(&stream), Ok(Some(good.len())));
}

#[test]
fn frame_len_refuses_streams_that_cannot_be_linuxha() {
    assert_eq!(frame_len(b"X"), Err(DecodeError::BadMagic));
    assert_eq!(frame_len(b"LX"), Err(DecodeError::BadMagic));
    assert_eq!(frame_len(b"LH\x07"), Err(DecodeError::UnsupportedVersion(7)));
    let mut huge = frame();
    // Body length field (after 4 + 6 + 6 + 24 bytes) announcing a 4 GiB body.
    huge[40..44].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(frame_len(&huge), Err(DecodeError::Oversized));
    assert_eq!(decode_beat(&huge), Err(DecodeError::Truncated));
}

#[test]
fn errors_read_as_sentences_for_the_log() {
    assert_eq!(
        DecodeError::UnsupportedVersion(1).to_string(),
        "frame has protocol version 1; this node speaks version 2"
    );
    assert_eq!(DecodeError::Oversized.to_string(), "frame is larger than the 65536-byte limit");
}
