//! The minimisation policy: parsing and validating `config/minimisation.toml` into an
//! immutable [`Policy`], and the per-type field schema that policy paths are checked
//! against.
//!
//! A policy is written by a privacy officer, not a programmer, and a mistake in it either
//! leaks data or silently drops what the wijkteam needs. So loading is strict: every
//! section, setting, path and action is checked, and every error names the file, the line
//! and the path, so that the officer can fix it without reading code.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use crate::message::MessageType;

/// The shipped default policy, compiled in so that a gateway without a config file still
/// minimises.
const DEFAULT_POLICY: &str = include_str!("../../config/minimisation.toml");
const DEFAULT_POLICY_NAME: &str = "config/minimisation.toml (built in)";

/// The fields a well-behaved sender puts in each message type's content, as leaf paths.
///
/// A policy path must be one of these or a group above them (`body.parent_contact`). The
/// schema also lists fields that senders send but must not (`body.diagnoses[]`), so the
/// policy can name them explicitly as `drop`. A misspelt path in the policy would
/// otherwise be a rule that never matches, and the field it meant would fall to `unknown`.
fn schema(t: MessageType) -> &'static [&'static str] {
    match t {
        MessageType::Referral => &[
            "subject.bsn",
            "subject.name",
            "subject.birth_date",
            "body.request_for_help",
            "body.urgency",
            "body.postcode",
            "body.parent_contact.name",
            "body.parent_contact.relationship",
            "body.parent_contact.phone",
            "body.parent_contact.email",
            "body.gp_contact.name",
            "body.gp_contact.phone",
            "body.gp_contact.agb",
            "body.diagnoses[]",
            "body.medication[]",
            "body.medical_history",
            "body.support_profile",
        ],
        MessageType::Consultation => &[
            "subject.bsn",
            "subject.name",
            "subject.birth_date",
            "subject.address",
            "subject.contact",
            "body.question",
            "body.child_age",
        ],
        MessageType::Feedback => &[
            "subject.bsn",
            "body.referral_id",
            "body.status",
            "body.date",
            "body.contact.name",
            "body.contact.phone",
            "body.contact.email",
            "body.note",
            "body.case_notes",
        ],
        MessageType::ConsentUpdate => &[
            "subject.bsn",
            "body.consent_id",
            "body.status",
            "body.effective_at",
            "body.scope_types[]",
            "body.reason",
        ],
    }
}

/// True if `inner` lies strictly inside `outer` (`body.x` inside `body`, `body.x[]`
/// inside `body.x`), on a segment boundary, so `body.note` is not inside `body.no`.
pub(crate) fn is_strictly_inside(inner: &str, outer: &str) -> bool {
    inner.len() > outer.len()
        && inner.starts_with(outer)
        && matches!(inner.as_bytes()[outer.len()], b'.' | b'[')
}

/// What the gateway does with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Keep,
    Drop,
    /// Not an action on a value: the path holds an object whose members are named as
    /// fields of their own (`"body.parent_contact" = "group"`).
    Group,
    /// The path holds a list whose elements are named at `path[]`
    /// (`"body.scope_types" = "list"`, `"body.scope_types[]" = "keep"`).
    List,
    Pseudonymise,
    GeneraliseYear,
    GeneraliseAgeBand,
    Truncate(usize),
    Scrub,
}

