//! doctl's global flags, and the session they make: which config file and context, which
//! server and key, how requests are retried and traced, and whether the terminal is ours.

use std::{io::IsTerminal as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use invokd_client::{
    AdminClient, Client, RetryPolicy, TraceEvent,
    config::{ClientConfig, Context, default_path},
};

use super::{
    exit::{Usage, usage},
    output,
};

/// Where the server is when nothing says: `invokd serve`'s default address.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

/// doctl's global flags; they go before or after the command.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Access key (default: the context's).
    #[arg(
        long,
        short = 't',
        env = "INVOKD_ACCESS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub access_token: Option<String>,
    /// API URL (default: the context's, else http://127.0.0.1:8080).
    #[arg(long, short = 'u', env = "INVOKD_API_URL", global = true)]
    pub api_url: Option<String>,
    /// Config file (default: $INVOKD_CONFIG, else ~/.config/invokd/config.toml).
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
    /// Context of the config file to use (default: its current context).
    #[arg(long, env = "INVOKD_CONTEXT", global = true)]
    pub context: Option<String>,
    /// Output format: text (aligned tables) or json (the API's objects).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// Retries of a request that fails with a 429, a 5xx or a network error.
    #[arg(long, default_value_t = 5, global = true, value_name = "N")]
    pub http_retry_max: u32,
    /// Seconds before the first retry (doubling for each next one).
    #[arg(long, default_value_t = 1.0, global = true, value_name = "SECONDS")]
    pub http_retry_wait_min: f64,
    /// Longest wait between retries, in seconds (a longer Retry-After is cut to this).
    #[arg(long, default_value_t = 30.0, global = true, value_name = "SECONDS")]
    pub http_retry_wait_max: f64,
    /// Show each request and response on stderr (keys redacted).
    #[arg(long, global = true)]
    pub trace: bool,
    /// Say more on stderr: the server and context used, retries, fallbacks.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
    /// Live progress and questions (default: when stderr is a terminal).
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub interactive: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// The global flags with the config file read.
pub struct Session {
    pub global: Global,
    pub config_path: PathBuf,
    pub config: ClientConfig,
}

impl Session {
    pub fn load(global: Global) -> anyhow::Result<Self> {
        let config_path = match &global.config {
            Some(p) => p.clone(),
            None => default_path().context("cannot find the config file")?,
        };
        let config = ClientConfig::load(&config_path)?;
        Ok(Self {
            global,
            config_path,
            config,
        })
    }

    pub fn output(&self) -> Output {
        self.global.output
    }

    /// Whether to draw live progress and ask questions.
    pub fn interactive(&self) -> bool {
        self.global
            .interactive
            .unwrap_or_else(|| std::io::stderr().is_terminal())
    }

    /// A line on stderr with --verbose.
    pub fn verbose(&self, msg: impl AsRef<str>) {
        if self.global.verbose || self.global.trace {
            output::stderr_line(msg.as_ref());
        }
    }

    /// The context in use: `--context` (which must exist) or the current one.
    pub fn context(&self) -> anyhow::Result<Option<(&str, &Context)>> {
        match &self.global.context {
            Some(name) => match self.config.contexts.get_key_value(name) {
                Some((n, c)) => Ok(Some((n.as_str(), c))),
                None => usage(format!(
                    "there is no context {name:?} in {} (it has: {}); add it with `invokd auth init --context {name}`",
                    self.config_path.display(),
                    names(&self.config),
                )),
            },
            None => Ok(self
                .config
                .current_context
                .as_deref()
                .and_then(|n| self.config.contexts.get_key_value(n))
                .map(|(n, c)| (n.as_str(), c))),
        }
    }

    /// The API URL: --api-url, else the context's, else the default.
    pub fn api_url(&self) -> anyhow::Result<String> {
        if let Some(u) = &self.global.api_url {
            return Ok(u.clone());
        }
        Ok(self
            .context()?
            .map(|(_, c)| c.api_url.clone())
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned()))
    }

    /// The access key: --access-token, else the context's.
    pub fn access_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.global.access_token {
            return Ok(Some(t.clone()));
        }
        Ok(self.context()?.map(|(_, c)| c.access_token.clone()))
    }

    /// Whether a server is configured (an access key is known).
    pub fn has_server(&self) -> anyhow::Result<bool> {
        Ok(self.access_token()?.is_some())
    }

    fn retry(&self) -> anyhow::Result<RetryPolicy> {
        let g = &self.global;
        let secs = |flag: &str, v: f64| {
            if (0.0..=86_400.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(Usage(format!(
                    "{flag} must be a number of seconds from 0 to 86400, got {v}"
                )))
            }
        };
        let wait_min = secs("--http-retry-wait-min", g.http_retry_wait_min)?;
        let wait_max = secs("--http-retry-wait-max", g.http_retry_wait_max)?;
        if wait_max < wait_min {
            return usage(format!(
                "--http-retry-wait-max ({}) must not be less than --http-retry-wait-min ({})",
                g.http_retry_wait_max, g.http_retry_wait_min
            ));
        }
        Ok(RetryPolicy {
            max_retries: g.http_retry_max,
            wait_min,
            wait_max,
        })
    }

    /// A client for `url` with `token`, retrying and tracing as the flags say.
    pub fn client_for(&self, url: &str, token: &str) -> anyhow::Result<Client> {
        let mut b = Client::builder(url, token)
            .retry(self.retry()?)
            .user_agent(concat!("invokd-cli/", env!("CARGO_PKG_VERSION")));
        let (trace, verbose) = (self.global.trace, self.global.verbose);
        if trace || verbose {
            b = b.trace(move |ev: &TraceEvent| {
                if trace || ev.is_notice() {
                    output::stderr_line(&ev.to_string());
                }
            });
        }
        Ok(b.build()?)
    }

    /// The client of the API: needs an access key.
    pub fn client(&self) -> anyhow::Result<Client> {
        let url = self.api_url()?;
        let Some(token) = self.access_token()? else {
            return usage(format!(
                "no access key: pass --access-token (or set INVOKD_ACCESS_TOKEN), or save one with \
                 `invokd auth init` ({} has {})",
                self.config_path.display(),
                if self.config.contexts.is_empty() {
                    "no contexts".to_owned()
                } else {
                    format!("the contexts {} but none is current", names(&self.config))
                }
            ));
        };
        let source = match (&self.global.api_url, self.context()?) {
            (None, Some((name, _))) => format!("context {name:?}"),
            (Some(_), _) => "--api-url".to_owned(),
            (None, None) => "the default URL".to_owned(),
        };
        self.verbose(format!("using {url} ({source})"));
        self.client_for(&url, &token)
    }

    /// The admin client: --admin-token (INVOKD_ADMIN_TOKEN), else the context's admin token.
    pub fn admin(&self, flag: Option<&str>) -> anyhow::Result<AdminClient> {
        let url = self.api_url()?;
        let token = match flag {
            Some(t) => t.to_owned(),
            None => match self.context()?.and_then(|(_, c)| c.admin_token.clone()) {
                Some(t) => t,
                None => {
                    return usage(
                        "no admin token: pass --admin-token (or set INVOKD_ADMIN_TOKEN), or use a \
                         context that has one (the server's first start saves it in the \"local\" \
                         context; it is also in the data directory's admin.token)",
                    );
                }
            },
        };
        self.verbose(format!("using the admin API at {url}"));
        Ok(self.client_for(&url, &token)?.admin(&token))
    }
}

fn names(c: &ClientConfig) -> String {
    if c.contexts.is_empty() {
        "none".into()
    } else {
        c.names().join(", ")
    }
}
