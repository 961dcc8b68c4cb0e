//! The fuzz targets' invariants on the stable toolchain, in every test run: the committed seed
//! corpus in `fuzz/corpus/`, then random bytes and random JSON bodies. `scripts/fuzz` runs the
//! same functions under libFuzzer for as long as asked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use invokd_wire::fuzzing;
use proptest::prelude::*;
use serde_json::{Value, json};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("async_invoke_create", fuzzing::async_invoke_create),
    ("fal_submit", fuzzing::fal_submit),
    ("sse_events", fuzzing::sse_events),
    ("webhook_signature", fuzzing::webhook_signature),
];

#[test]
fn the_seed_corpus_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut seeds = 0;
    for (name, target) in TARGETS {
        for entry in std::fs::read_dir(root.join(name)).unwrap() {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            seeds += 1;
        }
    }
    assert!(seeds >= 20, "the corpus has its seeds ({seeds})");
}

/// JSON values of any shape, a few levels deep, with the catalog's field names and values
/// among the random ones.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
        prop_oneof![
            Just("square"),
            Just("landscape_4_3"),
            Just("a cat"),
            Just("data:image/png;base64,AAAA")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("prompt".to_owned()),
                    Just("num_images".to_owned()),
                    Just("image_size".to_owned()),
                    Just("seed".to_owned()),
                    Just("width".to_owned()),
                    Just("text".to_owned()),
                    Just("seconds_total".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn model() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("fal-ai/flux/schnell"),
        Just("fal-ai/fast-sdxl"),
        Just("fal-ai/stable-audio-25/text-to-audio"),
        Just("fal-ai/elevenlabs/tts/multilingual-v2"),
        Just("fal-ai/recraft/v2/text-to-image"),
        Just("nobody/nothing"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        for (_, target) in TARGETS {
            target(&bytes);
        }
    }

    #[test]
    fn any_text(text in "\\PC{0,200}") {
        for (_, target) in TARGETS {
            target(text.as_bytes());
        }
    }

    #[test]
    fn create_bodies(model in model(), input in any_json(), extra in any_json()) {
        let body = json!({"model_id": model, "input": input, "tags": extra});
        fuzzing::async_invoke_create(body.to_string().as_bytes());
        let body = json!({"model_id": model, "input": input});
        fuzzing::async_invoke_create(body.to_string().as_bytes());
    }

    #[test]
    fn submit_bodies(pick in any::<u8>(), input in any_json()) {
        let mut bytes = vec![pick];
        bytes.extend(input.to_string().as_bytes());
        fuzzing::fal_submit(&bytes);
        fuzzing::sse_events(input.to_string().as_bytes());
    }
}
