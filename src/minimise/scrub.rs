//! The free-text scrubber: finds BSNs, Dutch phone numbers and e-mail addresses in text a
//! person typed, and replaces them with `[bsn]`, `[telefoon]` and `[e-mail]`.
//!
//! It is written by hand rather than with regular expressions because the rules are about
//! context that regexes express badly: a BSN counts only as a whole 9-digit run that passes
//! the elfproef (not digits inside an IBAN or a longer number), a phone number must win over
//! a BSN that hides inside it (`+31 612345678`), and a spaced IBAN must not become a phone
//! number. The same function serves the send side (rewrite) and the receive side (count).
//!
//! Pasted text spells identifiers in ways an ASCII-only matcher misses, so every character
//! is first read through [`normalise`] (one character for one, so positions stay those of
//! the original text): Unicode spaces (no-break, narrow no-break, thin, figure and the
//! other `Zs` spaces, and the invisible zero-width ones) read as a space, Unicode dashes
//! (`Pd`: en and em dash, non-breaking hyphen, …, and the minus sign) as `-`, and
//! fullwidth digits and signs (`０６１２…`, `＠`) as their ASCII forms. And an identifier
//! glued to a word is still one: a BSN or phone number must not touch other *digits*,
//! but letters may touch it (`bsn123456782`, `tel:0612345678`, `BSN:123456782abc`).
//! The same reading serves the receive side, so what arrives is held to the same bar.
//!
//! What it deliberately does not catch: obfuscated addresses (`jan [at] x.nl`), foreign
//! phone numbers, service numbers (0800/0900), and digits of other scripts than Latin
//! and fullwidth (Arabic-Indic, Devanagari, …).

use crate::message::elfproef;

/// How many identifiers of each kind [`scrub`] replaced. Counts, never values, so they may
/// go into logs and refusals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubCounts {
    pub bsn: usize,
    pub phone: usize,
    pub email: usize,
}

impl ScrubCounts {
    pub fn total(&self) -> usize {
        self.bsn + self.phone + self.email
    }
}

const BSN: &str = "[bsn]";
const PHONE: &str = "[telefoon]";
const EMAIL: &str = "[e-mail]";

/// How the scrubber reads one character: Unicode spaces as `' '`, Unicode dashes as `'-'`,
/// fullwidth digits and signs as ASCII; everything else as itself. One character for one,
/// so that a match found in the normalised text covers the same characters of the
/// original.
pub(crate) fn normalise(ch: char) -> char {
    match ch {
        // Zs space separators other than U+0020, the tab, and the invisible characters
        // that pasted text carries between digits (zero-width space, joiners, word
        // joiner, byte order mark).
        '\t'
        | '\u{00A0}'
        | '\u{1680}'
        | '\u{2000}'..='\u{200F}'
        | '\u{202F}'
        | '\u{205F}'
        | '\u{2060}'
        | '\u{3000}'
        | '\u{FEFF}' => ' ',
        // Pd dash punctuation, the soft hyphen and the minus sign.
        '\u{00AD}'
        | '\u{058A}'
        | '\u{05BE}'
        | '\u{1400}'
        | '\u{1806}'
        | '\u{2010}'..='\u{2015}'
        | '\u{2E17}'
        | '\u{2E1A}'
        | '\u{2E3A}'
        | '\u{2E3B}'
        | '\u{2E40}'
        | '\u{301C}'
        | '\u{3030}'
        | '\u{30A0}'
        | '\u{FE31}'
        | '\u{FE32}'
        | '\u{FE58}'
        | '\u{FE63}'
        | '\u{FF0D}'
        | '\u{2212}' => '-',
        // Fullwidth digits, '@', '+', '.', '/', '(' and ')'.
        '\u{FF10}'..='\u{FF19}'
        | '\u{FF20}'
        | '\u{FF0B}'
        | '\u{FF0E}'
        | '\u{FF0F}'
        | '\u{FF08}'
        | '\u{FF09}' => char::from_u32(u32::from(ch) - 0xFEE0).unwrap_or(ch),
        _ => ch,
    }
}

