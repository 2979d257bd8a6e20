//! Kubernetes label selectors: parsing the string form and matching a label set.
//!
//! Grammar (as apimachinery's `labels.Parse`): requirements separated by commas, each one of
//! `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`,
//! `key notin (v1,v2)`, `key>N`, `key<N`. An empty selector matches everything.

use std::collections::BTreeMap;
use std::fmt;

use crate::names::{self, NameError};

/// A parsed label selector: all requirements must hold (logical AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `key` — the label is present.
    Exists,
    /// `!key` — the label is absent.
    DoesNotExist,
    /// `key=v`, `key==v`, `key in (v, …)`.
    In(Vec<String>),
    /// `key!=v`, `key notin (v, …)`; also true when the label is absent.
    NotIn(Vec<String>),
    /// `key>N`: present, an integer, greater than N.
    Gt(i64),
    /// `key<N`: present, an integer, less than N.
    Lt(i64),
}

/// Why a selector string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct ParseError {
    pub selector: String,
    pub reason: Reason,
}

/// What is wrong in a selector, or in one requirement of a structured selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("expected ',' at {0:?}")]
    ExpectedComma(String),
    #[error("expected a label key at {0:?}")]
    ExpectedKey(String),
    #[error("key {key:?}: {error}")]
    Key { key: String, error: NameError },
    #[error("value {value:?}: {error}")]
    Value { value: String, error: NameError },
    #[error("unknown operator {operator:?} after key {key:?}")]
    UnknownOperator { key: String, operator: String },
    #[error("{0:?} is not an integer (needed by '<' and '>')")]
    NotAnInteger(String),
    #[error("expected '(' after in/notin")]
    ExpectedOpen,
    #[error("expected ',' or ')' in value set")]
    ExpectedCommaOrClose,
    #[error("{key}: {operator} needs an integer value, not {value:?}")]
    NeedsInteger {
        key: String,
        operator: String,
        value: String,
    },
    #[error("{key}: {operator} needs exactly one value")]
    NeedsOneValue { key: String, operator: String },
    #[error("{key}: {operator} needs at least one value")]
    NeedsValues { key: String, operator: String },
    #[error("{key}: {operator} takes no values")]
    TakesNoValues { key: String, operator: String },
    #[error("{key}: unknown operator {operator:?}")]
    UnknownOperatorName { key: String, operator: String },
    #[error("{key}: {operator} is not a label selector operator")]
    NotASelectorOperator { key: String, operator: String },
}

impl Selector {
    /// The selector that matches every label set.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// A structured metav1.LabelSelector (`matchLabels` and `matchExpressions`, whose
    /// operators are In, NotIn, Exists and DoesNotExist). Empty, it matches everything; what
    /// that means is the caller's (a workload's selector must select something, a
    /// NetworkPolicy's selects every pod).
    pub fn from_label_selector(
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<Self, Reason> {
        let mut out = Selector::from_match_labels(
            selector
                .match_labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        for e in selector.match_expressions.iter().flatten() {
            if matches!(e.operator.as_str(), "Gt" | "Lt") {
                return Err(Reason::NotASelectorOperator {
                    key: e.key.clone(),
                    operator: e.operator.clone(),
                });
            }
            out.push(Requirement::from_operator(
                &e.key,
                &e.operator,
                e.values.as_deref().unwrap_or_default(),
            )?);
        }
        Ok(out)
    }

    /// Builds a selector from `matchLabels` pairs (each one `key=value`).
    pub fn from_match_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            requirements: labels
                .into_iter()
                .map(|(k, v)| Requirement {
                    key: k.to_string(),
                    op: Op::In(vec![v.to_string()]),
                })
                .collect(),
        }
    }

    pub fn push(&mut self, requirement: Requirement) {
        self.requirements.push(requirement);
    }

