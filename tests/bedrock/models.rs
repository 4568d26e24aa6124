//! The model table as data: the late-2026 tiers, one warning per unknown model of a vendor
//! that burns more than 1x (never a silent 1x), overrides and tables loaded at run time.

use std::io;
use std::sync::{Arc, Mutex};

use bedrock_throttle::bedrock::{Bedrock, ModelFamily, ModelTable, ModelTableError};
use bytes::Bytes;

/// Everything a `tracing` subscriber writes, for one test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn converse(model: &str) -> http::Request<Bytes> {
    http::Request::post(format!(
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/{model}/converse"
    ))
    .body(Bytes::from_static(
        br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":10}}"#,
    ))
    .unwrap()
}

#[test]
fn an_unknown_claude_gets_the_highest_anthropic_burndown_and_one_warning() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let c = captured.clone();
            move || c.clone()
        })
        .with_ansi(false)
        .finish();
    // The process's global subscriber (no other test of this binary sets one): a scoped one
    // can miss events whose callsite interest another test thread cached first.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    {
        let bedrock = Bedrock::new();
        let unknown = "us.anthropic.claude-opus-9-20291231-v1:0";
        for _ in 0..3 {
            let plan = bedrock.plan_of(&converse(unknown));
            assert_eq!(plan.memo.burndown(), 15, "never a silent 1x");
        }
        assert_eq!(
            bedrock.output_burndown("anthropic.claude-opus-9-20291231-v1:0"),
            15
        );
        // A known model: no warning.
        assert_eq!(
            bedrock.output_burndown("us.anthropic.claude-sonnet-5-20260917-v1:0"),
            10
        );
        // An unknown GPT-5: the GPT-5 rows' highest.
        assert_eq!(bedrock.output_burndown("openai.gpt-5.7-orion-v1:0"), 10);
    }
    let text = captured.text();
    assert_eq!(
        text.matches("us.anthropic.claude-opus-9-20291231-v1:0")
            .count(),
        1,
        "one warning for the model: {text}"
    );
    assert_eq!(
        text.matches("openai.gpt-5.7-orion-v1:0").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("claude-sonnet-5"), "{text}");
    assert!(text.contains("WARN"));
}

#[test]
fn a_newer_table_loads_at_run_time() {
    let dir = std::env::temp_dir().join(format!("bedrock-throttle-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("models.json");
    std::fs::write(
        &path,
        r#"{"format": 1, "checked": "2027-02-01", "models": [
            {"pattern": "anthropic.claude-opus-6*", "endpoint": "runtime", "family": "anthropic",
             "max_output_tokens": 200000, "output_burndown": 20, "checked": "2027-02-01"}],
          "unknown_models": [
            {"pattern": "anthropic.*", "endpoint": "runtime", "family": "anthropic",
             "max_output_tokens": 200000, "checked": "2027-02-01"}]}"#,
    )
    .unwrap();
    let table = ModelTable::from_file(&path).unwrap();
    let bedrock = Bedrock::new().with_models(table.clone());
    let plan = bedrock.plan_of(&converse("global.anthropic.claude-opus-6-20270101-v1:0"));
    assert_eq!(plan.memo.burndown(), 20);
    assert_eq!(table.checked(), "2027-02-01");
    assert_eq!(
        table.row_of("anthropic.claude-opus-6-x").unwrap().checked(),
        "2027-02-01"
    );
    let info = table.lookup("anthropic.claude-sonnet-4-20250514-v1:0");
    assert_eq!(
        (info.family, info.output_burndown),
        (ModelFamily::AnthropicClaude, 20),
        "not in the newer table: the vendor's highest"
    );
    std::fs::write(&path, "{\"format\": 1,").unwrap();
    assert!(matches!(
        ModelTable::from_file(&path),
        Err(ModelTableError::Parse { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();

    // Bad overrides are typed errors.
    assert!(matches!(
        Bedrock::new().with_burndown("anthropic.claude-opus-4-8*", 0),
        Err(ModelTableError::ZeroBurndown { .. })
    ));
    assert!(matches!(
        Bedrock::new().with_burndown("antropic.*", 5),
        Err(ModelTableError::PatternMatchesNothing { .. })
    ));
}
