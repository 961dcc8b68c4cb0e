//! `invokd tls init`: a private CA and a server certificate, for https on a development machine
//! or in CI (pydo and fal-client only speak https).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct TlsArgs {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create (or reuse) a private CA in DIR and issue a server certificate for the hosts.
    Init {
        /// Where to write ca.pem, ca-key.pem, cert.pem and key.pem.
        #[arg(long, default_value = "./invokd-data/tls")]
        dir: PathBuf,
        /// Names and IP addresses the certificate is valid for (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])]
        hosts: Vec<String>,
    },
}

pub fn run(a: TlsArgs) -> anyhow::Result<()> {
    match a.command {
        Cmd::Init { dir, hosts } => {
            let ca = invokd_server::tls::init_local_ca(&dir, &hosts)?;
            println!(
                "CA certificate (trust it in clients): {}",
                ca.ca_cert.display()
            );
            println!("server certificate: {}", ca.server.cert.display());
            println!("server key:         {}", ca.server.key.display());
            println!(
                "\nStart the server with:\n  invokd serve --tls-cert {} --tls-key {}",
                ca.server.cert.display(),
                ca.server.key.display()
            );
            println!(
                "Clients: SSL_CERT_FILE={0} (Python), NODE_EXTRA_CA_CERTS={0} (Node.js)",
                ca.ca_cert.display()
            );
            Ok(())
        }
    }
}