impl Action {
    /// Parses an action as written in the policy file; the error says why.
    fn parse(s: &str) -> Result<Action, ActionError> {
        Ok(match s {
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "group" => Action::Group,
            "list" => Action::List,
            "pseudonymise" => Action::Pseudonymise,
            "generalise:year" => Action::GeneraliseYear,
            "generalise:age_band" => Action::GeneraliseAgeBand,
            "scrub" => Action::Scrub,
            _ => match s.strip_prefix("truncate:") {
                Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    match n.parse::<usize>() {
                        Ok(n) if n > 0 => Action::Truncate(n),
                        _ => return Err(ActionError::BadTruncate),
                    }
                }
                Some(_) => return Err(ActionError::BadTruncate),
                None if s == "truncate" => return Err(ActionError::BadTruncate),
                None => return Err(ActionError::Unknown),
            },
        })
    }

    /// Whether the action rewrites a single value (and so needs a single field, not a
    /// group of fields).
    pub(crate) fn is_transform(self) -> bool {
        !matches!(
            self,
            Action::Keep | Action::Drop | Action::Group | Action::List
        )
    }

    /// Whether the rule declares a container (a group or a list) rather than deciding
    /// about a value.
    pub(crate) fn is_container(self) -> bool {
        matches!(self, Action::Group | Action::List)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Keep => f.write_str("keep"),
            Action::Drop => f.write_str("drop"),
            Action::Group => f.write_str("group"),
            Action::List => f.write_str("list"),
            Action::Pseudonymise => f.write_str("pseudonymise"),
            Action::GeneraliseYear => f.write_str("generalise:year"),
            Action::GeneraliseAgeBand => f.write_str("generalise:age_band"),
            Action::Truncate(n) => write!(f, "truncate:{n}"),
            Action::Scrub => f.write_str("scrub"),
        }
    }
}

enum ActionError {
    Unknown,
    BadTruncate,
}

/// What to do with a field the policy does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    Drop,
    Refuse,
}

/// Where a content path stands in a type's policy.
pub(crate) enum Lookup {
    /// The policy decides about the value at this path (never `group` or `list`).
    Rule(Action),
    /// The policy declares an object here whose members it names: descend into it.
    Group,
    /// The policy declares a list here whose elements it names at `path[]`.
    List,
    /// The policy does not name this path.
    Unnamed,
}

/// The validated policy of one message type.
#[derive(Debug, Clone)]
pub(crate) struct TypePolicy {
    pub(crate) unknown: Unknown,
    /// Every named path with its rule, containers (`group`, `list`) included, so that a
    /// lookup is one hash probe.
    rules: HashMap<String, Action>,
    /// The fields the envelope's `consent` block may carry; empty: no block at all.
    pub(crate) consent: Vec<String>,
}

impl TypePolicy {
    /// Looks up a normalised path (array indices written as `[]`). `subject` and `body`
    /// are groups unless the policy decides otherwise (`"subject" = "drop"`).
    pub(crate) fn lookup(&self, path: &str) -> Lookup {
        match self.rules.get(path) {
            Some(Action::Group) => Lookup::Group,
            Some(Action::List) => Lookup::List,
            Some(a) => Lookup::Rule(*a),
            None if is_root(path) => Lookup::Group,
            None => Lookup::Unnamed,
        }
    }
}

/// The two top-level members of message content.
fn is_root(path: &str) -> bool {
    matches!(path, "subject" | "body")
}

/// The fields of the envelope's `consent` block each type carries, all needed: a referral
/// carries the consent's summary (the wijkteam mirrors it and checks feedback against
/// it), feedback and consent updates name the consent they travel under, and an anonymous
/// consultation carries no consent block at all.
fn consent_schema(t: MessageType) -> &'static [&'static str] {
    match t {
        MessageType::Referral => &[
            "id",
            "subject_bsn",
            "types",
            "recipient",
            "valid_from",
            "valid_until",
            "status",
        ],
        MessageType::Feedback | MessageType::ConsentUpdate => &["id"],
        MessageType::Consultation => &[],
    }
}

/// A validated, immutable minimisation policy: for each message type, an action for each
/// field path and what to do with fields it does not name.
#[derive(Debug, Clone)]
pub struct Policy {
    source: String,
    types: BTreeMap<MessageType, TypePolicy>,
}

