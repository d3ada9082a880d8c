//! Measures our JSON Schema subset against `jsonschema`, and `fancy-regex` against
//! `pcre2` (docs/architecture.md, "Design decisions"). `cargo run --release`.

use std::time::Instant;
use serde_json::json;

fn time<F: FnMut() -> bool>(name: &str, n: u32, mut f: F) {
    let t = Instant::now();
    let mut hits = 0u32;
    for _ in 0..n { if f() { hits += 1; } }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("{name:50} {per:10.0} ns/op  (hits {hits})");
}

fn main() {
    // Regex: typical ngx.re patterns.
    let subject = "GET /api/v1/users/12345/orders?limit=10&offset=20 HTTP/1.1 user-agent: curl/8.0";
    let pats = [r"/users/(\d+)/orders", r"^GET\s+(\S+)", r"(?i)CURL/(\d+)\.(\d+)", r"limit=(\d+)&offset=(\d+)"];
    for p in pats {
        let f = fancy_regex::Regex::new(p).unwrap();
        let c = pcre2::bytes::RegexBuilder::new().jit_if_available(true).build(p).unwrap();
        let c_nojit = pcre2::bytes::Regex::new(p).unwrap();
        time(&format!("fancy  find {p}"), 200_000, || f.captures(subject).unwrap().is_some());
        time(&format!("pcre2  find {p} (jit)"), 200_000, || c.captures(subject.as_bytes()).unwrap().is_some());
        time(&format!("pcre2  find {p} (nojit)"), 200_000, || c_nojit.captures(subject.as_bytes()).unwrap().is_some());
        time(&format!("fancy  compile {p}"), 20_000, || fancy_regex::Regex::new(p).is_ok());
        time(&format!("pcre2  compile {p} (jit)"), 20_000, || pcre2::bytes::RegexBuilder::new().jit_if_available(true).build(p).is_ok());
    }
    // PCRE-only constructs
    for p in [r"(?<=/api/)\w+", r"(a)\1", r"\Kfoo", r"(?R)?x", r"\w++", r"(?|a(b)|c(d))"] {
        println!("construct {p:20} fancy={} pcre2={}", fancy_regex::Regex::new(p).is_ok(), pcre2::bytes::Regex::new(p).is_ok());
    }
    // Catastrophic pattern with limits
    let evil = "a".repeat(28) + "!";
    let f = fancy_regex::RegexBuilder::new(r"^(a+)+$").backtrack_limit(1_000_000).build().unwrap();
    let t = Instant::now(); let r = f.is_match(&evil); println!("fancy evil (backtrack_limit 1e6): {:?} in {:?}", r.is_err(), t.elapsed());
    let c = pcre2::bytes::RegexBuilder::new().jit_if_available(false).build(r"^(a+)+$").unwrap();
    let t = Instant::now(); let r = c.is_match(evil.as_bytes()); println!("pcre2 evil (default match limit): err={:?} in {:?}", r.is_err(), t.elapsed());

    // JSON Schema: a limit-count-like schema.
    let schema = json!({"type":"object","properties":{
        "count":{"type":"integer","exclusiveMinimum":0},
        "time_window":{"type":"integer","exclusiveMinimum":0},
        "key":{"type":"string","default":"remote_addr"},
        "key_type":{"type":"string","enum":["var","var_combination","constant"],"default":"var"},
        "rejected_code":{"type":"integer","minimum":200,"maximum":599,"default":503},
        "policy":{"type":"string","enum":["local","redis","redis-cluster"],"default":"local"},
        "redis_host":{"type":"string","minLength":2},
        "show_limit_quota_header":{"type":"boolean","default":true}},
        "required":["count","time_window"]});
    let conf = json!({"count": 10, "time_window": 60, "key": "remote_addr", "policy": "local"});
    let ours = portico_plugins::schema::Schema::parse(&schema).unwrap();
    let theirs = jsonschema::validator_for(&schema).unwrap();
    time("ours    validate", 200_000, || ours.validate(&conf).is_empty());
    time("jsonschema validate", 200_000, || theirs.is_valid(&conf));
    time("ours    parse", 20_000, || portico_plugins::schema::Schema::parse(&schema).is_ok());
    time("jsonschema compile", 20_000, || jsonschema::validator_for(&schema).is_ok());
    // Lua's empty table: {} where an array is expected
    let s2 = json!({"type":"object","properties":{"list":{"type":"array"}}});
    let c2 = json!({"list": {}});
    println!("empty-table-as-array: ours ok={} jsonschema ok={}", portico_plugins::schema::Schema::parse(&s2).unwrap().validate(&c2).is_empty(), jsonschema::validator_for(&s2).unwrap().is_valid(&c2));
}