    /// Parses the string form used in `?labelSelector=` and `kubectl -l`.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        Parser::new(input).selector().map_err(|reason| ParseError {
            selector: input.to_string(),
            reason,
        })
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &impl Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    /// Builds a requirement from the structured form of `matchExpressions` and node selector
    /// terms: an operator name (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`) and its
    /// values, checked the way the Kubernetes API checks them.
    pub fn from_operator(key: &str, operator: &str, values: &[String]) -> Result<Self, Reason> {
        let (key_, operator_) = (key.to_string(), operator.to_string());
        let one_integer = || match values {
            [v] => v.parse::<i64>().map_err(|_| Reason::NeedsInteger {
                key: key_.clone(),
                operator: operator_.clone(),
                value: v.clone(),
            }),
            _ => Err(Reason::NeedsOneValue {
                key: key_.clone(),
                operator: operator_.clone(),
            }),
        };
        let op = match operator {
            "In" | "NotIn" if values.is_empty() => {
                return Err(Reason::NeedsValues {
                    key: key_.clone(),
                    operator: operator_.clone(),
                });
            }
            "In" => Op::In(values.to_vec()),
            "NotIn" => Op::NotIn(values.to_vec()),
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(Reason::TakesNoValues {
                    key: key_.clone(),
                    operator: operator_.clone(),
                });
            }
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            "Gt" => Op::Gt(one_integer()?),
            "Lt" => Op::Lt(one_integer()?),
            _ => {
                return Err(Reason::UnknownOperatorName {
                    key: key_.clone(),
                    operator: operator_.clone(),
                });
            }
        };
        Ok(Self {
            key: key.to_string(),
            op,
        })
    }

    pub fn matches(&self, labels: &impl Labels) -> bool {
        let value = labels.get(&self.key);
        match (&self.op, value) {
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::In(values), Some(v)) => values.iter().any(|x| x == v),
            (Op::In(_), None) => false,
            (Op::NotIn(values), Some(v)) => !values.iter().any(|x| x == v),
            (Op::NotIn(_), None) => true,
            (Op::Gt(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v > *n),
            (Op::Lt(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v < *n),
            (Op::Gt(_) | Op::Lt(_), None) => false,
        }
    }
}

/// Anything that can look up a label by key.
pub trait Labels {
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl Labels for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        std::collections::HashMap::get(self, key).map(String::as_str)
    }
}

/// The `metadata.labels` object of a JSON document (absent labels = empty set).
impl Labels for serde_json::Map<String, serde_json::Value> {
    fn get(&self, key: &str) -> Option<&str> {
        serde_json::Map::get(self, key).and_then(serde_json::Value::as_str)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let key = &r.key;
            match &r.op {
                Op::Exists => write!(f, "{key}")?,
                Op::DoesNotExist => write!(f, "!{key}")?,
                Op::In(v) if v.len() == 1 => write!(f, "{key}={}", v[0])?,
                Op::In(v) => write!(f, "{key} in ({})", v.join(","))?,
                Op::NotIn(v) if v.len() == 1 => write!(f, "{key}!={}", v[0])?,
                Op::NotIn(v) => write!(f, "{key} notin ({})", v.join(","))?,
                Op::Gt(n) => write!(f, "{key}>{n}")?,
                Op::Lt(n) => write!(f, "{key}<{n}")?,
            }
        }
        Ok(())
    }
}

