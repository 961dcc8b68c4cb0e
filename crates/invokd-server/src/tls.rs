//! Native TLS: the server's rustls configuration from PEM files, and a private CA with a server
//! certificate for local use (pydo and fal-client only speak https).

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// The certificate chain and key a server presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A rustls server configuration (ring, TLS 1.2 and 1.3, ALPN h2 and http/1.1).
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read certificates from {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds an invalid certificate", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read a private key from {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What `init_local_ca` wrote.
#[derive(Debug, Clone)]
pub struct LocalCa {
    /// Trust this one in clients (`SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`, `REQUESTS_CA_BUNDLE`).
    pub ca_cert: PathBuf,
    pub server: TlsFiles,
}

/// Creates in `dir` a private CA (`ca.pem`, `ca-key.pem`) and a server certificate it signs
/// (`cert.pem`, `key.pem`) for `hosts` (names or IP addresses). An existing CA is reused, so
/// clients that already trust it keep working; the server certificate is always renewed.
pub fn init_local_ca(dir: &Path, hosts: &[String]) -> anyhow::Result<LocalCa> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (ca_cert, ca_key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "invokd local CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = if ca_key_path.exists() && ca_cert.exists() {
        let pem = fs::read_to_string(&ca_key_path)
            .with_context(|| format!("cannot read {}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a key", ca_key_path.display()))?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params.self_signed(&key)?;
        crate::bootstrap::write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        fs::write(&ca_cert, cert.pem())?;
        key
    };
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let mut params = CertificateParams::new(hosts.to_vec()).context("invalid host name")?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map(String::as_str).unwrap_or("localhost"),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let server = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    fs::write(&server.cert, cert.pem())?;
    crate::bootstrap::write_private(&server.key, key.serialize_pem().as_bytes())?;
    Ok(LocalCa { ca_cert, server })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_ca_signs_a_certificate_rustls_accepts_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = init_local_ca(dir.path(), &hosts).unwrap();
        server_config(&first.server).unwrap();
        let ca = fs::read(&first.ca_cert).unwrap();
        let second = init_local_ca(dir.path(), &hosts).unwrap();
        assert_eq!(fs::read(&second.ca_cert).unwrap(), ca, "the CA is kept");
        server_config(&second.server).unwrap();
    }
}
