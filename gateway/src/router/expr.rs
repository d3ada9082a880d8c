//! lua-resty-expr, as APISIX uses it for a route's `vars` field.
//!
//! A `vars` value is a JSON array. Its elements are ANDed unless the first
//! element is one of the logic strings `"AND"`, `"OR"`, `"!AND"`, `"!OR"`.
//! Each remaining element is either a term — `[var, op, value]` or
//! `[var, "!", op, value]` — or a nested group of the same shape.
//!
//! Everything that can be checked up front (variable names, operators,
//! regexes, CIDRs, value types) is checked in [`Expr::compile`], which
//! reports *every* problem with its JSON path, so evaluation never fails.

use std::net::IpAddr;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::vars::{RequestView, Var};

/// A compiled `vars` expression.
#[derive(Debug, Clone)]
pub struct Expr {
    root: Node,
}

/// One node of the expression tree.
#[derive(Debug, Clone)]
enum Node {
    /// Logical AND of the children (true when empty, as in lua-resty-expr).
    All(Vec<Node>),
    /// Logical OR of the children.
    Any(Vec<Node>),
    /// Negation of a group (`"!AND"` / `"!OR"`).
    Not(Box<Node>),
    /// A single comparison.
    Term(Term),
}

/// `[var, op, value]`, optionally negated with `"!"`.
#[derive(Debug, Clone)]
struct Term {
    var: Var,
    negate: bool,
    op: Op,
}

/// A scalar comparison operand, kept in the form it will be compared in.
#[derive(Debug, Clone)]
enum Scalar {
    /// Compared as text (strings, and booleans as `"true"` / `"false"`).
    Str(String),
    /// Compared numerically (the variable is parsed as `f64`).
    Num(f64),
}

impl Scalar {
    /// Whether the variable's value equals this operand.
    fn matches(&self, value: &str) -> bool {
        match self {
            Scalar::Str(s) => s == value,
            Scalar::Num(n) => value.trim().parse::<f64>().is_ok_and(|v| v == *n),
        }
    }
}

/// A compiled operator with its operand.
#[derive(Debug, Clone)]
enum Op {
    /// `==` against a scalar.
    Eq(Scalar),
    /// `~=` against a scalar.
    Ne(Scalar),
    /// `== null`: true when the variable is missing (lua-resty-expr maps
    /// JSON null to nil).
    EqNull,
    /// `~= null`: true when the variable is present.
    NeNull,
    /// `>`.
    Gt(f64),
    /// `<`.
    Lt(f64),
    /// `>=`.
    Ge(f64),
    /// `<=`.
    Le(f64),
    /// `~~` (case-sensitive) and `~*` (case-insensitive): unanchored regex.
    Regex(Regex),
    /// `in`: the value equals one of the operands.
    In(Vec<Scalar>),
    /// `has`: the value contains the operand as a substring.
    Has(String),
    /// `ipmatch`: the value is an IP inside one of the networks.
    IpMatch(Vec<IpNet>),
}

/// A compile error: JSON path relative to the `vars` value (e.g. `"[1][2]"`)
/// and a message.
pub type CompileError = (String, String);

impl Expr {
    /// Compiles the JSON of a route's `vars` field, collecting every error
    /// found together with its path inside `vars`.
    pub fn compile(json: &Value) -> Result<Expr, Vec<CompileError>> {
        let mut errors = Vec::new();
        let root = match json {
            Value::Array(items) => compile_group(items, "", &mut errors),
            other => {
                errors.push((
                    String::new(),
                    format!("must be an array of terms, got {}", type_name(other)),
                ));
                None
            }
        };
        match root {
            Some(root) if errors.is_empty() => Ok(Expr { root }),
            _ => Err(errors),
        }
    }

    /// Evaluates the expression against a request. Never fails; a missing
    /// variable simply makes most comparisons false.
    pub fn eval(&self, req: &RequestView<'_>) -> bool {
        eval_node(&self.root, req)
    }
}

