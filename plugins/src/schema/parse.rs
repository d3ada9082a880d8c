//! Parsing a schema into [`Node`]s, once, when a plugin module is loaded; errors name
//! the schema path.

use regex::Regex;
use serde_json::{Map, Value};

use super::*;

pub(super) fn at(path: &str, msg: impl std::fmt::Display) -> String {
    if path.is_empty() {
        format!("{msg}")
    } else {
        format!("{path}: {msg}")
    }
}

/// An object, or an empty array standing for an empty Lua table.
pub(super) fn as_map<'a>(
    value: &'a Value,
    path: &str,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match value {
        Value::Object(m) => Ok(Some(m)),
        Value::Array(a) if a.is_empty() => Ok(None),
        other => Err(at(path, format!("must be {what}, got {}", describe(other)))),
    }
}

/// An array, or an empty object standing for an empty Lua table.
pub(super) fn as_list<'a>(value: &'a Value, path: &str, what: &str) -> Result<&'a [Value], String> {
    match value {
        Value::Array(a) => Ok(a),
        Value::Object(m) if m.is_empty() => Ok(&[]),
        other => Err(at(path, format!("must be {what}, got {}", describe(other)))),
    }
}

pub(super) fn parse_count(value: &Value, path: &str) -> Result<u64, String> {
    let bad = || at(path, "must be a non-negative integer");
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u)
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
                    _ => Err(bad()),
                }
            }
        }
        _ => Err(bad()),
    }
}

pub(super) fn parse_number(value: &Value, path: &str) -> Result<f64, String> {
    value.as_f64().ok_or_else(|| at(path, "must be a number"))
}

pub(super) fn parse_bool(value: &Value, path: &str) -> Result<bool, String> {
    value.as_bool().ok_or_else(|| at(path, "must be a boolean"))
}

pub(super) fn parse_regex(pattern: &Value, path: &str) -> Result<(String, Regex), String> {
    let Value::String(p) = pattern else {
        return Err(at(path, "must be a string"));
    };
    let re =
        Regex::new(p).map_err(|e| at(path, format!("invalid regular expression {p:?}: {e}")))?;
    Ok((p.clone(), re))
}

