//! Data minimisation (GDPR art. 5(1)(c), DESIGN.md § Minimisation): the engine that makes a
//! message carry only the fields its type needs, on the send side, and refuses one that
//! carries more, on the receive side.
//!
//! It owns one pipeline over the JSON content of a message (`{"subject": …, "body": …}`):
//! walk the tree, turn each concrete path into its policy path (array indices become `[]`),
//! look the path up in the [`Policy`], and apply the action — or, for a field the policy
//! does not name, drop it or refuse the message. The receive side walks the same tree with
//! the same lookup and only checks. What changed is reported by path and action, never by
//! value, because the report goes into the audit log.
//!
//! Files: `policy.rs` (the policy file and its validation), `actions.rs` (what each action
//! does to a value), `scrub.rs` (the free-text scrubber).

mod actions;
mod policy;
mod scrub;

use std::borrow::Cow;
use std::fmt;

use chrono::NaiveDate;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::message::MessageType;
use actions::{Nonconformity, Outcome};
use policy::{Action, Lookup, TypePolicy, Unknown};

pub use policy::{Policy, PolicyError};
pub use scrub::{scrub, ScrubCounts};

/// Applies a [`Policy`] to message content, with the key for `pseudonymise`.
#[derive(Clone)]
pub struct Minimiser {
    policy: Policy,
    key: hmac::Key,
}

impl fmt::Debug for Minimiser {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minimiser")
            .field("policy", &self.policy.source())
            .finish_non_exhaustive()
    }
}

/// One field that `apply` removed or rewrote.
///
/// `path` is concrete: array elements carry their index in the content as received
/// (`body.diagnoses[0]`), a removed group is one change (`body.support_profile`), and a
/// key that could itself hold personal data (anything but a plain identifier such as
/// `case_notes`) is shown as `<key>`. `action` is the policy action (`scrub`,
/// `truncate:4`), or `drop:unnamed` for a field the policy does not name,
/// `drop:wrong_type` for a value the action cannot handle (an object where text was
/// expected), `drop:invalid` for a date that is not one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub action: String,
}

/// What `apply` changed, in content order. Safe for the audit log: paths, no values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub changed: Vec<Change>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Send side: the policy says `unknown = "refuse"` and the content has fields it does
    /// not name.
    UnnamedFields,
    /// Receive side: the content carries more than the policy allows.
    PolicyViolation,
    /// Either side: the envelope's `consent` block carries what the policy does not name
    /// for this type (or the type carries no consent block at all).
    ConsentBlock,
}

/// What is wrong with one field of a refused message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// The policy does not name the field.
    NotNamed,
    /// The policy says the field is dropped before sending.
    Dropped,
    /// A free-text (`scrub`) field still holds BSNs, phone numbers or e-mail addresses.
    IdentifiersInText {
        bsn: usize,
        phone: usize,
        email: usize,
    },
    /// A `truncate:N` field is longer than N characters.
    TooLong { max: usize },
    /// A `pseudonymise` field is not 64 lowercase hex characters.
    NotPseudonymised,
    /// A `generalise` field still holds more than a year or an age band.
    NotGeneralised,
    /// The value has a type its action cannot produce (an object for free text).
    WrongType,
    /// An object or list under a `keep`: the policy allows only a single value there.
    NestedValue,
    /// Something other than an object where the policy declares a group.
    NotAGroup,
    /// Something other than a list where the policy declares a list.
    NotAList,
    /// The envelope carries a `consent` block although its type carries none.
    ConsentNotCarried,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViolationKind::NotNamed => f.write_str("not named by the policy"),
            ViolationKind::Dropped => f.write_str("the policy drops this field"),
            ViolationKind::IdentifiersInText { bsn, phone, email } => write!(
                f,
                "free text still holds identifiers ({bsn} BSN, {phone} phone, {email} e-mail)"
            ),
            ViolationKind::TooLong { max } => write!(f, "longer than {max} characters"),
            ViolationKind::NotPseudonymised => f.write_str("not a pseudonym"),
            ViolationKind::NotGeneralised => f.write_str("not generalised"),
            ViolationKind::WrongType => f.write_str("unexpected type of value"),
            ViolationKind::NestedValue => f.write_str(
                "an object or list where the policy keeps only a single value (string, number, boolean or null)",
            ),
            ViolationKind::NotAGroup => f.write_str("not an object, which the policy declares here"),
            ViolationKind::NotAList => f.write_str("not a list, which the policy declares here"),
            ViolationKind::ConsentNotCarried => {
                f.write_str("this message type carries no consent block")
            }
        }
    }
}