/// Compiles a group (`[logic?, item, item, ...]`) found at `path`.
fn compile_group(items: &[Value], path: &str, errors: &mut Vec<CompileError>) -> Option<Node> {
    let (logic, start) = match items.first().and_then(Value::as_str) {
        Some(s @ ("AND" | "OR" | "!AND" | "!OR")) => (s, 1),
        // Only reachable at the top level: nested arrays starting with a
        // non-logic string are classified as terms by `is_group`.
        Some(other) => {
            errors.push((
                path.to_owned(),
                format!(
                    "expected a list of terms or a logic operator (AND, OR, !AND, !OR) first, \
                     got `{other}`; wrap a single term as [[var, op, value]]"
                ),
            ));
            return None;
        }
        None => ("AND", 0),
    };
    let mut children = Vec::with_capacity(items.len() - start);
    let mut ok = true;
    for (i, item) in items.iter().enumerate().skip(start) {
        let item_path = format!("{path}[{i}]");
        let child = match item {
            Value::Array(inner) if is_group(inner) => compile_group(inner, &item_path, errors),
            Value::Array(inner) => compile_term(inner, &item_path, errors).map(Node::Term),
            other => {
                errors.push((
                    item_path,
                    format!("expected a term or group (array), got {}", type_name(other)),
                ));
                None
            }
        };
        match child {
            Some(c) => children.push(c),
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    Some(match logic {
        "OR" => Node::Any(children),
        "!AND" => Node::Not(Box::new(Node::All(children))),
        "!OR" => Node::Not(Box::new(Node::Any(children))),
        _ => Node::All(children),
    })
}

/// Whether an array is a group rather than a term: it starts with a logic
/// operator or with a nested array.
fn is_group(items: &[Value]) -> bool {
    match items.first() {
        Some(Value::Array(_)) => true,
        Some(Value::String(s)) => matches!(s.as_str(), "AND" | "OR" | "!AND" | "!OR"),
        _ => false,
    }
}

/// Compiles a term `[var, op, value]` / `[var, "!", op, value]` at `path`.
fn compile_term(items: &[Value], path: &str, errors: &mut Vec<CompileError>) -> Option<Term> {
    let negate = items.len() == 4 && items.get(1).and_then(Value::as_str) == Some("!");
    if items.len() != 3 && !negate {
        let msg = if items.len() == 4 {
            "a 4-element term must be [var, \"!\", op, value]".to_owned()
        } else {
            format!(
                "a term must be [var, op, value] or [var, \"!\", op, value], got {} elements",
                items.len()
            )
        };
        errors.push((path.to_owned(), msg));
        return None;
    }
    let (op_idx, value_idx) = if negate { (2, 3) } else { (1, 2) };
    let before = errors.len();

    let var = match &items[0] {
        Value::String(name) => Var::parse(name)
            .map_err(|e| errors.push((format!("{path}[0]"), e)))
            .ok(),
        other => {
            errors.push((
                format!("{path}[0]"),
                format!("variable name must be a string, got {}", type_name(other)),
            ));
            None
        }
    };
    let op_path = format!("{path}[{op_idx}]");
    let value_path = format!("{path}[{value_idx}]");
    let op = match &items[op_idx] {
        Value::String(op) => compile_op(op, &items[value_idx], &op_path, &value_path, errors),
        other => {
            errors.push((
                op_path,
                format!("operator must be a string, got {}", type_name(other)),
            ));
            None
        }
    };
    if errors.len() != before {
        return None;
    }
    Some(Term {
        var: var?,
        negate,
        op: op?,
    })
}

/// Compiles operator `op` with operand `value`; errors about the operator go
/// to `op_path`, errors about the operand to `value_path`.
fn compile_op(
    op: &str,
    value: &Value,
    op_path: &str,
    value_path: &str,
    errors: &mut Vec<CompileError>,
) -> Option<Op> {
    let mut fail = |msg: String| {
        errors.push((value_path.to_owned(), msg));
        None
    };
    match op {
        "==" | "~=" => {
            let eq = op == "==";
            if value.is_null() {
                return Some(if eq { Op::EqNull } else { Op::NeNull });
            }
            match scalar(value) {
                Some(s) if eq => Some(Op::Eq(s)),
                Some(s) => Some(Op::Ne(s)),
                None => fail(format!(
                    "`{op}` needs a string, number or boolean, got {}",
                    type_name(value)
                )),
            }
        }
        ">" | "<" | ">=" | "<=" => {
            let n = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            let Some(n) = n else {
                return fail(format!("`{op}` needs a number, got {value}"));
            };
            Some(match op {
                ">" => Op::Gt(n),
                "<" => Op::Lt(n),
                ">=" => Op::Ge(n),
                _ => Op::Le(n),
            })
        }
        "~~" | "~*" => {
            let Value::String(pattern) = value else {
                return fail(format!(
                    "`{op}` needs a regex string, got {}",
                    type_name(value)
                ));
            };
            match RegexBuilder::new(pattern)
                .case_insensitive(op == "~*")
                .build()
            {
                Ok(re) => Some(Op::Regex(re)),
                Err(e) => fail(format!("invalid regex: {e}")),
            }
        }
        "in" => {
            let Value::Array(values) = value else {
                return fail(format!("`in` needs an array, got {}", type_name(value)));
            };
            let mut out = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                match scalar(v) {
                    Some(s) => out.push(s),
                    None => errors.push((
                        format!("{value_path}[{i}]"),
                        format!(
                            "`in` elements must be strings, numbers or booleans, got {}",
                            type_name(v)
                        ),
                    )),
                }
            }
            (out.len() == values.len()).then_some(Op::In(out))
        }
        "has" => match scalar(value) {
            Some(Scalar::Str(s)) => Some(Op::Has(s)),
            Some(Scalar::Num(_)) => Some(Op::Has(value.to_string())),
            None => fail(format!(
                "`has` needs a string or number, got {}",
                type_name(value)
            )),
        },
        "ipmatch" => {
            let items: Vec<(String, &Value)> = match value {
                Value::Array(values) => values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{value_path}[{i}]"), v))
                    .collect(),
                Value::String(_) => vec![(value_path.to_owned(), value)],
                _ => {
                    return fail(format!(
                        "`ipmatch` needs an array of IPs/CIDRs, got {}",
                        type_name(value)
                    ))
                }
            };
            let mut nets = Vec::with_capacity(items.len());
            for (path, v) in items {
                match v.as_str().map(parse_net) {
                    Some(Ok(net)) => nets.push(net),
                    Some(Err(e)) => errors.push((path, e)),
                    None => errors.push((
                        path,
                        format!("expected an IP or CIDR string, got {}", type_name(v)),
                    )),
                }
            }
            let expected = value.as_array().map_or(1, Vec::len);
            (nets.len() == expected).then_some(Op::IpMatch(nets))
        }
        other => {
            errors.push((
                op_path.to_owned(),
                format!(
                    "unknown operator `{other}` (expected one of ==, ~=, >, <, >=, <=, ~~, ~*, \
                     in, has, ipmatch)"
                ),
            ));
            None
        }
    }
}

/// Converts a JSON scalar into a comparison operand; `None` for
/// null/arrays/objects.
fn scalar(value: &Value) -> Option<Scalar> {
    match value {
        Value::String(s) => Some(Scalar::Str(s.clone())),
        Value::Number(n) => n.as_f64().map(Scalar::Num),
        Value::Bool(b) => Some(Scalar::Str(b.to_string())),
        _ => None,
    }
}

/// Parses `"10.0.0.0/8"` or a bare IP (`"10.1.2.3"`, a /32 or /128).
pub(crate) fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is not a valid IP address or CIDR"))
}

