//! Certificates made on the spot for TLS tests: a throwaway CA, a server certificate for
//! loopback, and client certificates whose common name is an etcd user.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::fmt;
use std::io;

/// A throwaway certificate authority that issues server and client certificates (ECDSA P-256,
/// valid from 1975 to 4096, made with `rcgen`). Each one is new: a certificate of one
/// `TestCa` does not verify against another's, which is how a test gets a wrong CA.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// Its private key, PEM (PKCS #8).
    pub key_pem: String,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs, even a test key.
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

impl CertifiedKey {
    /// This certificate and key as a TLS client identity.
    pub fn identity(&self) -> crate::Identity {
        crate::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

impl TestCa {
    /// A new CA named `common_name`.
    pub fn new(common_name: &str) -> io::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(other)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(other)?;
        Ok(TestCa { issuer })
    }

    /// The CA's certificate, PEM: what clients trust (`--cacert`) and etcd's
    /// `--trusted-ca-file`.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's certificate as a trust root for [`TlsOptions`](crate::TlsOptions).
    pub fn certificate(&self) -> crate::Certificate {
        crate::Certificate::from_pem(self.cert_pem())
    }

    /// A server certificate for `127.0.0.1` and `localhost`. It may also serve as a client
    /// certificate: etcd's gateway dials the server with it when client certificates are
    /// required.
    pub fn server(&self) -> io::Result<CertifiedKey> {
        self.issue(
            "etcd-test-server",
            &["127.0.0.1", "localhost"],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate with `common_name` as its subject's common name: with etcd's
    /// `--client-cert-auth` and auth enabled, the etcd user the client acts as.
    pub fn client(&self, common_name: &str) -> io::Result<CertifiedKey> {
        self.issue(common_name, &[], &[ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usages: &[ExtendedKeyUsagePurpose],
    ) -> io::Result<CertifiedKey> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages.to_vec();
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(other)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(other)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn other(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("making a test certificate: {e}"))
}