struct Parser<'a> {
    rest: &'a str,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self { rest: input }
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if let Some(r) = self.rest.strip_prefix(token) {
            self.rest = r;
            true
        } else {
            false
        }
    }

    /// A run of characters that are not operators, separators or white space.
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || "!=<>(),".contains(c))
            .unwrap_or(self.rest.len());
        let (w, r) = self.rest.split_at(end);
        self.rest = r;
        w
    }

    fn selector(&mut self) -> Result<Selector, Reason> {
        let mut selector = Selector::default();
        self.skip_ws();
        if self.rest.is_empty() {
            return Ok(selector);
        }
        loop {
            selector.push(self.requirement()?);
            self.skip_ws();
            if self.rest.is_empty() {
                return Ok(selector);
            }
            if !self.eat(",") {
                return Err(Reason::ExpectedComma(self.rest.to_string()));
            }
        }
    }

    fn key(&mut self) -> Result<String, Reason> {
        let key = self.word();
        if key.is_empty() {
            return Err(Reason::ExpectedKey(self.rest.to_string()));
        }
        names::check_qualified_name(key).map_err(|error| Reason::Key {
            key: key.to_string(),
            error,
        })?;
        Ok(key.to_string())
    }

    fn value(&mut self) -> Result<String, Reason> {
        let value = self.word();
        names::check_label_value(value).map_err(|error| Reason::Value {
            value: value.to_string(),
            error,
        })?;
        Ok(value.to_string())
    }

    fn requirement(&mut self) -> Result<Requirement, Reason> {
        if self.eat("!") {
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.key()?;
        self.skip_ws();
        let op = if self.eat("==") || self.eat("=") {
            Op::In(vec![self.value()?])
        } else if self.eat("!=") {
            Op::NotIn(vec![self.value()?])
        } else if self.eat(">") {
            Op::Gt(self.integer()?)
        } else if self.eat("<") {
            Op::Lt(self.integer()?)
        } else if self.rest.is_empty() || self.rest.starts_with(',') {
            Op::Exists
        } else {
            match self.word() {
                "in" => Op::In(self.value_set()?),
                "notin" => Op::NotIn(self.value_set()?),
                other => {
                    return Err(Reason::UnknownOperator {
                        key,
                        operator: other.to_string(),
                    });
                }
            }
        };
        Ok(Requirement { key, op })
    }

    fn integer(&mut self) -> Result<i64, Reason> {
        let w = self.word();
        w.parse().map_err(|_| Reason::NotAnInteger(w.to_string()))
    }

    fn value_set(&mut self) -> Result<Vec<String>, Reason> {
        if !self.eat("(") {
            return Err(Reason::ExpectedOpen);
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            if self.eat(")") {
                return Ok(values);
            }
            if !self.eat(",") {
                return Err(Reason::ExpectedCommaOrClose);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn operators_build_requirements() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let gt = Requirement::from_operator("cores", "Gt", &v(&["4"])).unwrap();
        assert!(gt.matches(&labels(&[("cores", "8")])));
        assert!(!gt.matches(&labels(&[("cores", "2")])));
        let notin = Requirement::from_operator("zone", "NotIn", &v(&["a"])).unwrap();
        assert!(notin.matches(&labels(&[])));
        assert!(Requirement::from_operator("k", "In", &[]).is_err());
        assert!(Requirement::from_operator("k", "Exists", &v(&["x"])).is_err());
        assert!(Requirement::from_operator("k", "Gt", &v(&["x"])).is_err());
        let err = Requirement::from_operator("k", "Near", &[]).unwrap_err();
        assert!(err.to_string().contains("unknown operator"), "{err}");
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matches_each_operator() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("gen", "7")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db, cache)", true),
            ("missing notin (x)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("gen>5", true),
            ("gen<5", false),
            ("app>5", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app.kubernetes.io/name", false),
        ];
        for (sel, want) in cases {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn rejects_bad_selectors() {
        for bad in [
            "=web",
            "app in web",
            "app in (web",
            "app=we b",
            "app foo bar",
            "Bad_Key/x=y",
            "gen>x",
            "app=web,",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn empty_value_matches_only_the_empty_label() {
        let s = Selector::parse("app=").unwrap();
        assert!(s.matches(&labels(&[("app", "")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[])));
    }

    proptest! {
        #[test]
        fn display_round_trips(
            reqs in proptest::collection::vec(("[a-z]{1,8}", "[a-z0-9]{1,8}", 0u8..6), 0..5)
        ) {
            let mut s = Selector::default();
            for (k, v, op) in reqs {
                let op = match op {
                    0 => Op::Exists,
                    1 => Op::DoesNotExist,
                    2 => Op::In(vec![v]),
                    3 => Op::NotIn(vec![v.clone(), format!("{v}x")]),
                    4 => Op::Gt(v.len() as i64),
                    _ => Op::In(vec![v.clone(), format!("{v}y")]),
                };
                s.push(Requirement { key: k, op });
            }
            let printed = s.to_string();
            prop_assert_eq!(Selector::parse(&printed).unwrap(), s);
        }
    }
}
