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

mod defaults;
mod parse;
mod validate;

#[cfg(test)]
mod tests;
