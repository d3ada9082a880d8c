use super::validate::Errors;
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
    let s = Schema::parse(&json!({"type": "object", "properties": [], "required": {}})).unwrap();
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
    let closed = json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false});
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
    let bad_pattern = Schema::parse(&json!({"properties": {"p": {"pattern": "(a"}}})).unwrap_err();
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
