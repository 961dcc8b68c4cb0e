//! `invokd auth init|switch|list|remove`: named contexts (a server's URL and an access key) in
//! the config file, as doctl keeps them.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use invokd_client::{ListQuery, config::Context};
use serde_json::json;

use super::{
    exit::usage,
    global::{DEFAULT_API_URL, Output, Session},
    output::{self, Table},
};

#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Save a server's URL and an access key as a context (--context NAME, default "default").
    ///
    /// The key comes from --access-token (INVOKD_ACCESS_TOKEN), else a prompt on a terminal,
    /// else the first line of stdin. The URL comes from --api-url, else the context's, else
    /// http://127.0.0.1:8080. The key is checked against the server unless --no-verify.
    Init {
        /// Also save the admin token (for `invokd keys`).
        #[arg(long, hide_env_values = true)]
        admin_token: Option<String>,
        /// Save without checking the key against the server.
        #[arg(long)]
        no_verify: bool,
    },
    /// Make a context the current one.
    Switch {
        /// The context (or --context NAME).
        name: Option<String>,
    },
    /// List the contexts; * marks the current one.
    List,
    /// Remove a context.
    Remove {
        /// The context (or --context NAME).
        name: Option<String>,
    },
}

fn read_key(url: &str) -> anyhow::Result<String> {
    let key = if std::io::stdin().is_terminal() {
        dialoguer::Password::new()
            .with_prompt(format!("Access key for {url}"))
            .interact()
            .context("cannot read the access key")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the access key from stdin")?;
        line
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return usage(
            "no access key: pass --access-token, or give it on stdin (echo $KEY | invokd auth init)",
        );
    }
    Ok(key)
}

pub async fn run(session: &mut Session, a: AuthArgs) -> anyhow::Result<()> {
    let path = session.config_path.clone();
    match a.command {
        Cmd::Init {
            admin_token,
            no_verify,
        } => {
            let name = session
                .global
                .context
                .clone()
                .unwrap_or_else(|| "default".to_owned());
            let existing = session.config.contexts.get(&name).cloned();
            let url = session
                .global
                .api_url
                .clone()
                .or_else(|| existing.as_ref().map(|c| c.api_url.clone()))
                .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
            let token = match &session.global.access_token {
                Some(t) => t.clone(),
                None => read_key(&url)?,
            };
            if !no_verify {
                let client = session.client_for(&url, &token)?;
                let q = ListQuery {
                    limit: Some(1),
                    ..ListQuery::default()
                };
                client.list(&q).await.with_context(|| {
                    format!("the key does not work with {url} (pass --no-verify to save it anyway)")
                })?;
            }
            let admin_token = admin_token.or(existing.and_then(|c| c.admin_token));
            session.config.upsert(
                &name,
                Context {
                    api_url: url.clone(),
                    access_token: token,
                    admin_token,
                },
            );
            session.config.save(&path)?;
            let current = session.config.current_context.as_deref() == Some(name.as_str());
            eprintln!(
                "Saved context {name:?} ({url}) in {}.{}",
                path.display(),
                if current {
                    " It is the current context.".to_owned()
                } else {
                    format!(" Use it with `invokd auth switch {name}` or --context {name}.")
                }
            );
        }
        Cmd::Switch { name } => {
            let Some(name) = name.or(session.global.context.clone()) else {
                return usage("name the context: `invokd auth switch NAME`");
            };
            if !session.config.switch(&name) {
                return usage(format!(
                    "there is no context {name:?} in {} (it has: {}); add it with `invokd auth init --context {name}`",
                    path.display(),
                    session.config.names().join(", ")
                ));
            }
            session.config.save(&path)?;
            eprintln!("Now using context {name:?}.");
        }
        Cmd::List => {
            let current = session.config.current_context.clone();
            if session.output() == Output::Json {
                let list: Vec<_> = session
                    .config
                    .contexts
                    .iter()
                    .map(|(n, c)| {
                        json!({"name": n, "api_url": c.api_url,
                               "current": current.as_deref() == Some(n.as_str()),
                               "admin_token": c.admin_token.is_some()})
                    })
                    .collect();
                output::json(&list)?;
            } else {
                let mut t = Table::new(&["", "Name", "API URL", "Admin"]);
                for (n, c) in &session.config.contexts {
                    let mark = if current.as_deref() == Some(n.as_str()) {
                        "*"
                    } else {
                        ""
                    };
                    t.row(vec![
                        mark.into(),
                        n.clone(),
                        c.api_url.clone(),
                        if c.admin_token.is_some() { "yes" } else { "" }.into(),
                    ]);
                }
                t.print()?;
            }
        }
        Cmd::Remove { name } => {
            let Some(name) = name.or(session.global.context.clone()) else {
                return usage("name the context: `invokd auth remove NAME`");
            };
            if session.config.remove(&name).is_none() {
                return usage(format!(
                    "there is no context {name:?} in {}",
                    path.display()
                ));
            }
            session.config.save(&path)?;
            eprintln!("Removed context {name:?}.");
        }
    }
    Ok(())
}
