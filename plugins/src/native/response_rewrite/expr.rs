//! The `vars` condition of `response-rewrite`: a list of lua-resty-expr comparisons,
//! all of which must hold (`[["status", "==", 200], ["arg_debug", "~~", "^on$"]]`),
//! each optionally negated (`["status", "!", "==", 200]`). Variables are the request
//! variables plus `status`, the response's. Parsed at apply time.

use regex::Regex;
use serde_json::Value;

use crate::vars::{RequestView, Var};

/// What a comparison reads.
#[derive(Debug)]
enum Operand {
    Status,
    Var(Var),
}

/// A comparison operator of lua-resty-expr this build knows.
#[derive(Debug)]
enum Op {
    Eq(Value),
    Ne(Value),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    Regex(Regex),
    In(Vec<Value>),
}

#[derive(Debug)]
struct Cond {
    operand: Operand,
    negate: bool,
    op: Op,
}

/// All the conditions of `vars`.
#[derive(Debug, Default)]
pub struct Conditions(Vec<Cond>);

impl Conditions {
    /// Parses `vars`; errors name the element (`vars[1]: ...`).
    pub fn parse(field: &str, v: &Value) -> Result<Conditions, String> {
        let list = v
            .as_array()
            .ok_or_else(|| format!("{field}: must be an array of conditions"))?;
        let mut out = Vec::with_capacity(list.len());
        for (i, c) in list.iter().enumerate() {
            out.push(parse_cond(c).map_err(|e| format!("{field}[{i}]: {e}"))?);
        }
        Ok(Conditions(out))
    }

    /// Whether every condition holds for a response with `status` to `req`.
    pub fn matches(&self, req: Option<&RequestView<'_>>, status: u16) -> bool {
        self.0.iter().all(|c| {
            let value: Option<String> = match &c.operand {
                Operand::Status => Some(status.to_string()),
                Operand::Var(v) => req.and_then(|r| v.resolve(r)).map(|v| v.into_owned()),
            };
            c.op.holds(value.as_deref()) != c.negate
        })
    }
}

fn parse_cond(c: &Value) -> Result<Cond, String> {
    let items = c
        .as_array()
        .ok_or_else(|| "must be [var, operator, value]".to_string())?;
    let (name, negate, op, value) = match items.as_slice() {
        [n, op, v] => (n, false, op, v),
        [n, not, op, v] if not == "!" => (n, true, op, v),
        _ => return Err("must be [var, operator, value] or [var, \"!\", operator, value]".into()),
    };
    let name = name.as_str().ok_or("the variable must be a string")?;
    let operand = match name {
        "status" => Operand::Status,
        n => Operand::Var(Var::parse(n)?),
    };
    let op_name = op.as_str().ok_or("the operator must be a string")?;
    let number = || {
        value
            .as_f64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("`{op_name}` compares with a number"))
    };
    let op = match op_name {
        "==" => Op::Eq(value.clone()),
        "~=" => Op::Ne(value.clone()),
        ">" => Op::Gt(number()?),
        ">=" => Op::Ge(number()?),
        "<" => Op::Lt(number()?),
        "<=" => Op::Le(number()?),
        "~~" | "~*" => {
            let src = value.as_str().ok_or("a regex must be a string")?;
            let src = if op_name == "~*" {
                format!("(?i){src}")
            } else {
                src.to_string()
            };
            Op::Regex(Regex::new(&src).map_err(|e| e.to_string())?)
        }
        "in" => Op::In(
            value
                .as_array()
                .ok_or("`in` takes an array of values")?
                .clone(),
        ),
        other => return Err(format!("unknown operator `{other}`")),
    };
    Ok(Cond {
        operand,
        negate,
        op,
    })
}

/// A variable's text equals a configured value (a number compares as a number).
fn equals(value: &str, want: &Value) -> bool {
    match want {
        Value::String(s) => value == s,
        Value::Number(n) => n.as_f64() == value.parse::<f64>().ok(),
        Value::Bool(b) => value == b.to_string(),
        _ => false,
    }
}

impl Op {
    fn holds(&self, value: Option<&str>) -> bool {
        let num = || value.and_then(|v| v.parse::<f64>().ok());
        match self {
            Op::Eq(want) => value.is_some_and(|v| equals(v, want)),
            Op::Ne(want) => !value.is_some_and(|v| equals(v, want)),
            Op::Gt(n) => num().is_some_and(|v| v > *n),
            Op::Ge(n) => num().is_some_and(|v| v >= *n),
            Op::Lt(n) => num().is_some_and(|v| v < *n),
            Op::Le(n) => num().is_some_and(|v| v <= *n),
            Op::Regex(re) => value.is_some_and(|v| re.is_match(v)),
            Op::In(list) => value.is_some_and(|v| list.iter().any(|w| equals(v, w))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(v: Value) -> Conditions {
        Conditions::parse("vars", &v).unwrap()
    }

    #[test]
    fn status_comparisons() {
        assert!(cond(json!([["status", "==", 200]])).matches(None, 200));
        assert!(!cond(json!([["status", "==", 200]])).matches(None, 404));
        assert!(cond(json!([["status", ">=", 400], ["status", "<", 500]])).matches(None, 404));
        assert!(cond(json!([["status", "in", [401, 403]]])).matches(None, 403));
        assert!(cond(json!([["status", "!", "==", 200]])).matches(None, 500));
        assert!(cond(json!([["status", "~~", "^5"]])).matches(None, 502));
        assert!(cond(json!([])).matches(None, 200));
    }

    #[test]
    fn errors_name_the_condition() {
        let err =
            Conditions::parse("vars", &json!([["status", "==", 200], ["x", "=="]])).unwrap_err();
        assert!(err.starts_with("vars[1]"), "{err}");
        assert!(Conditions::parse("vars", &json!([["status", "<>", 1]]))
            .unwrap_err()
            .contains("<>"));
        assert!(Conditions::parse("vars", &json!([["nope", "==", 1]]))
            .unwrap_err()
            .contains("nope"));
    }
}