/// One offending field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    pub kind: ViolationKind,
}

/// A message the policy does not let through. `paths` lists the offending fields (same
/// path form as [`Change`]); `violations` says what is wrong with each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRefusal {
    pub message_type: MessageType,
    pub reason: RefusalReason,
    pub paths: Vec<String>,
    pub violations: Vec<Violation>,
}

impl PolicyRefusal {
    /// Whether an object or list was found where the policy keeps a single value: the
    /// shape of a bypass attempt, which gets a code of its own.
    pub fn has_nested_value(&self) -> bool {
        self.violations
            .iter()
            .any(|v| v.kind == ViolationKind::NestedValue)
    }

    fn new(
        message_type: MessageType,
        reason: RefusalReason,
        violations: Vec<Violation>,
    ) -> PolicyRefusal {
        PolicyRefusal {
            message_type,
            reason,
            paths: violations.iter().map(|v| v.path.clone()).collect(),
            violations,
        }
    }
}

impl std::error::Error for PolicyRefusal {}

impl fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.message_type.as_str();
        match self.reason {
            RefusalReason::UnnamedFields => write!(
                f,
                "{t} refused: the minimisation policy refuses fields it does not name: {}",
                self.paths.join(", ")
            ),
            RefusalReason::PolicyViolation | RefusalReason::ConsentBlock => {
                let what = if self.reason == RefusalReason::ConsentBlock {
                    "its consent block"
                } else {
                    "it"
                };
                write!(
                    f,
                    "{t} refused: {what} carries more than the minimisation policy allows: "
                )?;
                for (i, v) in self.violations.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{} ({})", v.path, v.kind)?;
                }
                Ok(())
            }
        }
    }
}

/// Both walks keep two paths: the policy path (`body.contacts[].phone`) to look up, and the
/// concrete path (`body.contacts[1].phone`) to report.
struct Paths {
    policy: String,
    shown: String,
}

impl Paths {
    fn root() -> Paths {
        Paths {
            policy: String::new(),
            shown: String::new(),
        }
    }

    /// The paths of `key` under these. `None` for a key that cannot be a policy path
    /// segment (empty, or holding `.`, `[` or `]`): it is never named, whatever it spells.
    fn key(&self, key: &str) -> (Option<String>, String) {
        let sep = if self.policy.is_empty() { "" } else { "." };
        let plain = !key.is_empty() && !key.contains(['.', '[', ']']);
        let policy = plain.then(|| format!("{}{sep}{key}", self.policy));
        (policy, format!("{}{sep}{}", self.shown, shown_key(key)))
    }

    fn index(&self, i: usize) -> Paths {
        Paths {
            policy: format!("{}[]", self.policy),
            shown: format!("{}[{i}]", self.shown),
        }
    }
}

/// A key as it may appear in a change or refusal. Keys are chosen by the sender and could
/// themselves be personal data (`"Jan de Vries": …`, `"123456782": …`), so only plain
/// identifiers without long digit runs are shown.
fn shown_key(key: &str) -> Cow<'_, str> {
    let mut run = 0usize;
    let mut max_run = 0usize;
    for b in key.bytes() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        max_run = max_run.max(run);
    }
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && max_run < 4;
    if plain {
        Cow::Borrowed(key)
    } else {
        Cow::Borrowed("<key>")
    }
}