/// Why a policy file was rejected. Every variant names the file; those about a place in
/// it name the line, and those about a field name the message type and path.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read the minimisation policy: {error}")]
    Io {
        file: String,
        #[source]
        error: std::io::Error,
    },
    #[error("{file}:{line}:{column}: not valid TOML: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}: unknown section [{section}]; the sections are referral, consultation, feedback and consent_update")]
    UnknownSection {
        file: String,
        line: usize,
        section: String,
    },
    #[error("{file}: no section [{message_type}]; every message type needs a policy")]
    MissingSection { file: String, message_type: String },
    #[error("{file}:{line}: `{key}` must be {expected}")]
    WrongShape {
        file: String,
        line: usize,
        key: String,
        expected: &'static str,
    },
    #[error("{file}:{line}: unknown setting `{key}` in [{section}]; a section has only `unknown`, `consent` and `fields`")]
    UnknownSetting {
        file: String,
        line: usize,
        section: String,
        key: String,
    },
    #[error("{file}:{line}: [{section}] does not say what to do with fields it does not name; add unknown = \"drop\" or unknown = \"refuse\"")]
    MissingUnknown {
        file: String,
        line: usize,
        section: String,
    },
    #[error("{file}:{line}: [{section}] unknown = \"{value}\": must be \"drop\" or \"refuse\"")]
    InvalidUnknown {
        file: String,
        line: usize,
        section: String,
        value: String,
    },
    #[error("{file}:{line}: {message_type} field `{path}`: unknown action \"{action}\"; the actions are keep, drop, pseudonymise, generalise:year, generalise:age_band, truncate:N and scrub, and group or list for a container")]
    UnknownAction {
        file: String,
        line: usize,
        message_type: String,
        path: String,
        action: String,
    },
    #[error("{file}:{line}: {message_type} field `{path}`: \"{action}\" needs a positive number of characters, e.g. truncate:4")]
    InvalidTruncate {
        file: String,
        line: usize,
        message_type: String,
        path: String,
        action: String,
    },
    #[error("{file}:{line}: {message_type} has no field `{path}`; its fields are: {known}")]
    UnknownPath {
        file: String,
        line: usize,
        message_type: String,
        path: String,
        known: String,
    },
    #[error("{file}:{line}: {message_type} field `{path}` is a {shape}; \"{action}\" works on a single value (string, number, boolean or null): use drop, or declare it \"{shape}\" and name the fields inside it")]
    ActionOnGroup {
        file: String,
        line: usize,
        message_type: String,
        path: String,
        action: String,
        shape: &'static str,
    },
    #[error("{file}:{line}: {message_type} field `{path}` is {actual}, not a {declared}; declare it \"{}\"", declaration_for(.actual))]
    WrongContainer {
        file: String,
        line: usize,
        message_type: String,
        path: String,
        declared: &'static str,
        actual: &'static str,
    },
    #[error("{file}:{line}: {message_type} field `{path}` lies inside `{container}`, which the policy does not declare; add \"{container}\" = \"{shape}\" so that an object or list is allowed there only with its fields named")]
    UndeclaredContainer {
        file: String,
        line: usize,
        message_type: String,
        path: String,
        container: String,
        shape: &'static str,
    },
    #[error("{file}:{line}: {message_type} field `{path}` is declared \"{shape}\" but no field inside it is named; name its fields, or drop it")]
    EmptyContainer {
        file: String,
        line: usize,
        message_type: String,
        path: String,
        shape: &'static str,
    },
    #[error("{file}:{line}: [{section}] consent names `{field}`, which a {section} does not carry in its consent block; {allowed}")]
    UnknownConsentField {
        file: String,
        line: usize,
        section: String,
        field: String,
        allowed: String,
    },
    #[error("{file}:{line}: [{section}] consent does not name `{field}`, which the receiving gateway needs; name all of {needed}")]
    MissingConsentField {
        file: String,
        line: usize,
        section: String,
        field: String,
        needed: String,
    },
    #[error("{file}:{line}: {message_type} field `{path}` lies inside `{outer}` (line {outer_line}), which already decides about it; name each field once")]
    Overlap {
        file: String,
        line: usize,
        message_type: String,
        path: String,
        outer: String,
        outer_line: usize,
    },
}

