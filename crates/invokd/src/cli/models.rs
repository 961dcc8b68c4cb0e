//! `invokd models list|show`: the server's catalog (`GET /v1/models`) when a server is
//! configured, else the catalog built into this binary; `show` prints a model's input schema as
//! a table.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use invokd_client::{
    Client,
    input::schema_types,
    models::{ModelInfo, ModelList},
};
use invokd_core::catalog::Catalog;
use serde_json::{Map, Value, json};

use super::{
    exit::usage,
    global::{Output, Session},
    output::Table,
};

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Use the catalog built into this binary, not the server's.
    #[arg(long, global = true)]
    offline: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the models.
    List,
    /// Show one model: its description and input fields.
    Show { model_id: String },
}

/// The catalog built into this binary, as the server lists it.
fn embedded() -> anyhow::Result<ModelList> {
    let catalog = Catalog::embedded().context("the built-in catalog is broken")?;
    let data = catalog
        .iter()
        .map(|m| {
            let mut extra = Map::new();
            extra.insert("object".into(), json!("model"));
            extra.insert(
                "owned_by".into(),
                json!(m.id.split('/').next().unwrap_or_default()),
            );
            extra.insert("streaming".into(), json!(m.streaming));
            ModelInfo {
                id: m.id.clone(),
                kind: m.kind.as_str().to_owned(),
                title: m.title.clone(),
                description: m.description.clone(),
                input_schema: m.input_schema.clone(),
                extra,
            }
        })
        .collect();
    Ok(ModelList {
        object: "list".into(),
        data,
    })
}

/// The catalog to show: the server's when one is configured.
async fn catalog(session: &Session, offline: bool) -> anyhow::Result<ModelList> {
    if offline || !session.has_server()? {
        session.verbose("using the built-in catalog");
        return embedded();
    }
    Ok(session.client()?.models().await?)
}

/// The input schema of `model` for typing `--input`: the server's, else the built-in one.
pub async fn input_schema(
    session: &Session,
    client: &Client,
    model: &str,
) -> anyhow::Result<Option<Value>> {
    let found = match client.model(model).await {
        Ok(m) => m,
        Err(e) if e.is_network() => return Err(e.into()),
        Err(e) => {
            session.verbose(format!(
                "cannot read the server's catalog ({e}); typing --input by the built-in one"
            ));
            embedded()?.data.into_iter().find(|m| m.id == model)
        }
    };
    Ok(found.map(|m| m.input_schema).filter(Value::is_object))
}

pub async fn run(session: &Session, a: ModelsArgs) -> anyhow::Result<()> {
    let list = catalog(session, a.offline).await?;
    match a.command {
        Cmd::List => match session.output() {
            Output::Json => super::output::json(&list),
            Output::Text => {
                // Where each model runs, as the server routes it (the built-in catalog cannot
                // know: `-`).
                let mut t = Table::new(&["Model", "Kind", "Provider", "Title"]);
                for m in &list.data {
                    let provider = m.extra.get("provider").and_then(Value::as_str);
                    t.row(vec![
                        m.id.clone(),
                        m.kind.clone(),
                        provider.unwrap_or("-").to_owned(),
                        m.title.clone(),
                    ]);
                }
                t.print()?;
                Ok(())
            }
        },
        Cmd::Show { model_id } => {
            let Some(m) = list.data.iter().find(|m| m.id == model_id) else {
                return usage(format!(
                    "model {model_id:?} is not in the catalog; `invokd models list` shows the models"
                ));
            };
            match session.output() {
                Output::Json => super::output::json(m),
                Output::Text => {
                    super::output::out(&format!("{}\n\n{}", describe(m), schema_table(m).render()))
                }
            }
        }
    }
}

fn describe(m: &ModelInfo) -> String {
    let mut s = format!("{} ({})", m.id, m.kind);
    if !m.title.is_empty() {
        s.push_str(&format!(": {}", m.title));
    }
    if !m.description.is_empty() {
        s.push_str(&format!("\n{}", m.description));
    }
    s.push_str("\nFields marked * are required; set fields with --input KEY=VALUE.");
    s
}

/// A readable type: `integer`, `integer or null`, `string (enum) or object {width, height}`.
fn type_label(schema: &Value) -> String {
    let alts: Vec<&Value> = ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    if !alts.is_empty() {
        return alts
            .iter()
            .map(|a| type_label(a))
            .collect::<Vec<_>>()
            .join(" or ");
    }
    let types = schema_types(schema);
    if types.is_empty() {
        return "any".into();
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            "array" => match schema.get("items").map(type_label) {
                Some(item) if item != "any" => format!("array of {item}"),
                _ => "array".into(),
            },
            "object" => match schema.get("properties").and_then(Value::as_object) {
                Some(p) if !p.is_empty() => format!(
                    "object {{{}}}",
                    p.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                _ => "object".into(),
            },
            "string" if schema.get("enum").is_some() => "string (one of)".into(),
            other => other.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Enum values and bounds, including those of `anyOf` alternatives.
fn allowed(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        out.push(
            e.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    for (k, label) in [
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
        ("minLength", "length >="),
        ("maxLength", "length <="),
        ("maxItems", "items <="),
    ] {
        if let Some(v) = schema.get(k) {
            out.push(format!("{label} {v}"));
        }
    }
    for k in ["anyOf", "oneOf"] {
        for alt in schema
            .get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(allowed(alt));
        }
    }
    out
}

fn schema_table(m: &ModelInfo) -> Table {
    let mut t = Table::new(&["Field", "Type", "Default", "Allowed", "Description"]);
    let required: Vec<&str> = m.required_fields().collect();
    let props = m.input_schema.get("properties").and_then(Value::as_object);
    let mut fields: Vec<(&String, &Value)> = props.into_iter().flatten().collect();
    // Required fields first, then the rest by name.
    fields.sort_by_key(|(name, _)| (!required.contains(&name.as_str()), (*name).clone()));
    for (name, s) in fields {
        let field = if required.contains(&name.as_str()) {
            format!("{name} *")
        } else {
            name.clone()
        };
        let default = s
            .get("default")
            .map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_owned))
            .unwrap_or_default();
        let description = s
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        t.row(vec![
            field,
            type_label(s),
            default,
            allowed(s).join("; "),
            description.to_owned(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_bounds_read_well() {
        let s = json!({"anyOf": [
            {"type": "string", "enum": ["square", "landscape_4_3"]},
            {"type": "object", "properties": {"width": {"type": "integer", "maximum": 14142}}}
        ]});
        assert_eq!(type_label(&s), "string (one of) or object {width}");
        assert_eq!(allowed(&s), ["square, landscape_4_3"]);
        let seed = json!({"type": ["integer", "null"], "minimum": 0});
        assert_eq!(type_label(&seed), "integer or null");
        assert_eq!(allowed(&seed), [">= 0"]);
        let loras = json!({"type": "array", "items": {"type": "object", "properties": {"path": {}}}, "maxItems": 3});
        assert_eq!(type_label(&loras), "array of object {path}");
        assert_eq!(allowed(&loras), ["items <= 3"]);
    }

    #[test]
    fn the_embedded_catalog_shows_every_model_with_a_table() {
        let list = embedded().unwrap();
        assert!(list.data.len() >= 14);
        let flux = list
            .data
            .iter()
            .find(|m| m.id == "fal-ai/flux/schnell")
            .unwrap();
        let table = schema_table(flux).render();
        assert!(table.starts_with("Field"), "{table}");
        assert!(table.contains("prompt *"), "{table}");
        assert!(table.contains("num_inference_steps"), "{table}");
    }
}
