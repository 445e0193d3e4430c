//! The client's decoder of `capstan run`'s stream ([`capstan_api::run::Decoder`]).
//!
//! The input is split in two: the first half is fed to the decoder as a stream from an
//! unknown daemon (never a panic, memory bounded); the second half makes records (output
//! pieces of any bytes, codes, messages) that are encoded, cut at points the input picks,
//! and must decode back to the same records, their output to the same bytes.
#![no_main]

use capstan_api::run::{encode, Decoder, RunRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (wild, recipe) = data.split_at(data.len() / 2);

    let mut d = Decoder::default();
    for piece in wild.split(|b| *b == 0xff) {
        if d.feed(piece).is_err() {
            break;
        }
    }
    let _ = d.finish();

    let records = records(recipe);
    let stream: Vec<u8> = records.iter().flat_map(encode).collect();
    let mut d = Decoder::default();
    let mut got = vec![];
    let mut at = 0;
    for step in recipe
        .iter()
        .map(|b| usize::from(*b) + 1)
        .cycle()
        .take(stream.len() + 1)
    {
        let end = (at + step).min(stream.len());
        got.extend(d.feed(&stream[at..end]).expect("an encoded stream decodes"));
        at = end;
        if at == stream.len() {
            break;
        }
    }
    d.finish().expect("an encoded stream ends cleanly");
    assert_eq!(got, records, "the records round-trip");
    let output = |recs: &[RunRecord]| -> Vec<u8> {
        recs.iter()
            .flat_map(|r| match r {
                RunRecord::Output { bytes, .. } => bytes.clone(),
                _ => vec![],
            })
            .collect()
    };
    assert_eq!(output(&got), output(&records), "every byte, in order");
});

/// Records made from `recipe`: each byte picks a kind, the bytes after it its content.
fn records(recipe: &[u8]) -> Vec<RunRecord> {
    recipe
        .chunks(7)
        .map(|c| {
            let rest = c[1..].to_vec();
            let text = String::from_utf8_lossy(&rest).into_owned();
            match c[0] % 6 {
                0 => RunRecord::Output {
                    stderr: c[0] & 0x80 != 0,
                    bytes: rest,
                },
                1 => RunRecord::Started { container: text },
                2 => RunRecord::Alive,
                3 => RunRecord::Exit {
                    code: i64::from_le_bytes(std::array::from_fn(|i| {
                        rest.get(i).copied().unwrap_or(0)
                    })),
                },
                4 => RunRecord::Error { message: text },
                _ => RunRecord::Line {
                    stderr: c[0] & 0x80 != 0,
                    text,
                },
            }
        })
        .collect()
}
