//! `invokd keys create|list|revoke`: access keys, through the admin API with the admin token
//! (`--admin-token`, `INVOKD_ADMIN_TOKEN`, or the context's `admin-token`).

use clap::{Args, Subcommand};
use invokd_api::admin::{CreateKey, KeyInfo};

use super::{
    global::{Output, Session},
    output::{self, Table, time},
};

/// The admin token of the commands that need it.
#[derive(Debug, Args)]
pub struct AdminToken {
    /// The admin token (default: the context's; the server's first start saves it in "local").
    #[arg(
        long = "admin-token",
        env = "INVOKD_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    admin_token: AdminToken,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Make an access key; its secret is shown this once.
    Create {
        /// A label, e.g. the app or person the key is for.
        #[arg(long)]
        name: String,
        /// The project: keys of one project see each other's jobs (default: a project of its own).
        #[arg(long)]
        project: Option<String>,
    },
    /// List the keys (never their secrets), newest first.
    List,
    /// Revoke a key: its next request is refused.
    Revoke {
        /// The key's id (from `invokd keys list`).
        id: String,
    },
}

fn table(keys: &[KeyInfo]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "Name",
        "Prefix",
        "Project",
        "Created At",
        "Revoked At",
    ]);
    for k in keys {
        t.row(vec![
            k.id.clone(),
            k.name.clone(),
            k.prefix.clone(),
            k.project.clone(),
            time(&k.created_at),
            k.revoked_at.as_ref().map(time).unwrap_or_default(),
        ]);
    }
    t
}

pub async fn run(session: &Session, a: KeysArgs) -> anyhow::Result<()> {
    let admin = session.admin(a.admin_token.token.as_deref())?;
    let json = session.output() == Output::Json;
    match a.command {
        Cmd::Create { name, project } => {
            let made = admin.create_key(&CreateKey { name, project }).await?;
            if json {
                output::json(&made)?;
            } else {
                table(std::slice::from_ref(&made.info)).print()?;
                output::out(&format!(
                    "\nKey (shown this once, keep it safe):\n\n    {}\n\nUse it with --access-token, or save it with `invokd auth init --context NAME`.",
                    made.key
                ))?;
            }
        }
        Cmd::List => {
            let list = admin.list_keys().await?;
            if json {
                output::json(&list)?;
            } else {
                table(&list.keys).print()?;
            }
        }
        Cmd::Revoke { id } => {
            let k = admin.revoke_key(&id).await?;
            if json {
                output::json(&k)?;
            } else {
                table(std::slice::from_ref(&k)).print()?;
            }
        }
    }
    Ok(())
}
