//! A small JSON Schema subset validator for the `schema` table an APISIX-style Lua plugin
//! module declares, checked the way APISIX's `core.schema.check` (api7/jsonschema, a
//! draft-4/6/7 subset) checks a plugin's configuration.
//!
//! The schema is parsed once, when the plugin module is loaded ([`Schema::parse`]); anything
//! malformed, or a known keyword in a form this subset does not support, is an error naming
//! its schema path (`properties.x.type: unknown type "strin"`). Keywords outside the subset
//! (`format`, `dependencies`, `$id`, APISIX's own extras, ...) are ignored, as are the
//! annotations `description`, `title` and `$comment`.
//!
//! Supported keywords: `type` (a name or an array of names: `object`, `array`, `string`,
//! `number`, `integer`, `boolean`, `null`), `properties`, `required`, `additionalProperties`
//! (boolean or schema), `patternProperties`, `minProperties`, `maxProperties`, `items` (one
//! schema), `minItems`, `maxItems`, `uniqueItems`, `enum`, `const`, `minimum`, `maximum`,
//! `exclusiveMinimum` / `exclusiveMaximum` (the draft-6+ number form, and the draft-4
//! boolean form that modifies `minimum` / `maximum`), `minLength`, `maxLength` (counted in
//! characters, like APISIX's `utf8_len`), `pattern` (an unanchored search, like
//! `ngx.re.find`; written in the `regex` crate's syntax, so PCRE-only constructs such as
//! look-arounds and back-references are rejected at parse time), `default`, `allOf`,
//! `anyOf`, `oneOf`, `not`, and the boolean schemas `true` / `false`.
//!
//! # Lua tables: empty `{}` and `[]` are the same value
//!
//! A Lua table is both an array and a map, and an empty table is neither in particular:
//! `{}` in a Lua schema or configuration may have been converted to JSON as `{}` or as
//! `[]`, depending on the converter and not on what the author meant. So, both when parsing
//! a schema and when validating a value, an empty object is accepted wherever an array is
//! expected and an empty array wherever an object is expected (`type = "array"` accepts `{}`,
//! `type = "object"` accepts `[]`, `required = {}` parses, and `enum`/`const`/`uniqueItems`
//! consider `{}` and `[]` equal). [`Schema::with_defaults`] also normalises such an empty
//! value to the kind its schema expects, so the filled configuration has the intended shape.
//!
//! Numbers get the same treatment for the same reason: Lua (and Luau) numbers are doubles, so
//! `8080` may arrive as `8080.0`. A number with no fractional part is an `integer`, and
//! numbers compare by value (`1 == 1.0`) in `enum`, `const` and `uniqueItems`.
//!
//! # Errors
//!
//! [`Schema::validate`] returns every error rather than the first one (APISIX stops at the
//! first), each with the JSON path of the offending value relative to the configuration:
//! properties joined with `.`, array indexes as `[i]`, and `""` for the configuration itself,
//! e.g. `("ports[2]", "must be at most 65535")`. Errors about the keys of an object
//! (`required`, `additionalProperties: false`, `minProperties`) carry the object's path.
//! Once a value has the wrong `type`, its other keywords are not checked.
//!
//! # Defaults
//!
//! APISIX fills `default`s while it checks. Here that is [`Schema::with_defaults`], which
//! matches APISIX's behaviour: a missing property whose schema has a `default` gets a copy of
//! it, verbatim (APISIX does not descend into an inserted default); properties that are
//! present are descended into, so nested objects and array items get their own missing
//! defaults. `required` is judged on the configuration as given, as in APISIX, where a
//! missing required property is an error even if it has a default: call
//! [`Schema::validate`] on the original value, then [`Schema::with_defaults`]. Through
//! combinators: every `allOf` branch fills; `anyOf` uses the first branch the value
//! satisfies once filled, `oneOf` the only one (APISIX lets any branch it tried fill, even a
//! failing one; a failing branch's defaults are not applied here).

use regex::Regex;
use serde_json::{Map, Value};

/// A schema checked once (when the plugin module is loaded), then used to validate confs.
#[derive(Debug)]
pub struct Schema {
    root: Node,
}

impl Schema {
    /// Parses a schema; errors name the schema path of anything unsupported or malformed
    /// (e.g. `properties.x.type: unknown type "strin"`).
    pub fn parse(schema: &Value) -> Result<Schema, String> {
        Ok(Schema {
            root: Node::parse(schema, "")?,
        })
    }