impl Minimiser {
    /// `pseudonym_key` keys the HMAC of `pseudonymise`; it must be secret and stable, or
    /// pseudonyms stop matching across messages. Use at least 32 random bytes.
    pub fn new(policy: Policy, pseudonym_key: &[u8]) -> Minimiser {
        Minimiser {
            policy,
            key: hmac::Key::new(hmac::HMAC_SHA256, pseudonym_key),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Send side: rewrite `content` in place per the policy. `on` is the message date, for
    /// age bands. Returns what changed (paths and action names, never values), or a
    /// refusal if the type's policy says `unknown = "refuse"` and an unnamed field is
    /// present — in which case `content` is left untouched.
    pub fn apply(
        &self,
        t: MessageType,
        content: &mut Map<String, Value>,
        on: NaiveDate,
    ) -> Result<Changes, PolicyRefusal> {
        let tp = self.policy.for_type(t);
        if tp.unknown == Unknown::Refuse {
            let mut unnamed = Vec::new();
            inspect_map(tp, content, &Paths::root(), true, &mut unnamed);
            if !unnamed.is_empty() {
                return Err(PolicyRefusal::new(t, RefusalReason::UnnamedFields, unnamed));
            }
        }
        let mut walk = Apply {
            tp,
            key: &self.key,
            on,
            changes: Vec::new(),
        };
        walk.map(content, &Paths::root());
        Ok(Changes {
            changed: walk.changes,
        })
    }

    /// Receive side: check `content` without changing it. Refuses a field the policy does
    /// not allow (dropped or unnamed), a free-text field that still holds a BSN, phone
    /// number or e-mail address, a truncated field longer than its limit, a pseudonymised
    /// field that is not 64 hex characters, and a generalised field that is not a year or
    /// age band. Content that `apply` produced always passes.
    pub fn check(&self, t: MessageType, content: &Map<String, Value>) -> Result<(), PolicyRefusal> {
        let mut violations = Vec::new();
        inspect_map(
            self.policy.for_type(t),
            content,
            &Paths::root(),
            false,
            &mut violations,
        );
        if violations.is_empty() {
            Ok(())
        } else {
            Err(PolicyRefusal::new(
                t,
                RefusalReason::PolicyViolation,
                violations,
            ))
        }
    }
}

impl Minimiser {
    /// Both sides: the envelope's `consent` block may carry only the fields the policy
    /// names for its type, and a type for which it names none (the anonymous
    /// consultation) carries no block at all. The sending gateway builds the block itself
    /// and checks it here before signing; the receiving gateway checks what arrived.
    pub fn check_consent(
        &self,
        t: MessageType,
        consent: Option<&Value>,
    ) -> Result<(), PolicyRefusal> {
        let allowed = &self.policy.for_type(t).consent;
        let violations: Vec<Violation> = match consent {
            None => Vec::new(),
            Some(_) if allowed.is_empty() => vec![Violation {
                path: "consent".into(),
                kind: ViolationKind::ConsentNotCarried,
            }],
            Some(Value::Object(block)) => block
                .iter()
                .filter_map(|(key, value)| {
                    let shown = format!("consent.{}", shown_key(key));
                    if !allowed.iter().any(|a| a == key) {
                        Some(Violation {
                            path: shown,
                            kind: ViolationKind::NotNamed,
                        })
                    } else if key != "types" && is_container(value) {
                        // Only the summary's scope is a list; its items are checked
                        // with the summary itself.
                        Some(Violation {
                            path: shown,
                            kind: ViolationKind::NestedValue,
                        })
                    } else {
                        None
                    }
                })
                .collect(),
            Some(_) => vec![Violation {
                path: "consent".into(),
                kind: ViolationKind::NotAGroup,
            }],
        };
        if violations.is_empty() {
            Ok(())
        } else {
            Err(PolicyRefusal::new(
                t,
                RefusalReason::ConsentBlock,
                violations,
            ))
        }
    }
}

/// The send-side walk.
struct Apply<'a> {
    tp: &'a TypePolicy,
    key: &'a hmac::Key,
    on: NaiveDate,
    changes: Vec<Change>,
}

impl Apply<'_> {
    fn record(&mut self, path: String, action: impl Into<String>) {
        self.changes.push(Change {
            path,
            action: action.into(),
        });
    }

    /// Processes the members of an object in place.
    fn map(&mut self, map: &mut Map<String, Value>, at: &Paths) {
        map.retain(|key, value| {
            let (policy, shown) = at.key(key);
            let paths = Paths {
                policy: policy.unwrap_or_default(),
                shown,
            };
            self.value(value, &paths)
        });
    }