pub(super) fn parse_branches(value: &Value, path: &str) -> Result<Vec<Node>, String> {
    let list = as_list(value, path, "an array of schemas")?;
    if list.is_empty() {
        return Err(at(path, "must not be empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| Node::parse(s, &index(path, i)))
        .collect()
}

impl Node {
    pub(super) fn parse(schema: &Value, path: &str) -> Result<Node, String> {
        let map = match schema {
            Value::Bool(true) => return Ok(Node::default()),
            Value::Bool(false) => {
                return Ok(Node {
                    reject_all: true,
                    ..Node::default()
                })
            }
            other => match as_map(other, path, "a schema (an object or a boolean)")? {
                Some(m) => m,
                None => return Ok(Node::default()),
            },
        };
        let mut node = Node::default();
        for (key, v) in map {
            let kp = join(path, key);
            match key.as_str() {
                "type" => node.types = Some(parse_types(v, &kp)?),
                "properties" => {
                    if let Some(props) = as_map(v, &kp, "an object of schemas")? {
                        for (name, s) in props {
                            node.properties
                                .push((name.clone(), Node::parse(s, &join(&kp, name))?));
                        }
                    }
                }
                "required" => {
                    for (i, r) in as_list(v, &kp, "an array of property names")?
                        .iter()
                        .enumerate()
                    {
                        match r {
                            Value::String(s) => node.required.push(s.clone()),
                            _ => return Err(at(&index(&kp, i), "must be a string")),
                        }
                    }
                }
                "additionalProperties" => {
                    node.additional = match v {
                        Value::Bool(true) => None,
                        Value::Bool(false) => Some(Additional::Forbidden),
                        s => Some(Additional::Schema(Box::new(Node::parse(s, &kp)?))),
                    }
                }
                "patternProperties" => {
                    if let Some(pats) = as_map(v, &kp, "an object of schemas")? {
                        for (p, s) in pats {
                            let (p, re) = parse_regex(&Value::String(p.clone()), &kp)?;
                            let sub = Node::parse(s, &join(&kp, &p))?;
                            node.pattern_properties.push((p, re, sub));
                        }
                    }
                }
                "minProperties" => node.min_properties = Some(parse_count(v, &kp)?),
                "maxProperties" => node.max_properties = Some(parse_count(v, &kp)?),
                "items" => {
                    if matches!(v, Value::Array(a) if !a.is_empty()) {
                        return Err(at(
                            &kp,
                            "the tuple form (an array of schemas) is not supported",
                        ));
                    }
                    node.items = Some(Box::new(Node::parse(v, &kp)?));
                }
                "minItems" => node.min_items = Some(parse_count(v, &kp)?),
                "maxItems" => node.max_items = Some(parse_count(v, &kp)?),
                "uniqueItems" => node.unique_items = parse_bool(v, &kp)?,
                "enum" => {
                    let list = as_list(v, &kp, "an array")?;
                    if list.is_empty() {
                        return Err(at(&kp, "must not be empty"));
                    }
                    node.enum_values = Some(list.to_vec());
                }
                "const" => node.const_value = Some(v.clone()),
                "minimum" => node.minimum = Some(parse_number(v, &kp)?),
                "maximum" => node.maximum = Some(parse_number(v, &kp)?),
                "exclusiveMinimum" => match v {
                    Value::Bool(b) => node.minimum_exclusive = *b,
                    n => node.exclusive_minimum = Some(parse_number(n, &kp)?),
                },
                "exclusiveMaximum" => match v {
                    Value::Bool(b) => node.maximum_exclusive = *b,
                    n => node.exclusive_maximum = Some(parse_number(n, &kp)?),
                },
                "minLength" => node.min_length = Some(parse_count(v, &kp)?),
                "maxLength" => node.max_length = Some(parse_count(v, &kp)?),
                "pattern" => node.pattern = Some(parse_regex(v, &kp)?),
                "default" => node.default = Some(v.clone()),
                "allOf" => node.all_of = parse_branches(v, &kp)?,
                "anyOf" => node.any_of = parse_branches(v, &kp)?,
                "oneOf" => node.one_of = parse_branches(v, &kp)?,
                "not" => node.not = Some(Box::new(Node::parse(v, &kp)?)),
                // Annotations, and keywords outside the subset: ignored.
                _ => {}
            }
        }
        Ok(node)
    }

    pub(super) fn has_object_keywords(&self) -> bool {
        !self.properties.is_empty()
            || !self.required.is_empty()
            || self.additional.is_some()
            || !self.pattern_properties.is_empty()
            || self.min_properties.is_some()
            || self.max_properties.is_some()
    }

    pub(super) fn has_array_keywords(&self) -> bool {
        self.items.is_some()
            || self.min_items.is_some()
            || self.max_items.is_some()
            || self.unique_items
    }

    pub(super) fn declares(&self, t: Type) -> bool {
        self.types.as_ref().is_some_and(|ts| ts.contains(&t))
    }

    /// Whether an empty table (`[]`) here is meant as an object.
    pub(super) fn wants_object(&self) -> bool {
        match &self.types {
            Some(_) => self.declares(Type::Object) && !self.declares(Type::Array),
            None => self.has_object_keywords() && !self.has_array_keywords(),
        }
    }

    /// Whether an empty table (`{}`) here is meant as an array.
    pub(super) fn wants_array(&self) -> bool {
        match &self.types {
            Some(_) => self.declares(Type::Array) && !self.declares(Type::Object),
            None => self.has_array_keywords() && !self.has_object_keywords(),
        }
    }
}

pub(super) fn parse_types(v: &Value, path: &str) -> Result<Vec<Type>, String> {
    let one = |name: &Value, path: &str| -> Result<Type, String> {
        match name {
            Value::String(s) => {
                Type::from_name(s).ok_or_else(|| at(path, format!("unknown type {s:?}")))
            }
            other => Err(at(
                path,
                format!("must be a type name, got {}", describe(other)),
            )),
        }
    };
    match v {
        Value::Array(list) => {
            if list.is_empty() {
                return Err(at(path, "must not be empty"));
            }
            list.iter()
                .enumerate()
                .map(|(i, t)| one(t, &index(path, i)))
                .collect()
        }
        other => Ok(vec![one(other, path)?]),
    }
}