/// Whether `ip` falls inside any of `nets`; IPv4-mapped IPv6 addresses are
/// treated as IPv4.
pub(crate) fn ip_in(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

/// Short JSON type name for error messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Evaluates one node.
fn eval_node(node: &Node, req: &RequestView<'_>) -> bool {
    match node {
        Node::All(children) => children.iter().all(|c| eval_node(c, req)),
        Node::Any(children) => children.iter().any(|c| eval_node(c, req)),
        Node::Not(inner) => !eval_node(inner, req),
        Node::Term(term) => eval_term(term, req) != term.negate,
    }
}

/// Evaluates one comparison, before applying `!`.
fn eval_term(term: &Term, req: &RequestView<'_>) -> bool {
    // Fast path: `remote_addr ipmatch` needs no string round trip.
    if let (Var::RemoteAddr, Op::IpMatch(nets)) = (&term.var, &term.op) {
        return req.remote_addr.is_some_and(|ip| ip_in(nets, ip));
    }
    let value = term.var.resolve(req);
    let Some(value) = value.as_deref() else {
        // Missing variable: only "not equal" (and `== null`) hold.
        return matches!(term.op, Op::Ne(_) | Op::EqNull);
    };
    let num = || value.trim().parse::<f64>().ok();
    match &term.op {
        Op::Eq(s) => s.matches(value),
        Op::Ne(s) => !s.matches(value),
        Op::EqNull => false,
        Op::NeNull => true,
        Op::Gt(n) => num().is_some_and(|v| v > *n),
        Op::Lt(n) => num().is_some_and(|v| v < *n),
        Op::Ge(n) => num().is_some_and(|v| v >= *n),
        Op::Le(n) => num().is_some_and(|v| v <= *n),
        Op::Regex(re) => re.is_match(value),
        Op::In(options) => options.iter().any(|s| s.matches(value)),
        Op::Has(needle) => value.contains(needle.as_str()),
        Op::IpMatch(nets) => value
            .trim()
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip_in(nets, ip)),
    }
}
