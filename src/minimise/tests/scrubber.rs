//! Scrubber: BSNs, phone numbers and e-mail addresses found and replaced in free text.

use super::*;
use crate::message::elfproef;

fn scrubbed(s: &str) -> String {
    scrub(s).0
}

#[test]
fn scrub_bsn_forms() {
    assert!(elfproef("111222333") && elfproef("123456782"));
    assert_eq!(scrubbed("bsn 111222333."), "bsn [bsn].");
    assert_eq!(scrubbed("123456782"), "[bsn]");
    assert_eq!(scrubbed("(123 456 782)"), "([bsn])");
    assert_eq!(scrubbed("123.456.782, ok"), "[bsn], ok");
    assert_eq!(scrubbed("nr 1234.56.782"), "nr [bsn]");
    assert_eq!(scrubbed("a 123-456-782 b"), "a [bsn] b");
    let (_, counts) = scrub("111222333 en 123456782");
    assert_eq!(
        counts,
        ScrubCounts {
            bsn: 2,
            phone: 0,
            email: 0
        }
    );
}

#[test]
fn scrub_leaves_non_bsns() {
    assert!(!elfproef("123456789"));
    for s in [
        "order 123456789",
        "123 456 789",
        "1234567820",             // ten digits: not a BSN
        "91234567820",            // inside a longer number
        "NL91ABNA0417164300",     // IBAN, compact
        "NL91 ABNA 0417 1643 00", // IBAN, grouped: not a phone either
        "000000000",
        "12345678",
        "geboren 06-12-2023 om 14:00",
        "prijs 1.234.567",
    ] {
        assert_eq!(scrubbed(s), s, "{s:?} was changed");
        assert_eq!(scrub(s).1.total(), 0, "{s:?}");
    }
}

#[test]
fn scrub_phones() {
    for p in [
        "06-12345678",
        "0612345678",
        "06 12 34 56 78",
        "06 - 1234 5678",
        "+31 6 12345678",
        "+31612345678",
        "+31 (0)6 12345678",
        "0031 6 12345678",
        "0031612345678",
        "030-1234567",
        "020 123 4567",
        "(030) 123 45 67",
        "020/1234567",
    ] {
        let (out, c) = scrub(&format!("bel {p} vandaag"));
        assert_eq!(out, "bel [telefoon] vandaag", "{p:?}");
        assert_eq!(
            c,
            ScrubCounts {
                bsn: 0,
                phone: 1,
                email: 0
            },
            "{p:?}"
        );
        assert_eq!(
            scrubbed(&format!("{p}.")),
            "[telefoon].",
            "{p:?} at end of sentence"
        );
    }
    // A phone number wins over a BSN hidden in it: "612345678" passes the elfproef.
    assert!(elfproef("612345671"));
    assert_eq!(scrubbed("+31 612345671"), "[telefoon]");
    // Ten digits are a phone number, never a BSN.
    assert_eq!(scrubbed("0612345678"), "[telefoon]");
    // A date followed by a time is not a phone number, but a phone number written like a
    // date with an implausible year still is.
    assert_eq!(scrubbed("op 06-12-2023 14:00"), "op 06-12-2023 14:00");
    assert_eq!(scrubbed("bel 06-12-3456 78"), "bel [telefoon]");
    // Not phones: too long, too short, inside a longer number.
    for s in ["06123456789", "061234567", "10612345678", "0012345678"] {
        assert_eq!(scrubbed(s), s);
    }
}

#[test]
fn scrub_emails() {
    assert_eq!(
        scrubbed("mail jan.de-vries+x@example.nl."),
        "mail [e-mail]."
    );
    assert_eq!(scrubbed("<a_b@sub.domain.org>"), "<[e-mail]>");
    assert_eq!(scrubbed("0612345678@sms.example.nl"), "[e-mail]");
    for s in ["twitter @handle", "a@b", "x@y.1"] {
        assert_eq!(scrubbed(s), s);
    }
    let (_, c) = scrub("a@b.nl, c@d.com; 111222333 en 06-12345678");
    assert_eq!(
        c,
        ScrubCounts {
            bsn: 1,
            phone: 1,
            email: 2
        }
    );
}