    /// Validates `value`; every error with its JSON path relative to the conf, e.g.
    /// `("header", "expected a string, got a number")`,
    /// ``("", "missing required property `header`")``, `("ports[2]", "must be at most 65535")`.
    pub fn validate(&self, value: &Value) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        self.root.validate(value, "", &mut errors);
        errors
    }

    /// The value with `default`s of missing properties filled in (APISIX fills defaults
    /// during check).
    pub fn with_defaults(&self, value: &Value) -> Value {
        let mut value = value.clone();
        self.root.fill_defaults(&mut value);
        value
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Object,
    Array,
    String,
    Number,
    Integer,
    Boolean,
    Null,
}

impl Type {
    fn from_name(name: &str) -> Option<Type> {
        Some(match name {
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "number" => Type::Number,
            "integer" => Type::Integer,
            "boolean" => Type::Boolean,
            "null" => Type::Null,
            _ => return None,
        })
    }

    fn described(self) -> &'static str {
        match self {
            Type::Object => "an object",
            Type::Array => "an array",
            Type::String => "a string",
            Type::Number => "a number",
            Type::Integer => "an integer",
            Type::Boolean => "a boolean",
            Type::Null => "null",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match (self, value) {
            (Type::Object, Value::Object(_)) | (Type::Array, Value::Array(_)) => true,
            // An empty Lua table converts to either `{}` or `[]` (see the module docs).
            (Type::Object, Value::Array(a)) => a.is_empty(),
            (Type::Array, Value::Object(m)) => m.is_empty(),
            (Type::String, Value::String(_)) => true,
            (Type::Number, Value::Number(_)) => true,
            (Type::Integer, Value::Number(n)) => is_integer(n),
            (Type::Boolean, Value::Bool(_)) => true,
            (Type::Null, Value::Null) => true,
            _ => false,
        }
    }
}

#[derive(Debug)]
enum Additional {
    Forbidden,
    Schema(Box<Node>),
}

/// One parsed (sub)schema.
#[derive(Debug, Default)]
struct Node {
    /// The boolean schema `false`: nothing is valid.
    reject_all: bool,
    types: Option<Vec<Type>>,
    properties: Vec<(String, Node)>,
    required: Vec<String>,
    additional: Option<Additional>,
    pattern_properties: Vec<(String, Regex, Node)>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    items: Option<Box<Node>>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    enum_values: Option<Vec<Value>>,
    const_value: Option<Value>,
    minimum: Option<f64>,
    /// Draft-4 `exclusiveMinimum: true`: `minimum` itself is excluded.
    minimum_exclusive: bool,
    maximum: Option<f64>,
    maximum_exclusive: bool,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<(String, Regex)>,
    default: Option<Value>,
    all_of: Vec<Node>,
    any_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Box<Node>>,
}

/// `parent.key` for schema and value paths, `key` at the root.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// JSON equality as Lua sees it: numbers by value, and an empty object equals an empty array.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, xv)| y.get(k).is_some_and(|yv| json_eq(xv, yv)))
        }
        (Value::Array(x), Value::Object(y)) | (Value::Object(y), Value::Array(x)) => {
            x.is_empty() && y.is_empty()
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

fn at(path: &str, msg: impl std::fmt::Display) -> String {
    if path.is_empty() {
        format!("{msg}")
    } else {
        format!("{path}: {msg}")
    }
}

/// An object, or an empty array standing for an empty Lua table.
fn as_map<'a>(
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
fn as_list<'a>(value: &'a Value, path: &str, what: &str) -> Result<&'a [Value], String> {
    match value {
        Value::Array(a) => Ok(a),
        Value::Object(m) if m.is_empty() => Ok(&[]),
        other => Err(at(path, format!("must be {what}, got {}", describe(other)))),
    }
}

