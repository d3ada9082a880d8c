//! Validating a value against a parsed schema: every error, with its JSON path.

use serde_json::{Map, Value};

use super::*;

pub(super) type Errors = Vec<(String, String)>;

pub(super) fn push(errors: &mut Errors, path: &str, msg: impl Into<String>) {
    errors.push((path.to_string(), msg.into()));
}

pub(super) fn summarize(errors: &Errors) -> String {
    errors
        .iter()
        .map(|(p, m)| {
            if p.is_empty() {
                m.clone()
            } else {
                format!("{p}: {m}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Node {
    pub(super) fn validate(&self, value: &Value, path: &str, errors: &mut Errors) {
        if self.reject_all {
            push(errors, path, "no value is allowed here");
            return;
        }
        if let Some(types) = &self.types {
            if !types.iter().any(|t| t.matches(value)) {
                let expected: Vec<&str> = types.iter().map(|t| t.described()).collect();
                push(
                    errors,
                    path,
                    format!(
                        "expected {}, got {}",
                        expected.join(" or "),
                        describe(value)
                    ),
                );
                return;
            }
        }
        if let Some(values) = &self.enum_values {
            if !values.iter().any(|c| json_eq(c, value)) {
                let list: Vec<String> = values.iter().map(Value::to_string).collect();
                push(errors, path, format!("must be one of {}", list.join(", ")));
            }
        }
        if let Some(c) = &self.const_value {
            if !json_eq(c, value) {
                push(errors, path, format!("must be equal to {c}"));
            }
        }
        match value {
            Value::String(s) => self.validate_string(s, path, errors),
            Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    self.validate_number(f, path, errors);
                }
            }
            Value::Object(m) if m.is_empty() && self.wants_array() => {
                self.validate_array(&[], path, errors)
            }
            Value::Object(m) => self.validate_object(m, path, errors),
            Value::Array(a) if a.is_empty() && self.wants_object() => {
                self.validate_object(&Map::new(), path, errors)
            }
            Value::Array(a) => self.validate_array(a, path, errors),
            Value::Bool(_) | Value::Null => {}
        }
        for branch in &self.all_of {
            branch.validate(value, path, errors);
        }
        if !self.any_of.is_empty() {
            let mut failures = Vec::new();
            let mut matched = false;
            for (i, branch) in self.any_of.iter().enumerate() {
                let mut errs = Vec::new();
                branch.validate(value, path, &mut errs);
                if errs.is_empty() {
                    matched = true;
                    break;
                }
                failures.push(format!("[{i}] {}", summarize(&errs)));
            }
            if !matched {
                push(
                    errors,
                    path,
                    format!(
                        "must match at least one schema in anyOf: {}",
                        failures.join(" | ")
                    ),
                );
            }
        }
        if !self.one_of.is_empty() {
            let mut failures = Vec::new();
            let mut matched = Vec::new();
            for (i, branch) in self.one_of.iter().enumerate() {
                let mut errs = Vec::new();
                branch.validate(value, path, &mut errs);
                if errs.is_empty() {
                    matched.push(format!("[{i}]"));
                } else {
                    failures.push(format!("[{i}] {}", summarize(&errs)));
                }
            }
            match matched.len() {
                0 => push(
                    errors,
                    path,
                    format!(
                        "must match exactly one schema in oneOf: {}",
                        failures.join(" | ")
                    ),
                ),
                1 => {}
                _ => push(
                    errors,
                    path,
                    format!(
                        "must match exactly one schema in oneOf, but matches {}",
                        matched.join(", ")
                    ),
                ),
            }
        }
        if let Some(not) = &self.not {
            let mut errs = Vec::new();
            not.validate(value, path, &mut errs);
            if errs.is_empty() {
                push(errors, path, "must not match the schema in `not`");
            }
        }
    }

    pub(super) fn validate_string(&self, s: &str, path: &str, errors: &mut Errors) {
        let len = || s.chars().count() as u64;
        if let Some(min) = self.min_length {
            if len() < min {
                push(
                    errors,
                    path,
                    format!(
                        "must be at least {} long",
                        plural(min, "character", "characters")
                    ),
                );
            }
        }
        if let Some(max) = self.max_length {
            if len() > max {
                push(
                    errors,
                    path,
                    format!(
                        "must be at most {} long",
                        plural(max, "character", "characters")
                    ),
                );
            }
        }
        if let Some((source, re)) = &self.pattern {
            if !re.is_match(s) {
                push(errors, path, format!("does not match pattern `{source}`"));
            }
        }
    }

    pub(super) fn validate_number(&self, f: f64, path: &str, errors: &mut Errors) {
        if let Some(min) = self.minimum {
            if self.minimum_exclusive && f <= min {
                push(
                    errors,
                    path,
                    format!("must be greater than {}", fmt_num(min)),
                );
            } else if f < min {
                push(errors, path, format!("must be at least {}", fmt_num(min)));
            }
        }
        if let Some(max) = self.maximum {
            if self.maximum_exclusive && f >= max {
                push(errors, path, format!("must be less than {}", fmt_num(max)));
            } else if f > max {
                push(errors, path, format!("must be at most {}", fmt_num(max)));
            }
        }
        if let Some(min) = self.exclusive_minimum {
            if f <= min {
                push(
                    errors,
                    path,
                    format!("must be greater than {}", fmt_num(min)),
                );
            }
        }
        if let Some(max) = self.exclusive_maximum {
            if f >= max {
                push(errors, path, format!("must be less than {}", fmt_num(max)));
            }
        }
    }

    pub(super) fn validate_object(
        &self,
        map: &Map<String, Value>,
        path: &str,
        errors: &mut Errors,
    ) {
        let count = map.len() as u64;
        if let Some(min) = self.min_properties {
            if count < min {
                push(
                    errors,
                    path,
                    format!(
                        "must have at least {}",
                        plural(min, "property", "properties")
                    ),
                );
            }
        }
        if let Some(max) = self.max_properties {
            if count > max {
                push(
                    errors,
                    path,
                    format!(
                        "must have at most {}",
                        plural(max, "property", "properties")
                    ),
                );
            }
        }
        for name in &self.required {
            if !map.contains_key(name) {
                push(errors, path, format!("missing required property `{name}`"));
            }
        }
        for (name, sub) in &self.properties {
            if let Some(v) = map.get(name) {
                sub.validate(v, &join(path, name), errors);
            }
        }
        for (key, v) in map {
            let mut matched = self.properties.iter().any(|(name, _)| name == key);
            for (_, re, sub) in &self.pattern_properties {
                if re.is_match(key) {
                    matched = true;
                    sub.validate(v, &join(path, key), errors);
                }
            }
            if !matched {
                match &self.additional {
                    None => {}
                    Some(Additional::Forbidden) => push(
                        errors,
                        path,
                        format!("additional property `{key}` is not allowed"),
                    ),
                    Some(Additional::Schema(sub)) => sub.validate(v, &join(path, key), errors),
                }
            }
        }
    }

    pub(super) fn validate_array(&self, items: &[Value], path: &str, errors: &mut Errors) {
        let count = items.len() as u64;
        if let Some(min) = self.min_items {
            if count < min {
                push(
                    errors,
                    path,
                    format!("must have at least {}", plural(min, "item", "items")),
                );
            }
        }
        if let Some(max) = self.max_items {
            if count > max {
                push(
                    errors,
                    path,
                    format!("must have at most {}", plural(max, "item", "items")),
                );
            }
        }
        if self.unique_items {
            for (j, b) in items.iter().enumerate() {
                if let Some(i) = items[..j].iter().position(|a| json_eq(a, b)) {
                    push(
                        errors,
                        path,
                        format!("must not contain duplicates: items [{i}] and [{j}] are equal"),
                    );
                }
            }
        }
        if let Some(sub) = &self.items {
            for (i, v) in items.iter().enumerate() {
                sub.validate(v, &index(path, i), errors);
            }
        }
    }

    pub(super) fn is_valid(&self, value: &Value) -> bool {
        let mut errors = Vec::new();
        self.validate(value, "", &mut errors);
        errors.is_empty()
    }

    // -----------------------------------------------------------------------------------
    // Defaults
    // -----------------------------------------------------------------------------------
}
