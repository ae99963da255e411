//! A throw-away PKI for TLS tests: a CA, server certificates for loopback and client
//! certificates with a chosen common name, generated at test time (ECDSA P-256 keys, rcgen on
//! ring) and written as PEM files into a directory the test owns. Nothing here is checked in.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of one certificate and its private key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test certificate authority whose files live in `dir`.
#[derive(Debug)]
pub struct TestPki {
    dir: PathBuf,
    ca_params: CertificateParams,
    ca_key_pem: String,
    /// The CA certificate (PEM file): what clients and servers trust.
    pub ca: PathBuf,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

impl TestPki {
    /// A new CA named `name`, written to `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Result<TestPki, String> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(err)?;
        let ca = dir.join(format!("{name}-ca.pem"));
        write(&ca, &cert.pem())?;
        Ok(TestPki {
            dir: dir.to_owned(),
            ca_params: params,
            ca_key_pem: key.serialize_pem(),
            ca,
        })
    }

    fn issue(
        &self,
        file: &str,
        cn: &str,
        sans: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<CertFiles, String> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(err)?;
        let issuer = Issuer::new(self.ca_params.clone(), ca_key);
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(sans).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }

    /// A server certificate for `localhost`, 127.0.0.1 and ::1.
    pub fn server(&self, name: &str) -> Result<CertFiles, String> {
        self.issue(
            name,
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject common name is `cn` (an agent id, say).
    pub fn client(&self, cn: &str) -> Result<CertFiles, String> {
        self.issue(
            &format!("client-{cn}"),
            cn,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_a_server_and_a_client() {
        let dir = tempfile_dir();
        let pki = TestPki::new(&dir, "t").unwrap();
        let s = pki.server("srv").unwrap();
        let c = pki.client("agent-1").unwrap();
        for p in [&pki.ca, &s.cert, &s.key, &c.cert, &c.key] {
            let text = std::fs::read_to_string(p).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}: {text}", p.display());
        }
        assert_ne!(
            std::fs::read(&s.cert).unwrap(),
            std::fs::read(&c.cert).unwrap()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sf-pki-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