impl Policy {
    /// Parses and validates a policy. `source` names the text in error messages (the file
    /// path, normally).
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        let file = source.to_string();
        let line_of = |offset: usize| line_col(text, offset).0;
        let root: Node = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            PolicyError::Syntax {
                file: file.clone(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let Node::Table(sections) = root else {
            return Err(PolicyError::Syntax {
                file,
                line: 1,
                column: 1,
                message: "expected a table of sections".into(),
            });
        };

        let mut types = BTreeMap::new();
        for (name, node) in &sections {
            let line = line_of(name.span().start);
            let Some(t) = MessageType::ALL
                .into_iter()
                .find(|t| t.as_str() == name.get_ref())
            else {
                return Err(PolicyError::UnknownSection {
                    file,
                    line,
                    section: name.get_ref().clone(),
                });
            };
            let Node::Table(settings) = node else {
                return Err(PolicyError::WrongShape {
                    file,
                    line,
                    key: name.get_ref().clone(),
                    expected: "a section ([name]) holding `unknown` and `fields`",
                });
            };
            let section = SectionCtx {
                file: &file,
                text,
                t,
            };
            types.insert(t, section.build(line, settings)?);
        }
        for t in MessageType::ALL {
            if !types.contains_key(&t) {
                return Err(PolicyError::MissingSection {
                    file,
                    message_type: t.as_str().to_string(),
                });
            }
        }
        Ok(Policy {
            source: file,
            types,
        })
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Io {
            file: name.clone(),
            error,
        })?;
        Policy::parse(&text, &name)
    }

    /// The policy shipped in `config/minimisation.toml`, compiled into the binary.
    pub fn default_policy() -> Policy {
        match Policy::parse(DEFAULT_POLICY, DEFAULT_POLICY_NAME) {
            Ok(p) => p,
            // The text is a compile-time constant; the test suite parses it, so this
            // cannot happen in a build that passed its tests.
            Err(e) => panic!("the built-in minimisation policy is invalid: {e}"),
        }
    }

    /// The message types the policy names.
    pub fn types(&self) -> impl Iterator<Item = MessageType> + '_ {
        self.types.keys().copied()
    }

    /// The name of the file (or text) the policy was read from, for logs.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn for_type(&self, t: MessageType) -> &TypePolicy {
        // `parse` guarantees a section for every type, and `Policy` is immutable.
        &self.types[&t]
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct SectionCtx<'a> {
    file: &'a str,
    text: &'a str,
    t: MessageType,
}