#[test]
fn scrub_unicode_and_plain_text() {
    assert_eq!(scrubbed(""), "");
    assert_eq!(
        scrubbed("geen nummers hier — één"),
        "geen nummers hier — één"
    );
    assert_eq!(scrubbed("é 111222333 ü"), "é [bsn] ü");
    assert_eq!(scrubbed("é111222333"), "é[bsn]");
}

/// Issue 13: identifiers glued to a word survived the scrubber ("an identifier glued to
/// a word"), and so arrived and were stored.
#[test]
fn scrub_catches_identifiers_glued_to_a_word() {
    for (text, want) in [
        ("bsn123456782", "bsn[bsn]"),
        ("BSN:123456782abc", "BSN:[bsn]abc"),
        ("X123456782", "X[bsn]"),
        ("123456782b", "[bsn]b"),
        ("tel:0612345678", "tel:[telefoon]"),
        ("telnr0612345678", "telnr[telefoon]"),
        ("a0612345678", "a[telefoon]"),
        ("mobiel06-12345678graag", "mobiel[telefoon]graag"),
        ("tel+31612345678", "tel[telefoon]"),
        ("mailm.devries@example.nl", "[e-mail]"),
    ] {
        let (out, counts) = scrub(text);
        assert_eq!(out, want, "{text:?}");
        assert_eq!(counts.total(), 1, "{text:?}");
    }
    // Digits still may not touch: then it is part of a longer number.
    for s in ["1234567820", "01234567820", "0612345678901"] {
        assert_eq!(scrubbed(s), s, "{s:?}");
    }
}

/// Issue 13: "separators other than an ASCII space, dot or hyphen (Unicode spaces and
/// dashes)" let identifiers through.
#[test]
fn scrub_catches_identifiers_with_unicode_separators() {
    let spaces = [
        '\u{00A0}', '\u{202F}', '\u{2009}', '\u{2007}', '\u{2002}', '\u{2003}', '\u{205F}',
        '\u{3000}', '\u{200B}', '\u{2060}',
    ];
    let dashes = [
        '\u{2010}', '\u{2011}', '\u{2012}', '\u{2013}', '\u{2014}', '\u{2212}', '\u{FE63}',
        '\u{FF0D}', '\u{00AD}',
    ];
    for sep in spaces.iter().chain(&dashes) {
        let bsn = format!("bsn 123{sep}456{sep}782 bekend");
        assert_eq!(scrubbed(&bsn), "bsn [bsn] bekend", "{bsn:?}");
        let phone = format!("bel 06{sep}12{sep}34{sep}56{sep}78 vandaag");
        assert_eq!(scrubbed(&phone), "bel [telefoon] vandaag", "{phone:?}");
        let international = format!("bel +31{sep}6{sep}12345678");
        assert_eq!(
            scrubbed(&international),
            "bel [telefoon]",
            "{international:?}"
        );
    }
    // Fullwidth digits and signs.
    assert_eq!(scrubbed("bsn １２３４５６７８２"), "bsn [bsn]");
    assert_eq!(scrubbed("bel ０６－１２３４５６７８"), "bel [telefoon]");
    assert_eq!(scrubbed("＋３１６１２３４５６７８"), "[telefoon]");
    assert_eq!(scrubbed("mail jan＠example.nl"), "mail [e-mail]");
    // What is not an identifier stays, in its own spelling.
    for s in [
        "NL91\u{00A0}ABNA\u{00A0}0417\u{00A0}1643\u{00A0}00",
        "geboren 06\u{2013}12\u{2013}2023 om 14:00",
        "123\u{00A0}456\u{00A0}789",
        "van 9\u{2013}17 uur",
    ] {
        assert_eq!(scrubbed(s), s, "{s:?}");
    }
    // The text around a match keeps its own characters.
    assert_eq!(
        scrubbed("a\u{00A0}b 123\u{202F}456\u{202F}782"),
        "a\u{00A0}b [bsn]"
    );
}
