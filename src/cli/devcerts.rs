//! A development CA and serving certificate, for running the webhook locally or in a test cluster
//! without cert-manager. Production installs use the chart's certificate modes.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0:?} is not a valid DNS name or IP address for a certificate")]
    BadName(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// PEM text of a CA and a leaf it signed.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca_cert_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The names a webhook serving certificate needs: local use plus the in-cluster Service names.
pub fn default_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        service.into(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A development CA that can issue serving certificates (rotation in tests issues a second one).
pub struct DevCa {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl DevCa {
    pub fn generate() -> Result<Self, DevCertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "pullsecret-injector dev CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            params,
            key,
            cert_pem,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a serving certificate for `names` (DNS names or IP addresses): (cert PEM, key PEM).
    pub fn issue(
        &self,
        names: &[String],
        common_name: &str,
    ) -> Result<(String, String), DevCertError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = names
            .iter()
            .map(|name| san(name))
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl DevCa {
    /// Issues a client certificate, as the API server presents to a webhook that asks for one:
    /// (cert PEM, key PEM).
    pub fn issue_client(&self, common_name: &str) -> Result<(String, String), DevCertError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Makes a new CA and a serving certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String], common_name: &str) -> Result<DevCerts, DevCertError> {
    let ca = DevCa::generate()?;
    let (cert_pem, key_pem) = ca.issue(names, common_name)?;
    Ok(DevCerts {
        ca_cert_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    })
}

fn san(name: &str) -> Result<SanType, DevCertError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    name.try_into()
        .map(SanType::DnsName)
        .map_err(|_| DevCertError::BadName(name.to_owned()))
}

impl DevCerts {
    /// Writes `ca.crt`, `tls.crt` and `tls.key` (the layout of a `kubernetes.io/tls` Secret) into `dir`.
    /// The CA key is not written: a dev CA signs once.
    pub fn write_to(&self, dir: &Path) -> Result<(), DevCertError> {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| DevCertError::Write { path, source })
        };
        std::fs::create_dir_all(dir).map_err(|source| DevCertError::Write {
            path: dir.to_owned(),
            source,
        })?;
        write("ca.crt", &self.ca_cert_pem)?;
        write(crate::serving::tls::CERT_FILE, &self.cert_pem)?;
        write(crate::serving::tls::KEY_FILE, &self.key_pem)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(crate::serving::tls::KEY_FILE);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|source| DevCertError::Write { path, source })?;
        }
        Ok(())
    }
}