fn parse_count(value: &Value, path: &str) -> Result<u64, String> {
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

fn parse_number(value: &Value, path: &str) -> Result<f64, String> {
    value.as_f64().ok_or_else(|| at(path, "must be a number"))
}

fn parse_bool(value: &Value, path: &str) -> Result<bool, String> {
    value.as_bool().ok_or_else(|| at(path, "must be a boolean"))
}

fn parse_regex(pattern: &Value, path: &str) -> Result<(String, Regex), String> {
    let Value::String(p) = pattern else {
        return Err(at(path, "must be a string"));
    };
    let re =
        Regex::new(p).map_err(|e| at(path, format!("invalid regular expression {p:?}: {e}")))?;
    Ok((p.clone(), re))
}

fn parse_branches(value: &Value, path: &str) -> Result<Vec<Node>, String> {
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
    fn parse(schema: &Value, path: &str) -> Result<Node, String> {
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

    fn has_object_keywords(&self) -> bool {
        !self.properties.is_empty()
            || !self.required.is_empty()
            || self.additional.is_some()
            || !self.pattern_properties.is_empty()
            || self.min_properties.is_some()
            || self.max_properties.is_some()
    }

    fn has_array_keywords(&self) -> bool {
        self.items.is_some()
            || self.min_items.is_some()
            || self.max_items.is_some()
            || self.unique_items
    }

    fn declares(&self, t: Type) -> bool {
        self.types.as_ref().is_some_and(|ts| ts.contains(&t))
    }

    /// Whether an empty table (`[]`) here is meant as an object.
    fn wants_object(&self) -> bool {
        match &self.types {
            Some(_) => self.declares(Type::Object) && !self.declares(Type::Array),
            None => self.has_object_keywords() && !self.has_array_keywords(),
        }
    }

    /// Whether an empty table (`{}`) here is meant as an array.
    fn wants_array(&self) -> bool {
        match &self.types {
            Some(_) => self.declares(Type::Array) && !self.declares(Type::Object),
            None => self.has_array_keywords() && !self.has_object_keywords(),
        }
    }
}

fn parse_types(v: &Value, path: &str) -> Result<Vec<Type>, String> {
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

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

type Errors = Vec<(String, String)>;

fn push(errors: &mut Errors, path: &str, msg: impl Into<String>) {
    errors.push((path.to_string(), msg.into()));
}

fn summarize(errors: &Errors) -> String {
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
    fn validate(&self, value: &Value, path: &str, errors: &mut Errors) {
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

    fn validate_string(&self, s: &str, path: &str, errors: &mut Errors) {
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

    fn validate_number(&self, f: f64, path: &str, errors: &mut Errors) {
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

    fn validate_object(&self, map: &Map<String, Value>, path: &str, errors: &mut Errors) {
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

    fn validate_array(&self, items: &[Value], path: &str, errors: &mut Errors) {
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

    fn is_valid(&self, value: &Value) -> bool {
        let mut errors = Vec::new();
        self.validate(value, "", &mut errors);
        errors.is_empty()
    }

    // -----------------------------------------------------------------------------------
    // Defaults
    // -----------------------------------------------------------------------------------

    fn fill_defaults(&self, value: &mut Value) {
        if self.reject_all {
            return;
        }
        // Give an empty Lua table the shape this schema expects (see the module docs).
        match value {
            Value::Array(a) if a.is_empty() && self.wants_object() => {
                *value = Value::Object(Map::new())
            }
            Value::Object(m) if m.is_empty() && self.wants_array() => {
                *value = Value::Array(Vec::new())
            }
            _ => {}
        }
        match value {
            Value::Object(map) => {
                for (name, sub) in &self.properties {
                    match map.get_mut(name) {
                        Some(child) => sub.fill_defaults(child),
                        // Inserted verbatim, as APISIX does (it does not descend into it).
                        None => {
                            if let Some(d) = &sub.default {
                                map.insert(name.clone(), d.clone());
                            }
                        }
                    }
                }
                for (key, child) in map.iter_mut() {
                    if self.properties.iter().any(|(name, _)| name == key) {
                        continue;
                    }
                    let mut matched = false;
                    for (_, re, sub) in &self.pattern_properties {
                        if re.is_match(key) {
                            matched = true;
                            sub.fill_defaults(child);
                        }
                    }
                    if let (false, Some(Additional::Schema(sub))) = (matched, &self.additional) {
                        sub.fill_defaults(child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(sub) = &self.items {
                    for item in items {
                        sub.fill_defaults(item);
                    }
                }
            }
            _ => {}
        }
        for branch in &self.all_of {
            branch.fill_defaults(value);
        }
        let filled_if_valid = |branch: &Node, value: &Value| {
            let mut candidate = value.clone();
            branch.fill_defaults(&mut candidate);
            branch.is_valid(&candidate).then_some(candidate)
        };
        if let Some(filled) = self.any_of.iter().find_map(|b| filled_if_valid(b, value)) {
            *value = filled;
        }
        let mut matches = self.one_of.iter().filter_map(|b| filled_if_valid(b, value));
        if let (Some(filled), None) = (matches.next(), matches.next()) {
            *value = filled;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(schema: &Value, value: &Value) -> Vec<(String, String)> {
        Schema::parse(schema).unwrap().validate(value)
    }

    fn e(path: &str, msg: &str) -> (String, String) {
        (path.to_string(), msg.to_string())
    }

    /// (schema, value, expected errors) rows; an empty list means valid.
    fn run(cases: &[(Value, Value, Errors)]) {
        for (i, (schema, value, expected)) in cases.iter().enumerate() {
            assert_eq!(
                &errs(schema, value),
                expected,
                "case {i}: schema {schema}, value {value}"
            );
        }
    }

    #[test]
    fn type_keyword() {
        run(&[
            (json!({"type": "string"}), json!("x"), vec![]),
            (
                json!({"type": "string"}),
                json!(5),
                vec![e("", "expected a string, got a number")],
            ),
            (json!({"type": "number"}), json!(1.5), vec![]),
            (
                json!({"type": "number"}),
                json!("1"),
                vec![e("", "expected a number, got a string")],
            ),
            (json!({"type": "integer"}), json!(3), vec![]),
            (json!({"type": "integer"}), json!(3.0), vec![]),
            (json!({"type": "integer"}), json!(-3), vec![]),
            (
                json!({"type": "integer"}),
                json!(3.5),
                vec![e("", "expected an integer, got a number")],
            ),
            (json!({"type": "boolean"}), json!(false), vec![]),
            (
                json!({"type": "boolean"}),
                json!(null),
                vec![e("", "expected a boolean, got null")],
            ),
            (json!({"type": "null"}), json!(null), vec![]),
            (json!({"type": "object"}), json!({"a": 1}), vec![]),
            (
                json!({"type": "object"}),
                json!([1]),
                vec![e("", "expected an object, got an array")],
            ),
            (json!({"type": "array"}), json!([1]), vec![]),
            (
                json!({"type": "array"}),
                json!({"a": 1}),
                vec![e("", "expected an array, got an object")],
            ),
            (json!({"type": ["string", "array"]}), json!([]), vec![]),
            (json!({"type": ["string", "array"]}), json!("s"), vec![]),
            (
                json!({"type": ["string", "integer"]}),
                json!(true),
                vec![e("", "expected a string or an integer, got a boolean")],
            ),
            (json!({}), json!({"anything": [1, "x"]}), vec![]),
            (json!(true), json!(1), vec![]),
            (
                json!(false),
                json!(1),
                vec![e("", "no value is allowed here")],
            ),
        ]);
    }

    #[test]
    fn empty_lua_tables_are_both_object_and_array() {
        run(&[
            (json!({"type": "array"}), json!({}), vec![]),
            (json!({"type": "object"}), json!([]), vec![]),
            (
                json!({"type": "array", "minItems": 1}),
                json!({}),
                vec![e("", "must have at least 1 item")],
            ),
            (
                json!({"type": "object", "required": ["a"]}),
                json!([]),
                vec![e("", "missing required property `a`")],
            ),
            (json!({"enum": [[]]}), json!({}), vec![]),
            (json!({"const": {}}), json!([]), vec![]),
            (
                json!({"type": "array", "uniqueItems": true}),
                json!([[], {}]),
                vec![e(
                    "",
                    "must not contain duplicates: items [0] and [1] are equal",
                )],
            ),
            // Non-empty ones are not interchangeable.
            (
                json!({"type": "array"}),
                json!({"a": 1}),
                vec![e("", "expected an array, got an object")],
            ),
        ]);
        // ... and in schemas: `properties = {}` / `required = {}` may arrive as `[]` / `{}`.
        let s =
            Schema::parse(&json!({"type": "object", "properties": [], "required": {}})).unwrap();
        assert!(s.validate(&json!({"x": 1})).is_empty());
    }

    #[test]
    fn properties_and_required() {
        let schema = json!({
            "type": "object",
            "properties": {"header": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["header", "n"],
        });
        run(&[
            (
                schema.clone(),
                json!({"header": "x", "n": 1, "extra": true}),
                vec![],
            ),
            (
                schema.clone(),
                json!({"header": 1, "n": 1}),
                vec![e("header", "expected a string, got a number")],
            ),
            (
                schema.clone(),
                json!({}),
                vec![
                    e("", "missing required property `header`"),
                    e("", "missing required property `n`"),
                ],
            ),
            // Properties apply to objects only; a non-object with no `type` passes.
            (
                json!({"properties": {"a": {"type": "string"}}}),
                json!(7),
                vec![],
            ),
        ]);
    }

    #[test]
    fn additional_and_pattern_properties() {
        let closed =
            json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false});
        let typed = json!({"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "integer"}});
        let patterned = json!({
            "type": "object",
            "patternProperties": {"^x-": {"type": "string"}},
            "additionalProperties": false,
        });
        run(&[
            (closed.clone(), json!({"a": 1}), vec![]),
            (
                closed.clone(),
                json!({"a": 1, "b": 2}),
                vec![e("", "additional property `b` is not allowed")],
            ),
            (typed.clone(), json!({"a": "s", "b": 2}), vec![]),
            (
                typed.clone(),
                json!({"a": "s", "b": "2"}),
                vec![e("b", "expected an integer, got a string")],
            ),
            (
                json!({"additionalProperties": true}),
                json!({"z": 1}),
                vec![],
            ),
            (patterned.clone(), json!({"x-id": "1"}), vec![]),
            (
                patterned.clone(),
                json!({"x-id": 1}),
                vec![e("x-id", "expected a string, got a number")],
            ),
            (
                patterned.clone(),
                json!({"y": "1"}),
                vec![e("", "additional property `y` is not allowed")],
            ),
        ]);
    }

    #[test]
    fn min_max_properties() {
        run(&[
            (json!({"minProperties": 1}), json!({"a": 1}), vec![]),
            (
                json!({"minProperties": 1}),
                json!({}),
                vec![e("", "must have at least 1 property")],
            ),
            (
                json!({"maxProperties": 1}),
                json!({"a": 1, "b": 2}),
                vec![e("", "must have at most 1 property")],
            ),
        ]);
    }

    #[test]
    fn array_keywords() {
        let ports =
            json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}});
        run(&[
            (ports.clone(), json!([80, 443]), vec![]),
            (
                ports.clone(),
                json!([80, 443, 70000]),
                vec![e("[2]", "must be at most 65535")],
            ),
            (
                ports.clone(),
                json!([0, "x"]),
                vec![
                    e("[0]", "must be at least 1"),
                    e("[1]", "expected an integer, got a string"),
                ],
            ),
            (
                json!({"minItems": 2}),
                json!([1]),
                vec![e("", "must have at least 2 items")],
            ),
            (json!({"minItems": 2}), json!([1, 2]), vec![]),
            (
                json!({"maxItems": 1}),
                json!([1, 2]),
                vec![e("", "must have at most 1 item")],
            ),
            (json!({"uniqueItems": true}), json!([1, 2, 3]), vec![]),
            (
                json!({"uniqueItems": true}),
                json!([1, 2, 1.0]),
                vec![e(
                    "",
                    "must not contain duplicates: items [0] and [2] are equal",
                )],
            ),
            (
                json!({"uniqueItems": true}),
                json!([{"a": 1}, {"a": 1}]),
                vec![e(
                    "",
                    "must not contain duplicates: items [0] and [1] are equal",
                )],
            ),
            (json!({"uniqueItems": false}), json!([1, 1]), vec![]),
            // Array keywords ignore non-arrays.
            (json!({"minItems": 2}), json!("x"), vec![]),
        ]);
    }

    #[test]
    fn enum_and_const() {
        run(&[
            (json!({"enum": ["a", "b"]}), json!("a"), vec![]),
            (
                json!({"enum": ["a", "b"]}),
                json!("c"),
                vec![e("", r#"must be one of "a", "b""#)],
            ),
            (json!({"enum": [1, 2]}), json!(2.0), vec![]),
            (json!({"enum": [null, true]}), json!(null), vec![]),
            (json!({"const": "x"}), json!("x"), vec![]),
            (json!({"const": {"a": [1]}}), json!({"a": [1.0]}), vec![]),
            (
                json!({"const": 5}),
                json!(6),
                vec![e("", "must be equal to 5")],
            ),
        ]);
    }

    #[test]
    fn numeric_bounds() {
        run(&[
            (json!({"minimum": 1}), json!(1), vec![]),
            (
                json!({"minimum": 1}),
                json!(0),
                vec![e("", "must be at least 1")],
            ),
            (
                json!({"maximum": 1.5}),
                json!(2),
                vec![e("", "must be at most 1.5")],
            ),
            (
                json!({"exclusiveMinimum": 0}),
                json!(0),
                vec![e("", "must be greater than 0")],
            ),
            (json!({"exclusiveMinimum": 0}), json!(0.1), vec![]),
            (
                json!({"exclusiveMaximum": 100}),
                json!(100),
                vec![e("", "must be less than 100")],
            ),
            (json!({"exclusiveMaximum": 100}), json!(99), vec![]),
            // Draft-4 boolean form.
            (
                json!({"minimum": 0, "exclusiveMinimum": true}),
                json!(0),
                vec![e("", "must be greater than 0")],
            ),
            (
                json!({"maximum": 9, "exclusiveMaximum": true}),
                json!(9),
                vec![e("", "must be less than 9")],
            ),
            (
                json!({"maximum": 9, "exclusiveMaximum": false}),
                json!(9),
                vec![],
            ),
            // Schema numbers from Lua arrive as floats.
            (
                json!({"minimum": 1.0, "maximum": 65535.0}),
                json!(65536),
                vec![e("", "must be at most 65535")],
            ),
            (json!({"minimum": 1}), json!("0"), vec![]),
        ]);
    }

    #[test]
    fn string_keywords() {
        run(&[
            (json!({"minLength": 2}), json!("ab"), vec![]),
            (
                json!({"minLength": 2}),
                json!("a"),
                vec![e("", "must be at least 2 characters long")],
            ),
            (
                json!({"maxLength": 1}),
                json!("ab"),
                vec![e("", "must be at most 1 character long")],
            ),
            // Counted in characters, not bytes.
            (json!({"maxLength": 2}), json!("éé"), vec![]),
            (json!({"pattern": "^[a-z]+$"}), json!("abc"), vec![]),
            (
                json!({"pattern": "^[a-z]+$"}),
                json!("ab1"),
                vec![e("", "does not match pattern `^[a-z]+$`")],
            ),
            // Unanchored search, like ngx.re.find.
            (json!({"pattern": "b"}), json!("abc"), vec![]),
            (json!({"minLength": 5}), json!(3), vec![]),
        ]);
    }

    #[test]
    fn combinators() {
        let any = json!({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]});
        let one = json!({"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 10}]});
        run(&[
            (any.clone(), json!("x"), vec![]),
            (any.clone(), json!(3), vec![]),
            (
                any.clone(),
                json!(-1),
                vec![e(
                    "",
                    "must match at least one schema in anyOf: [0] expected a string, got a number | [1] must be at least 0",
                )],
            ),
            (one.clone(), json!(3), vec![]),
            (one.clone(), json!(10.5), vec![]),
            (one.clone(), json!(12), vec![e("", "must match exactly one schema in oneOf, but matches [0], [1]")]),
            (
                one.clone(),
                json!("x"),
                vec![e(
                    "",
                    "must match exactly one schema in oneOf: [0] expected an integer, got a string | [1] expected a number, got a string",
                )],
            ),
            (json!({"allOf": [{"minimum": 1}, {"maximum": 5}]}), json!(3), vec![]),
            (
                json!({"allOf": [{"minimum": 10}, {"maximum": 5}, {"type": "integer"}]}),
                json!(7.5),
                vec![e("", "must be at least 10"), e("", "must be at most 5"), e("", "expected an integer, got a number")],
            ),
            (json!({"not": {"type": "null"}}), json!(1), vec![]),
            (json!({"not": {"type": "null"}}), json!(null), vec![e("", "must not match the schema in `not`")]),
            // Branch errors carry full paths.
            (
                json!({"properties": {"a": {"anyOf": [{"required": ["x"]}, {"required": ["y"]}]}}}),
                json!({"a": {}}),
                vec![e("a", "must match at least one schema in anyOf: [0] a: missing required property `x` | [1] a: missing required property `y`")],
            ),
        ]);
    }

    #[test]
    fn multiple_errors_with_nested_paths() {
        let schema = json!({
            "type": "object",
            "properties": {
                "header": {"type": "string"},
                "ports": {"type": "array", "items": {"type": "integer", "maximum": 65535}},
                "upstream": {
                    "type": "object",
                    "properties": {
                        "nodes": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"host": {"type": "string", "minLength": 1}, "weight": {"type": "integer"}},
                            "required": ["host"],
                        }},
                    },
                    "additionalProperties": false,
                },
            },
            "required": ["header", "name"],
        });
        let value = json!({
            "header": 1,
            "ports": [80, 443, 70000],
            "upstream": {"nodes": [{"host": "a"}, {"host": "", "weight": "x"}, {}], "bogus": 1},
        });
        assert_eq!(
            errs(&schema, &value),
            vec![
                e("", "missing required property `name`"),
                e("header", "expected a string, got a number"),
                e("ports[2]", "must be at most 65535"),
                e(
                    "upstream.nodes[1].host",
                    "must be at least 1 character long"
                ),
                e(
                    "upstream.nodes[1].weight",
                    "expected an integer, got a string"
                ),
                e("upstream.nodes[2]", "missing required property `host`"),
                e("upstream", "additional property `bogus` is not allowed"),
            ]
        );
    }

    #[test]
    fn parse_errors_name_the_schema_path() {
        let cases: &[(Value, &str)] = &[
            (
                json!({"properties": {"x": {"type": "strin"}}}),
                r#"properties.x.type: unknown type "strin""#,
            ),
            (
                json!({"type": ["string", "nope"]}),
                r#"type[1]: unknown type "nope""#,
            ),
            (
                json!({"type": 3}),
                "type: must be a type name, got a number",
            ),
            (json!({"type": []}), "type: must not be empty"),
            (
                json!("object"),
                "must be a schema (an object or a boolean), got a string",
            ),
            (
                json!({"properties": 1}),
                "properties: must be an object of schemas, got a number",
            ),
            (
                json!({"properties": {"a": 1}}),
                "properties.a: must be a schema (an object or a boolean), got a number",
            ),
            (
                json!({"required": ["a", 2]}),
                "required[1]: must be a string",
            ),
            (
                json!({"minLength": -1}),
                "minLength: must be a non-negative integer",
            ),
            (
                json!({"maxItems": 1.5}),
                "maxItems: must be a non-negative integer",
            ),
            (json!({"minimum": "1"}), "minimum: must be a number"),
            (
                json!({"uniqueItems": "yes"}),
                "uniqueItems: must be a boolean",
            ),
            (json!({"enum": []}), "enum: must not be empty"),
            (json!({"enum": "a"}), "enum: must be an array, got a string"),
            (
                json!({"anyOf": [{"type": "x"}]}),
                r#"anyOf[0].type: unknown type "x""#,
            ),
            (json!({"oneOf": []}), "oneOf: must not be empty"),
            (
                json!({"items": [{"type": "string"}]}),
                "items: the tuple form (an array of schemas) is not supported",
            ),
            (
                json!({"items": {"items": {"type": "int"}}}),
                r#"items.items.type: unknown type "int""#,
            ),
            (
                json!({"additionalProperties": {"type": "x"}}),
                r#"additionalProperties.type: unknown type "x""#,
            ),
        ];
        for (schema, expected) in cases {
            assert_eq!(
                Schema::parse(schema).unwrap_err(),
                *expected,
                "schema {schema}"
            );
        }
        let bad_pattern =
            Schema::parse(&json!({"properties": {"p": {"pattern": "(a"}}})).unwrap_err();
        assert!(
            bad_pattern.starts_with(r#"properties.p.pattern: invalid regular expression "(a""#),
            "{bad_pattern}"
        );
        let bad_key = Schema::parse(&json!({"patternProperties": {"[": {}}})).unwrap_err();
        assert!(
            bad_key.starts_with("patternProperties: invalid regular expression"),
            "{bad_key}"
        );
    }

    #[test]
    fn unknown_keywords_and_annotations_are_ignored() {
        let s = json!({
            "type": "object", "description": "d", "title": "t", "$comment": "c",
            "format": "ipv4", "encrypt_fields": ["key"], "dependencies": {"a": ["b"]},
            "properties": {"a": {"type": "string", "x-apisix": true}},
        });
        assert!(errs(&s, &json!({"a": "x"})).is_empty());
    }

    #[test]
    fn defaults_fill_missing_properties_recursively() {
        let schema = Schema::parse(&json!({
            "type": "object",
            "properties": {
                "timeout": {"type": "integer", "default": 3},
                "keepalive": {"type": "boolean", "default": true},
                "given": {"type": "string", "default": "unused"},
                "limits": {
                    "type": "object",
                    "properties": {"rate": {"type": "number", "default": 1.5}, "burst": {"type": "integer", "default": 0}},
                },
                "absent_no_default": {"type": "object", "properties": {"z": {"default": 1}}},
                "headers": {"type": "object", "default": {"x": "y"}, "properties": {"x": {}, "w": {"default": 9}}},
                "nodes": {"type": "array", "items": {"type": "object", "properties": {"weight": {"default": 1}}}},
                "tags": {"type": "array", "default": []},
                "extra": {"type": "object", "additionalProperties": {"type": "object", "properties": {"on": {"default": false}}}},
            },
        }))
        .unwrap();
        let filled = schema.with_defaults(&json!({
            "given": "mine",
            "limits": {"burst": 5},
            "nodes": [{"host": "a"}, {"host": "b", "weight": 7}],
            "extra": {"k": {}},
        }));
        assert_eq!(
            filled,
            json!({
                "timeout": 3,
                "keepalive": true,
                "given": "mine",
                "limits": {"rate": 1.5, "burst": 5},
                // Inserted verbatim, like APISIX: `w` is not filled into the default.
                "headers": {"x": "y"},
                "nodes": [{"host": "a", "weight": 1}, {"host": "b", "weight": 7}],
                "tags": [],
                "extra": {"k": {"on": false}},
            })
        );
        // The input is not modified, and non-objects are returned as they are.
        assert_eq!(schema.with_defaults(&json!(5)), json!(5));
    }

    #[test]
    fn defaults_normalise_empty_lua_tables() {
        let schema = Schema::parse(&json!({
            "type": "object",
            "properties": {
                "conf": {"type": "object", "properties": {"a": {"default": 1}}},
                "list": {"type": "array", "items": {"type": "string"}},
            },
        }))
        .unwrap();
        assert_eq!(
            schema.with_defaults(&json!({"conf": [], "list": {}})),
            json!({"conf": {"a": 1}, "list": []})
        );
        assert_eq!(schema.with_defaults(&json!([])), json!({}));
    }

    #[test]
    fn defaults_through_combinators() {
        let schema = Schema::parse(&json!({
            "type": "object",
            "allOf": [{"properties": {"a": {"default": 1}}}, {"properties": {"b": {"default": 2}}}],
            "anyOf": [
                {"properties": {"kind": {"const": "x"}, "x": {"default": "X"}}, "required": ["kind"]},
                {"properties": {"y": {"default": "Y"}}},
            ],
            "oneOf": [
                {"properties": {"mode": {"enum": ["m1"], "default": "m1"}, "m1": {"default": true}}},
                {"properties": {"mode": {"enum": ["m2"]}}, "required": ["mode"]},
            ],
        }))
        .unwrap();
        assert_eq!(
            schema.with_defaults(&json!({"kind": "x"})),
            json!({"kind": "x", "a": 1, "b": 2, "x": "X", "mode": "m1", "m1": true})
        );
        // First anyOf branch fails, second fills; the second oneOf branch is the only match.
        assert_eq!(
            schema.with_defaults(&json!({"mode": "m2"})),
            json!({"mode": "m2", "a": 1, "b": 2, "y": "Y"})
        );
    }

    #[test]
    fn validate_then_fill_like_apisix() {
        // APISIX checks `required` before it fills defaults, so a required property with a
        // default is still required.
        let schema = Schema::parse(&json!({
            "type": "object",
            "properties": {"key": {"type": "string", "default": "k"}, "n": {"type": "integer", "default": 1}},
            "required": ["key"],
        }))
        .unwrap();
        assert_eq!(
            schema.validate(&json!({})),
            vec![e("", "missing required property `key`")]
        );
        let conf = json!({"key": "mine"});
        assert!(schema.validate(&conf).is_empty());
        assert_eq!(schema.with_defaults(&conf), json!({"key": "mine", "n": 1}));
    }
}
