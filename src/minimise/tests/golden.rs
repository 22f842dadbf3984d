//! Golden messages: each message type minimised and compared with its expected output in
//! `tests/golden/`.

use super::*;

const GOLDEN: [(&str, &str); 4] = [
    (
        include_str!("../../../tests/golden/referral.input.json"),
        include_str!("../../../tests/golden/referral.expected.json"),
    ),
    (
        include_str!("../../../tests/golden/consultation.input.json"),
        include_str!("../../../tests/golden/consultation.expected.json"),
    ),
    (
        include_str!("../../../tests/golden/feedback.input.json"),
        include_str!("../../../tests/golden/feedback.expected.json"),
    ),
    (
        include_str!("../../../tests/golden/consent_update.input.json"),
        include_str!("../../../tests/golden/consent_update.expected.json"),
    ),
];

#[test]
fn golden_messages() {
    let m = minimiser();
    let mut seen = Vec::new();
    for (input, expected) in GOLDEN {
        let input: Value = serde_json::from_str(input).unwrap();
        let expected: Value = serde_json::from_str(expected).unwrap();
        let t: MessageType = serde_json::from_value(input["type"].clone()).unwrap();
        seen.push(t);
        let on = date(input["on"].as_str().unwrap());
        let original = obj(input["content"].clone());

        // The receiver refuses the raw input …
        assert!(
            m.check(t, &original).is_err(),
            "{t:?}: raw input passed check"
        );

        let mut content = original.clone();
        let changes = m.apply(t, &mut content, on).unwrap();
        assert_eq!(
            Value::Object(content.clone()),
            expected["content"],
            "{t:?} content"
        );

        // Order-independent comparison: serde_json may be built with preserve_order.
        let mut got: Vec<Change> = changes.changed.clone();
        got.sort_by(|a, b| a.path.cmp(&b.path));
        let want: Vec<Change> = serde_json::from_value(expected["changes"].clone()).unwrap();
        assert_eq!(got, want, "{t:?} changes");

        // … accepts the output, and a second pass changes nothing.
        m.check(t, &content).unwrap();
        let mut again = content.clone();
        assert!(
            m.apply(t, &mut again, on).unwrap().is_empty(),
            "{t:?} not idempotent"
        );
        assert_eq!(again, content);
    }
    seen.sort();
    assert_eq!(seen, MessageType::ALL.to_vec());
}

#[test]
fn changes_never_hold_values() {
    let m = minimiser();
    for (input, _) in GOLDEN {
        let input: Value = serde_json::from_str(input).unwrap();
        let t: MessageType = serde_json::from_value(input["type"].clone()).unwrap();
        let mut content = obj(input["content"].clone());
        let changes = m.apply(t, &mut content, date("2024-06-15")).unwrap();
        let text = serde_json::to_string(&changes).unwrap();
        for needle in [
            "111222333",
            "123456782",
            "Jan de Vries",
            "06-",
            "@",
            "ADHD",
            "3511",
        ] {
            assert!(
                !text.contains(needle),
                "{t:?} changes leak {needle:?}: {text}"
            );
        }
    }
}
