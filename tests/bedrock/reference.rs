//! The emulator's input-token counting rule, as the reference the estimator must never fall
//! below, plus body generators.
//!
//! The rule: `ceil(chars/4)` per text string (Unicode scalar values) over Converse
//! `system[].text`, `messages[].content[].text`, `toolResult.content[].text`, `toolUse.input`
//! (serialized), `toolConfig` (serialized once); images 1000 each; documents `ceil(bytes/4)` of
//! source bytes; +3 per message. InvokeModel: Anthropic system/messages text (string or blocks),
//! Titan `inputText`, Nova `content[].text`, Llama/Mistral `prompt`, embeddings
//! `inputText`/`texts[]`; anything else `ceil(body_bytes/4)`; min 1.
//!
//! Where the rule leaves room for interpretation, every reading is computed and the largest is
//! the reference: documents counted from decoded bytes or from the base64 text, fields of the
//! wrong type ignored or sending the body to the `anything else` branch.

use base64::Engine;
use bedrock_throttle::bedrock::{ModelFamily, Operation};
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Clone, Copy)]
enum Documents {
    Decoded,
    Base64Text,
}

#[derive(Clone, Copy)]
struct Reading {
    documents: Documents,
    /// A counted field of the wrong type sends the body to `anything else`.
    strict: bool,
}

fn quarter(n: usize) -> u64 {
    (n as u64).div_ceil(4)
}

fn text(s: &str) -> u64 {
    quarter(s.chars().count())
}

fn serialized(v: &Value) -> u64 {
    text(&serde_json::to_string(v).unwrap())
}

/// The largest count over every reading of the rule.
pub fn max_over_readings(op: Operation, family: ModelFamily, body: &[u8]) -> u64 {
    let mut max = 0;
    for documents in [Documents::Decoded, Documents::Base64Text] {
        for strict in [false, true] {
            max = max.max(count(op, family, body, Reading { documents, strict }));
        }
    }
    max
}

fn count(op: Operation, family: ModelFamily, body: &[u8], reading: Reading) -> u64 {
    let anything_else = quarter(body.len()).max(1);
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return match op {
            Operation::CountTokens | Operation::Other => 0,
            _ => anything_else,
        };
    };
    let counted = match op {
        Operation::Converse | Operation::ConverseStream => converse(&value, reading),
        Operation::InvokeModel | Operation::InvokeModelWithResponseStream => {
            invoke(&value, family, reading)
        }
        _ => return 0,
    };
    counted.map_or(anything_else, |n| n.max(1))
}

/// `Err(())` when a counted field has the wrong type (only matters in strict readings).
type Count = Result<u64, ()>;

fn wrong(reading: Reading) -> Count {
    if reading.strict { Err(()) } else { Ok(0) }
}

fn str_field(v: Option<&Value>, reading: Reading) -> Count {
    match v {
        None => Ok(0),
        Some(Value::String(s)) => Ok(text(s)),
        Some(_) => wrong(reading),
    }
}

fn converse(v: &Value, reading: Reading) -> Option<u64> {
    let object = v.as_object()?;
    let mut total = 0;
    let mut add = |c: Count| -> Option<()> {
        total += c.ok()?;
        Some(())
    };
    match object.get("system") {
        None => {}
        Some(Value::Array(blocks)) => {
            for block in blocks {
                match block.as_object() {
                    Some(block) => add(str_field(block.get("text"), reading))?,
                    None => add(wrong(reading))?,
                }
            }
        }
        Some(_) => add(wrong(reading))?,
    }
    match object.get("messages") {
        None => {}
        Some(Value::Array(messages)) => {
            for message in messages {
                add(Ok(3))?;
                let Some(message) = message.as_object() else {
                    add(wrong(reading))?;
                    continue;
                };
                match message.get("content") {
                    None => {}
                    Some(Value::Array(blocks)) => {
                        for block in blocks {
                            add(converse_block(block, reading))?;
                        }
                    }
                    Some(_) => add(wrong(reading))?,
                }
            }
        }
        Some(_) => add(wrong(reading))?,
    }
    if let Some(tools) = object.get("toolConfig") {
        add(Ok(serialized(tools)))?;
    }
    Some(total)
}

fn converse_block(block: &Value, reading: Reading) -> Count {
    let Some(block) = block.as_object() else {
        return wrong(reading);
    };
    let mut total = str_field(block.get("text"), reading)?;
    if block.contains_key("image") {
        total += 1000;
    }
    if let Some(document) = block.get("document") {
        match document.get("source").and_then(|s| s.get("bytes")) {
            None => {}
            Some(Value::String(b64)) => {
                total += match reading.documents {
                    Documents::Base64Text => quarter(b64.len()),
                    Documents::Decoded => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_or(0, |bytes| quarter(bytes.len())),
                };
            }
            Some(_) => return wrong(reading),
        }
    }
    match block.get("toolUse") {
        None => {}
        Some(Value::Object(tool_use)) => {
            total += serialized(tool_use.get("input").unwrap_or(&Value::Null));
        }
        Some(_) => return wrong(reading),
    }
    if let Some(result) = block.get("toolResult") {
        match result.get("content") {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item.as_object() {
                        Some(item) => total += str_field(item.get("text"), reading)?,
                        None => total += wrong(reading)?,
                    }
                }
            }
            Some(_) => return wrong(reading),
        }
    }
    Ok(total)
}

