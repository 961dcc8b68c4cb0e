//! A job's request as code to run it again elsewhere: `curl`, `pydo` and `fal-client`, each
//! against this server, with the key left to the environment.

use serde_json::{Map, Value};

/// Single-quoted for a POSIX shell: `'` becomes `'\''`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// JSON as a Python literal: `true`, `false` and `null` become `True`, `False` and `None`.
fn python(v: &Value, indent: usize) -> String {
    let pad = "    ".repeat(indent + 1);
    let end = "    ".repeat(indent);
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(items) if items.is_empty() => "[]".into(),
        Value::Array(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| format!("{pad}{},", python(i, indent + 1)))
                .collect();
            format!("[\n{}\n{end}]", inner.join("\n"))
        }
        Value::Object(o) if o.is_empty() => "{}".into(),
        Value::Object(o) => {
            let inner: Vec<String> = o
                .iter()
                .map(|(k, v)| {
                    let key = serde_json::to_string(k).unwrap_or_default();
                    format!("{pad}{key}: {},", python(v, indent + 1))
                })
                .collect();
            format!("{{\n{}\n{end}}}", inner.join("\n"))
        }
    }
}

pub fn curl(base: &str, model: &str, input: &Map<String, Value>) -> String {
    let body = serde_json::json!({"model_id": model, "input": input});
    format!(
        "curl -sS -X POST {} \\\n  -H \"Authorization: Bearer $INVOKD_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d {}",
        shell_quote(&format!("{base}/v1/async-invoke")),
        shell_quote(&body.to_string())
    )
}

pub fn pydo(base: &str, model: &str, input: &Map<String, Value>) -> String {
    format!(
        "import os\nimport pydo\n\nclient = pydo.Client(token=os.environ[\"INVOKD_KEY\"], inference_endpoint={})\njob = client.async_invoke.create(\n    model_id={},\n    input={},\n)\nprint(job[\"request_id\"])",
        python(&Value::String(base.to_owned()), 0),
        python(&Value::String(model.to_owned()), 0),
        python(&Value::Object(input.clone()), 1),
    )
}

/// fal-client finds the server through `FAL_QUEUE_RUN_HOST` (host and port, https).
pub fn fal_client(base: &str, model: &str, input: &Map<String, Value>) -> String {
    let host = base
        .split_once("://")
        .map(|(_, h)| h)
        .unwrap_or(base)
        .trim_end_matches('/');
    format!(
        "# FAL_KEY=<your invokd key> FAL_QUEUE_RUN_HOST={host} python this.py\n# (fal-client speaks https: serve invokd with --tls-cert and --tls-key)\nimport fal_client\n\nresult = fal_client.subscribe(\n    {},\n    arguments={},\n)\nprint(result)",
        python(&Value::String(model.to_owned()), 0),
        python(&Value::Object(input.clone()), 1),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input() -> Map<String, Value> {
        json!({"prompt": "it's a cat", "safe": true, "seed": null})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn curl_quotes_the_body_for_the_shell() {
        let c = curl("http://h:1", "m/x", &input());
        assert!(c.contains("'http://h:1/v1/async-invoke'"), "{c}");
        assert!(c.contains(r"it'\''s a cat"), "{c}");
    }

    #[test]
    fn python_literals_are_python() {
        let p = pydo("http://h:1", "m/x", &input());
        assert!(p.contains("\"safe\": True"), "{p}");
        assert!(p.contains("\"seed\": None"), "{p}");
        assert!(p.contains("inference_endpoint=\"http://h:1\""), "{p}");
        let f = fal_client("https://h:1", "m/x", &input());
        assert!(f.contains("FAL_QUEUE_RUN_HOST=h:1"), "{f}");
        assert!(f.contains("fal_client.subscribe(\n    \"m/x\""), "{f}");
    }
}
