//! `invokd models list|show`: the built-in catalog.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use invokd_core::catalog::Catalog;

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the models.
    List,
    /// Show one model's input schema.
    Show { model_id: String },
}

pub fn run(a: ModelsArgs) -> anyhow::Result<()> {
    let catalog = Catalog::embedded()?;
    match a.command {
        Cmd::List => {
            println!("{:<42} {:<7} Title", "Model", "Kind");
            for m in catalog.iter() {
                println!("{:<42} {:<7} {}", m.id, m.kind.as_str(), m.title);
            }
        }
        Cmd::Show { model_id } => {
            let m = catalog
                .get(&model_id)
                .with_context(|| format!("model {model_id:?} is not in the catalog"))?;
            println!("{} ({}): {}\n", m.id, m.kind.as_str(), m.description);
            println!("{:<26} {:<18} {:<22} Allowed", "Field", "Type", "Default");
            let props = m.input_schema.get("properties").and_then(|p| p.as_object());
            for (name, s) in props.into_iter().flatten() {
                let ty = s
                    .get("type")
                    .map(|t| t.to_string().replace('"', ""))
                    .unwrap_or_else(|| "any".into());
                let default = s
                    .get("default")
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let mut allowed = Vec::new();
                if let Some(e) = s.get("enum") {
                    allowed.push(e.to_string());
                }
                for (k, label) in [
                    ("minimum", ">="),
                    ("exclusiveMinimum", ">"),
                    ("maximum", "<="),
                ] {
                    if let Some(v) = s.get(k) {
                        allowed.push(format!("{label}{v}"));
                    }
                }
                let required = m.required_fields().any(|r| r == name);
                let name = if required {
                    format!("{name} *")
                } else {
                    name.clone()
                };
                println!("{name:<26} {ty:<18} {default:<22} {}", allowed.join(" "));
            }
        }
    }
    Ok(())
}