fn string_or_blocks(v: Option<&Value>, reading: Reading) -> Count {
    match v {
        None => Ok(0),
        Some(Value::String(s)) => Ok(text(s)),
        Some(Value::Array(blocks)) => {
            let mut total = 0;
            for block in blocks {
                match block.as_object() {
                    Some(block) => total += str_field(block.get("text"), reading)?,
                    None => total += wrong(reading)?,
                }
            }
            Ok(total)
        }
        Some(_) => wrong(reading),
    }
}

fn messages(v: &Value, reading: Reading, allow_string: bool) -> Option<u64> {
    let mut total = 0;
    match v.get("messages")? {
        Value::Array(messages) => {
            for message in messages {
                total += 3;
                let content = message.get("content");
                if !allow_string && content.is_some_and(Value::is_string) {
                    total += wrong(reading).ok()?;
                    continue;
                }
                total += string_or_blocks(content, reading).ok()?;
            }
        }
        _ => total += wrong(reading).ok()?,
    }
    Some(total)
}

fn invoke(v: &Value, family: ModelFamily, reading: Reading) -> Option<u64> {
    let object = v.as_object()?;
    match family {
        ModelFamily::AnthropicClaude => {
            let system = string_or_blocks(object.get("system"), reading).ok()?;
            Some(system + messages(v, reading, true)?)
        }
        ModelFamily::Nova => {
            let system = match object.get("system") {
                Some(Value::String(_)) => wrong(reading).ok()?,
                other => string_or_blocks(other, reading).ok()?,
            };
            Some(system + messages(v, reading, false)?)
        }
        ModelFamily::TitanText => object.get("inputText")?.as_str().map(text),
        ModelFamily::Llama | ModelFamily::MaxTokens => object.get("prompt")?.as_str().map(text),
        ModelFamily::Embedding => {
            if let Some(input) = object.get("inputText") {
                return input.as_str().map(text);
            }
            let texts = object.get("texts")?.as_array()?;
            let mut total = 0;
            for t in texts {
                match t.as_str() {
                    Some(t) => total += text(t),
                    None => total += wrong(reading).ok()?,
                }
            }
            Some(total)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// fixed bodies

fn b64(len: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(vec![0xA5u8; len])
}

/// (model path segment, operation, body): edge cases a generator would rarely produce.
pub fn fixed_bodies() -> Vec<(&'static str, &'static str, String)> {
    let sonnet = "us.anthropic.claude-sonnet-4-20250514-v1%3A0";
    let haiku = "anthropic.claude-3-haiku-20240307-v1%3A0";
    let tiny_texts: Vec<Value> = (0..200)
        .map(|i| json!({"text": (i % 3).to_string()}))
        .collect();
    vec![
        // Raw numbers that re-serialize longer than they were written.
        (sonnet, "converse", r#"{"messages":[{"role":"assistant","content":[{"toolUse":{"toolUseId":"t","name":"n","input":[1e15,1e15,1e15,1e15,1e15,1e15,1e-5,2E3]}}]}]}"#.into()),
        (sonnet, "converse", r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"a","inputSchema":{"json":{"minimum":1e9,"maximum":1e10}}}}]}}"#.into()),
        // Duplicate keys: `Value` keeps the last, the estimator counts both.
        (sonnet, "converse", r#"{"messages":[{"role":"user","content":[{"text":"a"}]}],"messages":[{"role":"user","content":[{"text":"abcdefghijklmnopqrstuvwxyz0123456789"}]}]}"#.into()),
        (sonnet, "converse", r#"{"messages":[{"role":"user","content":[{"text":"a","text":"abcdefghijklmnopqrstuvwxyz"}]}]}"#.into()),
        // A number out of range in an ignored field: invalid for both.
        (sonnet, "converse", format!(r#"{{"messages":[{{"role":"user","content":[{{"text":"hi"}}]}}],"x":1e400,"pad":"{}"}}"#, "p".repeat(400))),
        // Many tiny strings (each rounds up).
        (sonnet, "converse", json!({"messages":[{"role":"user","content": tiny_texts}]}).to_string()),
        // CJK, emoji, escapes, control characters.
        (sonnet, "converse", json!({"system":[{"text":"你好世界，这是一个测试。"}],"messages":[{"role":"user","content":[{"text":"🙂🙃🙂🙃 \u{0001}\u{001f}\"\\\n\t"}]}]}).to_string()),
        // Documents: padded, unpadded, with whitespace, empty; images large and small.
        (sonnet, "converse", json!({"messages":[{"role":"user","content":[
            {"document":{"format":"pdf","name":"a","source":{"bytes": b64(1000)}}},
            {"document":{"format":"pdf","name":"b","source":{"bytes": b64(1001).trim_end_matches('=')}}},
            {"document":{"format":"txt","name":"c","source":{"bytes": format!("{}\n{}", b64(30), b64(30))}}},
            {"document":{"format":"txt","name":"d","source":{"bytes": ""}}},
            {"image":{"format":"png","source":{"bytes": b64(100_000)}}},
            {"image":{"format":"png","source":{"bytes": ""}}},
        ]}]}).to_string()),
        // Tool results with text and JSON, S3 sources.
        (sonnet, "converse-stream", json!({"messages":[
            {"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"get","input":{"q":"weather","n":3}}}]},
            {"role":"user","content":[{"toolResult":{"toolUseId":"t1","content":[{"text":"sunny"},{"json":{"t":21.5}}],"status":"success"}}]},
            {"role":"user","content":[{"image":{"format":"png","source":{"s3Location":{"uri":"s3://b/k"}}}}]}
        ]}).to_string()),
        // Wrong shapes for Converse.
        (sonnet, "converse", json!({"system":"plain string system","messages":[{"role":"user","content":"plain"}]}).to_string()),
        (sonnet, "converse", json!({"messages":[{"role":"user","content":[{"toolUse":"not an object"}]}],"pad":"x".repeat(300)}).to_string()),
        (sonnet, "converse", json!({"messages":[{"role":"user","content":[{"text":12345}]}],"pad":"x".repeat(300)}).to_string()),
        (sonnet, "converse", json!({"messages":"hello","pad":"x".repeat(300)}).to_string()),
        (sonnet, "converse", "{}".into()),
        (sonnet, "converse", "[]".into()),
        (sonnet, "converse", "null".into()),
        (sonnet, "converse", "".into()),
        // InvokeModel, each family.
        (haiku, "invoke", json!({"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"system":[{"type":"text","text":"sys"}],
            "messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data": b64(5000)}},{"type":"text","text":"what is this?"}]}]}).to_string()),
        (haiku, "invoke", json!({"prompt":"\n\nHuman: hi\n\nAssistant:","max_tokens_to_sample":10}).to_string()),
        (haiku, "invoke-with-response-stream", json!({"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[]}).to_string()),
        ("amazon.titan-text-express-v1", "invoke", json!({"inputText":"Hello Titan"}).to_string()),
        ("amazon.titan-text-express-v1", "invoke", json!({"prompt":"not the titan field","pad":"x".repeat(100)}).to_string()),
        ("amazon.nova-pro-v1%3A0", "invoke", json!({"schemaVersion":"messages-v1","messages":[{"role":"user","content":[{"text":"nova"}]}]}).to_string()),
        ("amazon.nova-pro-v1%3A0", "invoke", json!({"messages":[{"role":"user","content":"string content is wrong for Nova"}],"pad":"y".repeat(200)}).to_string()),
        ("meta.llama3-8b-instruct-v1%3A0", "invoke", json!({"prompt":"<|begin_of_text|>hi","max_gen_len":5}).to_string()),
        ("mistral.mistral-7b-instruct-v0%3A2", "invoke", json!({"prompt":"<s>[INST] hi [/INST]","max_tokens":5}).to_string()),
        ("openai.gpt-oss-120b-1%3A0", "invoke", json!({"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"pad":"z".repeat(100)}).to_string()),
        ("ai21.j2-ultra-v1", "invoke", json!({"prompt":"hi","maxTokens":5}).to_string()),
        ("cohere.embed-v4%3A0", "invoke", json!({"texts":["a","bb","ccc"],"input_type":"search_query","max_tokens":100}).to_string()),
        ("cohere.embed-v4%3A0", "invoke", json!({"inputs":[{"content":[{"type":"text","text":"x"}]}],"input_type":"search_query"}).to_string()),
        ("cohere.embed-english-v3", "invoke", json!({"images":["data:image/png;base64,AAAA"],"input_type":"image"}).to_string()),
        ("amazon.titan-embed-text-v2%3A0", "invoke", json!({"inputText":"embed me"}).to_string()),
        ("arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aprovisioned-model%2Fx", "invoke", json!({"prompt":"unknown family"}).to_string()),
        ("arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aprovisioned-model%2Fx", "converse", json!({"messages":[{"role":"user","content":[{"text":"any family"}]}]}).to_string()),
    ]
}

// ---------------------------------------------------------------------------------------------
// generators

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,30}",
        "[a-z ]{0,200}",
        Just(String::new()),
        "[\u{4e00}-\u{4e40}]{0,20}",
        "[\\n\\t\"\\\\\u{1}\u{1f}a]{0,10}",
        "[🙂🙃😀]{0,8}",
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any_text().prop_map(Value::from),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn gen_converse_block() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_text().prop_map(|t| json!({ "text": t })),
        (0usize..400).prop_map(|n| json!({"image":{"format":"png","source":{"bytes": b64(n)}}})),
        (0usize..400).prop_map(
            |n| json!({"document":{"format":"pdf","name":"d","source":{"bytes": b64(n)}}})
        ),
        any_json().prop_map(|v| json!({"toolUse":{"toolUseId":"id","name":"tool","input": v}})),
        (prop::collection::vec(any_text(), 0..3), any_json()).prop_map(|(texts, v)| {
            let mut content: Vec<Value> = texts.into_iter().map(|t| json!({ "text": t })).collect();
            content.push(json!({ "json": v }));
            json!({"toolResult":{"toolUseId":"id","content": content}})
        }),
        Just(json!({"cachePoint":{"type":"default"}})),
    ]
}

/// A Converse body.
pub fn converse_body() -> impl Strategy<Value = Value> {
    let message = (
        prop_oneof![Just("user"), Just("assistant")],
        prop::collection::vec(gen_converse_block(), 0..4),
    )
        .prop_map(|(role, content)| json!({ "role": role, "content": content }));
    (
        prop::collection::vec(any_text(), 0..3),
        prop::collection::vec(message, 0..4),
        proptest::option::of(any_json()),
        proptest::option::of(0u64..100_000),
    )
        .prop_map(|(system, messages, tool_schema, max_tokens)| {
            let mut body = json!({
                "system": system.into_iter().map(|t| json!({ "text": t })).collect::<Vec<_>>(),
                "messages": messages,
            });
            if let Some(schema) = tool_schema {
                body["toolConfig"] =
                    json!({"tools":[{"toolSpec":{"name":"t","inputSchema":{"json": schema}}}]});
            }
            if let Some(max) = max_tokens {
                body["inferenceConfig"] = json!({ "maxTokens": max });
            }
            body
        })
}

fn anthropic_block() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_text().prop_map(|t| json!({"type":"text","text": t})),
        (0usize..400).prop_map(|n| json!({"type":"image","source":{"type":"base64","media_type":"image/png","data": b64(n)}})),
        any_json().prop_map(|v| json!({"type":"tool_use","id":"i","name":"n","input": v})),
        any_text().prop_map(|t| json!({"type":"tool_result","tool_use_id":"i","content": t})),
        any_text().prop_map(|t| json!({"type":"tool_result","tool_use_id":"i","content":[{"type":"text","text": t}]})),
    ]
}

/// An Anthropic messages body.
pub fn anthropic_body() -> impl Strategy<Value = Value> {
    let content = prop_oneof![
        any_text().prop_map(Value::from),
        prop::collection::vec(anthropic_block(), 0..4).prop_map(Value::from),
    ];
    let message = (prop_oneof![Just("user"), Just("assistant")], content)
        .prop_map(|(role, content)| json!({ "role": role, "content": content }));
    let system = prop_oneof![
        any_text().prop_map(Value::from),
        prop::collection::vec(
            any_text().prop_map(|t| json!({"type":"text","text": t})),
            0..3
        )
        .prop_map(Value::from),
    ];
    (system, prop::collection::vec(message, 0..4), 1u64..10_000).prop_map(
        |(system, messages, max_tokens)| {
            json!({"anthropic_version":"bedrock-2023-05-31","max_tokens": max_tokens,
                   "system": system, "messages": messages})
        },
    )
}

/// Valid JSON built from the vocabulary of request bodies, in any shape; or JSON-ish garbage.
pub fn json_like() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("messages"),
        Just("content"),
        Just("text"),
        Just("system"),
        Just("image"),
        Just("document"),
        Just("source"),
        Just("bytes"),
        Just("data"),
        Just("type"),
        Just("toolUse"),
        Just("toolResult"),
        Just("input"),
        Just("json"),
        Just("toolConfig"),
        Just("prompt"),
        Just("inputText"),
        Just("texts"),
        Just("images"),
        Just("inferenceConfig"),
        Just("maxTokens"),
        Just("max_tokens"),
        Just("role"),
    ];
    let leaf = prop_oneof![
        any_text().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
        Just(Value::from("image")),
        Just(Value::from("AAAA==")),
    ];
    let tree = leaf.prop_recursive(5, 40, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    });
    prop_oneof![
        4 => tree.prop_map(|v| v.to_string()),
        1 => "[\\[\\]{}\":,a-z0-9 .eE\\-]{0,80}",
    ]
}
