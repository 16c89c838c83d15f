//! The control plane's certificates, made in Rust with rcgen: no `openssl` on the machine.
//!
//! | file | what it is |
//! |---|---|
//! | `ca.crt` | the cluster CA: signs the API server's serving certificate and every client certificate |
//! | `apiserver.crt/.key` | serving certificate, SANs `127.0.0.1`, `localhost`, `kubernetes.default.svc` |
//! | `front-proxy-ca.crt` | a second CA, trusted only for the fault proxy's requestheader identity |
//! | `sa.key/.pub` | the service-account token signing key pair |
//!
//! Client identities ([`Identity`]) are certificates with the user as CN and the group as O, the
//! way kube-apiserver's x509 authenticator reads them. Every one the harness issues is recorded in
//! [`Pki::identity_of`], so the fault proxy can tell who a TLS client is from its certificate alone.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::{Error, io_error};

/// A client of the API server: a user name and at most one group (the API server adds
/// `system:authenticated`). One group is what a certificate from rcgen can carry, and what the
/// components and tests here need.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The user name (the certificate's CN).
    pub user: String,
    /// The group (the certificate's O). `system:masters` bypasses authorization.
    pub group: Option<String>,
}

impl Identity {
    /// A user in `system:masters`: every request is allowed.
    pub fn admin(user: &str) -> Self {
        Self::new(user, Some("system:masters"))
    }

    /// A user, with a group or none; RBAC decides what it may do.
    pub fn new(user: &str, group: Option<&str>) -> Self {
        Self {
            user: user.to_owned(),
            group: group.map(str::to_owned),
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl CertPair {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key` and returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), Error> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        write(&cert, &self.cert_pem)?;
        write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// One certificate authority: its certificate and what signs with it.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(common_name: &str) -> Result<Self, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    fn sign(&self, params: CertificateParams) -> Result<(CertPair, Vec<u8>), Error> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let pair = CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok((pair, cert.der().to_vec()))
    }
}

/// The cluster's certificate authorities and the client identities issued so far.
pub struct Pki {
    dir: PathBuf,
    ca: Authority,
    front_proxy_ca: Authority,
    issued: Mutex<HashMap<Vec<u8>, Identity>>,
}

/// The paths of the files [`Pki::create`] writes, for the components' flags.
pub struct PkiFiles {
    /// The cluster CA.
    pub ca: PathBuf,
    /// The API server's serving certificate and key.
    pub apiserver: (PathBuf, PathBuf),
    /// The front-proxy CA (`--requestheader-client-ca-file`).
    pub front_proxy_ca: PathBuf,
    /// The service-account signing key (private).
    pub sa_key: PathBuf,
    /// The service-account verification key (public).
    pub sa_pub: PathBuf,
}

impl Pki {
    /// Makes both CAs, the serving certificate and the service-account key pair, and writes them
    /// into `dir`.
    pub fn create(dir: &Path) -> Result<(Arc<Self>, PkiFiles), Error> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        let ca = Authority::new("berth-test-ca")?;
        let front_proxy_ca = Authority::new("berth-test-front-proxy-ca")?;

        let ca_path = dir.join("ca.crt");
        write(&ca_path, &ca.issuer.pem())?;
        let front_proxy_ca_path = dir.join("front-proxy-ca.crt");
        write(&front_proxy_ca_path, &front_proxy_ca.issuer.pem())?;

        let (serving, _) = ca.sign(serving_params("kube-apiserver")?)?;
        let apiserver = serving.write(dir, "apiserver")?;

        let sa = KeyPair::generate()?;
        let sa_key = dir.join("sa.key");
        write(&sa_key, &sa.serialize_pem())?;
        let sa_pub = dir.join("sa.pub");
        write(&sa_pub, &sa.public_key_pem())?;

        let pki = Arc::new(Self {
            dir: dir.to_owned(),
            ca,
            front_proxy_ca,
            issued: Mutex::new(HashMap::new()),
        });
        let files = PkiFiles {
            ca: ca_path,
            apiserver,
            front_proxy_ca: front_proxy_ca_path,
            sa_key,
            sa_pub,
        };
        Ok((pki, files))
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.issuer.pem()
    }

    /// The cluster CA certificate, DER.
    pub fn ca_der(&self) -> Vec<u8> {
        self.ca.issuer.der().to_vec()
    }

    /// Issues a client certificate for `identity` and remembers it, so the fault proxy can
    /// recognise it.
    pub fn client(&self, identity: &Identity) -> Result<CertPair, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&identity.user, identity.group.as_deref());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (pair, der) = self.ca.sign(params)?;
        self.issued
            .lock()
            .expect("issued identities")
            .insert(der, identity.clone());
        Ok(pair)
    }

    /// A serving certificate for a server on 127.0.0.1 (the fault proxy, a webhook), signed by
    /// the cluster CA.
    pub fn serving(&self, common_name: &str) -> Result<CertPair, Error> {
        Ok(self.ca.sign(serving_params(common_name)?)?.0)
    }

    /// The client certificate the fault proxy presents to the API server, from the front-proxy
    /// CA, with the CN the API server allows (`front-proxy-client`).
    pub fn front_proxy_client(&self) -> Result<CertPair, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(FRONT_PROXY_CLIENT, None);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(self.front_proxy_ca.sign(params)?.0)
    }

    /// Who a client certificate (DER) was issued to, if the harness issued it.
    pub fn identity_of(&self, der: &[u8]) -> Option<Identity> {
        self.issued
            .lock()
            .expect("issued identities")
            .get(der)
            .cloned()
    }

    /// A kubeconfig for `identity` against `server`, with every certificate inline.
    pub fn kubeconfig(&self, server: &str, identity: &Identity) -> Result<String, Error> {
        let client = self.client(identity)?;
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        let document = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "berth-test", "cluster": {
                "server": server,
                "certificate-authority-data": b64(&self.ca_pem()),
            }}],
            "users": [{"name": identity.user, "user": {
                "client-certificate-data": b64(&client.cert_pem),
                "client-key-data": b64(&client.key_pem),
            }}],
            "contexts": [{"name": "berth-test", "context": {
                "cluster": "berth-test",
                "user": identity.user,
                "namespace": "default",
            }}],
            "current-context": "berth-test",
        });
        serde_yaml::to_string(&document).map_err(|e| Error::Kubeconfig(e.to_string()))
    }
}

/// The CN the API server accepts a requestheader identity from (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

fn serving_params(common_name: &str) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, None);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into()?),
        SanType::DnsName("kubernetes".try_into()?),
        SanType::DnsName("kubernetes.default".try_into()?),
        SanType::DnsName("kubernetes.default.svc".try_into()?),
    ];
    Ok(params)
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| io_error("write", path, e))
}