/// Replaces BSNs, Dutch phone numbers and e-mail addresses in `text`.
///
/// Characters are read through [`normalise`] first, so `123\u{00A0}456\u{00A0}782` and
/// `06\u{2013}12345678` are found as well as their ASCII spellings.
///
/// - BSN: 9 digits passing the elfproef, contiguous or grouped with single spaces, dots or
///   hyphens (`123 456 782`, `1234.56.782`), not part of a longer number; letters may
///   touch it (`bsn123456782`). A 9-digit run that fails the elfproef stays: it may be an
///   order number.
/// - phone: `06-12345678`, `0612345678`, `06 12 34 56 78`, `(030) 123 4567`,
///   `+31 6 12345678`, `+31 (0)6 …`, `0031 …`: ten digits starting with `0` and a non-zero
///   area digit, or nine after the country code.
/// - e-mail: `local@domain.tld`.
///
/// Dutch IBANs (`NL91 ABNA 0417 1643 00`, checked with mod 97) are left as they are.
pub fn scrub(text: &str) -> (String, ScrubCounts) {
    let mut counts = ScrubCounts::default();
    // Nothing to find without a digit or an '@' in any spelling: the common case for
    // short notes.
    if !text.chars().any(|ch| {
        let n = normalise(ch);
        n.is_ascii_digit() || n == '@'
    }) {
        return (text.to_string(), counts);
    }
    let original: Vec<char> = text.chars().collect();
    let c: Vec<char> = original.iter().copied().map(normalise).collect();
    let spans = protected_spans(&c);
    let mut out = String::with_capacity(text.len());
    let mut next_span = 0;
    let mut i = 0;
    while i < c.len() {
        if let Some(&(start, end, kind)) = spans.get(next_span) {
            if start == i {
                match kind {
                    Span::Email => {
                        out.push_str(EMAIL);
                        counts.email += 1;
                    }
                    Span::Iban => out.extend(&original[start..end]),
                }
                i = end;
                next_span += 1;
                continue;
            }
        }
        let limit = spans.get(next_span).map_or(c.len(), |s| s.0);
        if starts_number(&c, i) {
            if let Some(end) = match_phone(&c, i, limit) {
                out.push_str(PHONE);
                counts.phone += 1;
                i = end;
                continue;
            }
            if let Some(end) = match_bsn(&c, i, limit) {
                out.push_str(BSN);
                counts.bsn += 1;
                i = end;
                continue;
            }
        }
        out.push(original[i]);
        i += 1;
    }
    (out, counts)
}

#[derive(Clone, Copy)]
enum Span {
    Email,
    Iban,
}

/// An IBAN may start only where a token starts: not inside a word or a number.
fn starts_token(c: &[char], i: usize) -> bool {
    i == 0 || !c[i - 1].is_alphanumeric()
}

/// An IBAN must end where the token ends.
fn ends_token(c: &[char], i: usize) -> bool {
    c.get(i).is_none_or(|ch| !ch.is_alphanumeric())
}

/// A BSN or phone number may start anywhere but inside a number: a letter may touch it
/// (`bsn123456782`), a digit may not (it would be part of a longer number).
fn starts_number(c: &[char], i: usize) -> bool {
    i == 0 || !c[i - 1].is_ascii_digit()
}

/// A BSN or phone number must not be followed by another digit; a letter may follow.
fn ends_number(c: &[char], i: usize) -> bool {
    c.get(i).is_none_or(|ch| !ch.is_ascii_digit())
}

/// E-mail addresses (replaced) and IBANs (kept verbatim), sorted and not overlapping.
/// Found before phone numbers and BSNs so that digits inside them are never matched.
fn protected_spans(c: &[char]) -> Vec<(usize, usize, Span)> {
    let mut spans: Vec<(usize, usize, Span)> = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let found = if c[i] == '@' {
            email_at(c, i).map(|(s, e)| (s, e, Span::Email))
        } else if starts_token(c, i) {
            iban_at(c, i).map(|e| (i, e, Span::Iban))
        } else {
            None
        };
        match found {
            Some((s, e, kind)) if spans.last().is_none_or(|l| l.1 <= s) => {
                spans.push((s, e, kind));
                i = e;
            }
            _ => i += 1,
        }
    }
    spans
}

fn is_local_char(ch: char) -> bool {
    ch.is_alphanumeric() || matches!(ch, '.' | '_' | '%' | '+' | '-' | '\'')
}

fn is_domain_char(ch: char) -> bool {
    ch.is_alphanumeric() || matches!(ch, '.' | '-')
}

/// The address around the `@` at `at`, as a char range.
fn email_at(c: &[char], at: usize) -> Option<(usize, usize)> {
    let mut s = at;
    while s > 0 && is_local_char(c[s - 1]) {
        s -= 1;
    }
    while s < at && matches!(c[s], '.' | '-' | '\'') {
        s += 1;
    }
    let mut e = at + 1;
    while e < c.len() && is_domain_char(c[e]) {
        e += 1;
    }
    // A sentence may end right after the address: "mail jan@x.nl."
    while e > at + 1 && matches!(c[e - 1], '.' | '-') {
        e -= 1;
    }
    if s == at {
        return None;
    }
    let domain: String = c[at + 1..e].iter().collect();
    let labels: Vec<&str> = domain.split('.').collect();
    let tld = labels.last().copied().unwrap_or("");
    let ok = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
        && tld.chars().count() >= 2
        && tld.chars().all(char::is_alphabetic);
    ok.then_some((s, e))
}