impl SectionCtx<'_> {
    fn line(&self, key: &Spanned<String>) -> usize {
        line_col(self.text, key.span().start).0
    }

    fn build(
        &self,
        line: usize,
        settings: &[(Spanned<String>, Node)],
    ) -> Result<TypePolicy, PolicyError> {
        let file = self.file.to_string();
        let section = self.t.as_str().to_string();
        let mut unknown = None;
        let mut consent: Option<(Vec<String>, usize)> = None;
        let mut rules: Vec<(String, Action, usize)> = Vec::new();
        for (key, node) in settings {
            let kline = self.line(key);
            match key.get_ref().as_str() {
                "unknown" => {
                    unknown = Some(match node {
                        Node::Str(s) if s == "drop" => Unknown::Drop,
                        Node::Str(s) if s == "refuse" => Unknown::Refuse,
                        Node::Str(s) => {
                            return Err(PolicyError::InvalidUnknown {
                                file,
                                line: kline,
                                section,
                                value: s.clone(),
                            })
                        }
                        _ => {
                            return Err(PolicyError::WrongShape {
                                file,
                                line: kline,
                                key: format!("{section}.unknown"),
                                expected: "\"drop\" or \"refuse\"",
                            })
                        }
                    });
                }
                "consent" => {
                    let fields = match node {
                        Node::Seq(items) => items
                            .iter()
                            .map(|i| match i {
                                Node::Str(s) => Some(s.clone()),
                                _ => None,
                            })
                            .collect::<Option<Vec<String>>>(),
                        _ => None,
                    };
                    let Some(fields) = fields else {
                        return Err(PolicyError::WrongShape {
                            file,
                            line: kline,
                            key: format!("{section}.consent"),
                            expected: "a list of consent field names, e.g. [\"id\"]",
                        });
                    };
                    consent = Some((fields, kline));
                }
                "fields" => match node {
                    Node::Table(fields) => self.collect_fields("", fields, &mut rules)?,
                    _ => {
                        return Err(PolicyError::WrongShape {
                            file,
                            line: kline,
                            key: format!("{section}.fields"),
                            expected: "a table of field paths and actions ([<type>.fields])",
                        })
                    }
                },
                other => {
                    return Err(PolicyError::UnknownSetting {
                        file,
                        line: kline,
                        section,
                        key: other.to_string(),
                    })
                }
            }
        }
        let Some(unknown) = unknown else {
            return Err(PolicyError::MissingUnknown {
                file,
                line,
                section,
            });
        };
        self.check_rules(&rules)?;
        let consent = self.check_consent(consent, line)?;
        Ok(TypePolicy {
            unknown,
            rules: rules.into_iter().map(|(p, a, _)| (p, a)).collect(),
            consent,
        })
    }

    /// The `consent` list must name exactly the fields this type's consent block
    /// carries: one more would travel unchecked, one fewer and the receiver could not
    /// check the message against consent. Absent means none, which only a consultation
    /// may have.
    fn check_consent(
        &self,
        consent: Option<(Vec<String>, usize)>,
        section_line: usize,
    ) -> Result<Vec<String>, PolicyError> {
        let schema = consent_schema(self.t);
        let (fields, line) = consent.unwrap_or((Vec::new(), section_line));
        let section = self.t.as_str().to_string();
        let listed = |names: &[&str]| {
            if names.is_empty() {
                "a consultation is anonymous and carries no consent block: leave consent out or write consent = []".to_string()
            } else {
                format!("it carries {}", names.join(", "))
            }
        };
        if let Some(extra) = fields.iter().find(|f| !schema.contains(&f.as_str())) {
            return Err(PolicyError::UnknownConsentField {
                file: self.file.to_string(),
                line,
                section,
                field: extra.clone(),
                allowed: listed(schema),
            });
        }
        if let Some(missing) = schema.iter().find(|s| !fields.iter().any(|f| f == *s)) {
            return Err(PolicyError::MissingConsentField {
                file: self.file.to_string(),
                line,
                section,
                field: missing.to_string(),
                needed: schema.join(", "),
            });
        }
        let mut fields = fields;
        fields.sort();
        fields.dedup();
        Ok(fields)
    }

    /// Flattens the fields table: `"body.x" = "keep"` and the unquoted dotted form
    /// `body.x = "keep"` (which TOML reads as nested tables) mean the same.
    fn collect_fields(
        &self,
        prefix: &str,
        fields: &[(Spanned<String>, Node)],
        out: &mut Vec<(String, Action, usize)>,
    ) -> Result<(), PolicyError> {
        for (key, node) in fields {
            let path = if prefix.is_empty() {
                key.get_ref().clone()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            let line = self.line(key);
            match node {
                Node::Table(inner) => self.collect_fields(&path, inner, out)?,
                Node::Str(s) => {
                    let action = Action::parse(s).map_err(|e| {
                        let (file, message_type) =
                            (self.file.to_string(), self.t.as_str().to_string());
                        let (path, action) = (path.clone(), s.clone());
                        match e {
                            ActionError::Unknown => PolicyError::UnknownAction {
                                file,
                                line,
                                message_type,
                                path,
                                action,
                            },
                            ActionError::BadTruncate => PolicyError::InvalidTruncate {
                                file,
                                line,
                                message_type,
                                path,
                                action,
                            },
                        }
                    })?;
                    out.push((path, action, line));
                }
                Node::Other | Node::Seq(_) => {
                    return Err(PolicyError::WrongShape {
                        file: self.file.to_string(),
                        line,
                        key: path,
                        expected: "an action in quotes, e.g. \"keep\"",
                    })
                }
            }
        }
        Ok(())
    }

    /// Every path must be a field (or container of fields) of this type; a value rule
    /// (keep or a transform) needs a single field; `group` and `list` match the shape of
    /// what the schema has there and have fields named inside them; every container a
    /// rule lies in is declared, with its shape; and no rule lies inside a dropped or
    /// single-value field.
    fn check_rules(&self, rules: &[(String, Action, usize)]) -> Result<(), PolicyError> {
        let known = schema(self.t);
        let err_ctx = || (self.file.to_string(), self.t.as_str().to_string());
        let declared: HashMap<&str, Action> = rules
            .iter()
            .filter(|(_, a, _)| a.is_container())
            .map(|(p, a, _)| (p.as_str(), *a))
            .collect();
        for (path, action, line) in rules {
            let is_leaf = known.contains(&path.as_str());
            let shape = container_shape(known, path);
            if !is_leaf && shape.is_none() {
                let (file, message_type) = err_ctx();
                return Err(PolicyError::UnknownPath {
                    file,
                    line: *line,
                    message_type,
                    path: path.clone(),
                    known: known.join(", "),
                });
            }
            if let (Some(shape), true) = (shape, *action == Action::Keep || action.is_transform()) {
                let (file, message_type) = err_ctx();
                return Err(PolicyError::ActionOnGroup {
                    file,
                    line: *line,
                    message_type,
                    path: path.clone(),
                    action: action.to_string(),
                    shape: shape.word(),
                });
            }
            if action.is_container() {
                let want = if *action == Action::List {
                    Shape::List
                } else {
                    Shape::Group
                };
                if shape != Some(want) {
                    let (file, message_type) = err_ctx();
                    return Err(PolicyError::WrongContainer {
                        file,
                        line: *line,
                        message_type,
                        path: path.clone(),
                        declared: want.word(),
                        actual: shape.map_or(SINGLE_VALUE, Shape::article),
                    });
                }
                if !rules.iter().any(|(p, _, _)| is_strictly_inside(p, path)) {
                    let (file, message_type) = err_ctx();
                    return Err(PolicyError::EmptyContainer {
                        file,
                        line: *line,
                        message_type,
                        path: path.clone(),
                        shape: want.word(),
                    });
                }
            }
            if let Some((outer, _, outer_line)) = rules
                .iter()
                .find(|(o, a, _)| !a.is_container() && is_strictly_inside(path, o))
            {
                let (file, message_type) = err_ctx();
                return Err(PolicyError::Overlap {
                    file,
                    line: *line,
                    message_type,
                    path: path.clone(),
                    outer: outer.clone(),
                    outer_line: *outer_line,
                });
            }
            for (container, shape) in containers_of(path) {
                if is_root(container) {
                    continue;
                }
                let ok = match declared.get(container) {
                    Some(Action::Group) => shape == Shape::Group,
                    Some(Action::List) => shape == Shape::List,
                    _ => false,
                };
                if !ok {
                    let (file, message_type) = err_ctx();
                    return Err(PolicyError::UndeclaredContainer {
                        file,
                        line: *line,
                        message_type,
                        path: path.clone(),
                        container: container.to_string(),
                        shape: shape.word(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// How [`PolicyError::WrongContainer`] names a path that is no container.
const SINGLE_VALUE: &str = "a single value";

/// What to write for a path that is `actual` (as [`Shape::article`] or [`SINGLE_VALUE`]
/// names it).
fn declaration_for(actual: &str) -> &'static str {
    if actual == Shape::List.article() {
        "list"
    } else if actual == Shape::Group.article() {
        "group"
    } else {
        "keep"
    }
}

/// What kind of container a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Group,
    List,
}

impl Shape {
    fn word(self) -> &'static str {
        match self {
            Shape::Group => "group",
            Shape::List => "list",
        }
    }
    fn article(self) -> &'static str {
        match self {
            Shape::Group => "a group (an object)",
            Shape::List => "a list",
        }
    }
}

/// The shape of `path` in the schema: a group if a schema path continues it with `.`, a
/// list if with `[`; `None` for a leaf or an unknown path.
fn container_shape(known: &[&str], path: &str) -> Option<Shape> {
    known.iter().find_map(|k| {
        if !is_strictly_inside(k, path) {
            return None;
        }
        Some(match k.as_bytes()[path.len()] {
            b'[' => Shape::List,
            _ => Shape::Group,
        })
    })
}

/// The containers a path lies in, outermost first, with the shape each must have:
/// `body.contacts[].phone` lies in `body` (group), `body.contacts` (list) and
/// `body.contacts[]` (group).
fn containers_of(path: &str) -> Vec<(&str, Shape)> {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'.' if i > 0 => out.push((&path[..i], Shape::Group)),
            b'[' if i > 0 => out.push((&path[..i], Shape::List)),
            _ => {}
        }
    }
    out
}

/// The policy file as a tree that keeps each key's position in the text, so that errors
/// found after parsing (an unknown path, say) can still name their line.
enum Node {
    Str(String),
    Table(Vec<(Spanned<String>, Node)>),
    Seq(Vec<Node>),
    Other,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value::<Node>()?));
        }
        Ok(Node::Table(entries))
    }
}