    /// Processes one value at `at`; false if it must be removed from its parent.
    fn value(&mut self, value: &mut Value, at: &Paths) -> bool {
        let lookup = if at.policy.is_empty() {
            Lookup::Unnamed
        } else {
            self.tp.lookup(&at.policy)
        };
        match lookup {
            // `keep` passes a single value only: an object or list under a kept field
            // would carry whatever the sender put in it (`subject.name: {"diagnosis": …}`).
            Lookup::Rule(Action::Keep) if is_container(value) => {
                self.record(at.shown.clone(), "drop:wrong_type");
                false
            }
            Lookup::Rule(Action::Keep) => true,
            Lookup::Rule(Action::Drop) => {
                self.record(at.shown.clone(), "drop");
                false
            }
            Lookup::Rule(action) => match actions::transform(action, value, self.key, self.on) {
                Outcome::Unchanged => true,
                Outcome::Replaced(new) => {
                    *value = new;
                    self.record(at.shown.clone(), action.to_string());
                    true
                }
                Outcome::Remove(why) => {
                    self.record(at.shown.clone(), why);
                    false
                }
            },
            // A group whose every member was removed goes too: an empty
            // `parent_contact` says nothing the receiver needs.
            Lookup::Group => match value {
                Value::Object(m) => {
                    let before = m.len();
                    self.map(m, at);
                    !(m.is_empty() && before > 0)
                }
                _ => {
                    self.record(at.shown.clone(), "drop:wrong_type");
                    false
                }
            },
            Lookup::List => match value {
                Value::Array(items) => {
                    let before = items.len();
                    let mut i = 0;
                    items.retain_mut(|item| {
                        let keep = self.value(item, &at.index(i));
                        i += 1;
                        keep
                    });
                    !(items.is_empty() && before > 0)
                }
                _ => {
                    self.record(at.shown.clone(), "drop:wrong_type");
                    false
                }
            },
            Lookup::Unnamed => {
                self.record(at.shown.clone(), "drop:unnamed");
                false
            }
        }
    }
}

/// An object or a list: what only a declared group or list may hold.
fn is_container(value: &Value) -> bool {
    matches!(value, Value::Object(_) | Value::Array(_))
}

/// The receive-side walk (and, with `unnamed_only`, the send-side pre-check for
/// `unknown = "refuse"`): collects violations without changing anything.
fn inspect_map(
    tp: &TypePolicy,
    map: &Map<String, Value>,
    at: &Paths,
    unnamed_only: bool,
    out: &mut Vec<Violation>,
) {
    for (key, value) in map {
        let (policy, shown) = at.key(key);
        let paths = Paths {
            policy: policy.unwrap_or_default(),
            shown,
        };
        inspect_value(tp, value, &paths, unnamed_only, out);
    }
}

fn inspect_value(
    tp: &TypePolicy,
    value: &Value,
    at: &Paths,
    unnamed_only: bool,
    out: &mut Vec<Violation>,
) {
    let lookup = if at.policy.is_empty() {
        Lookup::Unnamed
    } else {
        tp.lookup(&at.policy)
    };
    let kind = match lookup {
        // The send-side pre-check of `unknown = "refuse"`: an object under a kept field
        // holds members nobody named, so it counts as unnamed too.
        Lookup::Rule(Action::Keep) if is_container(value) => Some(ViolationKind::NestedValue),
        Lookup::Rule(_) if unnamed_only => None,
        Lookup::Rule(Action::Drop) => Some(ViolationKind::Dropped),
        Lookup::Rule(action) => actions::conforms(action, value).err().map(|n| match n {
            Nonconformity::WrongType => ViolationKind::WrongType,
            Nonconformity::Identifiers(c) => ViolationKind::IdentifiersInText {
                bsn: c.bsn,
                phone: c.phone,
                email: c.email,
            },
            Nonconformity::TooLong(max) => ViolationKind::TooLong { max },
            Nonconformity::NotPseudonym => ViolationKind::NotPseudonymised,
            Nonconformity::NotGeneralised => ViolationKind::NotGeneralised,
        }),
        Lookup::Group => match value {
            Value::Object(m) => {
                inspect_map(tp, m, at, unnamed_only, out);
                None
            }
            _ => Some(ViolationKind::NotAGroup),
        },
        Lookup::List => match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    inspect_value(tp, item, &at.index(i), unnamed_only, out);
                }
                None
            }
            _ => Some(ViolationKind::NotAList),
        },
        Lookup::Unnamed => Some(ViolationKind::NotNamed),
    };
    if let Some(kind) = kind {
        out.push(Violation {
            path: at.shown.clone(),
            kind,
        });
    }
}

#[cfg(test)]
mod tests;