/// A Dutch IBAN starting at `i` (`NL91ABNA0417164300`, or grouped by four with spaces),
/// valid under mod 97; returns its end.
fn iban_at(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    let mut compact = String::new();
    let take = |j: &mut usize, pred: fn(char) -> bool, n: usize, compact: &mut String| {
        for _ in 0..n {
            let ch = *c.get(*j).filter(|ch| pred(**ch))?;
            compact.push(ch.to_ascii_uppercase());
            *j += 1;
        }
        Some(())
    };
    take(&mut j, |ch| ch.eq_ignore_ascii_case(&'N'), 1, &mut compact)?;
    take(&mut j, |ch| ch.eq_ignore_ascii_case(&'L'), 1, &mut compact)?;
    take(&mut j, |ch| ch.is_ascii_digit(), 2, &mut compact)?;
    for group in [4, 4, 4, 2] {
        if c.get(j) == Some(&' ') {
            j += 1;
        }
        let pred: fn(char) -> bool = if compact.len() < 8 {
            |ch| ch.is_ascii_alphabetic()
        } else {
            |ch| ch.is_ascii_digit()
        };
        take(&mut j, pred, group, &mut compact)?;
    }
    if !ends_token(c, j) || !iban_mod97(&compact) {
        return None;
    }
    Some(j)
}

fn iban_mod97(iban: &str) -> bool {
    let (head, tail) = iban.split_at(4);
    let mut rem: u32 = 0;
    for ch in tail.chars().chain(head.chars()) {
        let v = match ch.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Separator characters allowed between digit groups of a phone number.
fn is_phone_sep(ch: char) -> bool {
    matches!(ch, ' ' | '-' | '.' | '/' | '(' | ')')
}

/// Digits read by [`read_digits`].
struct Digits {
    digits: String,
    /// Length of each digit group and the separator before it.
    groups: Vec<(usize, char)>,
    end: usize,
}

/// Reads `n` digits starting at `i`, allowing separator runs of at most `max_sep` chars
/// (each accepted by `sep`) between digits. Returns the digits, the group lengths and the
/// end position.
fn read_digits(
    c: &[char],
    mut i: usize,
    limit: usize,
    n: usize,
    max_sep: usize,
    sep: fn(char) -> bool,
) -> Option<Digits> {
    let mut digits = String::new();
    let mut groups: Vec<(usize, char)> = vec![(0, ' ')];
    while digits.len() < n {
        let ch = *c.get(i).filter(|_| i < limit)?;
        if ch.is_ascii_digit() {
            digits.push(ch);
            if let Some(g) = groups.last_mut() {
                g.0 += 1;
            }
            i += 1;
            continue;
        }
        if digits.is_empty() {
            return None;
        }
        let start = i;
        while i < limit && i - start < max_sep && c.get(i).is_some_and(|ch| sep(*ch)) {
            i += 1;
        }
        if i == start || !(i < limit && c.get(i).is_some_and(char::is_ascii_digit)) {
            return None;
        }
        groups.push((0, c[start]));
    }
    Some(Digits {
        digits,
        groups,
        end: i,
    })
}

/// `06-12-2023` followed by more digits looks like a phone number but is a date: groups of
/// 2, 2 and 4 digits joined by the same '-', '.' or '/', forming a plausible day, month
/// and year (19xx or 20xx). Kept narrow so that a phone number cannot hide behind it.
fn looks_like_date(digits: &str, groups: &[(usize, char)]) -> bool {
    let shape =
        matches!(groups, [(2, _), (2, a), (4, b), ..] if a == b && matches!(a, '-' | '.' | '/'));
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|d| d.parse::<u32>().ok());
    shape
        && num(0..2).is_some_and(|d| (1..=31).contains(&d))
        && num(2..4).is_some_and(|m| (1..=12).contains(&m))
        && num(4..6).is_some_and(|c| c == 19 || c == 20)
}

/// A Dutch phone number starting at `i`; returns its end.
fn match_phone(c: &[char], i: usize, limit: usize) -> Option<usize> {
    let starts = |j: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, ch)| c.get(j + k) == Some(&ch))
    };
    let (mut j, international) = if starts(i, "+31") {
        (i + 3, true)
    } else if starts(i, "0031") {
        (i + 4, true)
    } else if starts(i, "(0") {
        (i + 1, false)
    } else if c[i] == '0' {
        (i, false)
    } else {
        return None;
    };
    if international {
        while j < limit && matches!(c[j], ' ' | '-' | '.') {
            j += 1;
        }
        if starts(j, "(0)") {
            j += 3;
            while j < limit && matches!(c[j], ' ' | '-' | '.') {
                j += 1;
            }
        }
        if j >= limit {
            return None;
        }
    }
    let Digits {
        digits,
        groups,
        end,
    } = read_digits(
        c,
        j,
        limit,
        if international { 9 } else { 10 },
        3,
        is_phone_sep,
    )?;
    let d = digits.as_bytes();
    let valid = if international {
        d[0] != b'0'
    } else {
        d[0] == b'0' && d[1] != b'0'
    };
    (valid && ends_number(c, end) && !looks_like_date(&digits, &groups)).then_some(end)
}

/// A BSN starting at `i`: nine digits passing the elfproef, contiguous or grouped with
/// single spaces, dots or hyphens; returns its end.
fn match_bsn(c: &[char], i: usize, limit: usize) -> Option<usize> {
    let Digits {
        digits,
        groups,
        end,
    } = read_digits(c, i, limit, 9, 1, |ch| matches!(ch, ' ' | '.' | '-'))?;
    (ends_number(c, end) && !looks_like_date(&digits, &groups) && elfproef(&digits)).then_some(end)
}
